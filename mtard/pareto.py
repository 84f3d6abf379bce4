"""Pareto fronts and hypervolume for small multi-objective result sets.

Pure Python (no torch, no Ray, no numpy): the search has at most a few hundred
trials, so the O(n^2) dominance check is instant.

Each objective has a direction, ``"max"`` (e.g. clean or robust accuracy) or
``"min"`` (e.g. a loss). Point ``p`` *dominates* ``q`` when ``p`` is at least as
good as ``q`` in every objective and strictly better in at least one. Exact
duplicates therefore never dominate each other, so all copies of a
non-dominated point stay on the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = ["Direction", "crowding_distance", "front", "hypervolume", "nondominated_ranks", "sort_front"]

Direction = Literal["max", "min"]


def _check_directions(directions: Sequence[Direction]) -> list[Direction]:
    dirs = list(directions)
    if not dirs:
        raise ValueError("directions must name at least one objective ('max' or 'min')")
    for k, d in enumerate(dirs):
        if d not in ("max", "min"):
            raise ValueError(f"directions[{k}] is {d!r}; expected 'max' or 'min'")
    return dirs


def _gains(
    points: Sequence[Sequence[float]], directions: Sequence[Direction]
) -> list[tuple[float, ...]]:
    """Validate ``points`` and return them as 'larger is better' tuples (min objectives negated)."""
    dirs = _check_directions(directions)
    out: list[tuple[float, ...]] = []
    for i, p in enumerate(points):
        vals = [float(v) for v in p]
        if len(vals) != len(dirs):
            raise ValueError(
                f"point {i} has {len(vals)} objectives but {len(dirs)} directions were given"
            )
        if any(math.isnan(v) for v in vals):
            raise ValueError(f"point {i} contains NaN: {tuple(vals)}")
        out.append(tuple(v if d == "max" else -v for v, d in zip(vals, dirs)))
    return out


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` dominates ``b`` in 'larger is better' coordinates."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def front(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """Indices (ascending) of the non-dominated points.

    Works for any number of objectives in O(n^2 * m). Empty input gives ``[]``.
    A NaN anywhere raises ``ValueError`` naming the point's index.
    """
    g = _gains(points, directions)
    return [i for i, p in enumerate(g) if not any(_dominates(q, p) for q in g)]


def hypervolume(
    points: Sequence[Sequence[float]],
    directions: Sequence[Direction],
    reference: Sequence[float] | None = None,
) -> float:
    """Volume of objective space dominated by ``points`` and bounded by ``reference``.

    Exact for 1 and 2 objectives (sort and sweep, O(n log n)). The default
    reference is 0 for every ``"max"`` objective (natural for accuracies); a
    ``"min"`` objective has no natural bound, so ``reference`` is then required.
    Points that do not strictly improve on the reference in every objective
    contribute nothing. Empty input gives ``0.0``. More than 2 objectives raise
    ``NotImplementedError``.
    """
    dirs = _check_directions(directions)
    if reference is None:
        if any(d == "min" for d in dirs):
            raise ValueError(
                "hypervolume needs an explicit reference point when an objective is 'min' "
                "(the default reference is 0 only for 'max' objectives)"
            )
        ref = [0.0] * len(dirs)
    else:
        ref = [float(r) for r in reference]
        if len(ref) != len(dirs):
            raise ValueError(
                f"reference has {len(ref)} values but {len(dirs)} directions were given"
            )
        if any(math.isnan(r) for r in ref):
            raise ValueError(f"reference contains NaN: {tuple(ref)}")
    if len(dirs) > 2:
        raise NotImplementedError(
            f"hypervolume is implemented for 1 or 2 objectives only, got {len(dirs)}"
        )

    g = _gains(points, dirs)
    ref_g = [r if d == "max" else -r for r, d in zip(ref, dirs)]
    # Shift so the reference is the origin; keep points strictly better in every objective.
    shifted = [tuple(v - r for v, r in zip(p, ref_g)) for p in g]
    inside = [p for p in shifted if all(v > 0 for v in p)]
    if not inside:
        return 0.0
    if len(dirs) == 1:
        return float(max(p[0] for p in inside))

    # 2-D sweep: walk x from largest to smallest; each point adds the strip of
    # width x between the best y seen so far and its own y.
    inside.sort(key=lambda p: (-p[0], -p[1]))
    area = 0.0
    best_y = 0.0
    for x, y in inside:
        if y > best_y:
            area += x * (y - best_y)
            best_y = y
    return float(area)


def sort_front(
    points: Sequence[Sequence[float]],
    indices: Sequence[int],
    directions: Sequence[Direction],
) -> list[int]:
    """Order ``indices`` by ascending value of objective 0 (ties: objective 1, ... then index).

    For a 2-D front this walks the front from one end to the other, so plotting
    the points in this order draws a connected staircase/line.
    """
    _gains(points, directions)  # validates shape, NaN and directions
    n = len(points)
    for i in indices:
        if not 0 <= i < n:
            raise ValueError(f"index {i} is out of range for {n} points")
    return sorted(indices, key=lambda i: (tuple(float(v) for v in points[i]), i))


def nondominated_ranks(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """Front number of each point: 0 = the non-dominated front, 1 = the front once 0 is removed, ...

    Dominance as in :func:`front`, so equal points never dominate each other and share a front.
    O(n^2 * m) (Deb et al.'s fast non-dominated sort); a NaN raises ``ValueError``.
    """
    g = _gains(points, directions)
    n = len(g)
    dominated_by_count = [0] * n  # how many points dominate i
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(g[i], g[j]):
                dominates[i].append(j)
                dominated_by_count[j] += 1
            elif _dominates(g[j], g[i]):
                dominates[j].append(i)
                dominated_by_count[i] += 1
    ranks = [0] * n
    current = [i for i in range(n) if dominated_by_count[i] == 0]
    rank = 0
    while current:
        following = []
        for i in current:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by_count[j] -= 1
                if dominated_by_count[j] == 0:
                    following.append(j)
        current, rank = following, rank + 1
    return ranks


def crowding_distance(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[float]:
    """NSGA-II crowding distance of each point, computed within the point's own front.

    Per objective, a front's points are sorted (ties by index); the two ends get ``inf`` and an interior
    point adds ``(next - previous) / (front max - front min)``. The normalisation by the front's range makes
    the distance independent of each objective's scale. A front of at most 2 points is all ``inf``; an
    objective constant over a front adds nothing.
    """
    g = _gains(points, directions)  # direction does not matter for distances, only validation
    ranks = nondominated_ranks(points, directions)
    distance = [0.0] * len(g)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        if len(members) <= 2:
            for i in members:
                distance[i] = math.inf
            continue
        for k in range(len(g[0])):
            order = sorted(members, key=lambda i: (g[i][k], i))
            low, high = g[order[0]][k], g[order[-1]][k]
            distance[order[0]] = distance[order[-1]] = math.inf
            if high == low:
                continue
            for before, i, after in zip(order, order[1:], order[2:]):
                distance[i] += (g[after][k] - g[before][k]) / (high - low)
    return distance
