"""The MO-ASHA rung rule: which trials go on at a rung and which stop. Pure Python, no Ray.

Asynchronous successive halving (Li et al. 2020) promotes the best ``1/eta`` of the results seen at a rung.
With two objectives "best" is an ordering of points: by non-dominated front first, then by NSGA-II crowding
distance within a front (Schmucker et al. 2021, arXiv 2106.12639). A newcomer at a rung with ``n`` results
(itself included) **continues** when

- ``n < eta`` (too few results to judge anyone), or
- it is on front 0 of those ``n`` points (nothing seen so far beats it on both objectives), or
- its position in the ordering is ``< ceil(n / eta)`` (it is among the kept fraction);

otherwise it **stops**. The decision concerns the newcomer only: Syne Tune's MOASHA reads the rank of the
*worst* item of the ordering instead, which stops a newcomer that dominates everything (see
docs/ray.md, 'MO-ASHA'). Earlier trials are never re-judged (asynchronous: they were promoted or
stopped when they arrived). Ties in the ordering go to the earlier arrival, so a newcomer that merely equals
a kept result is not preferred over it.

Decisions are remembered: asking again for a trial already decided at a rung returns the stored decision,
so a resumed search (or a retried trial) never has a rung decided twice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from mtard.pareto import Direction, crowding_distance, nondominated_ranks

Action = Literal["continue", "stop"]


@dataclass(frozen=True)
class RungDecision:
    """One trial judged at one rung; ``values`` are its objective values there."""

    trial_id: str
    rung: int  # the epoch the rung sits at
    values: tuple[float, ...]
    action: Action
    front: int  # the trial's non-dominated front among the rung's results (0 = best)
    position: int  # its place in the ordering (0 = best)
    n: int  # results at the rung when it was judged, itself included
    kept: int  # ceil(n / eta): how many positions continue
    why: str  # the rule that decided: "too few results", "front 0", "kept fraction", "defaults trial", "not kept"

    @property
    def stopped(self) -> bool:
        return self.action == "stop"

    def reason(self) -> str:
        """One line for records and logs, e.g. 'stopped by MO-ASHA at epoch 3: front 2 of 7, position 5, kept 3'."""
        verb = "stopped" if self.stopped else "continued"
        return f"{verb} by MO-ASHA at epoch {self.rung}: front {self.front} of {self.n}, position {self.position}, kept {self.kept} ({self.why})"

    def to_dict(self) -> dict:
        return {**asdict(self), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict) -> RungDecision:
        return cls(**{**data, "values": tuple(float(v) for v in data["values"])})


class RungRule:
    """State of every rung: the results recorded there (in arrival order) and the decisions taken."""

    def __init__(self, directions: Sequence[Direction], eta: int, rungs: Sequence[int]):
        if eta < 2:
            raise ValueError(f"eta must be at least 2 (keep 1/eta of the trials at each rung), got {eta}")
        if not rungs or list(rungs) != sorted(set(rungs)) or rungs[0] < 1:
            raise ValueError(f"rungs must be distinct epochs >= 1 in increasing order, got {list(rungs)}")
        self.directions = list(directions)
        self.eta = eta
        self.rungs = list(rungs)
        self._results: dict[int, dict[str, tuple[float, ...]]] = {r: {} for r in self.rungs}
        self._decisions: dict[tuple[str, int], RungDecision] = {}

    def decide(self, trial_id: str, rung: int, values: Sequence[float], *, protected: bool = False) -> RungDecision:
        """Judge ``trial_id`` at ``rung`` with these objective values (``protected``: always continue)."""
        if rung not in self._results:
            raise ValueError(f"epoch {rung} is not a rung (rungs: {self.rungs})")
        known = self._decisions.get((trial_id, rung))
        if known is not None:
            return known
        point = tuple(float(v) for v in values)
        if len(point) != len(self.directions) or any(math.isnan(v) for v in point):
            raise ValueError(f"trial {trial_id} at epoch {rung}: objective values {point} are not {len(self.directions)} numbers")
        at_rung = self._results[rung]
        at_rung[trial_id] = point
        ids = list(at_rung)  # arrival order; the newcomer is last
        points = [at_rung[i] for i in ids]
        ranks = nondominated_ranks(points, self.directions)
        crowding = crowding_distance(points, self.directions)
        order = sorted(range(len(ids)), key=lambda i: (ranks[i], -crowding[i], i))
        me = len(ids) - 1
        n, position, kept = len(ids), order.index(me), math.ceil(len(ids) / self.eta)
        if protected:
            action, why = "continue", "defaults trial"
        elif n < self.eta:
            action, why = "continue", "too few results"
        elif ranks[me] == 0:
            action, why = "continue", "front 0"
        elif position < kept:
            action, why = "continue", "kept fraction"
        else:
            action, why = "stop", "not kept"
        decision = RungDecision(trial_id, rung, point, action, ranks[me], position, n, kept, why)
        self._decisions[(trial_id, rung)] = decision
        return decision

    def restore(self, decisions: Iterable[RungDecision]) -> None:
        """Replay decisions taken earlier (e.g. read back from ``rungs.jsonl``) in their original order."""
        for d in decisions:
            if d.rung not in self._results:
                raise ValueError(f"a stored decision sits at epoch {d.rung}, which is not a rung of {self.rungs}")
            self._results[d.rung][d.trial_id] = d.values
            self._decisions[(d.trial_id, d.rung)] = d

    def decisions(self) -> list[RungDecision]:
        return list(self._decisions.values())


class RungJournal:
    """A :class:`RungRule` whose every decision is appended to a JSON-lines file (fsync'ed before it is
    returned), so a resumed search rebuilds the same state: no rung is decided twice, no stopped trial runs
    again. Written by one process (the rung judge); a torn last line from a crash is ignored on reading."""

    def __init__(self, rule: RungRule, path: Path):
        self.rule = rule
        self.path = path
        if path.is_file():
            rule.restore(read_decisions(path))
            text = path.read_bytes()
            if text and not text.endswith(b"\n"):  # end a torn line so the next decision starts a line of its own
                with open(path, "ab") as f:
                    f.write(b"\n")

    def decide(self, trial_id: str, rung: int, values: Sequence[float], *, protected: bool = False) -> RungDecision:
        known = len(self.rule.decisions())
        decision = self.rule.decide(trial_id, rung, values, protected=protected)
        if len(self.rule.decisions()) > known:  # new: persist before anyone acts on it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(decision.to_dict()) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return decision


def read_decisions(path: Path) -> list[RungDecision]:
    """The decisions in ``path`` in the order they were taken (an incomplete last line is skipped)."""
    decisions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            decisions.append(RungDecision.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, KeyError):
            continue  # a line torn by a crash mid-write: that decision was never acted on
    return decisions
