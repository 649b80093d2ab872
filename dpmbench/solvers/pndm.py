"""PNDM (Liu et al. 2022) and iPNDM (Zhang & Chen 2023; Zhou et al. 2024).

Both are *pseudo* numerical methods: a classical method's combination of eps values is fed to the DDIM-like
"transfer part" phi instead of an Euler step. With rho = sigma / alpha,

    phi(x_s, e, s, t) = alpha_t (x_s / alpha_s + (rho_t - rho_s) e)        (PNDM eq. 9, as cited by diffusers)

which for a VP schedule (alpha^2 + sigma^2 = 1) is exactly the paper's form
``sqrt(a_t)/sqrt(a_s) x_s - (a_t - a_s) / (sqrt(a_s) (sqrt((1 - a_t) a_s) + sqrt((1 - a_s) a_t))) e`` with
a = alpha^2 (checked numerically in tests/test_deis_pndm.py); here it is written in the rho form so that it also
holds for non-VP schedules.

``pndm`` (F-PNDM): the first 3 steps are pseudo Runge-Kutta (PRK; 4 NFE each, the midpoint is the
midpoint in t), then pseudo linear multistep (PLMS) with the fixed 4th-order Adams-Bashforth
coefficients (55, -59, 37, -9) / 24 on the eps values at the last four step starts (the PRK steps contribute
their first-stage eps, as in the official code and diffusers). NFE budget: N steps cost 12 + (N - 3) = N + 9 NFE,
so a budget ``nfe >= 12`` maps to N = nfe - 9 steps (``nfe = 12``: the 3 PRK steps only).
``warmup=pie`` is the PLMS sampler of latent diffusion / diffusers' ``skip_prk_steps=True``: the first step is a
pseudo improved Euler step (2 NFE; S-PNDM's warm-up), then PLMS with lower-order Adams-Bashforth warm-up
(orders 2, 3, then 4); N steps cost N + 1 NFE.

``ipndm`` (improved PNDM, DEIS App. / diff-sampler ``ipndm``): PLMS with lower-order multistep warm-up instead
of PRK, one NFE per step. ``variable_step=false`` (default, official DEIS ``ipndm`` and diff-sampler ``ipndm``)
uses the fixed equal-step Adams-Bashforth coefficients whatever the grid; ``variable_step=true`` uses the
Adams-Bashforth coefficients of the actual rho steps (exact integrals of the Lagrange interpolant in rho;
identical to ``deis:method=rhoab`` of the same order). diff-sampler's ``ipndm_v`` (zju-pi/diff-sampler @ 68d5ce4,
``diff-solvers-main/solvers.py`` lines 447-477) has the same weights at orders 1-2 and, at order 3, on equal
steps; its order-3 weights differ on unequal steps and its order-4 weights everywhere (on equal steps they are
(57, -65, 43, -11) / 24, not Adams-Bashforth's (55, -59, 37, -9) / 24), so ``weights=diff-sampler`` (with
``variable_step=true``) runs its weights, to reproduce the diff-sampler / AMED / GITS baseline cells with the rule they
were made with; ``weights=exact`` (default) keeps the exact ones. diff-sampler's order-3 weight of the second
difference is h_1 / 2 - h^2 / (6 (h_1 + h_2)) where the exact one is (h^2 / 3 + h h_1 / 2) / (h_1 + h_2); its
order-4 weights do not even sum to 1 unless h_1 h_3 = h_2^2 (the steps in geometric progression), i.e. a constant
eps is not integrated exactly on other grids (tests/test_official_conventions.py). Measured on gmm-2d (logSNR
steps, 50 samples, NFE 80..640): convergence order 2.57 (doublings 2.28, 2.60, 2.81) against 3.81 for the exact
weights. The fixed coefficients are only
consistent to high order on a grid uniform in rho: on other grids they leave an O(h^3) local error
(measured: second order asymptotically, tests/test_deis_pndm.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import History, MultistepSolver, Option, Plan, Point, Solver, register
from dpmbench.solvers.deis import deis_coefficients

# Adams-Bashforth coefficients for equal steps, newest eps first (order 4: PNDM's PLMS formula).
AB_FIXED: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3.0 / 2.0, -1.0 / 2.0),
    3: (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    4: (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
}


def _rho(p: Point) -> float:
    return p.sigma / p.alpha


def diff_sampler_weights(h: list[float]) -> list[float]:
    """diff-sampler's ``ipndm_v`` weights of eps (newest first), scaled by the step: x_t / alpha_t = x_s / alpha_s +
    sum_j w_j eps_j, for the rho steps ``h = [h_n, h_{n-1}, ...]`` (h_n = rho_t - rho_s, then the earlier steps,
    newest first; len(h) is the order, 1-4). Written from diff-solvers-main/solvers.py lines 447-477 (@ 68d5ce4);
    at order 1-2 they are the exact variable-step Adams-Bashforth weights, at 3-4 not (see the module docstring)."""
    order, hn = len(h), h[0]
    if order == 1:
        return [hn]
    a = hn / h[1]  # current step over the previous one
    w = [1.0 + a / 2.0, -a / 2.0, 0.0, 0.0]  # AB2 with variable steps
    if order >= 3:
        h1, h2 = h[1], h[2]
        t1 = (1.0 - hn / (3.0 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2.0
        w[0] += t1
        w[1] -= (1.0 + h1 / h2) * t1
        w[2] += t1 * h1 / h2
    if order == 4:
        h1, h2, h3 = h[1], h[2], h[3]
        g = h1 * (h1 + h2) / (h2 * (h2 + h3))
        t2 = ((1.0 - hn / (3.0 * (hn + h1))) / 2.0 + (1.0 - hn / (2.0 * (hn + h1))) * hn / (6.0 * (hn + h1 + h2))) \
            * (hn * (hn + h1) * (hn + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
        w[0] += t2
        w[1] -= (1.0 + h1 / h2 + g) * t2
        w[2] += (h1 / h2 + g * (1.0 + h2 / h3)) * t2
        w[3] -= t2 * g * h1 / h2
    return [hn * c for c in w[:order]]


def transfer(x: torch.Tensor, e: torch.Tensor, s: Point, t: Point) -> torch.Tensor:
    """PNDM's transfer part phi(x_s, e, s, t) (eq. 9), in its rho form (= DDIM, eta = 0)."""
    return t.alpha * (x / s.alpha + (_rho(t) - _rho(s)) * e)


