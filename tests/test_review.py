"""Search review: the front, hypervolume and history on hand-made trial records (known answers),
the files against a brute-force recomputation, the figure, TensorBoard events read back by
TensorBoard itself (reader and a real server), and the test-set verification of the front.

No Ray: the records are built by hand, exactly as the search driver would build them.
"""

from __future__ import annotations

import csv
import json
import math
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mtard.errors import MtardError
from mtard.search.records import Objective, TrialRecord
from mtard.search.render import (
    FIGURE_TAG,
    HV_EPOCHS_TAG,
    HV_TRIALS_TAG,
    TensorBoardReview,
    pareto_figure,
    render_front_table,
    write_review,
)
from mtard.search.review import compute_review
from mtard.search.verify import evaluate_front

CLEAN = Objective("val_clean_acc", "max", "val clean accuracy")
PGD = Objective("val_pgd_acc", "max", "val PGD-20 accuracy (L∞ ε=0.2, step 0.05)")
OBJS = [CLEAN, PGD]
TEACHERS = {"clean": "tiny_clean", "robust": "tiny_robust"}


def rec(
    tid: str,
    clean: float | None,
    pgd: float | None,
    *,
    status: str = "complete",
    epochs: int = 10,
    budget: int = 10,
    method: str = "mtard",
    is_default: bool = False,
    params: dict | None = None,
    reason: str = "",
) -> TrialRecord:
    metrics = {"epoch": epochs, "lr": 0.1, "loss_adv": 1.2}
    if clean is not None:
        metrics["val_clean_acc"] = clean
    if pgd is not None:
        metrics["val_pgd_acc"] = pgd
    return TrialRecord(
        trial_id=tid,
        status=status,
        reason=reason,
        params=params if params is not None else {"optim.lr": 0.1, "balance.temp_lr": 0.025},
        metrics=metrics,
        epochs=epochs,
        budget=budget,
        checkpoint=f"/ckpt/{tid}.pt",
        is_default=is_default,
        method=method,
        teachers=dict(TEACHERS) if method == "mtard" else {},
        train_time_s=1.5 * epochs,
    )


def staircase_records() -> list[TrialRecord]:
    """3 staircase points, a dominated one (the defaults), a diverged, a stopped, a NaN and a running one."""
    return [
        rec("A", 0.9, 0.2),
        rec("B", 0.8, 0.4, params={"optim.lr": 0.05, "balance.temp_lr": 0.01}),
        rec("E", 0.1, math.nan, status="diverged", epochs=3, reason="loss is NaN at epoch 3"),
        rec("C", 0.6, 0.5),
        rec("D", 0.7, 0.3, is_default=True),  # dominated by B
        rec("F", 0.95, 0.6, status="stopped", epochs=4, reason="ASHA"),  # better than all, but unfinished
        rec("G", 0.85, math.nan),  # complete, but the robust objective is NaN
        rec("H", 0.5, 0.1, status="running", epochs=2),
    ]


# ---------------------------------------------------------------- compute: known answers


def test_front_hypervolume_and_exclusions_known_answers() -> None:
    data = compute_review(staircase_records(), OBJS)

    assert [r.trial_id for r in data.front] == ["C", "B", "A"]  # along objective 0 (clean), ascending
    # Sweep from the largest clean accuracy: 0.9*0.2 + 0.8*(0.4-0.2) + 0.6*(0.5-0.4)
    assert data.hypervolume == pytest.approx(0.18 + 0.16 + 0.06)
    assert data.reference == [0.0, 0.0]
    assert [r.trial_id for r in data.eligible] == ["A", "B", "C", "D"]

    reasons = {e.record.trial_id: e.reason for e in data.excluded}
    assert set(reasons) == {"E", "F", "G", "H"}
    assert reasons["E"].startswith("diverged") and "loss is NaN" in reasons["E"]
    assert reasons["F"].startswith("stopped early") and "4/10" in reasons["F"]
    assert "val_pgd_acc" in reasons["G"] and "NaN" in reasons["G"]
    assert reasons["H"].startswith("still running")
    assert data.n_completed == 5 and data.total_epochs == 10 + 10 + 3 + 10 + 10 + 4 + 10 + 2


