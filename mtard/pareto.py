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

__all__ = ["Direction", "front", "hypervolume", "sort_front"]

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
