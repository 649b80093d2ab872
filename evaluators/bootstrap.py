"""Bootstrap confidence intervals, paired across solvers: the resampling indices depend only on
(n, seed), so every solver evaluated on the same x_T is resampled identically."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_BOOTSTRAPS = 200
DEFAULT_LEVEL = 0.95


def bootstrap_indices(n: int, reps: int = DEFAULT_BOOTSTRAPS, seed: int = 0) -> np.ndarray:
    """``reps`` x ``n`` resampling indices, a function of (n, reps, seed) only."""
    return np.random.default_rng([seed, n, reps]).integers(0, n, size=(reps, n))


def bootstrap_ci(
    stat: Callable[[np.ndarray | None], float], n: int, reps: int = DEFAULT_BOOTSTRAPS,
    level: float = DEFAULT_LEVEL, seed: int = 0, estimate: float | None = None,
) -> tuple[float, float]:
    """Bias-shifted percentile interval of ``stat(indices)`` over bootstrap resamples of ``n`` items.

    Plug-in statistics such as the Frechet distance are biased upwards under resampling (duplicated
    samples shrink the covariance); the percentile interval is shifted by the bootstrap bias
    ``mean(stat*) - stat`` so that it is centred on the estimate (Efron & Tibshirani 1993, Sec. 10.6).
    """
    if reps == 0 or n < 2:
        return float("nan"), float("nan")
    theta = stat(None) if estimate is None else estimate
    vals = np.array([stat(idx) for idx in bootstrap_indices(n, reps, seed)])
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0 or not np.isfinite(theta):
        return float("nan"), float("nan")
    bias = vals.mean() - theta
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2]) - bias
    return float(lo), float(hi)