def test_ineligible_complete_trials() -> None:
    data = compute_review(
        [
            rec("short", 0.9, 0.9, epochs=5, budget=10),
            rec("missing", 0.9, None),
            rec("text", 0.9, "n/a"),  # type: ignore[arg-type]
            rec("inf", 0.9, math.inf),
            rec("oops", 0.9, 0.9, status="error", epochs=0, reason="CUDA OOM"),
            rec("ok", 0.5, 0.5),
        ],
        OBJS,
    )
    reasons = {e.record.trial_id: e.reason for e in data.excluded}
    assert "5/10" in reasons["short"]
    assert "not reported" in reasons["missing"]
    assert "not a number" in reasons["text"]
    assert "infinite" in reasons["inf"]
    assert reasons["oops"].startswith("error") and "CUDA OOM" in reasons["oops"]
    assert [r.trial_id for r in data.front] == ["ok"]
    assert data.hypervolume == pytest.approx(0.25)


def test_history_known_answers() -> None:
    data = compute_review(staircase_records(), OBJS)
    # One point per completed trial (A, B, C, D, G), in record order; epochs count every trial so far.
    assert [h.trial_id for h in data.history] == ["A", "B", "C", "D", "G"]
    assert [h.n_completed for h in data.history] == [1, 2, 3, 4, 5]
    assert [h.total_epochs for h in data.history] == [10, 20, 33, 43, 57]
    assert [h.hypervolume for h in data.history] == pytest.approx([0.18, 0.34, 0.40, 0.40, 0.40])
    assert data.history[-1].hypervolume == pytest.approx(data.hypervolume)


def test_fronts_by_method_answer_which_method_dominates() -> None:
    records = [
        rec("m1", 0.9, 0.3),
        rec("s1", 0.85, 0.25, method="sat"),
        rec("m2", 0.7, 0.5),
        rec("t1", 0.95, 0.1, method="trades"),
        rec("s2", 0.6, 0.45, method="sat"),
        rec("m3", 0.65, 0.35),  # dominated within mtard
    ]
    data = compute_review(records, OBJS)
    assert data.methods == ["mtard", "sat", "trades"]
    assert {m: [r.trial_id for r in rs] for m, rs in data.fronts_by_method.items()} == {
        "mtard": ["m2", "m1"],
        "sat": ["s2", "s1"],
        "trades": ["t1"],
    }
    assert data.hypervolume_by_method["mtard"] == pytest.approx(0.9 * 0.3 + 0.7 * 0.2)
    assert data.hypervolume_by_method["sat"] == pytest.approx(0.85 * 0.25 + 0.6 * 0.2)
    assert data.hypervolume_by_method["trades"] == pytest.approx(0.095)
    # SAT's front is dominated by MTARD's; TRADES contributes its high-clean corner.
    assert [r.trial_id for r in data.front] == ["m2", "m1", "t1"]
    assert data.hypervolume == pytest.approx(0.95 * 0.1 + 0.9 * 0.2 + 0.7 * 0.2)
    # Per-method history: each point carries the hypervolume of every method seen so far.
    assert data.history[1].hypervolume_by_method == pytest.approx({"mtard": 0.27, "sat": 0.2125})


def test_min_objective_needs_a_reference() -> None:
    loss = Objective("val_loss", "min", "validation loss")
    records = [
        TrialRecord("a", "complete", metrics={"val_clean_acc": 0.8, "val_loss": 0.5}, epochs=1, budget=1),
        TrialRecord("b", "complete", metrics={"val_clean_acc": 0.6, "val_loss": 0.2}, epochs=1, budget=1),
    ]
    assert math.isnan(compute_review(records, [CLEAN, loss]).hypervolume)
    with_ref = Objective("val_loss", "min", "validation loss", reference=1.0)
    data = compute_review(records, [CLEAN, with_ref])
    assert [r.trial_id for r in data.front] == ["b", "a"]
    # gains over (0, 1): a = (0.8, 0.5), b = (0.6, 0.8) -> 0.8*0.5 + 0.6*0.3
    assert data.hypervolume == pytest.approx(0.4 + 0.18)
    assert "n/a" in render_front_table(compute_review(records, [CLEAN, loss]))


def test_empty_and_invalid() -> None:
    data = compute_review([], OBJS)
    assert data.front == [] and data.hypervolume == 0.0 and data.history == []
    assert "no trial is eligible" in render_front_table(data)
    pareto_figure(data)  # renders an empty plot without error
    with pytest.raises(MtardError, match="direction"):
        Objective("val_clean_acc", "maximise", "x")