@register
class PNDM(Solver):
    """Pseudo numerical method: PRK warm-up (F-PNDM) or pseudo improved Euler warm-up (PLMS), then PLMS."""

    name = "pndm"
    summary = "PNDM: 3 pseudo Runge-Kutta steps (4 NFE each), then pseudo linear multistep (4th-order AB)"
    source = ("Liu et al. 2022, 'Pseudo Numerical Methods for Diffusion Models on Manifolds', eq. 9 (transfer part), "
              "PRK and PLMS formulas (F-PNDM); official code github.com/luping-liu/PNDM")
    warmup: str
    options = {
        "warmup": Option(str, "prk", "first steps: 'prk' (F-PNDM: 3 pseudo Runge-Kutta steps, the paper/official "
                         "default; diffusers' default skip_prk_steps=False) or 'pie' (pseudo improved Euler, then "
                         "lower-order PLMS: latent diffusion's PLMS, diffusers' skip_prk_steps=True)",
                         choices=("prk", "pie")),
    }
    PRK_STEPS: ClassVar[int] = 3

    def min_nfe(self) -> int:
        return 4 * self.PRK_STEPS if self.warmup == "prk" else 2

    def steps_for(self, nfe: int) -> int:
        """Number of steps an NFE budget buys: nfe - 9 (prk: 3 steps x 4 NFE + 1 per step) or nfe - 1 (pie)."""
        return nfe - 3 * self.PRK_STEPS if self.warmup == "prk" else nfe - 1

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        steps = self.steps_for(nfe)
        p = self.uniform_plan(nfe, steps, 4, schedule, kind, t_start, t_end)
        if self.warmup == "prk":
            p.orders = [4] * steps
        else:  # pseudo improved Euler, then AB2, AB3, AB4
            p.orders = [2] + [min(4, i + 1) for i in range(1, steps)]
        return p

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        sch = model.schedule
        eps_hist: list[torch.Tensor] = []  # eps at the step starts, newest last
        for i, (s, t) in enumerate(zip(plan.points[:-1], plan.points[1:], strict=True)):
            e_s = self.predict(model, x, s, "eps")
            if self.warmup == "prk" and i < self.PRK_STEPS:
                x = self.prk_step(model, sch, x, e_s, s, t)
            elif self.warmup == "pie" and i == 0:
                x_pred = transfer(x, e_s, s, t)  # pseudo improved Euler: predictor
                e_t = self.predict(model, x_pred, t, "eps")
                x = transfer(x, 0.5 * (e_s + e_t), s, t)  # corrector with the averaged eps
            else:
                k = min(4, len(eps_hist) + 1)
                window = [e_s, *reversed(eps_hist[-(k - 1):])] if k > 1 else [e_s]
                # PLMS: e' = (55 e_t - 59 e_{t+d} + 37 e_{t+2d} - 9 e_{t+3d}) / 24 (k = 4; lower k in warm-up)
                e_prime = sum(c * e for c, e in zip(AB_FIXED[k], window, strict=True))
                x = transfer(x, e_prime, s, t)
            eps_hist.append(e_s)
            del eps_hist[:-3]
        return x

    def prk_step(self, model: NFECounter, sch: NoiseSchedule, x: torch.Tensor, e1: torch.Tensor, s: Point,
                 t: Point) -> torch.Tensor:
        """One pseudo Runge-Kutta step: e1..e4 at t, t - d/2, t - d/2, t - d; e' = (e1 + 2 e2 + 2 e3 + e4) / 6."""
        mid = Point.at(sch, 0.5 * (s.t + t.t))  # t - delta/2
        e2 = self.predict(model, transfer(x, e1, s, mid), mid, "eps")
        e3 = self.predict(model, transfer(x, e2, s, mid), mid, "eps")
        e4 = self.predict(model, transfer(x, e3, s, t), t, "eps")
        e_prime = (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0
        return transfer(x, e_prime, s, t)


@register
class IPNDM(MultistepSolver):
    """Improved PNDM: Adams-Bashforth on d(x/alpha)/d rho = eps with lower-order multistep warm-up."""

    name = "ipndm"
    summary = "iPNDM: PLMS with lower-order multistep warm-up (no PRK), up to 4th-order Adams-Bashforth"
    source = ("Zhang & Chen 2023 (DEIS), iPNDM (official code get_sampler_ipndm); Zhou et al. 2024, 'Fast ODE-based "
              "Sampling for Diffusion Models in Around 5 Steps', diff-sampler ipndm / ipndm_v (max_order=4)")
    prediction = "eps"
    max_order: int
    variable_step: bool
    weights: str
    options = {
        "max_order": Option(int, 4, "highest Adams-Bashforth order (diff-sampler default 4)", choices=(1, 2, 3, 4)),
        "variable_step": Option(bool, False, "false: fixed equal-step AB coefficients (official DEIS ipndm, "
                                "diff-sampler ipndm); true: variable-step AB coefficients in rho "
                                "(diff-sampler ipndm_v)"),
        "weights": Option(str, "exact", "variable_step=true only: 'exact' (Adams-Bashforth weights of the actual rho "
                          "steps) or 'diff-sampler' (diff-sampler's ipndm_v weights, which differ at orders 3-4 on "
                          "unequal steps)", choices=("exact", "diff-sampler")),
    }

    def validate(self) -> None:
        if self.weights != "exact" and not self.variable_step:
            raise DpmbenchError(f"invalid option 'weights' of solver 'ipndm' {self.weights!r} with "
                                "variable_step=false; allowed there: exact")

    def full_order(self) -> int:
        return self.max_order

    def min_nfe(self) -> int:
        return 1

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        s = hist[-1].point
        recs = [hist[-1 - j] for j in range(order)]  # newest first
        if self.variable_step and self.weights == "diff-sampler":
            rhos = [_rho(t)] + [_rho(r.point) for r in recs]  # newest first
            steps = [b - a for a, b in zip(rhos[1:], rhos[:-1], strict=True)]  # h_n, h_{n-1}, ...
            coef = diff_sampler_weights(steps)
        elif self.variable_step:
            coef = deis_coefficients("rhoab", hist.model.schedule, [r.point.t for r in recs], s.t, t.t).tolist()
        else:
            coef = [(_rho(t) - _rho(s)) * c for c in AB_FIXED[order]]
        y = x / s.alpha
        for c, r in zip(coef, recs, strict=True):
            y = y + c * r.out
        return t.alpha * y
