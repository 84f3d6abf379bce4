"""`mtard search SPACE --plan`: what a search will cost, before it spends anything.

`measure_epoch` trains the base config (the searched fields at their base values) for
`PLAN_EPOCHS` epochs of `PLAN_STEPS` steps each, on the device a trial would get: in this process
(its GPU if the space asks for one), or, on a cluster (`--address`, $RAY_ADDRESS), in a Ray task
that reserves one trial worker's resources, so it runs on a node that would run a trial. The
first epoch warms up (allocator, kernel autotuning, lazy imports) and is not used; from the
second: the training throughput (samples/s) and one whole validation pass. Nothing is written:
no checkpoint, no search. The teachers must exist already (`mtard search` trains missing ones).

`plan_cost` (pure, tested on a constructed timing) turns one epoch's seconds into device-hours:

* one epoch = training samples / samples per second + validation seconds;
* a trial's upper bound: `budget.epochs` epochs; its expected cost under MO-ASHA: every trial
  reaches the first rung, 1/eta of those go on to the next rung, ..., 1/eta^k of them train the
  whole budget (the rule keeps at least 1/eta; it keeps more while a rung has few results, so the
  expectation is a lower estimate early in a search); the defaults trial is never stopped;
* device-hours = epochs × epoch seconds × the devices a trial holds (`mtard.search.budget`); a
  multi-worker trial is assumed to scale perfectly (its device-seconds are one worker's);
* a search = `num_samples` trials, capped by `budget.total` if the space has one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from mtard.errors import MtardError
from mtard.search.budget import HOUR, Devices, trial_devices
from mtard.search.space import SearchSpace

PLAN_STEPS = 5  # training steps timed per epoch
PLAN_EPOCHS = 2  # the first warms up; the second is timed


@dataclass(frozen=True)
class EpochTiming:
    """One epoch of the base config, measured on a few steps."""

    train_samples: int  # one epoch's training samples (the whole training split)
    samples_per_s: float  # training throughput of the timed steps
    validation_s: float  # one validation pass
    where: str  # the device and node it ran on

    @property
    def epoch_s(self) -> float:
        return self.train_samples / self.samples_per_s + self.validation_s


@dataclass(frozen=True)
class CostPlan:
    """A search's cost in device-hours: the upper bound and the expectation under its scheduler."""

    epoch_s: float
    devices: Devices
    epochs: int  # budget.epochs
    trials: int  # num_samples
    expected_epochs_per_trial: float  # a trial the scheduler may stop
    full_trials: int  # trials that always train the whole budget (the defaults trial)
    upper_epochs: float  # the whole search
    expected_epochs: float
    cap_epochs: float | None  # budget.total, in epochs (None: no cap)
    assumptions: list[str] = field(default_factory=list)

    def hours(self, epochs: float) -> float:
        return epochs * self.epoch_s * self.devices.count / HOUR

    @property
    def trial_upper_h(self) -> float:
        return self.hours(self.epochs)

    @property
    def trial_expected_h(self) -> float:
        return self.hours(self.expected_epochs_per_trial)

    @property
    def search_upper_h(self) -> float:
        return self.hours(self._capped(self.upper_epochs))

    @property
    def search_expected_h(self) -> float:
        return self.hours(self._capped(self.expected_epochs))

    def _capped(self, epochs: float) -> float:
        return epochs if self.cap_epochs is None else min(epochs, self.cap_epochs)


def expected_epochs(epochs: int, scheduler: dict) -> float:
    """A trial's expected epochs when 1/eta of the trials at each rung go on (all of them without a scheduler)."""
    if scheduler["name"] != "moasha":
        return float(epochs)
    total, previous, reach = 0.0, 0, 1.0
    for rung in [*scheduler["rungs"], epochs]:
        total += reach * (rung - previous)
        previous, reach = rung, reach / scheduler["eta"]
    return total