def test_record_round_trip() -> None:
    r = rec("A", 0.9, 0.2, is_default=True)
    line = json.dumps(r.to_dict())
    assert TrialRecord.from_dict(json.loads(line)) == r
    assert TrialRecord.from_dict({**r.to_dict(), "added_later": 1}) == r


def test_render_table_lists_front_and_excluded() -> None:
    text = render_front_table(compute_review(staircase_records(), OBJS))
    assert "hypervolume 0.4000" in text
    lines = text.splitlines()
    row_a = next(line for line in lines if line.split()[:2] == ["3", "A"])
    assert "0.9000" in row_a and "0.2000" in row_a and "tiny_robust" in row_a and "/ckpt/A.pt" in row_a
    assert any("D" in line and "dominated" in line for line in lines)  # the defaults trial lost
    for tid in "EFGH":
        assert any(line.strip().startswith(tid + " ") for line in lines)
    assert "optim.lr" in text and PGD.label in text


def test_render_table_shows_searched_teachers_and_method_once() -> None:
    searched = {"optim.lr": 0.1, "teachers.clean": "tiny_clean", "teachers.robust": "tiny_robust", "method.name": "mtard"}
    text = render_front_table(compute_review([rec("A", 0.9, 0.2, params=searched)], OBJS))
    header = next(line for line in text.splitlines() if line.split()[:2] == ["#", "trial"])
    row = next(line for line in text.splitlines() if line.split()[:2] == ["1", "A"])
    assert "clean teacher" in header and "robust teacher" in header and "optim.lr" in header
    assert "teachers.clean" not in header and "method.name" not in header
    assert row.split().count("tiny_clean") == 1 and row.split().count("mtard") == 1


# ---------------------------------------------------------------- files vs brute force


