"""DEIS: the diffusion exponential integrator sampler with multistep polynomial extrapolation (Zhang & Chen 2023).

With rho = sigma / alpha, the probability-flow ODE of any Gaussian schedule is exactly
``d(x / alpha) / d rho = eps(x, t)`` (DEIS, "time scaling" of the exponential integrator). One multistep update
from the newest history point s = t_i to t = t_{i-1}, with the last r model outputs eps_j at t_{i+j}, is

    x_t = alpha_t (x_s / alpha_s + sum_j C_ij eps_j),    C_ij = int_{rho_s}^{rho_t} l_j(v(tau)) d rho(tau)

(the exponential integrator with eps replaced by its Lagrange interpolant P_r: DEIS's tAB-DEIS), where
l_j is the Lagrange basis polynomial of node j in the extrapolation variable v:

* ``method=tab``    v = t         (tAB-DEIS, the paper's default and the official code's ``t_ab``);
* ``method=rhoab``  v = rho       (rhoAB-DEIS: Adams-Bashforth on d(x/alpha)/d rho = eps; polynomial integrand);
* ``method=logrho`` v = log rho = -lambda (diffusers' ``DEISMultistepScheduler``, ``solver_type="logrho"``:
  Lagrange in log rho integrated against d rho = e^{log rho} d log rho; the same rule as DPM-Solver multistep
  (noise prediction) with Taylor-consistent coefficients, checked in tests/test_deis_pndm.py).

Coefficients are computed in float64 with composite Gauss-Legendre quadrature (8 nodes per panel), not with the
official code's 10,000-point left Riemann sum. rhoab and logrho integrate a polynomial, resp. polynomial times
exponential, in their own variable (exact, resp. to round-off). tab integrates by parts,
C_ij = [l_j(t) rho(t)]_{t_s}^{t_t} - int l_j'(tau) rho(tau) dtau, so only rho(tau) is needed; for a discrete schedule
(piecewise-linear log alpha) the integral is split at the schedule's knots, where rho' jumps.

Order. ``order`` is the number of eps values the polynomial interpolates (its degree + 1), the convention of
DPM-Solver, UniPC and diffusers' ``solver_order``. The official code and the DEIS paper count the degree instead:
``ab_order = r`` interpolates r + 1 values (qsh-zh/deis @ a30709f, ``th_deis/multistep.py`` line 54,
``ts_poly[:order+1]``), so the paper's tAB-r / rhoAB-r and the official ``ab_order=r`` are ``order=r+1`` here:
tAB3 = ``deis:order=4``. The default is the official one, ``method="t_ab", ab_order=3`` (README.md lines 70-71):
``order=4``.

Warm-up: step k (0-based) has order min(order, k + 1), as the official code's ``get_ab_eps_coef`` recursion.
The official code has no lower-order final steps; ``lower_order_final=true`` follows diffusers (the last steps
lowered to the steps left when there are fewer than 15 steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import History, MultistepSolver, Option, Plan, Point, register

GL_NODES = 8
GL_PANELS = 4
COEFFICIENT_CACHE_SIZE = 4096  # entries (one per step of a plan); cleared when full
_GL_X, _GL_W = np.polynomial.legendre.leggauss(GL_NODES)


def gauss_legendre(f: Callable[[np.ndarray], np.ndarray], a: float, b: float, panels: int = GL_PANELS) -> np.ndarray:
    """Composite Gauss-Legendre quadrature of the vector-valued ``f`` (nodes -> (k, nodes) array) over [a, b]."""
    edges = np.linspace(a, b, panels + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        half = 0.5 * (hi - lo)
        nodes = 0.5 * (hi + lo) + half * _GL_X
        total = total + half * (f(nodes) * _GL_W).sum(axis=-1)
    return np.asarray(total)


def lagrange_basis(nodes: np.ndarray, v: np.ndarray) -> np.ndarray:
    """l_j(v) for every node j: array (len(nodes), len(v)); l_j(nodes_k) = delta_jk."""
    out = np.ones((len(nodes), len(v)))
    for j, vj in enumerate(nodes):
        for k, vk in enumerate(nodes):
            if k != j:
                out[j] *= (v - vk) / (vj - vk)
    return out


def lagrange_basis_derivative(nodes: np.ndarray, v: np.ndarray) -> np.ndarray:
    """d l_j / dv at v, array (len(nodes), len(v))."""
    n = len(nodes)
    out = np.zeros((n, len(v)))
    for j in range(n):
        others = [k for k in range(n) if k != j]
        denom = np.prod([nodes[j] - nodes[k] for k in others])
        for m in others:  # product rule: drop one factor at a time
            term = np.ones(len(v))
            for k in others:
                if k != m:
                    term = term * (v - nodes[k])
            out[j] += term
        out[j] /= denom
    return out


def deis_coefficients(method: str, schedule: NoiseSchedule, hist_t: list[float], t_from: float,
                      t_to: float) -> np.ndarray:
    """C_j = int_{rho(t_from)}^{rho(t_to)} l_j(v(tau)) d rho(tau) for history times ``hist_t`` (newest first),
    with v = t (``tab``), rho (``rhoab``) or log rho (``logrho``); float64."""
    rho_of = lambda t: np.exp(-schedule.lambda_(torch.as_tensor(t, dtype=torch.float64)).numpy())  # noqa: E731
    hist_t_arr = np.asarray(hist_t, dtype=np.float64)
    if method == "rhoab":
        nodes = rho_of(hist_t_arr)
        a, b = float(rho_of(t_from)), float(rho_of(t_to))
        return gauss_legendre(lambda r: lagrange_basis(nodes, r), a, b, panels=1)  # exact: polynomial integrand
    if method == "logrho":
        nodes = np.log(rho_of(hist_t_arr))
        a, b = float(np.log(rho_of(t_from))), float(np.log(rho_of(t_to)))
        return gauss_legendre(lambda u: lagrange_basis(nodes, u) * np.exp(u), a, b)
    # tab: by parts, C_j = [l_j(tau) rho(tau)]_{t_from}^{t_to} - int_{t_from}^{t_to} l_j'(tau) rho(tau) dtau
    ends = np.array([t_from, t_to])
    boundary = lagrange_basis(hist_t_arr, ends) * rho_of(ends)
    lo, hi = min(t_from, t_to), max(t_from, t_to)
    knots = getattr(schedule, "t_array", None)  # VPDiscrete: log alpha piecewise linear between these
    cuts = [lo]
    if knots is not None:
        cuts += [float(k) for k in knots.tolist() if lo < k < hi]
    cuts.append(hi)
    # Gauss-Legendre on every piece [c0, c1] at once (one vectorized schedule evaluation for all nodes; a discrete
    # schedule has a knot every 1e-3, i.e. ~100 pieces per step): the same nodes and sum as piece by piece.
    edges = np.linspace(lo, hi, GL_PANELS + 1) if len(cuts) == 2 else np.asarray(cuts, dtype=np.float64)
    half = 0.5 * (edges[1:] - edges[:-1])
    nodes = (0.5 * (edges[1:] + edges[:-1]))[:, None] + half[:, None] * _GL_X[None, :]  # (pieces, GL_NODES)
    values = lagrange_basis_derivative(hist_t_arr, nodes.ravel()) * rho_of(nodes.ravel())
    per_piece = (values.reshape(len(hist_t_arr), *nodes.shape) * _GL_W).sum(axis=-1) * half  # (k, pieces)
    integral = np.zeros(len(hist_t_arr))
    for j in range(per_piece.shape[1]):  # accumulated in order, as before
        integral += per_piece[:, j]
    sign = 1.0 if t_to >= t_from else -1.0  # the integral above runs from lo to hi
    return (boundary[:, 1] - boundary[:, 0]) - sign * integral


_COEFFICIENTS: dict[tuple[Any, ...], tuple[float, ...]] = {}


def cached_deis_coefficients(method: str, schedule: NoiseSchedule, hist_t: tuple[float, ...], t_from: float,
                             t_to: float, schedule_id: tuple[Any, ...] | None = None) -> tuple[float, ...]:
    """``deis_coefficients`` memoized in the process, across solver instances and ``sample()`` calls: keyed by
    everything they depend on (method, the schedule's exact ``fingerprint()``, the history times and the step's
    ends, as exact floats), so a hit is bit-identical to a fresh computation. ``schedule_id`` passes a fingerprint
    already computed."""
    key = (method, schedule.fingerprint() if schedule_id is None else schedule_id, hist_t, t_from, t_to)
    coef = _COEFFICIENTS.get(key)
    if coef is None:
        if len(_COEFFICIENTS) >= COEFFICIENT_CACHE_SIZE:
            _COEFFICIENTS.clear()
        coef = _COEFFICIENTS[key] = tuple(deis_coefficients(method, schedule, list(hist_t), t_from, t_to).tolist())
    return coef


class _DEISHistory(History):
    """A DEIS run's history, with the schedule's fingerprint (the coefficient cache's key) computed once per run."""

    def __init__(self, size: int, model: NFECounter, plan: Plan):
        super().__init__(size, model, plan)
        self.schedule_id = model.schedule.fingerprint()


@register
class DEIS(MultistepSolver):
    """DEIS multistep exponential integrator (tAB, rhoAB, or diffusers' log-rho variant)."""

    name = "deis"
    summary = "DEIS exponential integrator with polynomial extrapolation of eps (tAB default; rhoAB; logrho)"
    source = ("Zhang & Chen 2023, 'Fast Sampling of Diffusion Models with Exponential Integrator': tAB-DEIS "
              "(exponential integrator, eps extrapolated by a Lagrange polynomial in t, coefficients C_ij) and "
              "rhoAB-DEIS (Adams-Bashforth on dv/drho = eps); official code github.com/qsh-zh/deis "
              "(README: method='t_ab', ab_order=3, i.e. order=4 here)")
    prediction = "eps"
    lower_order_final_below: ClassVar[int] = 15  # diffusers' DEISMultistepScheduler threshold
    order: int
    method: str
    lower_order_final: bool
    options = {
        "order": Option(int, 4, "number of eps values r + 1 the polynomial interpolates (= the official ab_order "
                        "+ 1; the DEIS paper's tAB-r / rhoAB-r is order=r+1); default 4 = official ab_order=3",
                        choices=(1, 2, 3, 4)),
        "method": Option(str, "tab", "extrapolation variable: 'tab' (t, official default 't_ab'), 'rhoab' "
                         "(rho = sigma/alpha, official 'rho_ab'), 'logrho' (log rho, diffusers)",
                         choices=("tab", "rhoab", "logrho")),
        "lower_order_final": Option(bool, False, "lower the final steps' orders below 15 steps (diffusers; the "
                                    "official DEIS code has no such rule)"),
    }

    def min_nfe(self) -> int:
        return 1  # fewer steps than the order: every step stays in the warm-up (official get_ab_eps_coef recursion)

    def new_history(self, model: NFECounter, plan: Plan, size: int | None = None) -> History:
        return _DEISHistory(self.history_size() if size is None else size, model, plan)

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        s = hist[-1].point
        recs = [hist[-1 - j] for j in range(order)]  # newest first: eps at t_i, t_{i+1}, ...
        # the same plan again (next batch, shard, sample() call, solver instance): coefficients reused
        schedule_id = hist.schedule_id if isinstance(hist, _DEISHistory) else None
        coef = cached_deis_coefficients(self.method, hist.model.schedule, tuple(r.point.t for r in recs), s.t, t.t,
                                        schedule_id)
        y = x / s.alpha  # x / alpha: the exponential integrator's variable (Psi-scaled state)
        for c, r in zip(coef, recs, strict=True):
            y = y + c * r.out  # x_{t_{i-1}} / alpha = x_{t_i} / alpha + sum_j C_ij eps_{i+j}
        return t.alpha * y
