"""Exact oracle metrics: error to the exact ODE solution and distance to the true distribution."""

from __future__ import annotations

import numpy as np

from evaluators.frechet import frechet_distance, moments


def per_sample_mse(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean squared error of every sample to its reference (mean over dimensions), float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    if x.shape != ref.shape:
        raise ValueError(f"samples {x.shape} and reference {ref.shape} differ in shape")
    return ((x - ref) ** 2).mean(1)


def rmse(x: np.ndarray, ref: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Root mean squared error to the exact solution from the same x_T: sqrt(mean over samples and dims)."""
    mse = per_sample_mse(x, ref)
    return float(np.sqrt(mse.mean() if idx is None else mse[idx].mean()))


def frechet_to(x: np.ndarray, mu: np.ndarray, cov: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Frechet distance between the samples' moments and a target's (mu, cov)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    m, c = moments(x if idx is None else x[idx])
    return frechet_distance(m, c, mu, cov)
