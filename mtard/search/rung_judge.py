"""MO-ASHA at run time: the rung judge (a named Ray actor) and the trials' way of asking it.

Why cooperative: a Tune scheduler that stops a trial kills its function, which leaks a Ray Train
trial's worker placement group (unless the dashboard's State API is up), destroys the reused trial
process and can lose the epoch's checkpoint (docs/ray.md, 'The placement-group leak'). Here the trial itself asks at
a rung epoch and, told to stop, makes its usual report (with the checkpoint) and returns normally.

* `start_judge` (the search driver) creates the judge, pinned to the driver's node, where it appends
  each decision to `rungs.jsonl` in the experiment folder (`mtard.search.rung_rule.RungJournal`); a resumed
  search rebuilds it from that file, so no rung is decided twice.
* `RungClient` (inside a trial: the direct trial's process, or rank 0 of a Ray Train run) asks at
  rung epochs and fails open: if the judge does not answer within `timeout_s` the trial continues
  and says so, since a lost decision costs compute, never a result.

Imports Ray core only (no Tune), so Ray Train workers can use it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mtard.search.records import STOP_KEY
from mtard.search.rung_rule import RungDecision, RungJournal, RungRule


class RungJudge:
    """The actor's body: one `RungJournal` (decisions in memory and in `rungs.jsonl`)."""

    def __init__(self, directions: list[str], eta: int, rungs: list[int], path: str):
        self.journal = RungJournal(RungRule(directions, eta, rungs), Path(path))

    def decide(self, trial_id: str, rung: int, values: list[float], protected: bool) -> dict:
        return self.journal.decide(trial_id, rung, values, protected=protected).to_dict()


def judge_name(experiment: str) -> str:
    return f"mtard-rungs-{experiment}"


def start_judge(experiment: str, directions: list[str], eta: int, rungs: list[int], path: Path):
    """Create the named judge on this (the driver's) node; it lives as long as the driver's Ray job."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:  # one left by an earlier search of this name in the same Ray session: its state is in the file
        ray.kill(ray.get_actor(judge_name(experiment)))
    except ValueError:
        pass
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(RungJudge).options(
        name=judge_name(experiment), num_cpus=0, scheduling_strategy=here, max_concurrency=1,
    ).remote(directions, eta, rungs, str(path))
    ray.get(actor.__ray_ready__.remote())  # fail now, not in the first trial, if it cannot start
    return actor


@dataclass(frozen=True)
class RungClient:
    """What a trial needs to ask the judge: picklable, so it travels in a Ray Train loop config."""

    experiment: str
    trial_id: str
    rungs: tuple[int, ...]
    metrics: tuple[str, ...]  # the objectives, in the judge's order
    protected: bool = False  # the enqueued defaults trial always continues
    timeout_s: float = 60.0

    # The loop's stop hook (`mtard.loop.StopRule`): a trial's context is given this client.

    def asks_at(self, epoch: int) -> bool:
        return epoch in self.rungs

    def stops(self, epoch: int, metrics: dict) -> bool:
        """Whether the judge stops the trial after this epoch; if so its reason goes into `metrics[STOP_KEY]`."""
        decision = self.ask(epoch, metrics)
        if decision is None or not decision.stopped:
            return False
        metrics[STOP_KEY] = decision.reason()
        return True

    def ask(self, epoch: int, metrics: dict) -> RungDecision | None:
        """The judge's decision at a rung epoch (None elsewhere, or if it did not answer)."""
        if epoch not in self.rungs:
            return None
        import ray

        values = [float(metrics[m]) for m in self.metrics]
        try:
            judge = ray.get_actor(judge_name(self.experiment))
            answer = ray.get(judge.decide.remote(self.trial_id, epoch, values, self.protected), timeout=self.timeout_s)
        except Exception as err:  # a lost or slow judge must not cost the trial
            print(f"[rungs] warning: trial {self.trial_id} got no rung decision at epoch {epoch} ({type(err).__name__}: {err}); "
                  f"it continues", file=sys.stderr, flush=True)
            return None
        return RungDecision.from_dict(answer)
