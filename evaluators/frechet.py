"""Frechet distance between Gaussians, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``.

The trace of the matrix square root of the symmetric PSD matrix ``S1^1/2 S2 S1^1/2`` is the sum of the square
roots of its eigenvalues (``eigvalsh``), with eigenvalues below the round-off level (``d * eps * max|w|``, negative
ones included) set to zero: no complex numbers, and singular covariances do not leak ``sqrt(round-off)`` into the
trace.
"""

from __future__ import annotations

import numpy as np


def _floored(w: np.ndarray) -> np.ndarray:
    floor = len(w) * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    return np.where(w > floor, w, 0.0)


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of ``a`` (eigenvalues below round-off set to zero), float64."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(_floored(w))) @ v.T


def _trace_sqrt(a: np.ndarray) -> float:
    """tr(a^1/2) of a symmetric PSD matrix: the sum of the square roots of its eigenvalues (no eigenvectors)."""
    return float(np.sqrt(_floored(np.linalg.eigvalsh(0.5 * (a + a.T)))).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     sqrt2: np.ndarray | None = None) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``sqrt2``: ``psd_sqrt(sigma2)`` when it is already known (a fixed target compared with many sample
    covariances, e.g. bootstrap replicates): then tr((S2^1/2 S1 S2^1/2)^1/2), the same trace (both matrices have
    the eigenvalues of S1 S2), needs one eigenvalue problem instead of two."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes differ: {mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape}")
    if sqrt2 is None:
        r1 = psd_sqrt(s1)
        cross = _trace_sqrt(r1 @ s2 @ r1)
    else:
        cross = _trace_sqrt(sqrt2 @ s1 @ sqrt2)
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * cross, 0.0))


def frechet_distance_rows(x: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance of N(mean(x), cov(x)) (rows of ``x``, unbiased covariance) to N(mu2, sigma2), through the
    n x n form: with S1 = A^T A (A: the centred rows / sqrt(n - 1)), S2^1/2 S1 S2^1/2 = (A S2^1/2)^T (A S2^1/2) has
    the non-zero eigenvalues of A S2 A^T (XY and YX share them), so tr((S2^1/2 S1 S2^1/2)^1/2) is the sum of the
    square roots of the eigenvalues of an n x n matrix. Equal to ``frechet_distance(*moments(x), mu2, sigma2)``
    (tested); cheaper when n is below the dimension (a bootstrap replicate of a few samples in 2048-d)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    mu1 = x.mean(0)
    a = (x - mu1) / np.sqrt(len(x) - 1)
    s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    cross = _trace_sqrt(a @ s2 @ a.T)
    diff = mu1 - np.asarray(mu2, np.float64)
    return float(max(diff @ diff + float((a * a).sum()) + np.trace(s2) - 2.0 * cross, 0.0))


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and (unbiased) covariance of the rows of ``x`` (flattened), in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    mean = x.mean(0)
    xc = x - mean
    return mean, np.atleast_2d(xc.T @ xc / (len(x) - 1))  # np.cov's formula, without its per-call overhead
