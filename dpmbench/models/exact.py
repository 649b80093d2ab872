"""Exact probability-flow ODE solutions for oracle models.

The ODE is integrated in its exponential-integrator form (DPM-Solver++, Lu et al. 2022b, eq. 4):
``d(x / sigma) / d lambda = e^lambda x0(x, t(lambda))``, in float64, by the Dormand-Prince 8(5,3) pair
(Hairer, Norsett & Wanner, "Solving ODEs I", Sec. II.10; the coefficient tables are scipy's) with an
independent step size for every sample: each sample's solution depends only on its own x_T, never on
the batch it is solved in. Results are cached on disk, keyed by everything they depend on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.integrate._ivp import dop853_coefficients as dop

from dpmbench.errors import DpmbenchError
from dpmbench.io import cache_dir, cached_npz, digest

DEFAULT_RTOL = 1e-10
DEFAULT_ATOL = 1e-10
_N = dop.N_STAGES
_A = torch.tensor(dop.A[:_N, :_N], dtype=torch.float64)
_B = torch.tensor(dop.B, dtype=torch.float64)
_C = torch.tensor(dop.C[:_N], dtype=torch.float64)
_E3 = torch.tensor(dop.E3, dtype=torch.float64)
_E5 = torch.tensor(dop.E5, dtype=torch.float64)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
# A start at pure noise (a flow model at t = 1: alpha = 0, log-SNR -inf) is integrated from this log-SNR: the part
# skipped, int_{-inf}^{-40} e^lambda x0 d lambda, is below e^-40 |x0| ~ 4e-18 |x0|, under float64 round-off of the
# O(1) state x / sigma. Every other schedule starts far above it (vp-linear at T = 1: -10.1; edm at sigma 80: -4.4).
PURE_NOISE_LAMBDA = -40.0


def dop853(
    f: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    s0: float,
    s1: float,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_rounds: int = 100_000,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Integrate ``dy/ds = f(s, y)`` from s0 to s1 for a batch ``y0`` of shape (n, d), per-sample adaptive.

    ``f(s, y, idx)`` receives a per-sample time vector of shape (m,), the (m, d) states of the samples
    still running and their indices ``idx`` in the batch. Error control is scipy's DOP853 norm per
    sample. Returns ``y(s1)`` and statistics.
    """
    y = y0.to(torch.float64).clone()
    n, dim = y.shape
    dev = y.device
    A, B, C, E3, E5 = (m.to(dev) for m in (_A, _B, _C, _E3, _E5))
    direction = 1.0 if s1 > s0 else -1.0
    s = torch.full((n,), float(s0), dtype=torch.float64, device=dev)
    h = torch.full((n,), 1e-3 * abs(s1 - s0), dtype=torch.float64, device=dev)  # |h|
    active = torch.ones(n, dtype=torch.bool, device=dev)
    k_first = f(s, y, torch.arange(n, device=dev))
    evals, rounds, rejected = 1, 0, 0
    while bool(active.any()):
        rounds += 1
        if rounds > max_rounds:
            raise RuntimeError("exact ODE solver: too many steps (is the model finite?)")
        idx = active.nonzero().squeeze(1)
        ys, ss = y[idx], s[idx]
        hs = torch.minimum(h[idx], (s1 - ss).abs())
        hd = (direction * hs)[:, None]
        K = torch.empty((_N + 1, len(idx), dim), dtype=torch.float64, device=dev)
        K[0] = k_first[idx]
        for i in range(1, _N):
            dy = torch.einsum("j,jnd->nd", A[i, :i], K[:i]) * hd
            K[i] = f(ss + direction * C[i] * hs, ys + dy, idx)
        y_new = ys + hd * torch.einsum("j,jnd->nd", B, K[:_N])
        s_new = ss + direction * hs
        K[_N] = f(s_new, y_new, idx)
        evals += _N
        scale = atol + torch.maximum(ys.abs(), y_new.abs()) * rtol
        err5 = (torch.einsum("j,jnd->nd", E5, K) / scale).pow(2).sum(1)
        err3 = (torch.einsum("j,jnd->nd", E3, K) / scale).pow(2).sum(1)
        denom = err5 + 0.01 * err3
        err = torch.where(denom > 0, hs * err5 / torch.sqrt(denom * dim).clamp_min(1e-300), torch.zeros_like(hs))
        accept = err < 1.0
        err_safe = err.clamp_min(1e-10)
        factor = torch.where(
            accept,
            (_SAFETY * err_safe ** (-1.0 / 8.0)).clamp(max=_MAX_FACTOR),
            (_SAFETY * err_safe ** (-1.0 / 8.0)).clamp(min=_MIN_FACTOR),
        )
        rejected += int((~accept).sum())
        acc = idx[accept]
        y[acc], s[acc] = y_new[accept], s_new[accept]
        k_first[acc] = K[_N][accept]
        h[idx] = hs * factor
        finished = acc[(s[acc] - s1).abs() <= 1e-14 * max(1.0, abs(s1))]
        s[finished] = s1
        active[finished] = False
        if not bool(torch.isfinite(y[idx]).all()):
            raise RuntimeError("exact ODE solver: non-finite state")
    return y, {"evals": evals, "rounds": rounds, "rejected": rejected}


