"""SA-Solver: Stochastic Adams predictor-corrector in data prediction (Xue et al. 2023, NeurIPS).

The variance-controlled reverse SDE with stochasticity tau (Xue et al. eq. (7)-(8)) has, in lambda (half
log-SNR) and data prediction, the exact solution from s to t (h = lambda_t - lambda_s, c = 1 + tau^2), eq. (10):

    x_t = e^{-tau^2 h} (sigma_t/sigma_s) x_s + c sigma_t e^{-tau^2 lambda_t} int_{lambda_s}^{lambda_t}
          e^{c lambda} x0(lambda) dlambda + sigma_t sqrt(1 - e^{-2 tau^2 h}) z.

SA-Predictor (Alg. 1, eq. (14)): x0(lambda) is replaced by the Lagrange polynomial through the last
``predictor_order`` outputs (a stochastic Adams-Bashforth method); SA-Corrector (eq. (15)): by the Lagrange
polynomial through the output at the predicted point and the last ``corrector_order - 1`` earlier outputs
(Adams-Moulton), with the same noise z as the predictor of that step. The weights
b_j = c alpha_t int_0^h e^{-c u} l_j(lambda_t - u) du are computed in closed form (``exp_poly_moment``).

As in the official code and diffusers' ``SASolverScheduler``, order-2 steps (predictor and corrector) replace the
exponentially weighted integral of the first divided difference, int_0^h e^{-cu} (h - u) du, by h^2/2 (a
modification "like UniPC" that keeps the order; it is what the published results use).

NFE accounting: one model evaluation per step. The corrector of step i reuses the evaluation at the predicted
point x_{t_i}, which is also the predictor's input for step i + 1 (like UniC): it costs no extra NFE. The last
predicted point is not corrected (no evaluation there), as in the official code. ``tau = 0`` gives a deterministic
multistep predictor-corrector method for the probability-flow ODE (and no noise is drawn).

Defaults (diffusers' ``SASolverScheduler``, contributed by the SA-Solver authors): predictor_order = 2,
corrector_order = 2, tau = 1 for diffusers timesteps 200..800 (t in [0.2, 0.8]) and 0 elsewhere, data prediction,
lower_order_final always on (orders <= steps left, whatever the number of steps).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import History, MultistepSolver, Option, Plan, Point, register


def exp_poly_moment(k: int, a: float) -> float:
    """J_k(a) = int_0^1 v^k e^{-a v} dv (a >= 0), by series for small a and by parts otherwise."""
    if a < 1.0:
        term, total = 1.0, 0.0
        for n in range(60):  # sum_n (-a)^n / (n! (k + n + 1))
            total += term / (k + n + 1)
            term *= -a / (n + 1)
            if abs(term) < 1e-18:
                break
        return total
    j = -math.expm1(-a) / a  # J_0
    for m in range(1, k + 1):
        j = (m * j - math.exp(-a)) / a  # J_m = (m J_{m-1} - e^{-a}) / a
    return j


def lagrange_weights(nodes: list[float], h: float, c: float) -> list[float]:
    """int_0^h e^{-c u} l_j(u) du for the Lagrange basis l_j on ``nodes`` (given as u = lambda_t - lambda_j)."""
    out = []
    for j, uj in enumerate(nodes):
        others = [um for m, um in enumerate(nodes) if m != j]
        coef = np.poly(others) / math.prod(uj - um for um in others) if others else np.array([1.0])
        deg = len(coef) - 1  # coef[i] multiplies u^(deg - i)
        out.append(sum(float(coef[i]) * h ** (deg - i + 1) * exp_poly_moment(deg - i, c * h) for i in range(deg + 1)))
    return out


@functools.lru_cache(maxsize=4096)
def adams_weights(nodes: tuple[float, ...], h: float, c: float, alpha_t: float,
                  order2_shift: float) -> tuple[float, ...]:
    """b_j of eq. (10): c alpha_t int_0^h e^{-c u} l_j(u) du on the Lagrange ``nodes`` (u = lambda_t - lambda_j),
    with the official order-2 rule when there are two nodes. A pure function of floats of the plan, memoized in
    the process (across steps, batches and solver instances): a hit is the same floats as a fresh computation."""
    b = [c * alpha_t * w for w in lagrange_weights(list(nodes), h, c)]
    if len(nodes) == 2:  # official order-2 rule: int_0^h e^{-cu} (h - u) du -> h^2 / 2 on (x0_0 - x0_1) / shift
        delta = c * alpha_t * (h * h / 2 - (math.expm1(-c * h) + c * h) / c**2) / order2_shift
        b[0], b[1] = b[0] + delta, b[1] - delta
    return tuple(b)


class _SAHistory(History):
    """An SA-Solver run's history and the noise z its last predictor step drew (the corrector of that step, run at
    the next step, redoes it with the same z)."""

    noise: torch.Tensor | None = None


@register
class SASolver(MultistepSolver):
    """SA-Solver: stochastic Adams-Bashforth predictor + Adams-Moulton corrector, data prediction."""

    name = "sa-solver"
    summary = "SA-Solver (stochastic Adams predictor-corrector, data prediction); tau=0: deterministic"
    source = ("Xue et al. 2023, 'SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models', "
              "eq. (10), SA-Predictor eq. (14), SA-Corrector eq. (15), Alg. 1")
    prediction = "x0"
    predictor_order: int
    corrector_order: int
    tau: float
    tau_t_min: float
    tau_t_max: float
    lower_order_final: bool
    options = {
        "predictor_order": Option(int, 2, "order of the SA-Predictor (diffusers SASolverScheduler default 2; the "
                                  "paper recommends 3 for unconditional sampling)", choices=(1, 2, 3, 4)),
        "corrector_order": Option(int, 2, "order of the SA-Corrector, 0 = no corrector (diffusers default 2)",
                                  choices=(0, 1, 2, 3, 4)),
        "tau": Option(float, 1.0, "stochasticity tau inside [tau_t_min, tau_t_max], 0 outside (diffusers' default "
                      "tau_func: 1 for timesteps 200..800); tau=0: the deterministic ODE method", minimum=0.0),
        "tau_t_min": Option(float, 0.2, "start of the tau window in t (diffusers: timestep 200 of 1000); 0 with "
                            "tau_t_max=1 gives a constant tau", minimum=0.0),
        "tau_t_max": Option(float, 0.8, "end of the tau window in t (diffusers: timestep 800 of 1000)",
                            minimum=0.0),
        "lower_order_final": Option(bool, True, "predictor/corrector orders <= steps left at the end (diffusers: "
                                    "for any number of steps)"),
    }

    def validate(self) -> None:
        self.stochastic = self.tau > 0 and self.tau_t_min <= self.tau_t_max

    def full_order(self) -> int:
        return self.predictor_order

    def min_nfe(self) -> int:
        return 1

    def history_size(self) -> int:
        return max(self.predictor_order, self.corrector_order - 1, 1)

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        p = self.uniform_plan(nfe, nfe, self.predictor_order, schedule, kind, t_start, t_end)
        n, lof = len(p.orders), self.lower_order_final
        p.orders = [min(self.predictor_order, i + 1, n - i if lof else n) for i in range(n)]
        # corrector of step i (run at step i + 1, i <= n - 2), as diffusers: min(c, i + 2, n - i + 1)
        p.extra["corrector_orders"] = [min(self.corrector_order, i + 2, n - i + 1 if lof else n + 1)
                                       for i in range(n)]
        return p

    def tau_at(self, p: Point) -> float:
        """tau of a step starting at p (the tau window is applied to the step's start time)."""
        return self.tau if self.tau_t_min <= p.t <= self.tau_t_max else 0.0

    def new_history(self, model: NFECounter, plan: Plan, size: int | None = None) -> History:
        return _SAHistory(self.history_size() if size is None else size, model, plan)

    def _adams(self, x: torch.Tensor, s: Point, t: Point, lams: list[float], outs: list[torch.Tensor],
               order2_shift: float, tau: float, z: torch.Tensor | None) -> torch.Tensor:
        """x_t = e^{-tau^2 h} (sigma_t/sigma_s) x_s + sum_j b_j x0_j + sigma_t sqrt(1 - e^{-2 tau^2 h}) z, eq. (10)
        with x0 the Lagrange polynomial through (lams, outs); ``order2_shift`` is the divided-difference step of the
        order-2 modification (lambda_0 - lambda_1)."""
        h, c = t.lam - s.lam, 1.0 + tau * tau
        b = adams_weights(tuple(t.lam - lam for lam in lams), h, c, t.alpha, order2_shift)
        x_t = math.exp(-tau * tau * h) * (t.sigma / s.sigma) * x
        for bj, m in zip(b, outs, strict=True):
            x_t = x_t + bj * m
        if tau > 0:
            x_t = x_t + t.sigma * math.sqrt(-math.expm1(-2.0 * tau * tau * h)) * z
        return x_t

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        """SA-Predictor, eq. (14): Lagrange through the last ``order`` outputs; draws the step's noise."""
        assert isinstance(hist, _SAHistory)
        s = hist[-1].point
        tau = self.tau_at(s)
        hist.noise = self.noise(hist.model, hist.step) if tau > 0 else None
        lams = [hist[-1 - j].point.lam for j in range(order)]
        outs = [hist[-1 - j].out for j in range(order)]
        shift = lams[0] - lams[1] if order == 2 else 1.0
        return self._adams(x, s, t, lams, outs, shift, tau, hist.noise)

    def correct(self, x_prev: torch.Tensor, x: torch.Tensor, hist: History, s: Point, out: torch.Tensor,
                order: int) -> torch.Tensor:
        """SA-Corrector, eq. (15): redo step i - 1 with the Lagrange polynomial through the output at the
        predicted point ``s`` and the last ``corrector_order - 1`` outputs, with the predictor's noise."""
        assert isinstance(hist, _SAHistory)
        c_order = hist.plan.extra["corrector_orders"][hist.step - 1]
        if c_order == 0:
            return x
        prev = hist[-1].point
        lams = [s.lam] + [hist[-1 - j].point.lam for j in range(c_order - 1)]
        outs = [out] + [hist[-1 - j].out for j in range(c_order - 1)]
        h = s.lam - prev.lam
        return self._adams(x_prev, prev, s, lams, outs, h, self.tau_at(prev), hist.noise)