def random_records(n: int = 60, seed: int = 0) -> list[TrialRecord]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        status = rnd.choices(["complete", "stopped", "diverged", "error", "running"], [6, 2, 1, 1, 1])[0]
        budget = 8
        epochs = budget if status == "complete" and rnd.random() > 0.1 else rnd.randint(0, budget - 1)
        clean = round(rnd.uniform(0.3, 0.95), 2)  # coarse grid: ties and duplicates happen
        pgd = round(max(0.0, 1.0 - clean - rnd.uniform(0.0, 0.4)), 2)
        if status == "complete" and rnd.random() < 0.05:
            pgd = math.nan
        method = rnd.choice(["mtard", "sat", "trades"])
        params = {"optim.lr": rnd.choice([0.01, 0.05, 0.1]), "method.name": method}
        if method == "mtard":
            params["balance.temp_lr"] = rnd.uniform(0.0, 0.1)
        out.append(
            rec(f"t{i:03d}", clean, pgd, status=status, epochs=epochs, budget=budget, method=method,
                params=params, is_default=(i == 0), reason="" if status == "complete" else status)
        )
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pareto_csv_is_the_brute_force_front_of_trials_csv(tmp_path: Path) -> None:
    records = random_records()
    data = write_review(tmp_path, records, OBJS)
    trials = _read_csv(tmp_path / "trials.csv")
    assert [t["trial_id"] for t in trials] == [r.trial_id for r in records]

    def ok(t: dict[str, str]) -> bool:
        vals = [float(t[o.metric]) if t[o.metric] else math.nan for o in OBJS]
        return t["status"] == "complete" and t["epochs"] == t["budget"] and all(math.isfinite(v) for v in vals)

    eligible = [(t["trial_id"], float(t["val_clean_acc"]), float(t["val_pgd_acc"])) for t in trials if ok(t)]
    brute = [
        p for p in eligible
        if not any(q[1] >= p[1] and q[2] >= p[2] and (q[1] > p[1] or q[2] > p[2]) for q in eligible)
    ]
    brute.sort(key=lambda p: (p[1], p[2], [e[0] for e in eligible].index(p[0])))
    front_rows = _read_csv(tmp_path / "pareto.csv")
    assert [r["trial_id"] for r in front_rows] == [p[0] for p in brute]
    assert len(brute) >= 3
    # Reasons in trials.csv: empty exactly for the eligible trials; on_front marks the front.
    assert {t["trial_id"] for t in trials if not t["reason"]} == {p[0] for p in eligible}
    assert {t["trial_id"] for t in trials if t["on_front"] == "true"} == {p[0] for p in brute}

    # pareto.csv: objectives exact, one column per searched dotted path, method, teachers, checkpoint, default flag.
    by_id = {r.trial_id: r for r in records}
    for row in front_rows:
        r = by_id[row["trial_id"]]
        assert float(row["val_clean_acc"]) == r.metrics["val_clean_acc"]
        assert float(row["optim.lr"]) == r.params["optim.lr"]
        assert row["method.name"] == row["method"] == r.method
        assert row["balance.temp_lr"] == ("" if r.method != "mtard" else repr(r.params["balance.temp_lr"]))
        assert row["teacher_clean"] == r.teachers.get("clean", "")
        assert row["checkpoint"] == r.checkpoint
        assert row["is_default"] == ("true" if r.is_default else "false")

    # pareto.json: the same front, objectives with labels, the hypervolume, strict JSON (no NaN).
    text = (tmp_path / "pareto.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert [m["trial_id"] for m in doc["front"]] == [p[0] for p in brute]
    assert doc["objectives"][1] == {"metric": "val_pgd_acc", "direction": "max", "label": PGD.label, "reference": None}
    assert doc["hypervolume"] == pytest.approx(data.hypervolume)
    assert set(doc["hypervolume_by_method"]) == set(data.fronts_by_method)
    assert doc["front"][0]["params"] == by_id[doc["front"][0]["trial_id"]].params
    assert {e["trial_id"] for e in doc["excluded"]} == {t["trial_id"] for t in trials if t["reason"]}


def test_hypervolume_csv_history(tmp_path: Path) -> None:
    records = random_records(seed=1)
    data = write_review(tmp_path, records, OBJS)
    rows = _read_csv(tmp_path / "hypervolume.csv")
    completed = [r for r in records if r.status == "complete"]
    assert [int(r["n_completed"]) for r in rows] == list(range(1, len(completed) + 1))
    assert [r["trial_id"] for r in rows] == [r.trial_id for r in completed]
    # Epoch totals: every trial up to and including the completed one, failed ones included.
    expected, running = [], 0
    for r in records:
        running += r.epochs
        if r.status == "complete":
            expected.append(running)
    assert [int(r["total_epochs"]) for r in rows] == expected
    hv = [float(r["hypervolume"]) for r in rows]
    assert all(b >= a for a, b in zip(hv, hv[1:])) and hv[-1] == pytest.approx(data.hypervolume)
    for m in data.methods:
        col = [float(r[f"hypervolume_{m}"]) for r in rows if r[f"hypervolume_{m}"]]
        assert all(b >= a for a, b in zip(col, col[1:]))
        assert col[-1] == pytest.approx(data.hypervolume_by_method[m])


# ---------------------------------------------------------------- figure


def test_pareto_figure(tmp_path: Path) -> None:
    records = staircase_records() + [rec("S", 0.75, 0.1, method="sat")]
    data = compute_review(records, OBJS)
    fig = pareto_figure(data)
    (ax,) = fig.axes
    assert CLEAN.label in ax.get_xlabel() and PGD.label in ax.get_ylabel()
    assert "hypervolume 0.4000" in ax.get_title()
    labels = ax.get_legend().get_texts()
    legend = [t.get_text() for t in labels]
    assert any(t.startswith("official defaults") for t in legend)
    assert any(t.startswith("Pareto front") for t in legend)
    assert any(t.startswith("mtard front") for t in legend) and any(t.startswith("sat front") for t in legend)
    fig.savefig(tmp_path / "front.png")
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- TensorBoard


def _accumulator(log_dir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def _write_in_stages(exp_dir: Path, records: list[TrialRecord]) -> None:
    """As the driver does: write after each trial ends, restart the writer midway, repeat a write."""
    tb = TensorBoardReview(exp_dir, OBJS)
    for k in range(1, 5):
        tb.write(compute_review(records[:k], OBJS))
    tb.close()
    tb = TensorBoardReview(exp_dir, OBJS)  # driver restart: same run dir, keep appending
    tb.write(compute_review(records[:4], OBJS))  # nothing new
    tb.write(compute_review(records, OBJS))
    tb.write(compute_review(records, OBJS))  # nothing new
    tb.close()


def test_tensorboard_events_read_back(tmp_path: Path) -> None:
    records = staircase_records() + [rec("S", 0.75, 0.1, method="sat")]
    _write_in_stages(tmp_path, records)
    acc = _accumulator(tmp_path / "review")
    tags = acc.Tags()
    assert FIGURE_TAG in tags["images"]

    full = compute_review(records, OBJS)
    hv_trials = acc.Scalars(HV_TRIALS_TAG)
    assert [e.step for e in hv_trials] == [h.n_completed for h in full.history] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in hv_trials] == pytest.approx([h.hypervolume for h in full.history])
    hv_epochs = acc.Scalars(HV_EPOCHS_TAG)
    # a point at every finished trial's epochs: the third trial stopped (3 epochs) and moved no front
    assert [e.step for e in hv_epochs] == [10, 20, 23, 33, 43, 57, 69]
    assert hv_epochs[2].value == hv_epochs[1].value
    assert hv_epochs[-1].value == pytest.approx(0.40)
    assert acc.Scalars("hypervolume_by_method/sat")[-1].value == pytest.approx(0.075)
    assert acc.Scalars("hypervolume_by_method/mtard")[-1].value == pytest.approx(0.40)

    images = acc.Images(FIGURE_TAG)
    # A figure whenever a trial finished (step: finished trials), the last one with every trial.
    assert [i.step for i in images] == [1, 2, 3, 4, len(records)]
    assert images[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[-1].width > 300 and images[-1].height > 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_tensorboard_server_serves_the_pareto_image(tmp_path: Path) -> None:
    records = staircase_records()
    _write_in_stages(tmp_path, records)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "tensorboard.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        query = urllib.parse.urlencode({"run": "review", "tag": FIGURE_TAG})
        tags: dict = {}
        entries: list = []
        # TensorBoard loads an event file progressively: wait until it has read the last figure.
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "tensorboard.log").read_text()
            try:
                tags = json.loads(_get(f"{base}/data/plugin/images/tags"))
                if FIGURE_TAG in tags.get("review", {}):
                    entries = json.loads(_get(f"{base}/data/plugin/images/images?{query}"))
                    if entries and entries[-1]["step"] == len(records):
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"TensorBoard did not serve {FIGURE_TAG} up to step {len(records)} in 90 s: {tags} {entries}\n{(tmp_path / 'tensorboard.log').read_text()}")
        assert "review" in json.loads(_get(f"{base}/data/runs"))
        assert entries[-1]["step"] == len(records)  # the figure of the last stage (one per finished trial)
        png = _get(f"{base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        query = urllib.parse.urlencode({"run": "review", "tag": HV_TRIALS_TAG})
        scalars = json.loads(_get(f"{base}/data/plugin/scalars/scalars?{query}"))
        assert [s[1] for s in scalars] == [1, 2, 3, 4, 5]
        assert scalars[-1][2] == pytest.approx(0.40)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


# ---------------------------------------------------------------- evaluate_front (test split)


CHEAP = ["clean", "pgd20_sat", "pgd20_trades", "cw"]


@pytest.fixture(scope="module")
def digits_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real mtard checkpoints of a tiny digits MLP (a briefly and a longer trained one)."""
    import torch

    from conftest import train_digits_mlp
    from mtard.checkpoint import model_spec, save
    from mtard.config import DataConfig, EvalConfig, TrainConfig, to_dict
    from mtard.data import load_splits
    from mtard.models import build_model

    root = tmp_path_factory.mktemp("ckpts")
    cfg = TrainConfig(data=DataConfig(name="digits"), eval=EvalConfig(eps=0.1))
    splits = load_splits(cfg.data)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    paths = []
    for stage in range(2):
        train_digits_mlp(model, opt, splits, epochs=2 if stage == 0 else 6)
        path = root / f"stage{stage}" / "checkpoint.pt"
        spec = model_spec("mlp", num_classes=10, in_channels=1, image_size=8, dataset="digits")
        save(path, {"model": spec, "state_dict": model.state_dict(), "config": to_dict(cfg)})
        paths.append(path)
    return paths[0], paths[1]


def test_evaluate_front(tmp_path: Path, digits_checkpoints: tuple[Path, Path], capsys) -> None:
    from mtard.cli import main
    from mtard.evaluate import evaluate_checkpoint

    first, second = digits_checkpoints
    records = [
        rec("early", 0.70, 0.30, is_default=True),
        rec("late", 0.90, 0.10),
        rec("lost", 0.50, 0.50),  # on the front, but its checkpoint file is gone
        rec("dominated", 0.60, 0.05),
    ]
    records[0].checkpoint = f"file://{first}"
    records[1].checkpoint = str(second)
    records[2].checkpoint = str(tmp_path / "nowhere.pt")
    exp = tmp_path / "exp"
    write_review(exp, records, OBJS)

    path = evaluate_front(exp, attacks=CHEAP, max_samples=24, device="cpu")
    assert path == exp / "pareto_verified.json"
    doc = json.loads(path.read_text())
    assert doc["split"] == "test"
    assert [a["attack"] for a in doc["attacks"]] == CHEAP
    assert all("ε=0.1" in a["description"] for a in doc["attacks"][1:])  # the run's eval.eps, named
    members = {m["trial_id"]: m for m in doc["members"]}
    assert list(members) == ["lost", "early", "late"]  # the front, along clean accuracy
    assert "does not exist" in members["lost"]["error"]
    assert members["early"]["val"] == {"val_clean_acc": 0.70, "val_pgd_acc": 0.30}
    assert members["early"]["is_default"] is True and members["early"]["teachers"] == TEACHERS
    for tid in ("early", "late"):
        m = members[tid]
        assert m["samples"] == 24 and set(m["test"]) == set(CHEAP)
        assert all(0.0 <= v <= 1.0 for v in m["test"].values())
        assert m["test"]["clean"] >= max(m["test"][a] for a in CHEAP[1:])
    # The same numbers as evaluating the checkpoint directly.
    direct = evaluate_checkpoint(second, split="test", attacks=["clean"], max_samples=24, device="cpu",
                                 out=tmp_path / "direct.json")
    assert members["late"]["test"]["clean"] == direct["results"][0]["accuracy"]
    assert (exp / "verified" / "late.eval-test.json").is_file()

    rows = _read_csv(exp / "pareto_verified.csv")
    assert len(rows) == 2 * len(CHEAP) + 1
    row = next(r for r in rows if r["trial_id"] == "late" and r["attack"] == "cw")
    assert float(row["val:val_clean_acc"]) == 0.90 and float(row["test_accuracy"]) == members["late"]["test"]["cw"]
    assert row["description"].startswith("CW∞")

    # The CLI prints the table and exits 0; a directory without pareto.json is a one-line error.
    assert main(["evaluate-front", str(exp), "--attacks", "clean,pgd20_sat", "--max-samples", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test pgd20_sat" in out and "late" in out and "PGD-20 (SAT" in out and "written:" in out
    assert main(["evaluate-front", str(tmp_path / "empty")]) == 2
    assert "pareto.json" in capsys.readouterr().err


# ---------------------------------------------------------------- noise: intervals on the validation images


def test_front_accuracies_carry_their_images_and_wilson_intervals(tmp_path: Path) -> None:
    """A digits-like front one image apart (281, 282, 283 of 288): every interval overlaps its neighbour's."""
    from mtard.stats import binomial_interval

    records = [rec("A", 283 / 288, 200 / 288), rec("B", 282 / 288, 230 / 288), rec("C", 281 / 288, 260 / 288), rec("D", 0.5, 0.1)]
    for r in records:
        r.metrics["val_samples"] = 288
    data = write_review(tmp_path, records, OBJS)
    assert [r.trial_id for r in data.front] == ["C", "B", "A"]
    rows = {r["trial_id"]: r for r in csv.DictReader(open(tmp_path / "pareto.csv"))}
    a = binomial_interval(283, 288)
    assert float(rows["A"]["val_clean_acc_ci_low"]) == a.low and float(rows["A"]["val_clean_acc_ci_high"]) == a.high
    assert rows["A"]["val_samples"] == "288"
    doc = json.loads((tmp_path / "pareto.json").read_text())
    assert doc["front"][2]["intervals"]["val_clean_acc"] == [a.low, a.high] and doc["front"][2]["samples"] == 288
    # clean: one image apart, indistinguishable; PGD: 30 images apart, told apart
    assert doc["indistinguishable"] == [{"members": ["C", "B"], "objective": "val_clean_acc"},
                                        {"members": ["B", "A"], "objective": "val_clean_acc"}]
    text = render_front_table(data)
    assert f"0.9826 [{a.low:.3f}, {a.high:.3f}]" in text and "95 % Wilson interval on 288 validation images" in text
    assert "C and B are indistinguishable on val_clean_acc" in text
    fig = pareto_figure(data)
    whole, zoom = fig.axes
    assert whole.get_xlim()[0] < 0.5 < 0.9 < zoom.get_xlim()[0]  # the zoom holds the front, not D
    assert "Wilson" in zoom.get_title() and len(zoom.containers) == 3  # one error bar per front member
    fig.savefig(tmp_path / "front.png")
