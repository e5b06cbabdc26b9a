"""Paired comparisons of two systems on the same folds.

Two systems evaluated on the same speaker-independent folds give one UAR each per fold; their
per-fold differences are paired (a fold with a hard test speaker is hard for both). We report
the mean difference with a percentile bootstrap confidence interval over folds and the
two-sided Wilcoxon signed-rank test of the differences (scipy; exact for few folds without
ties). With 10 folds neither can be very sharp: an interval that contains 0 means the data
do not tell the two apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import wilcoxon

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """``a`` minus ``b`` over the same folds (UAR per fold)."""

    a: str
    b: str
    n_folds: int
    mean_difference: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float | None  # None when every difference is 0
    wins: int  # folds where a is better
    losses: int  # folds where b is better

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        p = "n/a" if self.wilcoxon_p is None else f"{self.wilcoxon_p:.3f}"
        return (f"{self.a} - {self.b}: {self.mean_difference:+.3f} UAR per fold "
                f"(95% bootstrap CI {self.ci_low:+.3f} .. {self.ci_high:+.3f}; Wilcoxon p = {p}; "
                f"better on {self.wins}, worse on {self.losses} of {self.n_folds} folds)")


def paired_comparison(a_name: str, a: Sequence[float], b_name: str, b: Sequence[float],
                      *, seed: int = 0) -> PairedComparison:
    """Compare per-fold UARs ``a`` and ``b`` (same folds, same order)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equally long lists of per-fold UARs; got {a.shape} and "
                         f"{b.shape}")
    differences = a - b
    rng = np.random.default_rng(seed)
    resampled = rng.choice(differences, size=(BOOTSTRAP_RESAMPLES, differences.size))
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(resampled.mean(axis=1), [tail, 1 - tail])
    p = None
    if np.any(differences != 0):
        p = float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedComparison(a_name, b_name, int(differences.size), float(differences.mean()),
                            float(low), float(high), p, int(np.sum(differences > 0)),
                            int(np.sum(differences < 0)))
