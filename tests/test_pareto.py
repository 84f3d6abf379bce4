"""Tests for mtard.pareto: closed-form answers plus brute-force cross-checks."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from mtard.pareto import crowding_distance, front, hypervolume, nondominated_ranks, sort_front

MM = ("max", "max")


# --------------------------------------------------------------------------- front


def test_front_empty():
    assert front([], MM) == []


def test_front_staircase_all_kept():
    # (1,3), (2,2), (3,1): each is best in something -> no one dominates another.
    assert front([(1, 3), (2, 2), (3, 1)], MM) == [0, 1, 2]


def test_front_drops_dominated():
    # (1,1) is dominated by (2,2); (2,1) is dominated by (2,2) (equal x, better y).
    pts = [(1, 1), (1, 3), (2, 2), (2, 1), (3, 1)]
    assert front(pts, MM) == [1, 2, 4]


def test_front_keeps_duplicates_of_nondominated():
    # The two (2,2) copies do not dominate each other (no strict improvement).
    pts = [(2, 2), (1, 1), (2, 2), (1, 3)]
    assert front(pts, MM) == [0, 2, 3]


def test_front_duplicates_of_dominated_are_dropped():
    pts = [(1, 1), (1, 1), (2, 2)]
    assert front(pts, MM) == [2]


def test_front_mixed_directions():
    # objective 0 = accuracy (max), objective 1 = loss (min).
    # (0.9, 0.3) vs (0.8, 0.3): same loss, higher accuracy -> dominates.
    # (0.7, 0.1): lowest loss -> kept.  (0.6, 0.2): worse than (0.7, 0.1) in both -> dropped.
    pts = [(0.9, 0.3), (0.8, 0.3), (0.7, 0.1), (0.6, 0.2)]
    assert front(pts, ("max", "min")) == [0, 2]
    # Flipping both directions flips the answer's sense: minimising accuracy and
    # maximising loss makes (0.6, 0.2) and (0.8, 0.3) the front.
    assert front(pts, ("min", "max")) == [1, 3]


def test_front_three_objectives():
    # (1,1,1) is dominated by (1,1,2); the others trade off.
    pts = [(1, 1, 1), (1, 1, 2), (2, 0, 0), (0, 2, 0)]
    assert front(pts, ("max", "max", "max")) == [1, 2, 3]


def test_front_nan_names_index():
    with pytest.raises(ValueError, match="point 2"):
        front([(1, 1), (2, 2), (0.5, math.nan)], MM)


def test_front_bad_shape_and_direction():
    with pytest.raises(ValueError, match="point 1"):
        front([(1, 1), (1, 2, 3)], MM)
    with pytest.raises(ValueError, match="directions"):
        front([(1, 1)], ("max", "up"))  # type: ignore[arg-type]


def _front_numpy(pts: np.ndarray, directions) -> list[int]:
    """Independent check: broadcast all pairs at once."""
    sign = np.array([1.0 if d == "max" else -1.0 for d in directions])
    g = pts * sign
    ge = (g[:, None, :] >= g[None, :, :]).all(axis=2)  # ge[j, i]: j >= i everywhere
    gt = (g[:, None, :] > g[None, :, :]).any(axis=2)  # gt[j, i]: j > i somewhere
    dominated = (ge & gt).any(axis=0)
    return np.flatnonzero(~dominated).tolist()


@pytest.mark.parametrize("dirs", [("max", "max"), ("max", "min"), ("min", "max", "min")])
def test_front_matches_bruteforce(dirs):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(0, 30))
        # small integer grid -> many ties and duplicates
        pts = rng.integers(0, 5, size=(n, len(dirs))).astype(float)
        assert front(pts.tolist(), dirs) == _front_numpy(pts, dirs)


def test_front_order_invariant():
    rng = random.Random(1)
    pts = [(rng.randint(0, 6), rng.randint(0, 6)) for _ in range(25)]
    expected = {pts[i] for i in front(pts, MM)}
    for _ in range(10):
        perm = list(range(len(pts)))
        rng.shuffle(perm)
        shuffled = [pts[p] for p in perm]
        assert {shuffled[i] for i in front(shuffled, MM)} == expected
        # same multiset too (duplicates kept consistently)
        assert sorted(shuffled[i] for i in front(shuffled, MM)) == sorted(
            pts[i] for i in front(pts, MM)
        )


# --------------------------------------------------------------------- hypervolume


def test_hv_empty():
    assert hypervolume([], MM) == 0.0


def test_hv_single_point_is_rectangle():
    # (0.8, 0.5) vs reference (0,0): 0.8 * 0.5 = 0.4
    assert hypervolume([(0.8, 0.5)], MM) == pytest.approx(0.4)
    # with reference (0.2, 0.1): (0.8-0.2) * (0.5-0.1) = 0.6 * 0.4 = 0.24
    assert hypervolume([(0.8, 0.5)], MM, reference=(0.2, 0.1)) == pytest.approx(0.24)


def test_hv_staircase():
    # Columns x in [0,1]: height 3; [1,2]: height 2; [2,3]: height 1.
    # HV = 1*3 + 1*2 + 1*1 = 6
    assert hypervolume([(1, 3), (2, 2), (3, 1)], MM) == pytest.approx(6.0)


def test_hv_dominated_points_add_nothing():
    # (1,1) and (2,1.5) lie inside the staircase's region -> still 6.
    pts = [(1, 3), (1, 1), (2, 2), (2, 1.5), (3, 1)]
    assert hypervolume(pts, MM) == pytest.approx(6.0)


def test_hv_duplicates_add_nothing():
    # two copies of (2,2) = one 2x2 square = 4
    assert hypervolume([(2, 2), (2, 2)], MM) == pytest.approx(4.0)


def test_hv_points_not_beyond_reference_ignored():
    # Reference (1,1). (3,3) -> 2*2 = 4.  (0.5, 5): x below ref -> ignored.
    # (5, 1): y equal to ref (not strictly better) -> ignored.  (-1,-1): below -> ignored.
    pts = [(3, 3), (0.5, 5), (5, 1), (-1, -1)]
    assert hypervolume(pts, MM, reference=(1, 1)) == pytest.approx(4.0)
    # Nothing beyond the reference at all -> 0
    assert hypervolume([(0.5, 5), (5, 1)], MM, reference=(1, 1)) == 0.0


def test_hv_mixed_directions():
    # objective 0: accuracy (max), ref 0; objective 1: loss (min), ref 1.
    # Gains over the reference: (0.9, 0.2) -> (0.9, 0.8); (0.5, 0.1) -> (0.5, 0.9).
    # Union of rectangles: 0.9*0.8 + 0.5*(0.9-0.8) = 0.72 + 0.05 = 0.77
    pts = [(0.9, 0.2), (0.5, 0.1)]
    assert hypervolume(pts, ("max", "min"), reference=(0, 1)) == pytest.approx(0.77)
    # min/min: points (1,2),(2,1) with ref (3,3): gains (2,1),(1,2) -> 2*1 + 1*(2-1) = 3
    assert hypervolume([(1, 2), (2, 1)], ("min", "min"), reference=(3, 3)) == pytest.approx(3.0)


def test_hv_min_requires_reference():
    with pytest.raises(ValueError, match="reference"):
        hypervolume([(0.9, 0.2)], ("max", "min"))


def test_hv_one_objective():
    # 1-D: the best value minus the reference: 0.7 - 0.0
    assert hypervolume([(0.3,), (0.7,)], ("max",)) == pytest.approx(0.7)
    # min: ref 1, best 0.25 -> 1 - 0.25 = 0.75
    assert hypervolume([(0.5,), (0.25,)], ("min",), reference=(1,)) == pytest.approx(0.75)


def test_hv_three_objectives_not_implemented():
    with pytest.raises(NotImplementedError, match="2 objectives"):
        hypervolume([(1, 1, 1)], ("max", "max", "max"))


def test_hv_nan_raises():
    with pytest.raises(ValueError, match="point 1"):
        hypervolume([(1, 1), (math.nan, 1)], MM)
    with pytest.raises(ValueError, match="reference"):
        hypervolume([(1, 1)], MM, reference=(0, math.nan))
    with pytest.raises(ValueError, match="reference"):
        hypervolume([(1, 1)], MM, reference=(0,))


def _hv_cell_count(pts, directions, ref) -> int:
    """Exact HV on an integer grid by counting dominated unit cells.

    In 'gain' coordinates (reference at the origin, larger is better) the unit
    cell [a, a+1] x [b, b+1] is covered iff some point has gain_x >= a+1 and
    gain_y >= b+1.
    """
    if len(pts) == 0:
        return 0
    sign = np.array([1 if d == "max" else -1 for d in directions])
    g = (np.asarray(pts, dtype=int) - np.asarray(ref, dtype=int)) * sign
    top = int(max(g.max(), 0))
    count = 0
    for a, b in itertools.product(range(top), repeat=2):
        if np.any((g[:, 0] >= a + 1) & (g[:, 1] >= b + 1)):
            count += 1
    return count


@pytest.mark.parametrize(
    "dirs,ref", [(("max", "max"), (0, 0)), (("max", "min"), (1, 8)), (("min", "min"), (8, 8))]
)
def test_hv_matches_cell_count(dirs, ref):
    rng = np.random.default_rng(42)
    for _ in range(60):
        n = int(rng.integers(0, 12))
        pts = rng.integers(-1, 9, size=(n, 2)).tolist()
        assert hypervolume(pts, dirs, reference=ref) == pytest.approx(
            _hv_cell_count(pts, dirs, ref)
        )


def test_hv_order_invariant():
    rng = random.Random(7)
    pts = [(rng.random(), rng.random()) for _ in range(40)]
    base = hypervolume(pts, MM)
    for _ in range(10):
        rng.shuffle(pts)
        assert hypervolume(pts, MM) == pytest.approx(base, rel=1e-12)


def test_hv_equals_hv_of_front():
    rng = random.Random(3)
    pts = [(rng.random(), rng.random()) for _ in range(50)]
    on_front = [pts[i] for i in front(pts, MM)]
    assert hypervolume(on_front, MM) == pytest.approx(hypervolume(pts, MM))


# ---------------------------------------------------------------------- sort_front


def test_sort_front_orders_by_objective_0():
    pts = [(3, 1), (0, 0), (1, 3), (2, 2)]
    idx = front(pts, MM)  # [0, 2, 3]
    assert idx == [0, 2, 3]
    # along x: (1,3) -> (2,2) -> (3,1)
    assert sort_front(pts, idx, MM) == [2, 3, 0]
    ys = [pts[i][1] for i in sort_front(pts, idx, MM)]
    assert ys == sorted(ys, reverse=True)  # connected staircase: y falls as x rises


def test_sort_front_mixed_and_duplicates():
    # accuracy max, loss min: along ascending accuracy the loss rises on the front.
    pts = [(0.9, 0.3), (0.7, 0.1), (0.8, 0.2), (0.7, 0.1)]
    idx = front(pts, ("max", "min"))
    assert idx == [0, 1, 2, 3]
    assert sort_front(pts, idx, ("max", "min")) == [1, 3, 2, 0]


def test_sort_front_bad_index():
    with pytest.raises(ValueError, match="out of range"):
        sort_front([(1, 1)], [1], MM)
    assert sort_front([], [], MM) == []


# --------------------------------------------------------------------------- non-dominated sort


def test_ranks_layers():
    # front 0: (3,1) (2,2) (1,3); front 1: (2,1) (1,2); front 2: (1,1)
    pts = [(1, 1), (3, 1), (2, 1), (2, 2), (1, 2), (1, 3)]
    assert nondominated_ranks(pts, MM) == [2, 0, 1, 0, 1, 0]


def test_ranks_equal_points_share_a_front():
    assert nondominated_ranks([(2, 2), (2, 2), (1, 1)], MM) == [0, 0, 1]


def test_ranks_mixed_directions_and_empty():
    # accuracy (max) vs loss (min): (0.9, 0.1) dominates both others; (0.8, 0.2) dominates (0.7, 0.3).
    assert nondominated_ranks([(0.7, 0.3), (0.9, 0.1), (0.8, 0.2)], ("max", "min")) == [2, 0, 1]
    assert nondominated_ranks([], MM) == []


def test_ranks_front_zero_is_front():
    rng = random.Random(3)
    for _ in range(30):
        pts = [(rng.randint(0, 4), rng.randint(0, 4)) for _ in range(rng.randint(1, 12))]
        ranks = nondominated_ranks(pts, MM)
        assert [i for i, r in enumerate(ranks) if r == 0] == front(pts, MM)
        # Peeling: front k is the front of what is left after removing fronts < k.
        for k in range(max(ranks) + 1):
            left = [i for i, r in enumerate(ranks) if r >= k]
            assert [left[j] for j in front([pts[i] for i in left], MM)] == [i for i, r in enumerate(ranks) if r == k]


# --------------------------------------------------------------------------- crowding distance


def test_crowding_small_fronts_are_infinite():
    assert crowding_distance([(1, 2), (2, 1), (0, 0)], MM) == [math.inf, math.inf, math.inf]


def test_crowding_known_answer():
    # One front of 4 points on the line x + y = 4, x in {0, 1, 3, 4}. Ranges are 4 for both objectives.
    # Point x=1: neighbours x=0 and x=3 -> (3-0)/4 in x plus (3-0)/4 in y = 1.5. Point x=3: (4-1)/4 * 2 = 1.5.
    pts = [(0, 4), (1, 3), (3, 1), (4, 0)]
    assert crowding_distance(pts, MM) == [math.inf, 1.5, 1.5, math.inf]
    # Move x=1 to x=2: x=2 gets (3-0)/4*2 = 1.5, x=3 gets (4-2)/4*2 = 1.0.
    assert crowding_distance([(0, 4), (2, 2), (3, 1), (4, 0)], MM) == [math.inf, 1.5, 1.0, math.inf]


def test_crowding_within_own_front_and_scale_free():
    # Front 0 is the line above; then a second front of three points on x + y = 2 behind it, and (0, 0) last.
    pts = [(0, 4), (1, 3), (3, 1), (4, 0), (0, 2), (1, 1), (2, 0), (0, 0)]
    assert nondominated_ranks(pts, MM) == [0, 0, 0, 0, 1, 1, 1, 2]
    d = crowding_distance(pts, MM)
    # Within front 1 the ranges are 2: the middle point gets (2-0)/2 + (2-0)/2 = 2; front 0 is unaffected by it.
    assert d == [math.inf, 1.5, 1.5, math.inf, math.inf, 2.0, math.inf, math.inf]
    scaled = crowding_distance([(1000 * x, y - 7) for x, y in pts], MM)
    assert scaled == pytest.approx(d)
