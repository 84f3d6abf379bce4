"""What a search remembers about each trial: objectives, statuses, records (no Ray, no Optuna).

* `Objective`: one search objective, used by the space, the review and the renderers alike.
* `classify` is the one place a trial's status is decided, from its last reported metrics:
  the records, the Optuna adapter (FAIL / PRUNED / COMPLETE) and the review all follow it.
* `records.jsonl` holds one JSON line per finished trial, appended and fsync'ed (it survives
  a crash of the search driver); `read_records` deduplicates by trial id (last line wins) and
  skips a line torn by a crash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from mtard.errors import MtardError
from mtard.storage import append_line, json_safe, read_json_lines

STOP_KEY = "stopped_by"  # the reported metric carrying MO-ASHA's stop reason (mtard.search.rung_judge)


class Status(StrEnum):
    COMPLETE = "complete"  # trained its whole budget; every objective a finite number
    ERROR = "error"  # raised, or reported a failure / missing objective
    DIVERGED = "diverged"  # the loss became NaN/inf (deterministic: not retried)
    STOPPED = "stopped"  # ended before its budget (a time budget, a scheduler)
    RUNNING = "running"


@dataclass(frozen=True)
class Objective:
    """One search objective: a reported metric, its direction and an axis label naming the attack.

    `reference` is the hypervolume reference value; ``None`` means 0 for a ``"max"``
    objective (accuracies). A ``"min"`` objective has no natural bound: without a
    reference its hypervolume is reported as not available (NaN).
    """

    metric: str
    direction: str  # "max" | "min"
    label: str = ""  # e.g. "val PGD-20 accuracy (L∞ ε=0.2, step 0.05)"
    reference: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise MtardError(f"objective {self.metric!r}: direction must be 'max' or 'min', got {self.direction!r}")

    @property
    def axis_label(self) -> str:
        better = "higher" if self.direction == "max" else "lower"
        return f"{self.label or self.metric} ({better} is better)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Objective:
        return cls(data["metric"], data["direction"], data.get("label", ""), data.get("reference"))


@dataclass
class TrialRecord:
    """One trial of a search, as the driver last saw it (one JSON line per trial)."""

    trial_id: str
    status: Status = Status.RUNNING
    reason: str = ""  # why it is not complete ("" when complete)
    params: dict = field(default_factory=dict)  # searched dotted config path -> value
    metrics: dict = field(default_factory=dict)  # the trial's last reported metrics
    epochs: int = 0  # epochs trained
    budget: int = 0  # epochs asked for
    checkpoint: str = ""  # path/URI of the checkpoint that stands for the trial (best.pt under eval.select: best, else the last), "" if none
    is_default: bool = False  # the enqueued official-defaults trial
    method: str = ""
    teachers: dict = field(default_factory=dict)  # {"clean": name, "robust": name} or {}
    # Seconds the trial spent in its epochs (training + validation), summed over every epoch it
    # trained, across restarts: the compute a search paid for this trial's numbers.
    train_time_s: float = 0.0
    # What those seconds cost: train_time_s × the devices the trial held (its GPUs, or its CPUs on a
    # CPU trial; `device_kind` says which). See mtard.search.budget.
    device_seconds: float = 0.0
    device_kind: str = ""  # "GPU" | "CPU" ("" in records written before costs were kept)
    # Seconds from the trial's start (Tune) to its first training step, in its last run; None if unknown.
    startup_s: float | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        """Inverse of `to_dict`; unknown keys (written by a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        if "trial_id" not in data:
            raise MtardError(f"a trial record needs a 'trial_id', got keys {sorted(data)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(json_safe(self.to_dict()), ensure_ascii=False, sort_keys=True)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def first_unusable_objective(metrics: dict, objectives: Sequence[str]) -> str | None:
    """The first objective in `metrics` that is not a finite number (None when each is): the one rule
    for whether a trial's numbers can stand on a front. `classify` (is the trial complete?) and the
    review (may its record enter the front?) both apply it."""
    return next((m for m in objectives if not finite(metrics.get(m))), None)


def trained_budget(epochs: int, budget: int) -> bool:
    """Whether a trial trained its whole budget: a shorter run's numbers come from a shorter schedule."""
    return epochs >= budget


def classify(metrics: dict, *, budget: int, objectives: list[str], error: str | None = None) -> tuple[Status, str]:
    """A finished trial's status and the reason it is not complete, from its last reported metrics.

    `error` is the message of an exception that ended the trial (None if it returned).
    A trial reports `diverged: 1` (the loss became NaN/inf) or `failed: 1` (an mtard error
    inside the trial, e.g. a missing teacher file) with the message in `error`, and
    `stopped_by: <reason>` when MO-ASHA stopped it at a rung.
    """
    epochs = int(metrics.get("epoch") or 0)
    if error is not None:
        return Status.ERROR, error
    if metrics.get("diverged"):
        return Status.DIVERGED, str(metrics.get("error") or "training diverged")
    if metrics.get("failed"):
        return Status.ERROR, str(metrics.get("error") or "the trial failed")
    if metrics.get(STOP_KEY):
        return Status.STOPPED, str(metrics[STOP_KEY])
    if not trained_budget(epochs, budget):
        return Status.STOPPED, f"stopped after {epochs} of {budget} epochs"
    missing = first_unusable_objective(metrics, objectives)
    if missing is not None:
        return Status.ERROR, f"objective {missing} missing or not finite: {metrics.get(missing)!r}"
    return Status.COMPLETE, ""


def read_records(path: Path) -> list[TrialRecord]:
    """records.jsonl, deduplicated by trial id (the last line of a trial wins; order of first appearance);
    a line torn by a crash mid-write is skipped."""
    by_id: dict[str, TrialRecord] = {}
    for data in read_json_lines(path):
        by_id[data["trial_id"]] = TrialRecord.from_dict(data)
    return list(by_id.values())


def append_record(path: Path, record: TrialRecord) -> None:
    """One line, flushed and fsync'ed; after a torn last line, on a fresh line."""
    append_line(path, record.to_json())
