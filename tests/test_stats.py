"""Student-t distribution, t intervals and paired tests against closed forms and tables."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats  # installed with scikit-learn, a dependency

from spikecut.stats import (
    mean_interval,
    paired_comparison,
    paired_t_p_value,
    regularized_incomplete_beta,
    sign_flip_p_value,
    student_t_cdf,
    student_t_ppf,
)


@pytest.mark.parametrize("t", [-30.0, -2.5, -1.0, -0.2, 0.0, 0.7, 1.0, 3.0, 12.0])
def test_t_cdf_matches_the_closed_forms_for_one_two_and_three_degrees(t):
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    s = t / math.sqrt(3)
    cdf3 = 0.5 + (s / (1 + s * s) + math.atan(s)) / math.pi
    assert student_t_cdf(t, 3) == pytest.approx(cdf3, abs=1e-13)


@pytest.mark.parametrize(
    "df, quantile",
    # t_{0.975, df} from the standard tables
    [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725)],
)
def test_t_quantile_matches_the_tables(df, quantile):
    assert student_t_ppf(0.975, df) == pytest.approx(quantile, abs=5e-7)
    assert student_t_ppf(0.025, df) == pytest.approx(-quantile, abs=5e-7)
    assert student_t_cdf(student_t_ppf(0.975, df), df) == pytest.approx(0.975, abs=1e-12)


def test_t_distribution_agrees_with_scipy_on_a_grid():
    for df in (0.5, 1, 2.5, 4, 9, 50, 400):
        for t in (-60.0, -4.0, -1.3, -0.01, 0.0, 0.4, 2.2, 8.0, 1e4):
            assert student_t_cdf(t, df) == pytest.approx(
                scipy_stats.t.cdf(t, df), rel=1e-10, abs=1e-14
            ), (df, t)
        for p in (0.001, 0.2, 0.5, 0.9, 0.999):
            assert student_t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)


def test_incomplete_beta_edges_and_symmetry():
    assert regularized_incomplete_beta(2.0, 3.0, 0.0) == 0.0
    assert regularized_incomplete_beta(2.0, 3.0, 1.0) == 1.0
    # I_x(1, 1) = x, and I_x(a, b) = 1 − I_{1−x}(b, a)
    assert regularized_incomplete_beta(1.0, 1.0, 0.37) == pytest.approx(0.37, abs=1e-14)
    left = regularized_incomplete_beta(2.5, 0.5, 0.8)
    assert left == pytest.approx(1 - regularized_incomplete_beta(0.5, 2.5, 0.2), abs=1e-13)
    with pytest.raises(ValueError, match="x must be in"):
        regularized_incomplete_beta(1.0, 1.0, 1.5)


def test_mean_interval_by_hand():
    # mean 3, s = sqrt(2.5), half-width t_{0.975,4} · s/√5 = 2.7764451 · 0.7071068
    ci = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.n == 5 and ci.mean == 3.0 and ci.std == pytest.approx(math.sqrt(2.5))
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert ci.ci_low == pytest.approx(3.0 - half, abs=1e-6)
    assert ci.ci_high == pytest.approx(3.0 + half, abs=1e-6)
    # a 90 % interval is narrower; equal values give a point
    assert mean_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.9).ci_high < ci.ci_high
    flat = mean_interval([0.25, 0.25, 0.25])
    assert (flat.ci_low, flat.ci_high, flat.std) == (0.25, 0.25, 0.0)
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        mean_interval([1.0])


def test_paired_t_p_value_by_hand_and_against_scipy():
    # d = 1..5: t = 3 / (sqrt(2.5)/sqrt(5)) = 4.2426, df = 4 → p = 0.0132356
    assert paired_t_p_value([1, 2, 3, 4, 5]) == pytest.approx(0.0132356, abs=1e-6)
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        d = rng.normal(0.3, 1.0, n)
        assert paired_t_p_value(d) == pytest.approx(scipy_stats.ttest_1samp(d, 0).pvalue)
    assert paired_t_p_value([0.0, 0.0, 0.0]) == 1.0
    assert paired_t_p_value([0.5, 0.5]) == 0.0  # no spread, nonzero mean: t is infinite


def test_sign_flip_is_exact_on_small_cases():
    # ±1 ± 2 ± 3 ∈ {±6, ±4, ±2, 0, 0}: only the two |6| patterns reach 6
    assert sign_flip_p_value([1, 2, 3]) == 2 / 8
    # ±2 ± 1 ± 1 ∈ {±4, ±2, ±2, 0, 0}: six of eight reach |2|
    assert sign_flip_p_value([2, 1, -1]) == 6 / 8
    assert sign_flip_p_value([1, -1]) == 1.0
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == 1.0
    # five seeds that all agree cannot go below 2/32 = 0.0625
    assert sign_flip_p_value([0.1, 0.2, 0.3, 0.4, 0.5]) == 2 / 32


def test_sign_flip_equals_brute_force_enumeration():
    rng = np.random.default_rng(1)
    for n in (1, 4, 7):
        d = rng.normal(0.2, 1.0, n).round(1)  # rounding makes ties likely
        observed = abs(d.sum())
        flips = list(itertools.product((1, -1), repeat=n))
        hits = sum(abs(np.dot(s, d)) >= observed - 1e-9 for s in flips)
        assert sign_flip_p_value(d) == hits / len(flips), d


def test_paired_comparison_combines_the_interval_and_both_tests():
    base = [0.80, 0.82, 0.81, 0.79]
    rcs = [0.83, 0.84, 0.80, 0.82]
    cmp = paired_comparison(rcs, base)
    d = np.subtract(rcs, base)
    ci = mean_interval(d)
    assert cmp.n == 4 and cmp.mean_difference == pytest.approx(d.mean())
    assert (cmp.ci_low, cmp.ci_high) == (ci.ci_low, ci.ci_high)
    assert cmp.t_p_value == paired_t_p_value(d) and cmp.sign_flip_p_value == sign_flip_p_value(d)
    assert cmp.sign_flip_min_p_value == 2 / 16
    with pytest.raises(ValueError, match="3 values and 4 baseline"):
        paired_comparison(rcs[:3], base)
