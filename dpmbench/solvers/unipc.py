"""UniPC: the unified predictor (UniP-p) and the unified corrector (UniC-p) of Zhao et al. 2023,
"UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models" (NeurIPS 2023),
in the B(h) form of the official code (github.com/wl-zhao/UniPC, ``uni_pc.py``,
``multistep_uni_pc_bh_update``) and of diffusers' ``UniPCMultistepScheduler``.

Both integrate the exponential-integrator form of the probability-flow ODE in lambda = log(alpha/sigma),
h = lambda_t - lambda_s0 > 0, with the model output ``m`` (data prediction x0 or noise prediction eps)
expanded around the newest history point s0 (paper Sec. 3.1):

* data prediction (DPM-Solver++ form; "UniPC with data prediction", paper Appendix), with hh = -h:
  ``x_t = (sigma_t/sigma_s0) x_s0 - alpha_t (e^hh - 1) m_0 - alpha_t B(hh) sum_k rho_k D_k``
* noise prediction (the paper's main-text form), with hh = h:
  ``x_t = (alpha_t/alpha_s0) x_s0 - sigma_t (e^hh - 1) m_0 - sigma_t B(hh) sum_k rho_k D_k``

where ``r_k = (lambda_{s_k} - lambda_s0) / h`` are the (negative) normalized positions of the earlier
history points s_k, ``D_k = (m_k - m_0) / r_k`` their first differences, and, for the corrector, one extra
point at t itself (``r = 1``, ``D = m_t - m_0``, the model output at the *predicted* x_t, which the next
predictor step needs anyway: UniC adds no NFE).

The coefficients ``rho`` solve the order conditions of Theorem 3.1 (UniC-p, order p + 1) and its UniP-p
analogue (Sec. 3.2, order p): ``R rho = g / B(hh)`` with ``R[i][k] = r_k^i`` (i = 0..K-1) and
``g_i = hh phi_{i+1}(hh) i!`` (i = 1..K), phi_1(h) = (e^h - 1)/h, phi_{k+1}(h) = (phi_k(h) - 1/k!)/h. (The paper
writes the same system with rows scaled by powers of h: ``R_p(h) a_p = phi_p(h) / B(h)``.) B(h) is any
non-zero O(h) function; the paper and the official code offer ``B1(h) = h`` (``bh1``) and
``B2(h) = e^h - 1`` (``bh2``).

Two simplifications of the official code (kept by diffusers) are followed, so that published numbers are
reproduced: the UniP-2 predictor uses ``rho = 1/2`` and the UniC-1 corrector uses ``rho = 1/2`` instead of
solving the 1x1 system. Both satisfy the order conditions up to O(h), which is all Theorem 3.1 needs
(their orders are measured in tests/test_unipc.py). Consequence worth knowing: when the system is solved,
``B(hh) rho = R^{-1} g`` does not depend on B, so ``bh1`` and ``bh2`` differ *only* on steps that use one of
these two simplified coefficients (UniP-2 predictor steps, UniC-1 corrections).

Conventions checked against the official code and diffusers (tests/test_unipc.py):

* ``lower_order_final``: both lower the order of step i to the number of steps left at *every* step count
  (DPM-Solver's official code only below 10 steps, diffusers' DPMSolverMultistepScheduler below 15). dpmbench
  follows them. The last step is never corrected (official ``use_corrector = False`` at ``step == steps``;
  diffusers would correct at the start of a next ``step`` call), so with ``lower_order_final`` the last step is a
  first-order, uncorrected step and the default UniPC-p has an O(h^2) global error term (measured).
* The official code applies UniC during warm-up too (``use_corrector=True``) and has no ``disable_corrector``;
  diffusers' ``disable_corrector`` (a list of step indices, default empty) is not exposed except as
  ``corrector=none`` (all steps).
* With a data-prediction ``solver_p`` (UniC on another scheduler), diffusers converts the model output at the
  predicted x_t with the *corrected* sample for that scheduler's history, a value the model never returned;
  dpmbench's UniC-on-DPM-Solver++ follows the paper and keeps the model outputs at the evaluated points.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from dpmbench.errors import bad_value
from dpmbench.solvers.base import History, MultistepSolver, Option, Point, register

VARIANTS = ("bh1", "bh2")
RHO_CACHE_SIZE = 4096  # entries: one per (step, predictor or corrector) of the plans seen in the process


def b_of_h(variant: str, hh: float) -> float:
    """B(h) of the UniPC update: ``bh1`` B1(h) = h, ``bh2`` B2(h) = e^h - 1 (paper Sec. 3.1 / official
    ``variant``); ``hh`` is -h for data prediction and h for noise prediction, as in the official code."""
    if variant == "bh1":
        return hh
    if variant == "bh2":
        return math.expm1(hh)
    raise bad_value("UniPC variant", variant, VARIANTS)


def phi_terms(hh: float, n: int) -> list[float]:
    """``g_k = hh phi_{k+1}(hh) k!`` for k = 1..n (the right-hand side of Theorem 3.1 times B(h)).

    phi_1(h) = (e^h - 1)/h and phi_{k+1}(h) = (phi_k(h) - 1/k!)/h, so that
    ``int_0^1 e^{(1-u)h} (uh)^k / k! du = h^k phi_{k+1}(h)``: the weight of the k-th Taylor term of m.
    """
    out: list[float] = []
    h_phi = math.expm1(hh) / hh - 1.0  # hh * phi_2(hh)
    factorial = 1.0
    for k in range(1, n + 1):
        out.append(h_phi * factorial)  # hh phi_{k+1}(hh) k!
        factorial *= k + 1
        h_phi = h_phi / hh - 1.0 / factorial  # hh phi_{k+2}(hh)
    return out


def unipc_rhos(rks: Sequence[float], hh: float, variant: str, corrector: bool) -> list[float]:
    """The coefficients rho_k of the differences D_k: UniP-p (``rks`` = the p - 1 earlier points) or UniC-p
    (``rks`` = the p - 1 earlier points and 1.0 for the new point).

    Solves ``sum_k r_k^i rho_k = g_{i+1} / B(hh)`` for i = 0..K-1 (Theorem 3.1; R[i][k] = r_k^i), except for
    the official code's two simplified cases: UniP-2 (one earlier point) and UniC-1 (only the new point) use
    rho = 1/2. The result is a pure function of the exact floats given (not of x), memoized per process
    (``cached_rhos``): a plan's steps ask for the same systems on every ``sample()`` call and solver instance.
    """
    return list(cached_rhos(tuple(float(r) for r in rks), float(hh), variant))


@functools.lru_cache(maxsize=RHO_CACHE_SIZE)
def cached_rhos(rks: tuple[float, ...], hh: float, variant: str) -> tuple[float, ...]:
    """``unipc_rhos`` on exact floats, memoized: a hit returns the very floats a fresh solve gives."""
    k = len(rks)
    if k == 0:
        return ()
    if k == 1:  # UniP-2 (one earlier point) / UniC-1 (only the new point): the official "simplified version"
        return (0.5,)
    big_r = np.array([[r**i for r in rks] for i in range(k)], dtype=np.float64)
    g = np.array(phi_terms(hh, k), dtype=np.float64) / b_of_h(variant, hh)
    return tuple(float(v) for v in np.linalg.solve(big_r, g))


def unified_update(x: torch.Tensor, hist: History, t: Point, order: int, prediction: str, variant: str,
                   new_out: torch.Tensor | None = None) -> torch.Tensor:
    """One UniP-``order`` step from the newest history point to ``t`` (``new_out`` None), or the UniC-``order``
    correction of the point ``t`` (``new_out``: the model output at the predicted x_t; ``x`` is the state at
    the newest history point, from which the predictor started).

    Uses the model outputs hist[-1] (m_0, at s0) .. hist[-order] of type ``prediction`` ("x0" or "eps").
    """
    s0, m0 = hist[-1].point, hist[-1].out
    h = t.lam - s0.lam
    rks: list[float] = []
    diffs: list[torch.Tensor] = []
    for k in range(1, order):  # earlier points s_k: r_k = (lambda_{s_k} - lambda_s0)/h, D_k = (m_k - m_0)/r_k
        rk = (hist[-(k + 1)].point.lam - s0.lam) / h
        rks.append(rk)
        diffs.append((hist[-(k + 1)].out - m0) / rk)
    if new_out is not None:  # UniC: the new point t itself, r = 1, D = m_t - m_0
        rks.append(1.0)
        diffs.append(new_out - m0)
    hh = -h if prediction == "x0" else h
    b_h = b_of_h(variant, hh)
    rhos = cached_rhos(tuple(rks), hh, variant)  # a function of the plan only: memoized across calls
    # UniP-p (Sec. 3.2; D_k over the p - 1 earlier points) / UniC-p (Sec. 3.1, Theorem 3.1; plus D at t itself):
    if prediction == "x0":  # data-prediction form: x_t = (s_t/s_s0) x - a_t (e^-h - 1) m_0 - a_t B(-h) sum rho_k D_k
        c_x, c_m = t.sigma / s0.sigma, t.alpha
    else:  # noise-prediction form (paper main text): x_t = (a_t/a_s0) x - s_t (e^h - 1) m_0 - s_t B(h) sum rho_k D_k
        c_x, c_m = t.alpha / s0.alpha, t.sigma
    x_t = c_x * x - c_m * math.expm1(hh) * m0
    if not diffs:  # UniP-1: the sum is empty (subtracting its zeros changes no value)
        return x_t
    res = rhos[0] * diffs[0]  # sum_k rho_k D_k, accumulated in order
    for rho, d in zip(rhos[1:], diffs[1:], strict=True):
        res = res + rho * d
    return x_t - c_m * b_h * res


def unic_correct(x_prev: torch.Tensor, hist: History, t: Point, out: torch.Tensor, order: int, prediction: str,
                 variant: str) -> torch.Tensor:
    """UniC-``order`` (Theorem 3.1): the corrected state at ``t`` from the state ``x_prev`` at hist[-1], the
    history (hist[-1] .. hist[-order]) and the model output ``out`` evaluated at the predicted x_t. Any
    multistep predictor of order ``order`` becomes order ``order + 1``; no model evaluation is made here."""
    return unified_update(x_prev, hist, t, order, prediction, variant, new_out=out)


def corrector_options() -> dict[str, Option]:
    """The ``corrector`` and ``unic_variant`` options that put UniC on top of another multistep predictor."""
    return {
        "corrector": Option(str, "none", "UniC corrector after each multistep predictor step, at no extra NFE "
                            "(Zhao et al. 2023, Theorem 3.1; UniC-p with the predictor's order p): 'unic' or "
                            "'none' (off, as in the predictor's official code)", choices=("none", "unic")),
        "unic_variant": Option(str, "bh1", "B(h) of UniC: bh1 B(h)=h (official UniPC default), bh2 e^h-1; only "
                               "matters for UniC-1 (first-order steps), see dpmbench/solvers/unipc.py",
                               choices=VARIANTS),
    }


@register
class UniPC(MultistepSolver):
    """UniPC-p: the UniP-p predictor, each step corrected by UniC-p with the model output that the next step
    evaluates anyway (one NFE per step). The last step is not corrected (that would need one more NFE), as in
    the official code (``use_corrector = False`` at the last step) and diffusers (the corrector runs at the
    start of the next ``step`` call, which the last step does not have).
    """

    name = "unipc"
    summary = "UniPC (UniP-p + UniC-p), orders 1-3, B(h) = h or e^h - 1, data or noise prediction"
    source = ("Zhao et al. 2023, 'UniPC', Sec. 3.1 UniC-p (Theorem 3.1), Sec. 3.2 UniP-p, B1/B2(h); "
              "official code multistep_uni_pc_bh_update")
    # The official code (and diffusers) lower the final orders whatever the number of steps.
    lower_order_final_below: ClassVar[int] = sys.maxsize
    variant: str
    order: int
    prediction: str
    corrector: str
    lower_order_final: bool
    options = {
        "variant": Option(str, "bh1", "B(h): bh1 B(h)=h, bh2 B(h)=e^h-1. Default bh1: the official code "
                          "(UniPC(variant='bh1'), also in its CIFAR-10 and Stable Diffusion examples); diffusers "
                          "defaults to bh2 and its docs recommend bh1 for unconditional sampling with < 10 steps, "
                          "bh2 otherwise", choices=VARIANTS),
        "order": Option(int, 2, "predictor order p of UniP-p; with UniC the order is p + 1 (official "
                        "sample(order=2), diffusers solver_order=2)", choices=(1, 2, 3)),
        "prediction": Option(str, "x0", "x0: data prediction (DPM-Solver++ form, official "
                             "algorithm_type='data_prediction', diffusers predict_x0=True); eps: noise prediction",
                             choices=("x0", "eps")),
        "corrector": Option(str, "unic", "unic: UniC-p after every predictor step but the last (no extra NFE); "
                            "none: UniP-p alone", choices=("unic", "none")),
        "lower_order_final": Option(bool, True, "order of step i <= steps left, at every number of steps "
                                    "(official code and diffusers; unlike DPM-Solver's '< 10 steps'): the last "
                                    "step is then a first-order, uncorrected step"),
    }

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        return unified_update(x, hist, t, order, self.prediction, self.variant)  # UniP-order

    def correct(self, x_prev: torch.Tensor, x: torch.Tensor, hist: History, s: Point, out: torch.Tensor,
                order: int) -> torch.Tensor:
        if self.corrector == "none":
            return x
        return unic_correct(x_prev, hist, s, out, order, self.prediction, self.variant)  # UniC-order
