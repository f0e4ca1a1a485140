"""Small-sample statistics for seed studies: Student-t intervals and paired tests.

A study repeats each setting over a handful of seeds (n = 3-10), so everything here is exact
for small n: the Student-t distribution (its CDF through the regularised incomplete beta
function, its quantile by bisection; no SciPy needed), the t confidence interval of a mean,
the paired t-test, and the exact sign-flip permutation test, which enumerates all ``2^n``
sign patterns of the paired differences and assumes nothing about their distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_ppf",
    "MeanInterval",
    "mean_interval",
    "paired_t_p_value",
    "sign_flip_p_value",
    "PairedComparison",
    "paired_comparison",
    "MAX_SIGN_FLIP_N",
]

# Enumerating 2^n sign patterns stays cheap up to here (about a million patterns).
MAX_SIGN_FLIP_N = 20
_CF_ITERATIONS = 500
_CF_EPS = 1e-15
_TINY = 1e-300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (modified Lentz), good for ``x < (a+1)/(a+b+2)``."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _CF_ITERATIONS + 1):
        # even step: d_{2m} = m(b−m)x / ((a+2m−1)(a+2m))
        num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + num / c
        c = c if abs(c) > _TINY else _TINY
        result *= d * c
        # odd step: d_{2m+1} = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1))
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + num / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        result *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return result
    raise ArithmeticError(
        f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}"
    )


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b) = B(x; a, b) / B(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if a <= 0 or b <= 0:
        raise ValueError(f"a and b must be > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df > 0`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isnan(t):
        raise ValueError("t is NaN")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    # P(|T| > |t|) = I_{df/(df+t²)}(df/2, 1/2)
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """The ``p``-quantile of Student's t (``0 < p < 1``), by bisection on the CDF."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a 1-d sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: expected finite numbers, got {x.tolist()}")
    return x


@dataclass(frozen=True)
class MeanInterval:
    """Mean of ``n`` values, their sample standard deviation, and the Student-t interval."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    """``mean ± t_{(1+c)/2, n−1} · s/√n`` (needs ``n >= 2``; zero spread gives a point)."""
    x = _as_array(values, "mean_interval")
    if len(x) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(x)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, mean = len(x), float(x.mean())
    std = float(x.std(ddof=1))
    half = student_t_ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return MeanInterval(n, mean, std, mean - half, mean + half, confidence)


def paired_t_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of ``H0: E[d] = 0`` on differences ``d``.

    Differences that are all equal have no spread: ``p = 1`` if they are all zero, else 0
    (the t statistic is infinite).
    """
    d = _as_array(differences, "paired_t_p_value")
    if len(d) < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {len(d)}")
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if std == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (std / math.sqrt(len(d)))
    return min(1.0, 2.0 * student_t_cdf(-abs(t), len(d) - 1))


def sign_flip_p_value(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p-value of ``H0``: each difference is
    symmetric about 0.

    All ``2^n`` sign patterns are enumerated; p is the fraction whose ``|Σ ±d_i|`` reaches
    the observed ``|Σ d_i|`` (the observed pattern included, so p >= 2/2^n unless every
    difference is 0). Ties are judged with a relative tolerance of 1e-9.
    """
    d = _as_array(differences, "sign_flip_p_value")
    n = len(d)
    if n < 1:
        raise ValueError("a sign-flip test needs at least 1 pair")
    if n > MAX_SIGN_FLIP_N:
        raise ValueError(
            f"the exact sign-flip test enumerates 2^n patterns; n must be <= {MAX_SIGN_FLIP_N}, "
            f"got {n}"
        )
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    bits = np.arange(n)
    total, hits, chunk = 1 << n, 0, 1 << 16
    for start in range(0, total, chunk):
        patterns = np.arange(start, min(total, start + chunk))[:, None]
        signs = 1.0 - 2.0 * ((patterns >> bits) & 1)  # [chunk, n] of ±1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return hits / total


@dataclass(frozen=True)
class PairedComparison:
    """A setting against the baseline over the same seeds: ``d_i = x_i − baseline_i``."""

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    t_p_value: float
    sign_flip_p_value: float
    # The smallest p-value the sign-flip test can give with n pairs: 2 / 2^n.
    sign_flip_min_p_value: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired_comparison(
    values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> PairedComparison:
    """Mean paired difference with its t interval, paired t-test and exact sign-flip test."""
    x = _as_array(values, "paired_comparison values")
    y = _as_array(baseline, "paired_comparison baseline")
    if x.shape != y.shape:
        raise ValueError(
            f"paired values must match one to one: got {len(x)} values and {len(y)} baseline values"
        )
    d = x - y
    interval = mean_interval(d, confidence)
    return PairedComparison(
        n=len(d),
        mean_difference=interval.mean,
        ci_low=interval.ci_low,
        ci_high=interval.ci_high,
        t_p_value=paired_t_p_value(d),
        sign_flip_p_value=sign_flip_p_value(d),
        sign_flip_min_p_value=min(1.0, 2.0 / 2 ** len(d)),
    )
