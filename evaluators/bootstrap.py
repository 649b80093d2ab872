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


def bootstrap_replicates(stat: Callable[[np.ndarray | None], float], n: int, reps: int = DEFAULT_BOOTSTRAPS,
                         seed: int = 0) -> np.ndarray:
    """``stat(indices)`` on each of the ``reps`` resamples of :func:`bootstrap_indices` (float64; NaN kept).

    Two solvers evaluated on the same x_T with the same (n, reps, seed) are resampled identically, so the
    element-wise difference of their replicates is a paired bootstrap of the difference of their statistics."""
    if reps == 0 or n < 2:
        return np.zeros(0)
    return np.array([stat(idx) for idx in bootstrap_indices(n, reps, seed)], dtype=np.float64)


Bounds = tuple[float | None, float | None]
UNBOUNDED: Bounds = (None, None)
NONNEGATIVE: Bounds = (0.0, None)  # a distance, an error: its value and its true value are >= 0
UNIT: Bounds = (0.0, 1.0)  # a share


def percentile_ci(estimate: float, replicates: np.ndarray, level: float = DEFAULT_LEVEL,
                  bounds: Bounds = UNBOUNDED) -> tuple[float, float]:
    """Bias-shifted percentile interval around ``estimate`` from bootstrap ``replicates`` (non-finite ones
    dropped), clipped to ``bounds``; NaN when nothing finite is left.

    Plug-in statistics such as the Frechet distance are biased upwards under resampling (duplicated
    samples shrink the covariance); the percentile interval is shifted by the bootstrap bias
    ``mean(stat*) - stat`` so that it is centred on the estimate (Efron & Tibshirani 1993, Sec. 10.6).
    Near a distance of 0 the shift can carry the lower end below 0: the data then cannot tell the distance from
    0. ``bounds`` is the range of the statistic's true value (``NONNEGATIVE`` for a distance); clipping the interval
    to it leaves its coverage unchanged (the true value always lies inside the range), so a distance's interval
    reads ``[0, hi]`` there instead of a negative bound. Differences of two statistics (paired replicates) are
    not bounded.
    """
    vals = np.asarray(replicates, np.float64)
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    bias = vals.mean() - estimate
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2]) - bias
    return clip_to(lo, bounds), clip_to(hi, bounds)


def clip_to(value: float, bounds: Bounds) -> float:
    """``value`` clipped to ``bounds`` (None: no bound on that side; NaN stays NaN)."""
    low, high = (-np.inf if bounds[0] is None else bounds[0]), (np.inf if bounds[1] is None else bounds[1])
    return float(np.clip(value, low, high))


def bootstrap_ci(
    stat: Callable[[np.ndarray | None], float], n: int, reps: int = DEFAULT_BOOTSTRAPS,
    level: float = DEFAULT_LEVEL, seed: int = 0, estimate: float | None = None, bounds: Bounds = UNBOUNDED,
) -> tuple[float, float]:
    """Bias-shifted percentile interval (:func:`percentile_ci`, clipped to ``bounds``) of ``stat(indices)`` over
    bootstrap resamples of ``n`` items."""
    if reps == 0 or n < 2:
        return float("nan"), float("nan")
    theta = stat(None) if estimate is None else estimate
    return percentile_ci(theta, bootstrap_replicates(stat, n, reps, seed), level, bounds)