def plan_cost(epoch_s: float, space: SearchSpace) -> CostPlan:
    """What `space`'s search costs if one epoch of a trial takes `epoch_s` seconds (pure)."""
    devices = trial_devices(space.resources)
    epochs = int(space.budget["epochs"])
    per_trial = expected_epochs(epochs, space.scheduler)
    full = min(int(space.enqueue_defaults), space.num_samples) if space.scheduler["name"] == "moasha" else 0
    total = space.budget.get("total") or {}
    cap = None
    if "epochs" in total:
        cap = float(total["epochs"])
    elif "device_hours" in total:
        cap = total["device_hours"] * HOUR / (epoch_s * devices.count)
    s = space.scheduler
    assumptions = [
        f"one epoch = {epoch_s:.4g} s on {devices.count:g} {devices.kind}(s) per trial, as timed with no trial beside it "
        f"(trials sharing a node's CPUs or a GPU run slower); start-up not counted"
    ]
    if s["name"] == "moasha":
        assumptions.append(
            f"MO-ASHA rungs {s['rungs']}, eta {s['eta']}: 1/{s['eta']} of the trials at a rung go on "
            f"(it keeps more while a rung has few results)" + ("; the defaults trial is never stopped" if full else "")
        )
    if space.resources["workers"] > 1:
        assumptions.append(f"{space.resources['workers']} workers per trial scale perfectly (device-seconds as for one)")
    if cap is not None:
        assumptions.append("budget.total caps the search: it starts no trial that could pass it")
    return CostPlan(
        epoch_s=epoch_s, devices=devices, epochs=epochs, trials=space.num_samples, expected_epochs_per_trial=per_trial,
        full_trials=full, upper_epochs=float(space.num_samples * epochs),
        expected_epochs=full * epochs + (space.num_samples - full) * per_trial, cap_epochs=cap, assumptions=assumptions,
    )


def render_plan(plan: CostPlan, timing: EpochTiming | None = None) -> str:
    unit = f"{plan.devices.kind}-hours"
    lines = []
    if timing is not None:
        lines.append(
            f"measured on {timing.where}: {timing.samples_per_s:.4g} training samples/s ({timing.train_samples} per epoch), "
            f"validation {timing.validation_s:.3g} s: one epoch {timing.epoch_s:.4g} s"
        )
    lines += [
        f"per trial: at most {plan.trial_upper_h:.4g} {unit} ({plan.epochs} epochs); "
        f"expected {plan.trial_expected_h:.4g} {unit} ({plan.expected_epochs_per_trial:.3g} epochs)",
        f"search of {plan.trials} trials: at most {plan.search_upper_h:.4g} {unit}; expected {plan.search_expected_h:.4g} {unit}",
        "assumptions: " + "; ".join(plan.assumptions),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- measuring


def time_epoch(cfg, steps: int = PLAN_STEPS) -> EpochTiming:
    """Train `cfg` for PLAN_EPOCHS epochs of `steps` steps here; the last epoch's throughput and validation time."""
    import torch

    from mtard.data import load_splits
    from mtard.loop import Context, fit, resolve_device

    device = resolve_device("cuda" if cfg.scaling.gpus_per_worker > 0 else "cpu")

    class PlanContext(Context):
        max_steps_per_epoch = steps

    cfg.optim.epochs = PLAN_EPOCHS
    metrics = fit(cfg, PlanContext(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU thread(s)"
    return EpochTiming(
        train_samples=len(load_splits(cfg.data).train),
        samples_per_s=float(metrics["samples_per_s"]),
        validation_s=float(metrics["epoch_time_s"] - metrics["train_time_s"]),
        where=f"{device} ({name}) on {socket.gethostname()}",
    )


def measure_epoch(space: SearchSpace, *, address: str | None = None) -> EpochTiming:
    """Time one epoch of the base config where a trial would run (a Ray task on a cluster)."""
    from mtard.search.resources import worker_resources

    cfg = space.trial_config({}, name="plan")
    if not (address or os.environ.get("RAY_ADDRESS")):
        return _checked(time_epoch, cfg)
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    try:
        shape = worker_resources(space)
        r = space.resources
        custom = {k: v for k, v in shape.items() if k in r["custom"]}  # accelerator_type goes by its own option
        task = ray.remote(
            num_cpus=shape.get("CPU", 0), num_gpus=shape.get("GPU", 0), resources=custom or None,
            accelerator_type=r["accelerator_type"] or None,
        )(_checked)
        return ray.get(task.remote(time_epoch, cfg))
    finally:
        if started:
            ray.shutdown()


def _checked(fn, cfg) -> EpochTiming:
    try:
        return fn(cfg)
    except MtardError as err:
        raise MtardError(f"--plan: the base config did not train: {err}") from err


def plan_search(space: SearchSpace, *, address: str | None = None) -> str:
    timing = measure_epoch(space, address=address)
    return render_plan(plan_cost(timing.epoch_s, space), timing)
