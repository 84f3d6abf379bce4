"""What a search costs, and whether another trial may start (pure: records in, decisions out).

* Cost. A trial's cost is its device-seconds: the devices it held × the seconds it spent in its
  epochs (`TrialRecord.train_time_s`, summed across restarts). The devices are its GPUs
  (workers × gpus_per_worker) on a GPU trial, else its CPUs (workers × cpus_per_worker): a
  search's cost is in GPU-seconds or CPU-seconds, never a mix (one space, one kind of trial).
  Start-up (Ray, imports, data and teachers loading) is not counted: it is not training, and
  reused trial processes pay it once.
* Budget (`budget.total: {device_hours: H}` or `{epochs: N}`). A trial starts only if what the
  finished trials spent, plus the most every running trial may still spend (a whole trial each:
  the conservative bound, since a running trial's progress is not durable), plus the most the new
  trial may spend fit in the budget: the budget is never passed. A trial's most is its
  `budget.epochs`, or in device-hours its epochs × the dearest epoch seen so far (before any
  trial finished it is not known and counts as nothing; the first `max_concurrent` trials start).
* Plateau (`stop: {hypervolume_plateau: {window: W, min_improvement: X, min_trials: M}}`). Once
  at least M trials completed their whole budget and the front's hypervolume after the last
  finished trial is less than (1 + X) × its value W finished trials earlier (stopped and failed
  trials count: they are compute spent without moving the front), no new trial starts. Running
  trials go on to their end (or their next MO-ASHA rung, as any trial): they are paid for in part
  already and may still move the front, which lifts the plateau.

`next_trial` is the one decision; the Optuna adapter asks it before every new trial, with the
durable records (so a resumed search keeps its spent cost), and ends the search (Tune's
`Searcher.FINISHED`) when it says no and nothing is running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtard.search.records import Objective, TrialRecord
from mtard.search.review import compute_review

HOUR = 3600.0
UNITS = ("device_hours", "epochs")


@dataclass(frozen=True)
class Plateau:
    window: int  # W finished trials
    min_improvement: float  # X: the fraction of the hypervolume the front must gain over W trials
    min_trials: int  # M: trials that completed their whole budget before the rule may fire


@dataclass(frozen=True)
class SearchLimits:
    """A space's `budget.total` and `stop:`; both optional."""

    total: float | None = None
    unit: str = "epochs"  # device_hours | epochs
    plateau: Plateau | None = None

    @property
    def active(self) -> bool:
        return self.total is not None or self.plateau is not None


@dataclass(frozen=True)
class Verdict:
    """`start`: a new trial may start; else `reason` says why not (one line)."""

    start: bool
    reason: str = ""


@dataclass(frozen=True)
class Devices:
    count: float  # devices one trial holds
    kind: str  # "GPU" | "CPU"


def trial_devices(resources: dict) -> Devices:
    """What one trial holds, from a space's `resources` (its GPUs, or its CPUs on a CPU trial)."""
    workers = int(resources["workers"])
    gpus = float(resources["gpus_per_worker"])
    if gpus > 0:
        return Devices(workers * gpus, "GPU")
    return Devices(workers * float(resources["cpus_per_worker"]), "CPU")


def device_seconds(train_time_s: float, devices: Devices) -> float:
    return float(train_time_s) * devices.count


def spent(records: list[TrialRecord], unit: str) -> float:
    """What the finished trials spent, in `unit`."""
    if unit == "epochs":
        return float(sum(int(r.epochs) for r in records))
    return sum(float(r.device_seconds) for r in records) / HOUR


def most_per_trial(records: list[TrialRecord], unit: str, budget_epochs: int) -> float:
    """The most one trial may spend, in `unit` (device-hours: 0 while no trial has trained an epoch)."""
    if unit == "epochs":
        return float(budget_epochs)
    per_epoch = [float(r.device_seconds) / r.epochs for r in records if r.epochs > 0]
    return max(per_epoch, default=0.0) * budget_epochs / HOUR


def hypervolume_by_record(records: list[TrialRecord], objectives: list[Objective]) -> list[float]:
    """The front's hypervolume after each finished trial (record order); 0 before any is eligible."""
    history = {h.trial_id: h.hypervolume for h in compute_review(records, objectives).history}
    out, hv = [], 0.0
    for r in records:
        hv = history.get(r.trial_id, hv)
        out.append(hv)
    return out


def plateau_reason(records: list[TrialRecord], objectives: list[Objective], rule: Plateau) -> str:
    """Why the front has stopped moving ("" while it moves or the rule may not fire yet)."""
    full = sum(r.status == "complete" and r.epochs == r.budget for r in records)
    if full < rule.min_trials or len(records) < rule.window:
        return ""
    series = hypervolume_by_record(records, objectives)
    now = series[-1]
    then = series[-1 - rule.window] if len(series) > rule.window else 0.0
    if not (math.isfinite(now) and math.isfinite(then)):
        return ""
    gain = (now - then) / then if then > 0 else (math.inf if now > then else 0.0)
    if gain >= rule.min_improvement:
        return ""
    return (
        f"hypervolume plateau: {now:.4f} after the last {rule.window} finished trials, up {100 * gain:.2f}% "
        f"from {then:.4f} (stop.hypervolume_plateau.min_improvement {100 * rule.min_improvement:g}%)"
    )


def budget_reason(records: list[TrialRecord], rule: SearchLimits, *, running: int, budget_epochs: int) -> str:
    """Why a new trial would pass `budget.total` ("" when it fits)."""
    if rule.total is None:
        return ""
    done = spent(records, rule.unit)
    most = most_per_trial(records, rule.unit, budget_epochs)
    if done + (running + 1) * most <= rule.total + 1e-9:
        return ""
    unit = "device-hours" if rule.unit == "device_hours" else "epochs"
    return (
        f"budget spent: {done:.4g} {unit} spent, {running} running (at most {most:.4g} each), "
        f"a new trial could pass budget.total {rule.total:g} {unit}"
    )


def next_trial(
    records: list[TrialRecord], rule: SearchLimits, *, running: int, budget_epochs: int, objectives: list[Objective],
) -> Verdict:
    """May a new trial start now? (`running`: trials started and not yet in `records`.)"""
    reason = budget_reason(records, rule, running=running, budget_epochs=budget_epochs)
    if not reason and rule.plateau is not None:
        reason = plateau_reason(records, objectives, rule.plateau)
    return Verdict(not reason, reason)
