"""`mtard confirm-front`: real Ray (local), Optuna, torch; one tiny finished search and ONE
confirmation of it (its 2 front members + the diverging official-defaults trial, 2 seeds, 2 epochs,
clean + PGD-20 on 100 test images), checked by several tests; the aggregates and the confirmed
front against hand computations; SIGKILL of the confirm driver, then --resume; bad input.
The pure rules (no Ray) are at the top.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from scipy.stats import kendalltau
from test_search_resume import _kill_session, _start_search, _wait_for
from test_search_run import DIVERGING_LR, write_space

from mtard.errors import MtardError
from mtard.pareto import front
from mtard.search.confirm_review import BASELINE, DEFAULTS, FRONT, Member, RunResult, compute_confirm
from mtard.search.records import Objective

OBJECTIVES = [Objective("val_clean_acc", "max"), Objective("val_pgd_acc", "max")]
ATTACKS = ["clean", "pgd20_sat"]


def _run(member: str, seed: int, clean: float, pgd: float, status: str = "complete", reason: str = "") -> RunResult:
    test = {"clean": clean, "pgd20_sat": pgd} if status == "complete" else {}
    return RunResult(member, seed, status, reason, 2, 2, test, 100)


# ---------------------------------------------------------------- pure: no Ray


def test_compute_confirm_known_answers() -> None:
    members = [
        Member("a", FRONT, "mtard", {}, {"val_clean_acc": 0.9, "val_pgd_acc": 0.5}),
        Member("b", FRONT, "mtard", {}, {"val_clean_acc": 0.8, "val_pgd_acc": 0.6}),
        Member("c", FRONT, "mtard", {}, {"val_clean_acc": 0.7, "val_pgd_acc": 0.7}),
        Member("d", DEFAULTS, "mtard", {}, {"val_clean_acc": 0.6, "val_pgd_acc": 0.4}, is_default=True),
        Member("baseline-sat", BASELINE, "sat"),
    ]
    runs = [
        _run("a", 0, 0.80, 0.50), _run("a", 1, 0.82, 0.52),  # a: dominated by b on the test split
        _run("b", 0, 0.85, 0.55), _run("b", 1, 0.87, 0.57),
        _run("c", 0, 0.70, 0.60), _run("c", 1, 0.70, float("nan"), status="diverged", reason="loss is nan"),
        _run("d", 0, 0.60, 0.40), _run("d", 1, 0.62, 0.42),
        _run("baseline-sat", 0, 0.75, 0.65), _run("baseline-sat", 1, 0.77, 0.67),
    ]
    data = compute_confirm(members, runs, OBJECTIVES, ATTACKS, [0, 1])
    a = data.summary("a").attacks["clean"]
    assert (a.n, a.mean, a.sd) == (2, pytest.approx(0.81), pytest.approx(statistics.stdev([0.80, 0.82])))
    # c diverged on seed 1: reported with that seed's failure, averaged over seed 0 only, off the front
    c = data.summary("c")
    assert c.attacks["clean"].n == 1 and [r.seed for r in c.failures] == [1]
    assert data.excluded == {"c": "seed 1: diverged (loss is nan)"}
    assert data.front == ["baseline-sat", "b"]  # along objective 0 (clean, ascending)
    assert data.proxy_front == ["a", "b", "c"] and data.survivors == ["b"] and data.survival == pytest.approx(1 / 3)
    # τ over the members with a proxy value (not the baseline): c has a test mean from seed 0
    assert data.tau_members == ["a", "b", "c", "d"]
    assert data.tau["val_clean_acc"] == pytest.approx(kendalltau([0.9, 0.8, 0.7, 0.6], [0.81, 0.86, 0.70, 0.61]).statistic)
    assert data.tau["val_pgd_acc"] == pytest.approx(kendalltau([0.5, 0.6, 0.7, 0.4], [0.51, 0.56, 0.60, 0.41]).statistic) == 1.0
    # 2 seeds: t(0.975, 1) = 12.7, the neighbours' intervals overlap on both objectives
    assert data.indistinguishable == [{"members": ["baseline-sat", "b"], "objective": m} for m in ("val_clean_acc", "val_pgd_acc")]


def test_an_objective_without_a_test_attack_is_refused() -> None:
    with pytest.raises(MtardError, match="objective 'loss' has no test-split counterpart"):
        compute_confirm([], [], [Objective("loss", "min")], ATTACKS, [0])


# ---------------------------------------------------------------- one tiny search, one confirmation


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory, _trained_teacher_store, local_ray):
    """A 3-trial search of 1 epoch (the defaults trial diverges), then its confirmation."""
    from mtard.search.confirm import run_confirm
    from mtard.search.run import run_search

    catalog, _ = _trained_teacher_store
    root = tmp_path_factory.mktemp("confirm")
    space_path = write_space(root / "space", catalog, num_samples=3, epochs=1, base_lr=DIVERGING_LR,
                             space={"optim.lr": {"choice": [DIVERGING_LR, 0.05, 0.1, 0.2]}, "balance.w_lr": {"loguniform": [0.005, 0.1]}})
    review = run_search(space_path, storage=str(root / "runs"), name="s")
    exp = root / "runs" / "s"
    t0 = time.monotonic()
    data = run_confirm(exp, seeds=2, epochs=2, attacks=ATTACKS, max_samples=100)
    return SimpleNamespace(exp=exp, review=review, data=data, out=exp / "confirm", seconds=time.monotonic() - t0)


def _doc(c) -> dict:
    return json.loads((c.out / "confirmed.json").read_text())


@pytest.mark.slow
def test_every_member_and_seed_trains_the_stated_budget_with_its_own_parameters(confirmed) -> None:
    from mtard.checkpoint import read

    review = confirmed.review
    front_ids = [r.trial_id for r in review.front]
    default = next(r for r in review.records if r.is_default)
    doc = _doc(confirmed)
    assert [m["member_id"] for m in doc["members"]] == front_ids + [default.trial_id]
    assert [m["kind"] for m in doc["members"]] == ["front"] * len(front_ids) + ["defaults"]
    newest = json.loads((confirmed.out / "checkpoints.json").read_text())
    by_run = {p.name.removeprefix("run-"): p for p in confirmed.out.glob("run-*")}
    assert len(by_run) == 2 * len(doc["members"])
    records = {r.trial_id: r for r in review.records}
    for m in doc["members"]:
        for run in m["runs"]:
            if m["member_id"] == default.trial_id:
                continue
            assert run["status"] == "complete" and run["epochs"] == 2 and run["samples"] == 100
            trial_id = next(t for t, v in newest.items() if Path(v["checkpoint"]).parent.parent == by_run[f"{m['member_id']}-s{run['seed']}"])
            cfg = read(newest[trial_id]["checkpoint"])["config"]
            # the member's own searched values, read back from its record; the run's seed; the stated budget
            for path, value in records[m["member_id"]].params.items():
                section, key = path.split(".")
                assert cfg[section][key] == value
            assert cfg["runtime"]["seed"] == run["seed"] and cfg["optim"]["epochs"] == 2
            assert cfg["data"]["split_seed"] == 0  # the search's train/val split
    # seeds change the run: a member's two seeds do not train the same model
    complete = [m for m in doc["members"] if m["member_id"] != default.trial_id]
    assert any(m["runs"][0]["val"] != m["runs"][1]["val"] for m in complete)


@pytest.mark.slow
def test_aggregates_equal_a_hand_computation_from_the_seed_rows(confirmed) -> None:
    doc = _doc(confirmed)
    rows = list(csv.DictReader(open(confirmed.out / "confirmed.csv")))
    assert len(rows) == 3 * len(doc["members"])  # 2 seeds + 1 mean row each
    for m in doc["members"]:
        ok = [r for r in m["runs"] if r["status"] == "complete"]
        for a in ATTACKS:
            values = [r["test"][a] for r in ok]
            got = m["test"][a]
            if len(values) == 2:
                assert got["mean"] == pytest.approx(statistics.mean(values)) and got["sd"] == pytest.approx(statistics.stdev(values))
                half = 12.706204736174698 * got["sd"] / math.sqrt(2)
                assert (got["ci_low"], got["ci_high"]) == pytest.approx((got["mean"] - half, got["mean"] + half))
                mean_row = next(r for r in rows if r["member"] == m["member_id"] and r["seed"] == "mean")
                assert float(mean_row[a]) == pytest.approx(got["mean"])
            for r in ok:  # each seed's own binomial interval holds its accuracy
                lo, hi = r["test_interval"][a]
                assert lo <= r["test"][a] <= hi
    # the confirmed front is the brute-force front of the means
    eligible = [m for m in doc["members"] if not m["excluded"]]
    points = [(m["test"]["clean"]["mean"], m["test"]["pgd20_sat"]["mean"]) for m in eligible]
    assert set(doc["confirmed_front"]) == {eligible[i]["member_id"] for i in front(points, ["max", "max"])}
    proxies = [m for m in doc["members"] if all(v is not None for v in m["proxy"].values()) and m["test"]["clean"]["mean"] is not None]
    expected = kendalltau([m["proxy"]["val_clean_acc"] for m in proxies], [m["test"]["clean"]["mean"] for m in proxies]).statistic
    assert doc["kendall_tau"]["val_clean_acc"] == (None if math.isnan(expected) else pytest.approx(expected))
    survivors = [m for m in doc["proxy_front"] if m in doc["confirmed_front"]]
    assert doc["proxy_front_surviving"] == survivors and doc["proxy_front_survival"] == pytest.approx(len(survivors) / len(doc["proxy_front"]))


@pytest.mark.slow
def test_a_diverging_member_is_reported_with_each_seeds_failure(confirmed) -> None:
    doc = _doc(confirmed)
    default = next(m for m in doc["members"] if m["is_default"])
    assert [r["status"] for r in default["runs"]] == ["diverged", "diverged"]
    assert "seed 0: diverged" in default["excluded"] and "seed 1: diverged" in default["excluded"]
    assert default["member_id"] not in doc["confirmed_front"]
    md = (confirmed.out / "confirmed.md").read_text()
    assert f"| {default['member_id']} (mtard, official defaults) | 0/2 | - | - |" in md
    assert f"{default['member_id']} seed 1: diverged" in md
    assert (confirmed.out / "confirmed.png").stat().st_size > 0 and list((confirmed.out / "review").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_bad_input_is_one_clear_line_and_loses_nothing(confirmed, tmp_path: Path, capsys, monkeypatch) -> None:
    from mtard.cli import main

    exp = confirmed.exp
    before = (confirmed.out / "confirmed.json").read_bytes()
    front_id = confirmed.review.front[0].trial_id
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("space.yaml", "base_config.yaml"):
        shutil.copy(exp / name, empty / name)
    (empty / "pareto.json").write_text(json.dumps({**json.loads((exp / "pareto.json").read_text()), "front": []}))
    (tmp_path / "file").write_text("not a folder")
    cases = {
        (str(tmp_path),): f"{tmp_path} is not a search (no space.yaml there)",
        (str(empty),): "the search's front is empty",
        (str(exp), "--members", "nope"): "--members: no trial 'nope' in this search",
        (str(exp), "--seeds", "0"): "--seeds must be >= 1",
        (str(exp), "--epochs", "0"): "--epochs must be >= 1",
        (str(exp), "--attacks", "clean,pgd7"): "unknown attack 'pgd7'",
        (str(exp), "--members", front_id, "--storage", str(tmp_path / "file")): "confirmation output",
        (str(exp),): "already holds a confirmation: continue it with --resume",
    }
    for args, message in cases.items():
        assert main(["confirm-front", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (args, err)
    # a teacher missing on this machine (not cached, not auto-trainable): refused before any run starts
    missing = tmp_path / "missing"
    missing.mkdir()
    for name in ("pareto.json", "records.jsonl", "base_config.yaml"):
        shutil.copy(exp / name, missing / name)
    catalog = tmp_path / "catalog.yaml"
    space_text = (exp / "space.yaml").read_text()
    source_catalog = next(line.split(":", 1)[1].strip() for line in space_text.splitlines() if "teachers.catalog" in line)
    catalog.write_text(Path(source_catalog).read_text().replace("auto_train: true", "auto_train: false"))
    (missing / "space.yaml").write_text(space_text.replace(source_catalog, str(catalog)))
    monkeypatch.setenv("MTARD_TEACHERS", str(tmp_path / "no_teachers"))
    assert main(["confirm-front", str(missing), "--members", front_id]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiny_" in err, err
    assert not (missing / "confirm" / "runs.jsonl").exists()
    assert (confirmed.out / "confirmed.json").read_bytes() == before


@pytest.mark.slow
def test_sigkill_then_resume_retrains_nothing_and_loses_nothing(confirmed, tmp_path: Path, local_ray) -> None:
    from mtard.search.confirm import run_confirm

    member = confirmed.review.front[0].trial_id
    out = tmp_path / "store"
    runs = out / "s-confirm" / "runs.jsonl"
    # The driver joins the test's cluster (a `ray job` on a head); the resume runs in this process on it.
    args = [str(confirmed.exp), "--storage", str(out), "--members", member, "--seeds", "3", "--epochs", "2", "--attacks", "clean", "--max-samples", "50"]
    proc = _start_search(args, tmp_path, tmp_path / "first.log", command="confirm-front", ray=local_ray)
    try:
        _wait_for(lambda: runs.is_file() and f'"member_id": "{member}"' in runs.read_text(), 300, proc, "the member's first run", poll=0.05)
    finally:
        _kill_session(proc)
    def mine(text: str) -> list[dict]:  # the member's runs (the defaults trial is confirmed beside it)
        return [r for r in map(json.loads, text.splitlines()) if r["member_id"] == member]

    before = mine(runs.read_text())
    assert len({r["seed"] for r in before}) < 3, (tmp_path / "first.log").read_text()[-3000:]
    run_confirm(confirmed.exp, storage=str(out), resume=True)
    after = {r["seed"]: r for r in mine(runs.read_text())}
    assert sorted(after) == [0, 1, 2] and all(r["status"] == "complete" and r["epochs"] == 2 for r in after.values())
    for r in before:  # nothing lost: the runs recorded before the kill are unchanged
        assert after[r["seed"]] == r
    for folder in (out / "s-confirm").glob("run-*"):  # nothing retrained: no epoch reported twice by training
        trained = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        epochs = [r["epoch"] for r in trained if "test_clean" not in r]
        assert epochs == sorted(set(epochs)), (folder.name, epochs)
    doc = json.loads((out / "s-confirm" / "confirmed.json").read_text())
    assert doc["members"][0]["member_id"] == member and doc["members"][0]["test"]["clean"]["n_seeds"] == 3
