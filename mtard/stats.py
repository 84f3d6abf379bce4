"""The noise on an accuracy, and on a mean over seeds (pure; the statistics come from scipy).

* `accuracy_interval(accuracy, n)`: the Wilson score interval (95 %) of a binomial
  proportion measured on `n` images (`scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`).
  Wilson rather than the normal approximation: it stays inside [0, 1] and is not zero-width
  at 0 or n correct, which is where a front of 281-283 of 288 images lies.
* `summarize(values)`: mean, sample standard deviation and the two-sided 95 % Student-t
  interval of the mean over seeds (`scipy.stats.t`): with few seeds the t quantile, not 1.96.
* `kendall_tau(a, b)`: Kendall's τ-b (`scipy.stats.kendalltau`): did one order predict the other?
* `overlap(a, b)`: two intervals share a point — the two numbers are not told apart at 95 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return overlap(self, other)


def overlap(a: Interval, b: Interval) -> bool:
    """True when the intervals share a point (NaN bounds: unknown, so not told apart either)."""
    if any(math.isnan(v) for v in (a.low, a.high, b.low, b.high)):
        return True
    return a.low <= b.high and b.low <= a.high


def correct_count(accuracy: float, n: int) -> int:
    """The number of correct images behind an accuracy measured on `n` images."""
    return int(round(float(accuracy) * n))


def binomial_interval(correct: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval of `correct` successes out of `n` (NaN bounds when n is 0)."""
    from scipy.stats import binomtest

    if n <= 0:
        return Interval(math.nan, math.nan)
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(float(ci.low), float(ci.high))


def accuracy_interval(accuracy: float, n: int, level: float = LEVEL) -> Interval:
    """Wilson interval of an accuracy measured on `n` images (NaN bounds for a NaN accuracy)."""
    if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        return Interval(math.nan, math.nan)
    return binomial_interval(correct_count(accuracy, n), n, level)


@dataclass(frozen=True)
class Summary:
    """Mean, sample sd (ddof 1) and the t interval of the mean over `n` finite values."""

    n: int
    mean: float
    sd: float
    interval: Interval


def summarize(values: Sequence[float], level: float = LEVEL) -> Summary:
    """Over the finite values: n, mean, sd and the Student-t interval (sd and interval NaN for n < 2)."""
    from scipy.stats import t

    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, Interval(math.nan, math.nan))
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, math.nan, Interval(math.nan, math.nan))
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, Interval(mean - half, mean + half))


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b between two paired sequences (NaN with fewer than 2 pairs or a constant one)."""
    from scipy.stats import kendalltau

    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2:
        return math.nan
    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    return float(kendalltau(xs, ys).statistic)
