"""Frechet distance between Gaussians, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``.

The matrix square root is taken of the symmetric PSD matrix ``S1^1/2 S2 S1^1/2`` through ``eigh``, with
eigenvalues below the round-off level (``d * eps * max|w|``, negative ones included) set to zero: no complex
numbers, and singular covariances do not leak ``sqrt(round-off)`` into the trace.
"""

from __future__ import annotations

import numpy as np


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    floor = len(w) * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    return (v * np.sqrt(np.where(w > floor, w, 0.0))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes differ: {mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape}")
    r1 = _psd_sqrt(s1)
    cross = np.trace(_psd_sqrt(r1 @ s2 @ r1))
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * cross, 0.0))


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and (unbiased) covariance of the rows of ``x`` (flattened), in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))
