"""Several searches in one review: does one method's front dominate another's?

A search over `method.name` already draws one front per method. When the methods were
searched separately (one experiment each, e.g. an MTARD space and a SAT space on the same
base config), `compare` puts their trials together: each experiment becomes a group (its
label, or ``LABEL/METHOD`` when it searched several methods), and the usual review is
written for the union — the overall front, one front and hypervolume per group, the
figure in TensorBoard.

Fronts are only comparable when they were measured the same way, so the experiments must
share their objectives (metric, direction and the attack named in the label) and their
data set; otherwise `compare` refuses and says what differs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from mtard.config import read_yaml
from mtard.errors import MtardError
from mtard.search.files import BASE_CONFIG, RECORDS, REVIEW_RUN
from mtard.search.records import Objective, TrialRecord, read_records
from mtard.search.render import TensorBoardReview, review_search
from mtard.search.review import ReviewData
from mtard.storage import check_writable


def parse_experiments(args: list[str]) -> dict[str, Path]:
    """``DIR`` or ``LABEL=DIR`` arguments -> {label: dir}; the label defaults to the directory's name."""
    experiments: dict[str, Path] = {}
    for arg in args:
        label, sep, path = arg.partition("=")
        directory = Path(path if sep else arg)
        label = label if sep else directory.resolve().name
        same = [other for other, known in experiments.items() if known.resolve() == directory.resolve()]
        if same:
            raise MtardError(f"{directory} is given twice (as {same[0]} and {label}): its trials would count twice; compare different searches")
        if label in experiments:
            raise MtardError(
                f"two experiments are labelled {label!r} ({experiments[label]} and {directory}): "
                f"name them, e.g. {label}_a={experiments[label]} {label}_b={directory}"
            )
        experiments[label] = directory
    if len(experiments) < 2:
        raise MtardError("compare needs at least two experiment directories (e.g. runs/mtard_search runs/sat_search)")
    return experiments


def load_experiment(directory: Path) -> tuple[list[TrialRecord], list[Objective], str | None]:
    """An experiment's trial records, objectives and data set name, as `mtard search` wrote them."""
    pareto_json, records_path = directory / "pareto.json", directory / RECORDS
    for path in (pareto_json, records_path):
        if not path.is_file():
            raise MtardError(f"{path} does not exist: point at an experiment directory written by `mtard search` (e.g. runs/<name>)")
    objectives = [Objective.from_dict(o) for o in json.loads(pareto_json.read_text())["objectives"]]
    base = directory / BASE_CONFIG
    dataset = read_yaml(base).get("data", {}).get("name") if base.is_file() else None
    return read_records(records_path), objectives, dataset


def combine(experiments: dict[str, tuple[list[TrialRecord], list[Objective], str | None]]) -> tuple[list[TrialRecord], list[Objective]]:
    """The union of the experiments' trials, grouped by experiment (and method), on their shared objectives."""
    (first, (_, objectives, dataset)), *others = experiments.items()
    for label, (_, objs, data) in others:
        if [o.to_dict() for o in objs] != [o.to_dict() for o in objectives]:
            raise MtardError(
                f"{label} was searched on {_describe(objs)} but {first} on {_describe(objectives)}: "
                f"fronts measured differently cannot be compared"
            )
        if data and dataset and data != dataset:
            raise MtardError(f"{label} was searched on data set {data} but {first} on {dataset}: fronts on different data cannot be compared")
    combined = []
    for label, (records, _, _) in experiments.items():
        several = len({r.method for r in records}) > 1
        combined += [
            replace(r, trial_id=f"{label}/{r.trial_id}", method=f"{label}/{r.method}" if several else label)
            for r in records
        ]
    return combined, objectives


SOURCES = "compared.json"  # in the output directory: which experiments it compares


def compare(args: list[str], out_dir: Path) -> ReviewData:
    """Load, combine, and write the review (files + TensorBoard run `review`) into `out_dir`.

    `out_dir` must be new, empty, or an earlier comparison (whose review is then replaced).
    """
    sources = parse_experiments(args)
    experiments = {label: load_experiment(d) for label, d in sources.items()}
    records, objectives = combine(experiments)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MtardError(f"--out {out_dir} is a file, not a folder: choose another --out (the comparison writes several files)")
    check_writable(out_dir, "--out", "choose a folder you can write to")
    if any(out_dir.iterdir()):
        if not (out_dir / SOURCES).is_file():
            raise MtardError(f"{out_dir} already holds something other than a comparison: choose another --out")
        shutil.rmtree(out_dir / REVIEW_RUN, ignore_errors=True)  # a fresh figure and curves, not appended ones
    (out_dir / SOURCES).write_text(json.dumps({k: str(v.resolve()) for k, v in sources.items()}, indent=2) + "\n")
    with TensorBoardReview(out_dir, objectives) as board:
        return review_search(out_dir, records, objectives, board=board)


def _describe(objectives: list[Objective]) -> str:
    return ", ".join(f"{o.direction} {o.metric} [{o.label or o.metric}]" for o in objectives)
