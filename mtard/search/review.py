"""Review a search: from trial records, the Pareto front and its history (pure compute).

`compute_review(records, objectives)` derives which trials may enter the front (and why the
others may not), the overall front, one front per method, their hypervolumes and the
hypervolume history, as plain data (`ReviewData`). `mtard.search.render` turns it into files,
a terminal table, a figure and TensorBoard events; tests check the data.

Eligibility: a trial enters the front only if its status is ``complete``, it trained
its whole budget and every objective is a finite number (`records.trained_budget` and
`records.first_unusable_objective`: the rules `classify` applies too). A
trial stopped early by a scheduler reports numbers from a shorter schedule; mixing
them with full runs would let an unfinished trial look better than it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mtard import pareto
from mtard.errors import MtardError
from mtard.search.records import Objective, Status, TrialRecord, first_unusable_objective, trained_budget
from mtard.stats import Interval, accuracy_interval, overlap

__all__ = ["Excluded", "HistoryPoint", "ReviewData", "compute_review", "objective_values"]


class Excluded(NamedTuple):
    """A trial that may not enter the front, and why (one line, for tables and CSV)."""

    record: TrialRecord
    reason: str


@dataclass
class HistoryPoint:
    """The state of the search right after one more trial completed."""

    n_completed: int  # trials with status "complete" so far (this one included)
    total_epochs: int  # epochs trained so far by all trials up to this one in record order, failed ones included
    hypervolume: float  # of the front of the eligible trials so far
    trial_id: str  # the trial that just completed
    hypervolume_by_method: dict[str, float] = field(default_factory=dict)
    device_seconds: float = 0.0  # spent so far by all trials up to this one in record order (like total_epochs)


@dataclass
class ReviewData:
    """Everything the renderers need; plain data (no figures, no files)."""

    records: list[TrialRecord]
    objectives: list[Objective]
    front: list[TrialRecord]  # eligible trials on the overall front, ordered along objective 0
    fronts_by_method: dict[str, list[TrialRecord]]  # method -> its own front (same order)
    hypervolume: float  # of the overall front (NaN when not defined, see Objective.reference)
    hypervolume_by_method: dict[str, float]
    history: list[HistoryPoint]  # one point per completed trial, in record (= completion) order
    excluded: list[Excluded]  # records not eligible for the front, with the reason
    reference: list[float | None]  # hypervolume reference per objective
    eligible: list[TrialRecord]  # complete, full budget, finite objectives
    methods: list[str]  # in order of first appearance
    param_names: list[str]  # every searched dotted path, in order of first appearance
    n_completed: int  # trials with status "complete"
    total_epochs: int  # epochs trained by all trials
    device_seconds: float = 0.0  # spent by all trials (mtard.search.budget: GPUs or CPUs × time in epochs)
    device_kind: str = ""  # "GPU" | "CPU" | "" (records without costs)
    stop_reason: str = ""  # why the search started no more trials (budget, plateau), "" if it ran them all

    @property
    def device_hours(self) -> float:
        return self.device_seconds / 3600.0

    @property
    def device_hours_per_front_member(self) -> float:
        """What the search spent per trial it put on the front (NaN with an empty front)."""
        return self.device_hours / len(self.front) if self.front else math.nan

    def values(self, record: TrialRecord) -> tuple[float, ...]:
        """The record's objective values (NaN where missing or not a number)."""
        return objective_values(record, self.objectives)

    def intervals(self, record: TrialRecord) -> tuple[Interval, ...]:
        """95 % Wilson interval of each objective that is an accuracy on the validation images (NaN otherwise)."""
        return tuple(objective_interval(record, o) for o in self.objectives)

    def ties(self) -> list[dict]:
        """Front neighbours (along objective 0) whose intervals overlap on an objective: not told apart at 95 %."""
        out = []
        for a, b in zip(self.front, self.front[1:]):
            for o, ia, ib in zip(self.objectives, self.intervals(a), self.intervals(b)):
                if not math.isnan(ia.low) and not math.isnan(ib.low) and overlap(ia, ib):
                    out.append({"members": [a.trial_id, b.trial_id], "objective": o.metric})
        return out


SAMPLES_KEY = "val_samples"  # the validation images an epoch's accuracies were measured on (mtard.loop.validate)


def samples(record: TrialRecord) -> int | None:
    n = record.metrics.get(SAMPLES_KEY)
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) and n > 0 else None


def objective_interval(record: TrialRecord, objective: Objective) -> Interval:
    """The Wilson interval of an accuracy objective (`*_acc`) on the record's validation images; NaN when
    the objective is not an accuracy or the record predates `val_samples`."""
    n = samples(record)
    if n is None or not objective.metric.endswith("_acc"):
        return Interval(math.nan, math.nan)
    return accuracy_interval(_number(record.metrics.get(objective.metric)), n)


