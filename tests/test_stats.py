"""Known answers for mtard.stats: Wilson intervals, t intervals over seeds, Kendall's tau, overlap."""

from __future__ import annotations

import math

import pytest

from mtard.stats import Interval, accuracy_interval, binomial_interval, kendall_tau, overlap, summarize

Z = 1.959963984540054  # the 97.5 % normal quantile


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(50, 100), (281, 288), (3, 7)])
def test_wilson_interval_matches_the_formula(k: int, n: int) -> None:
    ci = binomial_interval(k, n)
    assert (ci.low, ci.high) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)


def test_wilson_interval_at_zero_and_all_correct() -> None:
    # 0 of 10: [0, z²/(n+z²)]; 10 of 10: the mirror image. Never zero width.
    assert (binomial_interval(0, 10).low, binomial_interval(0, 10).high) == pytest.approx((0.0, Z * Z / (10 + Z * Z)))
    assert (binomial_interval(10, 10).low, binomial_interval(10, 10).high) == pytest.approx((10 / (10 + Z * Z), 1.0))
    assert binomial_interval(50, 100).low == pytest.approx(0.40383153, abs=1e-8)


def test_accuracy_interval_reads_the_count_back() -> None:
    assert accuracy_interval(281 / 288, 288) == binomial_interval(281, 288)
    assert math.isnan(accuracy_interval(float("nan"), 288).low) and math.isnan(binomial_interval(0, 0).high)


def test_summary_over_seeds_known_answers() -> None:
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    assert (s.interval.low, s.interval.high) == pytest.approx((2 - half, 2 + half))
    one = summarize([0.5, float("nan")])  # a failed seed (NaN) is not averaged in
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.sd) and math.isnan(one.interval.low)
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)


def test_kendall_tau_known_orders() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair of 6: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert math.isnan(kendall_tau([1], [2])) and math.isnan(kendall_tau([1, 2], [3, 3]))


def test_overlap() -> None:
    assert overlap(Interval(0.1, 0.3), Interval(0.3, 0.5)) and not overlap(Interval(0.1, 0.2), Interval(0.25, 0.5))
    assert overlap(Interval(math.nan, math.nan), Interval(0, 1))
