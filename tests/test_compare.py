"""`mtard compare`: several searches in one review, on experiment directories written by the real writers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtard.cli import main
from mtard.errors import MtardError
from mtard.search.compare import compare, parse_experiments
from mtard.search.files import REVIEW_RUN
from mtard.search.records import Objective, TrialRecord, append_record
from mtard.search.render import FIGURE_TAG, write_review

CLEAN = Objective("val_clean_acc", "max", "val clean accuracy")
PGD = Objective("val_pgd_acc", "max", "val PGD-20 accuracy (L∞ ε=0.2, step 0.05)")


def trial(tid: str, clean: float, pgd: float, method: str, *, default: bool = False) -> TrialRecord:
    return TrialRecord(trial_id=tid, status="complete", metrics={"val_clean_acc": clean, "val_pgd_acc": pgd},
                       epochs=4, budget=4, method=method, is_default=default, params={"optim.lr": 0.1})


def experiment(root: Path, name: str, records: list[TrialRecord], *, objectives=(CLEAN, PGD), dataset="digits") -> Path:
    """What `mtard search` leaves behind: records.jsonl, pareto.json (+ csvs) and base_config.yaml."""
    exp = root / name
    exp.mkdir(parents=True)
    for r in records:
        append_record(exp / "records.jsonl", r)
    write_review(exp, records, list(objectives))
    (exp / "base_config.yaml").write_text(yaml.safe_dump({"name": "x", "data": {"name": dataset}}))
    return exp


@pytest.fixture
def two_searches(tmp_path: Path) -> tuple[Path, Path]:
    mtard = experiment(tmp_path, "mtard_search", [
        trial("a", 0.90, 0.50, "mtard", default=True),
        trial("b", 0.95, 0.40, "mtard"),
        trial("c", 0.85, 0.45, "mtard"),  # dominated by a
    ])
    baselines = experiment(tmp_path, "baselines", [
        trial("s", 0.88, 0.47, "sat"),     # dominated by a: on SAT's own front only
        trial("t", 0.80, 0.60, "trades"),  # the most robust overall
    ])
    return mtard, baselines


def test_groups_fronts_and_hypervolumes_known_answers(two_searches, tmp_path: Path) -> None:
    mtard, baselines = two_searches
    data = compare([str(mtard), str(baselines)], tmp_path / "cmp")

    # One group per experiment; an experiment that searched several methods splits by method.
    assert data.methods == ["mtard_search", "baselines/sat", "baselines/trades"]
    assert [r.trial_id for r in data.front] == ["baselines/t", "mtard_search/a", "mtard_search/b"]
    assert {m: [r.trial_id for r in rs] for m, rs in data.fronts_by_method.items()} == {
        "mtard_search": ["mtard_search/a", "mtard_search/b"],
        "baselines/sat": ["baselines/s"],
        "baselines/trades": ["baselines/t"],
    }
    # Sweep from the largest clean accuracy: 0.95*0.40 + 0.90*(0.50-0.40) + 0.80*(0.60-0.50)
    assert data.hypervolume == pytest.approx(0.38 + 0.09 + 0.08)
    assert data.hypervolume_by_method["mtard_search"] == pytest.approx(0.38 + 0.09)
    assert data.hypervolume_by_method["baselines/sat"] == pytest.approx(0.88 * 0.47)

    out = tmp_path / "cmp"
    rows = list(csv.DictReader(open(out / "pareto.csv")))
    assert [r["trial_id"] for r in rows] == ["baselines/t", "mtard_search/a", "mtard_search/b"]
    assert json.loads((out / "compared.json").read_text()) == {
        "mtard_search": str(mtard.resolve()), "baselines": str(baselines.resolve())}
    board = EventAccumulator(str(out / REVIEW_RUN), size_guidance={"images": 0})
    board.Reload()
    assert len(board.Images(FIGURE_TAG)) == 1


def test_labels_from_the_command_line_and_a_rerun_replaces_the_review(two_searches, tmp_path: Path) -> None:
    mtard, baselines = two_searches
    out = tmp_path / "cmp"
    assert main(["compare", f"MTARD={mtard}", f"base={baselines}", "--out", str(out)]) == 0
    assert main(["compare", f"MTARD={mtard}", f"base={baselines}", "--out", str(out)]) == 0
    board = EventAccumulator(str(out / REVIEW_RUN), size_guidance={"images": 0})
    board.Reload()
    assert len(board.Images(FIGURE_TAG)) == 1  # replaced, not appended
    assert {r["method"] for r in csv.DictReader(open(out / "trials.csv"))} == {"MTARD", "base/sat", "base/trades"}


def test_fronts_measured_differently_are_refused(tmp_path: Path) -> None:
    a = experiment(tmp_path, "a", [trial("x", 0.9, 0.5, "mtard")])
    other_attack = Objective("val_pgd_acc", "max", "val PGD-20 accuracy (L∞ ε=0.3, step 0.05)")
    b = experiment(tmp_path, "b", [trial("y", 0.9, 0.5, "sat")], objectives=(CLEAN, other_attack))
    with pytest.raises(MtardError, match=r"b was searched on .*ε=0.3.* but a on .*ε=0.2"):
        compare([str(a), str(b)], tmp_path / "cmp")
    c = experiment(tmp_path, "c", [trial("z", 0.9, 0.5, "sat")], dataset="cifar10")
    with pytest.raises(MtardError, match="c was searched on data set cifar10 but a on digits"):
        compare([str(a), str(c)], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()  # nothing written


def test_bad_arguments_name_the_problem(two_searches, tmp_path: Path) -> None:
    mtard, baselines = two_searches
    with pytest.raises(MtardError, match="at least two"):
        parse_experiments([str(mtard)])
    with pytest.raises(MtardError, match="two experiments are labelled 'mtard_search'"):
        parse_experiments([str(mtard), f"mtard_search={baselines}"])
    with pytest.raises(MtardError, match="pareto.json does not exist"):
        compare([str(mtard), str(tmp_path)], tmp_path / "cmp")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    with pytest.raises(MtardError, match="already holds something other than a comparison"):
        compare([str(mtard), str(baselines)], tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "notes.txt").read_text() == "mine"


def test_compare_and_the_review_import_no_ray() -> None:
    """Reading records and drawing a review needs no cluster library."""
    import subprocess
    import sys

    probe = "import sys, mtard.search.compare, mtard.search.verify; print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
