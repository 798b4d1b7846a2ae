"""How sure a comparison of two variants is: tests, intervals and power, from scipy.stats.

One function, :func:`compare`, gives every number the Results tab, the HTML report, the Hub
card and the sweep summary show for a variant against its baseline (through
``core.analysis.stats.table1``). Inputs are final val losses keyed by seed, so seeds that both variants
ran (same data order) can be paired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05  # two-sided test level; intervals are (1 - ALPHA) = 95%
POWER = 0.8  # the power the seed counts and the minimum detectable difference are for
BOOTSTRAP_RESAMPLES = 9999
MAX_SEEDS = 100_000  # seeds_needed beyond this is reported as this (no practical difference)


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline (delta = variant - baseline; NaN where undefined)."""

    delta: float  # difference of the mean final losses
    ci_low: float  # Welch 95% confidence interval of delta
    ci_high: float
    boot_low: float  # percentile bootstrap 95% interval of delta (seeds resampled per variant)
    boot_high: float
    p_welch: float  # Welch's unequal-variance t-test, two-sided
    p_paired: float  # paired t-test over the seeds both ran (NaN with fewer than 2 in common)
    paired_seeds: int  # seeds in common
    mde: float  # minimum |delta| detectable at 80% power with the observed spread and seed count
    seeds_needed: float  # seeds per variant to detect the observed delta at 80% power

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


NO_COMPARISON = Comparison(*([math.nan] * 7), 0, math.nan, math.nan)


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    return arr[np.isfinite(arr)]


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t-test of mean(a) - mean(b): ``(t, two-sided p)``; non-finite values dropped.

    ``(nan, nan)`` with fewer than 2 values on a side. Both sides without variance: equal means
    give ``(0.0, 1.0)``, different ones ``(±inf, 0.0)`` (scipy returns NaN there).
    """
    xa, xb = _finite(a), _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return math.nan, math.nan
    diff = float(xa.mean() - xb.mean())
    if xa.var() == 0 and xb.var() == 0:
        return (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
    result = stats.ttest_ind(xa, xb, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def _welch_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if len(a) < 2 or len(b) < 2 or (a.var() == 0 and b.var() == 0):
        return math.nan, math.nan
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - ALPHA)
    return float(interval.low), float(interval.high)


def _bootstrap_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Percentile bootstrap of mean(a) - mean(b), each sample resampled on its own (fixed rng,
    so tables are reproducible)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    result = stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), vectorized=True,
                             n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=1 - ALPHA,
                             method="percentile", rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _paired(other: Mapping[int, float], base: Mapping[int, float]) -> tuple[float, int]:
    common = [s for s in other if s in base and math.isfinite(other[s]) and math.isfinite(base[s])]
    if len(common) < 2:
        return math.nan, len(common)
    differences = np.array([other[s] - base[s] for s in common])
    if differences.var() == 0:
        return (1.0 if differences[0] == 0 else 0.0), len(common)
    return float(stats.ttest_1samp(differences, 0.0).pvalue), len(common)


def power(delta: float, sd: float, n: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided two-sample t-test with `n` seeds per variant to detect a true
    difference `delta` when each seed's result spreads with standard deviation `sd`."""
    if n < 2 or sd <= 0 or not math.isfinite(delta):
        return math.nan
    df = 2 * n - 2
    shift = abs(delta) / (sd * math.sqrt(2 / n))
    critical = stats.t.ppf(1 - alpha / 2, df)
    value = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    if math.isnan(value):  # scipy's noncentral t gives up far in the tail: power is 1 there
        return 1.0 if shift > critical else 0.0
    return value


def minimum_detectable(sd: float, n: float, target: float = POWER) -> float:
    """Smallest |delta| detected with power `target` by `n` seeds per variant at spread `sd`."""
    if n < 2 or not sd > 0 or power(100 * sd, sd, n) < target:
        return math.nan
    return float(optimize.brentq(lambda d: power(d, sd, n) - target, 1e-12 * sd, 100 * sd))


def seeds_needed(delta: float, sd: float, target: float = POWER) -> float:
    """Seeds per variant for power `target` against a true difference `delta` at spread `sd`
    (at least 2; MAX_SEEDS when even that many would not do)."""
    if not (sd > 0 and math.isfinite(delta)) or delta == 0:
        return math.nan
    high = 2
    while power(delta, sd, high) < target:  # doubling brackets the answer...
        if high >= MAX_SEEDS:
            return float(MAX_SEEDS)
        high *= 2
    low = max(2, high // 2)
    while low < high:  # ...and bisection finds the smallest count with enough power
        middle = (low + high) // 2
        if power(delta, sd, middle) >= target:
            high = middle
        else:
            low = middle + 1
    return float(high)


def pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    """The two samples' pooled standard deviation (ddof=1); NaN with fewer than 3 values."""
    dof = len(a) + len(b) - 2
    if len(a) < 1 or len(b) < 1 or dof < 1:
        return math.nan
    squares = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    return math.sqrt(squares / dof)


def compare(other: Mapping[int, float], base: Mapping[int, float]) -> Comparison:
    """Every statistic of `other` against `base`, each a {seed: final loss} mapping."""
    a, b = _finite(other.values()), _finite(base.values())
    if len(a) == 0 or len(b) == 0:
        return NO_COMPARISON
    delta = float(a.mean() - b.mean())
    sd, n = pooled_sd(a, b), min(len(a), len(b))
    p_paired, in_common = _paired(other, base)
    return Comparison(delta, *_welch_interval(a, b), *_bootstrap_interval(a, b), welch_t_test(a, b)[1],
                      p_paired, in_common, minimum_detectable(sd, n), seeds_needed(delta, sd))


__all__ = ["Comparison", "compare", "welch_t_test", "power", "minimum_detectable", "seeds_needed",
           "pooled_sd", "ALPHA", "POWER"]
