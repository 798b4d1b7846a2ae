"""Comparison statistics against published values (R's sleep data, power.t.test) and simulation."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from core.analysis.significance import (
    MAX_SEEDS,
    compare,
    minimum_detectable,
    pooled_sd,
    power,
    seeds_needed,
    welch_t_test,
)

# R's `sleep` data: extra sleep of 10 patients under two drugs (Student 1908).
DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_welch_and_paired_tests_match_r_on_the_sleep_data():
    # R: t.test(extra ~ group, data = sleep): t = -1.8608, df = 17.776, p-value = 0.07939,
    # 95 percent confidence interval: -3.3654832 0.2054832
    result = compare(dict(enumerate(DRUG_1)), dict(enumerate(DRUG_2)))
    assert welch_t_test(DRUG_1, DRUG_2)[0] == pytest.approx(-1.8608, abs=1e-4)
    assert result.p_welch == pytest.approx(0.07939, abs=1e-5)
    assert (result.ci_low, result.ci_high) == pytest.approx((-3.3654832, 0.2054832), abs=1e-7)
    assert result.delta == pytest.approx(-1.58)
    # R: t.test(extra ~ group, data = sleep, paired = TRUE): t = -4.0621, df = 9, p-value = 0.002833
    assert result.p_paired == pytest.approx(0.002833, abs=1e-6) and result.paired_seeds == 10


def test_pairing_uses_only_the_seeds_both_ran():
    other = {0: 1.0, 1: 2.0, 2: 3.5, 7: 9.0}
    base = {0: 0.5, 1: 1.0, 2: 2.5, 5: 0.0}
    result = compare(other, base)
    expected = stats.ttest_1samp([0.5, 1.0, 1.0], 0.0).pvalue  # seeds 0, 1, 2
    assert result.paired_seeds == 3 and result.p_paired == pytest.approx(expected)
    assert math.isnan(compare({0: 1.0, 3: 2.0}, {0: 1.0, 4: 2.0}).p_paired)  # one seed in common


def test_power_matches_r_power_t_test():
    # R: power.t.test(n = 20, delta = 1): power = 0.8689528
    assert power(1.0, 1.0, 20) == pytest.approx(0.8689528, abs=1e-6)
    # R: power.t.test(power = .90, delta = 1): n = 22.02110, so 23 seeds; 80%: n = 16.71477 -> 17
    assert seeds_needed(1.0, 1.0, target=0.9) == 23
    assert seeds_needed(1.0, 1.0) == 17
    assert power(minimum_detectable(1.0, 17), 1.0, 17) == pytest.approx(0.8, abs=1e-9)


def test_the_computed_seed_count_detects_the_difference_80_percent_of_the_time():
    """Draws from normals with the observed spread: at the computed seed count Welch's test at
    5% finds the difference in 0.8 +- 0.05 of 4,000 simulated experiments."""
    rng = np.random.default_rng(0)
    delta, sd = 0.02, 0.03  # a CPU-ablation-sized gap and seed spread
    n = int(seeds_needed(delta, sd))
    assert 30 <= n <= 40  # big enough that rounding n up changes the power by little
    a = rng.normal(delta, sd, size=(4000, n))
    b = rng.normal(0.0, sd, size=(4000, n))
    detected = (stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05).mean()
    assert detected == pytest.approx(0.8, abs=0.05)


def test_bootstrap_interval_is_reproducible_and_brackets_the_difference():
    first = compare(dict(enumerate(DRUG_1)), dict(enumerate(DRUG_2)))
    again = compare(dict(enumerate(DRUG_1)), dict(enumerate(DRUG_2)))
    assert (first.boot_low, first.boot_high) == (again.boot_low, again.boot_high)
    assert first.boot_low < first.delta < first.boot_high
    # the percentile bootstrap of a difference of means is narrower than Welch's t interval at n=10
    assert first.boot_high - first.boot_low < first.ci_high - first.ci_low


def test_edge_cases_give_nan_not_errors():
    one_each = compare({0: 1.0}, {0: 2.0})
    assert one_each.delta == -1.0 and all(math.isnan(v) for v in (one_each.p_welch, one_each.ci_low,
                                                                   one_each.boot_low, one_each.mde))
    assert math.isnan(compare({}, {0: 1.0}).delta)
    assert math.isnan(compare({0: math.nan, 1: math.nan}, {0: 1.0, 1: 2.0}).delta)
    same = compare({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0})
    assert (same.p_welch, same.p_paired) == (1.0, 1.0) and math.isnan(same.seeds_needed)
    assert seeds_needed(1e-9, 1.0) == MAX_SEEDS
    assert pooled_sd(np.array([1.0, 3.0]), np.array([2.0, 4.0])) == pytest.approx(math.sqrt(2.0))


def test_welch_edge_cases():
    assert all(math.isnan(v) for v in welch_t_test([1.0], [1.0, 2.0, 3.0]))
    assert welch_t_test([2.0, 2.0], [2.0, 2.0, 2.0]) == (0.0, 1.0)
    assert welch_t_test([1.0, 1.0], [2.0, 2.0]) == (-math.inf, 0.0)
    assert welch_t_test([1.0, 2.0, math.nan], [3.0, 5.0]) == welch_t_test([1.0, 2.0], [3.0, 5.0])


def _t_sf_by_integration(t, df, n=20_000):
    """Independent reference: 1/2 minus Simpson's rule on the t density over [0, t]."""
    u = np.linspace(0.0, t, n + 1)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(u * u / df))
    h = t / n
    return 0.5 - h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


def test_welch_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0]
    # means 2.5 and 5; sample variances 5/3 and 4; var/n = 5/12 and 4/3; sum 7/4
    t_hand = -2.5 / math.sqrt(7 / 4)
    df_hand = Fraction(7, 4) ** 2 / (Fraction(5, 12) ** 2 / 3 + Fraction(4, 3) ** 2 / 2)
    assert df_hand == Fraction(21168, 6544)
    t, p = welch_t_test(a, b)
    assert t == pytest.approx(t_hand, rel=1e-12)
    assert p == pytest.approx(2 * _t_sf_by_integration(abs(t_hand), float(df_hand)), rel=1e-8)
    t_rev, p_rev = welch_t_test(b, a)
    assert t_rev == pytest.approx(-t) and p_rev == pytest.approx(p)
