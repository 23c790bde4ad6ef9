"""Is a difference between two configurations real? Paired tests over rounds.

Two configurations trained on the same rounds (the same folds, and the same seeds where
an experiment crosses seeds with folds) give one paired difference per round. k-fold
rounds share most of their training faces, so the rounds' differences are correlated and
a plain paired t-test is far too ready to call a difference real. The corrected resampled
t-test (Nadeau & Bengio, 2003; its repeated k-fold form in Bouckaert & Frank, 2004)
inflates the variance of the mean by ``n_test / n_train`` for that overlap. Wilcoxon's
signed-rank test, which assumes no distribution but does not correct for the overlap, is
given beside it where there are enough rounds for it to reach p < 0.05 at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_PAIRS = 2            # a difference from one round is never called significant
WILCOXON_MIN_PAIRS = 6   # with 5 pairs the smallest two-sided p is 0.0625
NOT_ENOUGH = "not enough rounds"
NO_DIFFERENCE = "no detectable difference"


@dataclass(frozen=True)
class Interval:
    """A mean over rounds with its corrected 95 % confidence interval (NaN when undefined)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` paired over rounds: the difference, its interval, the tests and a verdict."""

    difference: Interval
    p_value: float             # corrected resampled t-test; NaN with fewer than MIN_PAIRS
    wilcoxon_p: float          # NaN with fewer than WILCOXON_MIN_PAIRS
    verdict: str


def corrected_interval(values, test_train_ratio: float, alpha: float = ALPHA) -> tuple[Interval, float]:
    """Mean of per-round values, its corrected interval, and the two-sided p-value that the
    true mean is zero. ``test_train_ratio``: test faces / training faces of one round."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < MIN_PAIRS:
        return Interval(mean, math.nan, math.nan, n), math.nan
    variance = (1.0 / n + test_train_ratio) * float(values.var(ddof=1))
    if variance == 0.0:   # every round gave exactly the same value
        return Interval(mean, mean, mean, n), (1.0 if mean == 0.0 else 0.0)
    scale = math.sqrt(variance)
    critical = float(stats.t.ppf(1 - alpha / 2, df=n - 1))
    p_value = float(2 * stats.t.sf(abs(mean) / scale, df=n - 1))
    return Interval(mean, mean - critical * scale, mean + critical * scale, n), p_value


def wilcoxon_p(differences) -> float:
    differences = np.asarray(differences, dtype=float)
    if len(differences) < WILCOXON_MIN_PAIRS:
        return math.nan
    if not np.any(differences):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def compare(a, b, test_train_ratio: float, names: tuple[str, str], alpha: float = ALPHA) -> PairedComparison:
    """Paired comparison of per-round values ``a`` and ``b`` (same order, same rounds).

    The verdict follows the corrected t-test: "<names[0]> higher", "<names[1]> higher",
    "no detectable difference", or "not enough rounds" below MIN_PAIRS pairs.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values must match round for round, got {a.shape} and {b.shape}")
    differences = a - b
    interval, p_value = corrected_interval(differences, test_train_ratio, alpha)
    if interval.n < MIN_PAIRS:
        verdict = NOT_ENOUGH
    elif p_value < alpha:
        verdict = f"{names[0] if interval.mean > 0 else names[1]} higher"
    else:
        verdict = NO_DIFFERENCE
    return PairedComparison(interval, p_value, wilcoxon_p(differences), verdict)