# ---------------------------------------------------------------- compute


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def objective_values(record: TrialRecord, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The record's objective values (NaN where missing or not a number)."""
    return tuple(_number(record.metrics.get(o.metric)) for o in objectives)


def _exclusion(record: TrialRecord, objectives: Sequence[Objective]) -> str:
    """Why `record` may not enter the front ("" when it may)."""
    why = f": {record.reason}" if record.reason else ""
    progress = f"{record.epochs}/{record.budget} epochs"
    before = {
        Status.ERROR: f"error after {progress}{why}",
        Status.DIVERGED: f"diverged after {progress}{why}",
        Status.STOPPED: f"stopped early after {progress}{why}",
    }
    if record.status is Status.RUNNING:
        return f"still running ({progress})"
    if record.status is not Status.COMPLETE:
        return before.get(record.status, f"unknown status {record.status!r}{why}")
    if not trained_budget(record.epochs, record.budget):
        return f"complete but trained {progress}, not its budget"
    metric = first_unusable_objective(record.metrics, [o.metric for o in objectives])
    if metric is None:
        return ""
    value = record.metrics.get(metric)
    if value is None:
        return f"objective {metric} was not reported"
    if math.isnan(_number(value)):
        return f"objective {metric} is NaN" if isinstance(value, float) else f"objective {metric} is not a number ({value!r})"
    return f"objective {metric} is infinite"


def _reference(objectives: Sequence[Objective]) -> list[float | None]:
    return [o.reference if o.reference is not None else (0.0 if o.direction == "max" else None) for o in objectives]


def _hypervolume(points: list[tuple[float, ...]], objectives: Sequence[Objective], reference: list[float | None]) -> float:
    """Hypervolume of `points`; NaN when undefined (a 'min' objective without reference, > 2 objectives)."""
    if any(r is None for r in reference) or len(objectives) > 2:
        return math.nan
    return pareto.hypervolume(points, [o.direction for o in objectives], [float(r) for r in reference])  # type: ignore[arg-type]


def _front(records: list[TrialRecord], points: list[tuple[float, ...]], directions: list[str]) -> list[TrialRecord]:
    idx = pareto.front(points, directions)  # type: ignore[arg-type]
    return [records[i] for i in pareto.sort_front(points, idx, directions)]  # type: ignore[arg-type]


def compute_review(records: list[TrialRecord], objectives: list[Objective], *, stop_reason: str = "") -> ReviewData:
    """The front, per-method fronts, hypervolumes, history, costs and exclusions of a search (pure).

    `stop_reason`: why the search started no more trials (it is the search's, not the records').
    """
    if not objectives:
        raise MtardError("a review needs at least one objective")
    records = list(records)
    objectives = list(objectives)
    directions = [o.direction for o in objectives]
    reference = _reference(objectives)

    def values(r: TrialRecord) -> tuple[float, ...]:
        return objective_values(r, objectives)

    eligible: list[TrialRecord] = []
    excluded: list[Excluded] = []
    methods: list[str] = []
    param_names: list[str] = []
    history: list[HistoryPoint] = []
    by_method: dict[str, list[TrialRecord]] = {}
    n_completed = total_epochs = 0
    spent_s = 0.0
    for r in records:
        if r.method not in methods:
            methods.append(r.method)
        param_names.extend(p for p in r.params if p not in param_names)
        total_epochs += int(r.epochs)
        spent_s += float(r.device_seconds)
        why = _exclusion(r, objectives)
        if why:
            excluded.append(Excluded(r, why))
        else:
            eligible.append(r)
            by_method.setdefault(r.method, []).append(r)
        if r.status is not Status.COMPLETE:
            continue
        n_completed += 1
        hv = _hypervolume([values(e) for e in eligible], objectives, reference)
        hv_m = {m: _hypervolume([values(e) for e in rs], objectives, reference) for m, rs in by_method.items()}
        history.append(HistoryPoint(n_completed, total_epochs, hv, r.trial_id, hv_m, spent_s))

    points = [values(r) for r in eligible]
    front = _front(eligible, points, directions)
    fronts_by_method = {}
    for m in methods:
        rs = by_method.get(m, [])
        if rs:
            fronts_by_method[m] = _front(rs, [values(r) for r in rs], directions)
    return ReviewData(
        records=records,
        objectives=objectives,
        front=front,
        fronts_by_method=fronts_by_method,
        hypervolume=_hypervolume(points, objectives, reference),
        hypervolume_by_method={
            m: _hypervolume([values(r) for r in rs], objectives, reference) for m, rs in fronts_by_method.items()
        },
        history=history,
        excluded=excluded,
        reference=reference,
        eligible=eligible,
        methods=methods,
        param_names=param_names,
        n_completed=n_completed,
        total_epochs=total_epochs,
        device_seconds=spent_s,
        device_kind="/".join(sorted({r.device_kind for r in records if r.device_kind})),
        stop_reason=stop_reason,
    )


