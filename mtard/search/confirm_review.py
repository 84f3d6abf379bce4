"""Confirm a front (pure compute): per-seed test results -> per-member aggregates, the confirmed
front, who is indistinguishable, Kendall's τ proxy vs confirmed, the share of the proxy front
that survives. No Ray, no torch: `mtard.search.confirm` runs the trainings, `mtard.search.render`
writes what this returns.

Rules:

* A member's number on an attack is the mean over its seeds, with the sample sd and the 95 %
  Student-t interval of the mean (`mtard.stats.summarize`); a seed that failed or diverged is
  listed with its reason and never averaged in.
* The confirmed front is the non-dominated set of the members' means on the search's objectives,
  each objective read on the test split with the attack that measures it (`OBJECTIVE_ATTACKS`).
  Only members complete on every seed may enter it: a method that diverges on one seed in
  three has not been confirmed, whatever its other seeds say.
* Two front neighbours are indistinguishable on an objective when their intervals over seeds
  overlap (`mtard.stats.overlap`); with 2 seeds the t quantile is 12.7, so nearly everything is.
* τ per objective: Kendall's τ-b between the proxy's validation values and the confirmed test
  means, over the members that have both (the front and the defaults trial, not the baselines).
* Survival: the proxy front members (as the search found them) on the confirmed front, over all
  proxy front members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mtard import pareto
from mtard.errors import MtardError
from mtard.search.records import Objective, Status, finite
from mtard.stats import Summary, kendall_tau, overlap, summarize

#: The test-split attack that measures each validation objective. The loop's validation PGD is
#: PGD-20 with the SAT step (2/255 at ε 8/255, scaled with ε) from a uniform start: `pgd20_sat`.
OBJECTIVE_ATTACKS = {
    "val_clean_acc": "clean",
    "val_pgd_acc": "pgd20_sat",
    "selected_val_clean_acc": "clean",
    "selected_val_pgd_acc": "pgd20_sat",
}

FRONT, DEFAULTS, BASELINE, CHOSEN = "front", "defaults", "baseline", "chosen"  # CHOSEN: named by --members, off the front


def objective_attacks(objectives: list[Objective]) -> dict[str, str]:
    """{objective metric: attack}; MtardError for an objective no attack measures on the test split."""
    out = {}
    for o in objectives:
        if o.metric not in OBJECTIVE_ATTACKS:
            raise MtardError(
                f"objective {o.metric!r} has no test-split counterpart: confirm-front reads "
                f"{', '.join(OBJECTIVE_ATTACKS)} (clean / PGD-20 accuracy)"
            )
        out[o.metric] = OBJECTIVE_ATTACKS[o.metric]
    return out


@dataclass
class Member:
    """What is confirmed: a proxy front member, the official-defaults trial, or a baseline method."""

    member_id: str  # the search's trial id, or "baseline-<method>"
    kind: str  # FRONT | DEFAULTS | BASELINE | CHOSEN
    method: str
    params: dict = field(default_factory=dict)  # the searched values it trains with
    proxy: dict = field(default_factory=dict)  # objective metric -> its validation value in the search
    is_default: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "kind": self.kind, "method": self.method, "params": dict(self.params),
                "proxy": dict(self.proxy), "is_default": self.is_default}


@dataclass
class RunResult:
    """One member trained on one seed and evaluated on the test split."""

    member_id: str
    seed: int
    status: str  # a records.Status value
    reason: str = ""
    epochs: int = 0
    budget: int = 0
    test: dict = field(default_factory=dict)  # attack -> accuracy
    samples: int = 0
    val: dict = field(default_factory=dict)  # the run's own last validation metrics
    train_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == Status.COMPLETE and bool(self.test)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("member_id", "seed", "status", "reason", "epochs", "budget", "test",
                                               "samples", "val", "train_time_s")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(**{k: d[k] for k in ("member_id", "seed", "status", "reason", "epochs", "budget", "test", "samples",
                                         "val", "train_time_s") if k in d})


@dataclass
class MemberSummary:
    member: Member
    runs: list[RunResult]  # one per seed, in seed order
    attacks: dict[str, Summary]  # attack -> over the complete seeds

    @property
    def failures(self) -> list[RunResult]:
        return [r for r in self.runs if not r.ok]

    def mean(self, attack: str) -> float:
        return self.attacks[attack].mean if attack in self.attacks else math.nan


@dataclass
class ConfirmData:
    objectives: list[Objective]
    objective_attacks: dict[str, str]
    attacks: list[str]
    seeds: list[int]
    summaries: list[MemberSummary]  # in member order
    front: list[str]  # member ids on the confirmed front, along objective 0
    excluded: dict[str, str]  # member id -> why it may not enter the confirmed front
    indistinguishable: list[dict]  # {"members": [a, b], "objective": metric} for overlapping front neighbours
    tau: dict[str, float]  # objective metric -> Kendall's τ (proxy validation vs confirmed test means)
    tau_members: list[str]  # the members τ was computed over
    proxy_front: list[str]
    survivors: list[str]  # proxy front members on the confirmed front

    @property
    def survival(self) -> float:
        return len(self.survivors) / len(self.proxy_front) if self.proxy_front else math.nan

    def summary(self, member_id: str) -> MemberSummary:
        return next(s for s in self.summaries if s.member.member_id == member_id)

    def confirmed(self, s: MemberSummary) -> tuple[float, ...]:
        return tuple(s.mean(self.objective_attacks[o.metric]) for o in self.objectives)


def compute_confirm(
    members: list[Member], runs: list[RunResult], objectives: list[Objective], attacks: list[str], seeds: list[int]
) -> ConfirmData:
    """Aggregate the per-seed results of every member (pure). Missing runs count as not run."""
    obj_attacks = objective_attacks(objectives)
    by_key = {(r.member_id, r.seed): r for r in runs}
    summaries = []
    for m in members:
        mine = [by_key.get((m.member_id, s), RunResult(m.member_id, s, str(Status.RUNNING), "not run (yet)")) for s in seeds]
        ok = [r for r in mine if r.ok]
        summaries.append(MemberSummary(m, mine, {a: summarize([r.test.get(a, math.nan) for r in ok]) for a in attacks}))

    directions = [o.direction for o in objectives]
    excluded: dict[str, str] = {}
    eligible: list[MemberSummary] = []
    for s in summaries:
        bad = s.failures
        if bad:
            excluded[s.member.member_id] = "; ".join(f"seed {r.seed}: {r.status}{f' ({r.reason})' if r.reason else ''}" for r in bad)
        elif not all(math.isfinite(v) for v in _values(s, objectives, obj_attacks)):
            excluded[s.member.member_id] = "an objective's attack was not evaluated"
        else:
            eligible.append(s)
    points = [_values(s, objectives, obj_attacks) for s in eligible]
    front_idx = pareto.sort_front(points, pareto.front(points, directions), directions) if points else []  # type: ignore[arg-type]
    front = [eligible[i].member.member_id for i in front_idx]

    ties = []
    for a, b in zip(front, front[1:]):
        for o in objectives:
            attack = obj_attacks[o.metric]
            ia, ib = (next(s for s in summaries if s.member.member_id == x).attacks[attack].interval for x in (a, b))
            if overlap(ia, ib):
                ties.append({"members": [a, b], "objective": o.metric})

    with_proxy = [s for s in summaries if s.member.kind != BASELINE and all(finite(s.member.proxy.get(o.metric)) for o in objectives)]
    tau = {}
    for o in objectives:
        attack = obj_attacks[o.metric]
        pairs = [(float(s.member.proxy[o.metric]), s.mean(attack)) for s in with_proxy if math.isfinite(s.mean(attack))]
        tau[o.metric] = kendall_tau([p for p, _ in pairs], [c for _, c in pairs])
    proxy_front = [m.member_id for m in members if m.kind == FRONT]
    return ConfirmData(
        objectives=list(objectives), objective_attacks=obj_attacks, attacks=list(attacks), seeds=list(seeds),
        summaries=summaries, front=front, excluded=excluded, indistinguishable=ties, tau=tau,
        tau_members=[s.member.member_id for s in with_proxy], proxy_front=proxy_front,
        survivors=[m for m in proxy_front if m in front],
    )


def _values(s: MemberSummary, objectives: list[Objective], obj_attacks: dict[str, str]) -> tuple[float, ...]:
    return tuple(s.mean(obj_attacks[o.metric]) for o in objectives)