def solve_probability_flow(
    model: Any,
    x_T: torch.Tensor,
    t_start: float,
    t_end: float,
    cond: Any = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> torch.Tensor:
    """Solve the probability-flow ODE of ``model`` from x_T at t_start to t_end (float64 result)."""
    sch = model.schedule
    lam0, lam1 = max(sch.lambda_(t_start), PURE_NOISE_LAMBDA), sch.lambda_(t_end)
    n = x_T.shape[0]
    x64 = x_T.to(torch.float64).reshape(n, -1)
    sig0 = sch.sigma(t_start)
    cond_all = None if cond is None else torch.as_tensor(cond).reshape(-1)

    def rhs(lam: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        t = sch.t_of_lambda(lam)
        x = (y * sch.sigma(t)[:, None]).reshape(-1, *x_T.shape[1:])
        c = None if cond_all is None else cond_all[idx.cpu()]
        return torch.exp(lam)[:, None] * model.x0(x, t, c).reshape(y.shape)

    y1, _ = dop853(rhs, x64 / sig0, lam0, lam1, rtol, atol)
    return (y1 * sch.sigma(t_end)).reshape(x_T.shape)


def exact_solution(
    model: Any,
    x_T: torch.Tensor,
    t_end: float | None = None,
    t_start: float | None = None,
    cond: Any = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    cache: bool = True,
) -> torch.Tensor:
    """Exact (to ~rtol) probability-flow ODE solution of an oracle model from x_T; float64, cached on disk.

    The cache entry (``$DPMBENCH_CACHE/exact/<key>.npz``) embeds its sha256: a truncated or corrupted entry is
    recomputed, never used; concurrent processes asking for the same entry compute it once (file lock).
    """
    sch = model.schedule
    t0 = float(sch.T if t_start is None else t_start)
    t1 = float(sch.t_end_default if t_end is None else t_end)
    if not 0 < t1 < t0:
        raise DpmbenchError(f"invalid t_end {t1}: must be in (0, t_start={t0})")
    x_cpu = x_T.detach().cpu()
    c_cpu = None if cond is None else torch.as_tensor(cond).cpu()

    def compute() -> dict[str, np.ndarray]:
        return {"x": solve_probability_flow(model, x_cpu, t0, t1, c_cpu, rtol, atol).numpy()}

    if not cache:
        return torch.from_numpy(compute()["x"]).to(x_T.device)
    key = digest("exact-v1", model.cache_key(), t0, t1, rtol, atol, x_cpu, c_cpu)
    x = cached_npz(cache_dir("exact") / f"{key}.npz", compute, "exact-solution cache entry")["x"]
    return torch.from_numpy(x).to(x_T.device)
