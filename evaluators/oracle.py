"""Exact oracle metrics: error to the exact ODE solution and distance to the true distribution."""

from __future__ import annotations

from typing import Any

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


def frechet_to(x: np.ndarray, mu: np.ndarray, cov: np.ndarray, idx: np.ndarray | None = None,
               cov_sqrt: np.ndarray | None = None) -> float:
    """Frechet distance between the samples' moments and a target's (mu, cov); ``cov_sqrt``: ``psd_sqrt(cov)``,
    computed once by a caller that compares many sample sets with one target (bootstrap replicates)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    m, c = moments(x if idx is None else x[idx])
    return frechet_distance(m, c, mu, cov, sqrt2=cov_sqrt)


def mse_ref(x: np.ndarray, ref: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Mean squared error to a high-NFE reference run from the same x_T (UniPC / DPM-Solver-v3 / DC-Solver
    protocol): mean over samples and dimensions of ``(x - ref)^2``."""
    mse = per_sample_mse(x, ref)
    return float(mse.mean() if idx is None else mse[idx].mean())


def mixture_at(model: Any, labels: np.ndarray | None, t: float | None) -> dict[str, np.ndarray]:
    """The diffused mixture p_t of an oracle model (``MixtureOracle``): per component weight, mean ``a mu_k``,
    and covariance eigen-decomposition ``U diag(a^2 d + s^2) U^T`` (point masses: ``s^2 I``), float64.
    With ``labels``, the mixture of the class-conditionals in the proportions the labels occur."""
    a, s = (1.0, 0.0) if t is None else (float(model.schedule.alpha(float(t))), float(model.schedule.sigma(float(t))))
    w = np.exp(model.log_w.numpy())
    if labels is not None:
        classes = model.classes.numpy()
        freq = np.bincount(np.asarray(labels).reshape(-1), minlength=model.num_classes) / np.asarray(labels).size
        w_class = np.bincount(classes, weights=w, minlength=model.num_classes)
        w = w * freq[classes] / w_class[classes]
    means = a * model.means.numpy()
    k, d = means.shape
    if model.covs is None:
        evals = np.full((k, d), s**2)
        evecs = None
    else:
        evals = a**2 * model.evals.numpy() + s**2
        evecs = model.evecs.numpy()
    return {"w": w / w.sum(), "means": means, "evals": evals, "evecs": evecs}


def mixture_sample(mix: dict[str, np.ndarray], n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws from the mixture (component by weight, then its Gaussian)."""
    rng = np.random.default_rng([seed, n])
    keep = mix["w"] > 0
    comp = rng.choice(np.flatnonzero(keep), size=n, p=mix["w"][keep])
    z = rng.standard_normal((n, mix["means"].shape[1])) * np.sqrt(np.maximum(mix["evals"][comp], 0.0))
    if mix["evecs"] is not None:
        z = np.einsum("nde,ne->nd", mix["evecs"][comp], z)
    return mix["means"][comp] + z


def mixture_logpdf(mix: dict[str, np.ndarray], x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """log p(x) of every row under the mixture (nats, float64)."""
    from scipy.special import logsumexp

    x = np.asarray(x, np.float64).reshape(len(x), -1)
    w, mu, ev, U = mix["w"], mix["means"], mix["evals"], mix["evecs"]
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    logdet = np.log(ev).sum(1)
    d = mu.shape[1]
    out = []
    for lo in range(0, len(x), chunk):
        diff = x[lo:lo + chunk, None, :] - mu[None]  # (b, K, D)
        z = diff if U is None else np.einsum("nkd,kde->nke", diff, U)
        maha = (z**2 / ev[None]).sum(2)
        out.append(logsumexp(logw[None] - 0.5 * (maha + logdet[None] + d * np.log(2 * np.pi)), axis=1))
    return np.concatenate(out)


def sliced_w2_setup(y: np.ndarray, n: int, dim: int, projections: int = 256, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(directions, target quantiles): ``projections`` random unit directions (fixed by ``seed``) and ``y``'s
    sorted projections, interpolated at the ``n`` mid-point quantiles ``(i + 0.5) / n`` when sizes differ."""
    theta = np.random.default_rng([seed, dim]).standard_normal((dim, projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    py = np.sort(y @ theta, axis=0)
    if len(py) != n:
        qx, qy = (np.arange(n) + 0.5) / n, (np.arange(len(py)) + 0.5) / len(py)
        py = np.stack([np.interp(qx, qy, py[:, j]) for j in range(projections)], 1)
    return theta, py


def sliced_w2(x: np.ndarray, y: np.ndarray | None = None, idx: np.ndarray | None = None, projections: int = 256,
              seed: int = 0, setup: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Sliced 2-Wasserstein distance ``sqrt(E_theta W2^2(theta.x, theta.y))`` over random unit directions; the
    1-D W2 from sorted projections (``setup`` from :func:`sliced_w2_setup` reuses the target's quantiles)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    x = x if idx is None else x[idx]
    theta, py = setup if setup is not None else sliced_w2_setup(y, len(x), x.shape[1], projections, seed)
    px = np.sort(x @ theta, axis=0)
    return float(np.sqrt(((px - py) ** 2).mean()))
