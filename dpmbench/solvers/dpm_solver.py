"""DPM-Solver (noise prediction) and DPM-Solver++ (data prediction), orders 1-3, single- and multistep.

Both integrate the exact exponential-integrator form of the probability-flow ODE in lambda (half
log-SNR), h = lambda_t - lambda_s:

* DPM-Solver (Lu et al. 2022, NeurIPS), eq. (3.4):  x_t = (alpha_t/alpha_s) x_s - alpha_t int e^{-lambda} eps dlambda
* DPM-Solver++ (Lu et al. 2022b), data-prediction form: x_t = (sigma_t/sigma_s) x_s + sigma_t int e^{lambda} x0 dlambda

Defaults follow the official implementation (github.com/LuChengTHU/dpm-solver @ 52bc3fb,
``dpm_solver_pytorch.py``): DPM-Solver order 3 singlestep, DPM-Solver++ order 2 multistep, solver_type
``dpmsolver``, ``lower_order_final`` below 10 steps (``final_orders=every``: at every step count, as
zju-pi/diff-sampler@68d5ce4:diff-solvers-main/solvers.py:687-688 and UniPC's official code).

Singlestep intermediate points (option ``intermediate``). The official ``sample(method='singlestep')`` (lines
1215-1228) takes the outer points of the NFE-step grid (``get_orders_and_timesteps_for_singlestep_solver``, lines
534-538: on ``logSNR`` a K-step grid uniform in lambda; otherwise the ``steps``-step grid at the cumulative orders)
and, per step s -> t of order k, the k-step grid of the same kind between s and t (line 1223), with
r_i = (lambda_i - lambda_s) / h from those points' lambda (lines 1224-1227). On ``time-uniform`` and
``time-quadratic`` these sub-grid points are exactly the NFE-step grid's points; on ``logsnr`` they are
r1 = 1/2 (order 2) and r1 = 1/3, r2 = 2/3 (order 3), the defaults of ``singlestep_dpm_solver_second_update`` /
``_third_update`` (lines 594, 675). ``intermediate=grid`` (default) does this: logsnr uses the lambda fractions,
every other grid kind (karras, ays, custom, searched) the NFE-step grid's own points. ``intermediate=lambda``
puts the intermediate points at those lambda fractions of every step whatever the grid (k-diffusion's
``sample_dpm_2`` / ``sample_dpmpp_2s_ancestral`` convention, and the official adaptive solver's).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.adaptive import solve_adaptive
from dpmbench.solvers.base import (
    History,
    MultistepSolver,
    Option,
    Plan,
    Point,
    expm1,
    register,
)
from dpmbench.solvers.unipc import corrector_options, unic_correct
from dpmbench.timesteps import timesteps


def singlestep_orders(nfe: int, order: int) -> list[int]:
    """Per-step orders of the official singlestep ("fast") DPM-Solver for an NFE budget (App. D.1)."""
    if order == 3:
        k = nfe // 3 + 1
        if nfe % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        if nfe % 3 == 1:
            return [3] * (k - 1) + [1]
        return [3] * (k - 1) + [2]
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    return [1] * nfe


def _options(order: int, method: str) -> dict[str, Option]:
    return {
        "order": Option(int, order, "solver order", choices=(1, 2, 3)),
        "method": Option(str, method, "singlestep (Alg. 1 style), multistep (Alg. 2 style) or adaptive (step-size "
                         "control, DPM-Solver-12 for order 2 / -23 for order 3; the NFE is a cap, see "
                         "solvers/adaptive.py)",
                         choices=("singlestep", "multistep", "adaptive")),
        "solver_type": Option(str, "dpmsolver", "2nd/3rd-order variant: 'dpmsolver' (the papers' r-weighted "
                              "differences) or 'taylor' (Taylor-expansion coefficients)",
                              choices=("dpmsolver", "taylor")),
        "lower_order_final": Option(bool, True, "lower the order of the final multistep steps when there are "
                                    "fewer than 10 steps (official code)"),
        "final_orders": Option(str, "below-10", "with lower_order_final and method=multistep, at which step counts "
                               "the final orders are lowered (order <= steps left): below-10 (official code: fewer "
                               "than 10 steps) or every (zju-pi/diff-sampler@68d5ce4:diff-solvers-main/solvers.py:"
                               "687-688, as UniPC's official code)", choices=("below-10", "every")),
        "intermediate": Option(str, "grid", "singlestep intermediate evaluations: 'grid' (official code: at the "
                               "NFE-step grid's points, r from their lambda; on logsnr r = 1/2 and 1/3, 2/3) or "
                               "'lambda' (r = 1/2 and 1/3, 2/3 of the step in lambda on every grid; k-diffusion)",
                               choices=("grid", "lambda")),
        "order3_rule": Option(str, "official", "third-order multistep update: 'official' (official code and "
                              "diffusers; its second-difference term has half the Taylor coefficient, so its "
                              "global order is 2) or 'taylor' (Taylor-consistent coefficient, global order 3)",
                              choices=("official", "taylor")),
        **corrector_options(),  # UniC on top of the multistep predictor (dpmbench/solvers/unipc.py)
        # method=adaptive only (Lu et al. 2022, App. C; defaults of the official dpm_solver_adaptive)
        "atol": Option(float, 0.0078, "adaptive: absolute tolerance (official default 0.0078)", minimum=0.0),
        "rtol": Option(float, 0.05, "adaptive: relative tolerance (official default 0.05)", minimum=0.0),
        "h_init": Option(float, 0.05, "adaptive: first step size in lambda (official default 0.05)", minimum=0.0),
        "theta": Option(float, 0.9, "adaptive: safety factor of the step-size update (official default 0.9)",
                        minimum=0.0),
        "t_err": Option(float, 1e-5, "adaptive: stop when |t - t_end| <= t_err (official default 1e-5)",
                        minimum=0.0),
    }


class _ExponentialIntegrator(MultistepSolver):
    """Shared planning and dispatch of the DPM-Solver family; subclasses hold the update rules."""

    order: int
    method: str
    solver_type: str
    lower_order_final: bool
    final_orders: str
    intermediate: str
    order3_rule: str
    corrector: str
    unic_variant: str
    atol: float
    rtol: float
    h_init: float
    theta: float
    t_err: float

    R2 = (0.5,)  # singlestep intermediate points (fractions of h), order 2
    R3 = (1.0 / 3.0, 2.0 / 3.0)  # order 3

    def min_nfe(self) -> int:
        return self.order

    def validate(self) -> None:
        if self.final_orders == "every":
            if self.method != "multistep" or not self.lower_order_final:
                raise DpmbenchError(f"invalid option 'final_orders' of solver {self.name!r} 'every' with method="
                                    f"{self.method}, lower_order_final={str(self.lower_order_final).lower()}; "
                                    "allowed there: below-10 (every needs method=multistep, lower_order_final=true)")
            self.lower_order_final_below = sys.maxsize  # the order of step i <= steps left, whatever the steps
        if self.corrector == "unic" and self.method != "multistep":
            raise DpmbenchError(f"invalid option 'corrector' of solver {self.name!r} 'unic' with method="
                                f"{self.method}; UniC needs method=multistep (allowed with singlestep: none)")
        if self.method == "adaptive":  # method=adaptive: data-dependent steps, the NFE budget is a cap
            if self.order == 1:
                raise DpmbenchError(f"invalid option 'order' of solver {self.name!r} with method=adaptive: 1; "
                                    "allowed: 2, 3")
            self.adaptive = True

    def correct(self, x_prev: torch.Tensor, x: torch.Tensor, hist: History, s: Point, out: torch.Tensor,
                order: int) -> torch.Tensor:
        """UniC-p with the predictor's order p (Zhao et al. 2023, Theorem 3.1), when ``corrector=unic``."""
        if self.corrector == "none":
            return x
        return unic_correct(x_prev, hist, s, out, order, self.prediction, self.unic_variant)

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        if self.method == "adaptive":  # only the end points; the steps are chosen while solving
            ts = timesteps(kind, 1, schedule, t_start, t_end) if isinstance(kind, str) else list(kind)[:: len(kind) - 1]
            return Plan([Point.at(schedule, float(t)) for t in ts], [self.order], nfe, {"cap": nfe})
        if self.method == "multistep":
            return super().plan(nfe, schedule, kind, t_start, t_end)
        orders = singlestep_orders(nfe, self.order)
        if kind == "logsnr":  # outer steps uniform in lambda (official code, line 536)
            ts = timesteps(kind, len(orders), schedule, t_start, t_end)
            return Plan(Point.grid(schedule, ts), orders, nfe)
        full = Point.grid(schedule, timesteps(kind, nfe, schedule, t_start, t_end))  # the NFE-step grid
        ends = [0]
        for o in orders:
            ends.append(ends[-1] + o)
        plan = Plan([full[e] for e in ends], orders, nfe)  # its points at the cumulative orders (line 538)
        if self.intermediate == "grid":  # every step's own evaluations on that grid (lines 1223-1227)
            plan.extra["inner"] = [full[a + 1:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]
        return plan

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        if self.method == "adaptive":
            return solve_adaptive(self, model, x, plan)
        if self.method == "multistep":
            return super().solve(model, x, plan)
        inner = plan.extra.get("inner")
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            x = self.step(model, x, s, t, order, None if inner is None else inner[i])
        return x

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int,
             inner: list[Point] | None = None) -> torch.Tensor:
        """One singlestep update of the given order; its intermediate evaluations at the points ``inner`` (order - 1
        of them, r_i = (lambda_i - lambda_s) / h as the official code computes them), or at the lambda fractions
        R2 / R3 of the step when None."""
        sch = model.schedule
        m_s = self.predict(model, x, s, self.prediction)
        if order == 1:
            return self.first_order(x, m_s, s, t)
        h = t.lam - s.lam
        if inner is None:  # r fixed in lambda
            rs = list(self.R2 if order == 2 else self.R3)
            inner = [Point.at_lambda(sch, s.lam + r * h) for r in rs]
        else:  # r from the points' lambda
            rs = [(p.lam - s.lam) / h for p in inner]
        if order == 2:
            return self.singlestep_second(model, x, m_s, s, inner[0], t, rs[0])
        return self.singlestep_third(model, x, m_s, s, inner[0], inner[1], t, rs[0], rs[1])

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        if order == 1:
            return self.first_order(x, hist[-1].out, hist[-1].point, t)
        if order == 2:
            return self.multistep_second(x, hist, t)
        return self.multistep_third(x, hist, t)

    # update rules, written per family below
    def first_order(self, x: torch.Tensor, m_s: torch.Tensor, s: Point, t: Point) -> torch.Tensor:
        raise NotImplementedError

    def singlestep_second(self, model: NFECounter, x: torch.Tensor, m_s: torch.Tensor, s: Point, s1: Point,
                          t: Point, r1: float) -> torch.Tensor:
        raise NotImplementedError

    def singlestep_third(self, model: NFECounter, x: torch.Tensor, m_s: torch.Tensor, s: Point, s1: Point,
                         s2: Point, t: Point, r1: float, r2: float) -> torch.Tensor:
        raise NotImplementedError

    def multistep_second(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        raise NotImplementedError

    def multistep_third(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        raise NotImplementedError

    def _second_difference_coefficient(self) -> float:
        """Weight of the D2 term of the 3rd-order multistep update.

        With D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 m''/2, the Taylor expansion of the exponential integral asks
        for h^2 phi_3 m'' = 2 phi_3 D2 ('taylor'); the official code uses phi_3 D2 ('official'), which leaves an
        O(h^3) local error and makes the method globally second order (measured in tests/test_convergence.py).
        """
        return 2.0 if self.order3_rule == "taylor" else 1.0

    @staticmethod
    def _differences(hist: History, t: Point, order: int) -> tuple[float, torch.Tensor, torch.Tensor | None]:
        """h = lambda_t - lambda_s and the scaled divided differences of the model outputs m0, m1, m2 (newest
        first) that both multistep forms use, with the step ratios r0 = h_0 / h, r1 = h_1 / h of the official code:
        order 2: D1 = (m0 - m1) / r0 (D2 None); order 3: D1 ~ h m' and D2 ~ h^2 m'' / 2 from three points."""
        h = t.lam - hist[-1].point.lam
        m0, m1 = hist[-1].out, hist[-2].out
        r0 = (hist[-1].point.lam - hist[-2].point.lam) / h
        d1_0 = (m0 - m1) / r0
        if order == 2:
            return h, d1_0, None
        r1 = (hist[-2].point.lam - hist[-3].point.lam) / h
        d1_1 = (m1 - hist[-3].out) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        return h, d1, d2

@register
class DPMSolver(_ExponentialIntegrator):
    """DPM-Solver with noise prediction eps."""

    name = "dpm-solver"
    summary = "DPM-Solver (noise prediction), orders 1-3, singlestep or multistep"
    source = "Lu et al. 2022, 'DPM-Solver', eq. (3.7) (order 1), Alg. 1 (DPM-Solver-2), Alg. 2 (DPM-Solver-3)"
    prediction = "eps"
    options = _options(3, "singlestep")

    def first_order(self, x: torch.Tensor, m_s: torch.Tensor, s: Point, t: Point) -> torch.Tensor:
        h = t.lam - s.lam
        return (t.alpha / s.alpha) * x - t.sigma * expm1(h) * m_s  # DPM-Solver-1, eq. (3.7)

    def singlestep_second(self, model, x, m_s, s, s1, t, r1):  # type: ignore[no-untyped-def]
        h = t.lam - s.lam
        u = (s1.alpha / s.alpha) * x - s1.sigma * expm1(r1 * h) * m_s  # Alg. 1, u_i
        d = self.predict(model, u, s1, "eps") - m_s
        if self.solver_type == "dpmsolver":
            return (t.alpha / s.alpha) * x - t.sigma * expm1(h) * m_s - (0.5 / r1) * t.sigma * expm1(h) * d
        return (t.alpha / s.alpha) * x - t.sigma * expm1(h) * m_s - (1.0 / r1) * t.sigma * (expm1(h) / h - 1.0) * d

    def singlestep_third(self, model, x, m_s, s, s1, s2, t, r1, r2):  # type: ignore[no-untyped-def]
        h = t.lam - s.lam
        phi_1, phi_11, phi_12 = expm1(h), expm1(r1 * h), expm1(r2 * h)
        phi_22 = expm1(r2 * h) / (r2 * h) - 1.0
        phi_2 = phi_1 / h - 1.0
        u1 = (s1.alpha / s.alpha) * x - s1.sigma * phi_11 * m_s  # Alg. 2, u_{2i-1}
        d1 = self.predict(model, u1, s1, "eps") - m_s
        u2 = (s2.alpha / s.alpha) * x - s2.sigma * phi_12 * m_s - (r2 / r1) * s2.sigma * phi_22 * d1  # u_{2i}
        d2 = self.predict(model, u2, s2, "eps") - m_s
        if self.solver_type == "dpmsolver":
            return (t.alpha / s.alpha) * x - t.sigma * phi_1 * m_s - (1.0 / r2) * t.sigma * phi_2 * d2  # x_{t_i}
        phi_3 = phi_2 / h - 0.5
        dd1 = (r2 * d1 / r1 - r1 * d2 / r2) / (r2 - r1)
        dd2 = 2.0 * (d2 / r2 - d1 / r1) / (r2 - r1)
        return (t.alpha / s.alpha) * x - t.sigma * phi_1 * m_s - t.sigma * phi_2 * dd1 - t.sigma * phi_3 * dd2

    def multistep_second(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        h, d1, _ = self._differences(hist, t, 2)
        s, m0 = hist[-1].point, hist[-1].out
        phi_1 = expm1(h)
        if self.solver_type == "dpmsolver":
            return (t.alpha / s.alpha) * x - t.sigma * phi_1 * m0 - 0.5 * t.sigma * phi_1 * d1
        return (t.alpha / s.alpha) * x - t.sigma * phi_1 * m0 - t.sigma * (phi_1 / h - 1.0) * d1

    def multistep_third(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        h, d1, d2 = self._differences(hist, t, 3)
        s, m0 = hist[-1].point, hist[-1].out
        phi_1 = expm1(h)
        phi_2 = phi_1 / h - 1.0
        phi_3 = phi_2 / h - 0.5
        c2 = self._second_difference_coefficient()
        return (t.alpha / s.alpha) * x - t.sigma * phi_1 * m0 - t.sigma * phi_2 * d1 - c2 * t.sigma * phi_3 * d2


@register
class DPMSolverPP(_ExponentialIntegrator):
    """DPM-Solver++ with data prediction x0."""

    name = "dpm-solver++"
    summary = "DPM-Solver++ (data prediction): 2S, 2M, 3M (and 1, 3S)"
    source = ("Lu et al. 2022b, 'DPM-Solver++', first-order update (DDIM in data form), Alg. 1 (2S), Alg. 2 (2M); "
              "3M as the official code's third-order multistep update")
    prediction = "x0"
    sde: bool
    options = {**_options(2, "multistep"),
               "sde": Option(bool, False, "SDE-DPM-Solver++ (Lu et al. 2022b, Sec. 5 / App. B, SDE-DPM-Solver++(2M); "
                             "diffusers algorithm_type='sde-dpmsolver++', k-diffusion sample_dpmpp_2m_sde with "
                             "eta=1): stochastic, method=multistep, order 1-2")}

    # -- SDE-DPM-Solver++ (option sde=true) -------------------------------------------------------------
    def validate(self) -> None:
        super().validate()
        if self.sde:
            if self.corrector != "none":
                raise DpmbenchError("invalid option 'corrector' of solver 'dpm-solver++' with sde=true: "
                                    f"{self.corrector!r}; allowed: none")
            if self.method != "multistep" or self.order > 2:
                raise DpmbenchError(f"invalid option 'sde' of solver 'dpm-solver++' with method={self.method}, "
                                    f"order={self.order}: sde=true allows method=multistep, order 1, 2")
            self.stochastic = True

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        if not self.sde:
            return super().update(x, hist, t, order)
        return self.sde_update(x, hist, t, order)

    def sde_update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        """SDE-DPM-Solver++ 1 / 2M: the exact solution of the linear part of the reverse SDE in lambda,
        x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0 + sigma_t sqrt(1 - e^{-2h}) z,
        with x0 extrapolated linearly (D1) for order 2."""
        s, m0 = hist[-1].point, hist[-1].out
        h = t.lam - s.lam
        phi = -expm1(-2.0 * h)  # 1 - e^{-2h}
        x_t = (t.sigma / s.sigma) * math.exp(-h) * x + t.alpha * phi * m0  # SDE-DPM-Solver++1 (DDPM posterior)
        if order == 2:
            d1 = (m0 - hist[-2].out) / ((s.lam - hist[-2].point.lam) / h)
            if self.solver_type == "dpmsolver":  # midpoint: D = x0_s + D1 / 2
                x_t = x_t + 0.5 * t.alpha * phi * d1
            else:  # taylor ('heun' in diffusers): alpha_t int_0^h 2 e^{-2u} (h - u)/h du
                x_t = x_t + t.alpha * (phi / (-2.0 * h) + 1.0) * d1
        return x_t + t.sigma * math.sqrt(phi) * self.noise(hist.model, hist.step)  # z of this step

    def first_order(self, x: torch.Tensor, m_s: torch.Tensor, s: Point, t: Point) -> torch.Tensor:
        h = t.lam - s.lam
        return (t.sigma / s.sigma) * x - t.alpha * expm1(-h) * m_s  # DPM-Solver++ first-order update (= DDIM)

    def singlestep_second(self, model, x, m_s, s, s1, t, r1):  # type: ignore[no-untyped-def]
        h = t.lam - s.lam
        phi_1 = expm1(-h)
        u = (s1.sigma / s.sigma) * x - s1.alpha * expm1(-r1 * h) * m_s  # Alg. 1, u_i
        d = self.predict(model, u, s1, "x0") - m_s
        if self.solver_type == "dpmsolver":  # Alg. 1, D_i = (1 - 1/(2r)) x0_s + 1/(2r) x0_s1
            return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m_s - (0.5 / r1) * t.alpha * phi_1 * d
        return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m_s + (1.0 / r1) * t.alpha * (phi_1 / h + 1.0) * d

    def singlestep_third(self, model, x, m_s, s, s1, s2, t, r1, r2):  # type: ignore[no-untyped-def]
        h = t.lam - s.lam
        phi_1, phi_11, phi_12 = expm1(-h), expm1(-r1 * h), expm1(-r2 * h)
        phi_22 = expm1(-r2 * h) / (r2 * h) + 1.0
        phi_2 = phi_1 / h + 1.0
        u1 = (s1.sigma / s.sigma) * x - s1.alpha * phi_11 * m_s
        d1 = self.predict(model, u1, s1, "x0") - m_s
        u2 = (s2.sigma / s.sigma) * x - s2.alpha * phi_12 * m_s + (r2 / r1) * s2.alpha * phi_22 * d1
        d2 = self.predict(model, u2, s2, "x0") - m_s
        if self.solver_type == "dpmsolver":
            return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m_s + (1.0 / r2) * t.alpha * phi_2 * d2
        phi_3 = phi_2 / h - 0.5
        dd1 = (r2 * d1 / r1 - r1 * d2 / r2) / (r2 - r1)
        dd2 = 2.0 * (d2 / r2 - d1 / r1) / (r2 - r1)
        return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m_s + t.alpha * phi_2 * dd1 - t.alpha * phi_3 * dd2

    def multistep_second(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        h, d1, _ = self._differences(hist, t, 2)  # Alg. 2: D_i = x0_{i-1} + (x0_{i-1} - x0_{i-2}) / (2r)
        s, m0 = hist[-1].point, hist[-1].out
        phi_1 = expm1(-h)
        if self.solver_type == "dpmsolver":
            return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m0 - 0.5 * t.alpha * phi_1 * d1
        return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m0 + t.alpha * (phi_1 / h + 1.0) * d1

    def multistep_third(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        h, d1, d2 = self._differences(hist, t, 3)
        s, m0 = hist[-1].point, hist[-1].out
        phi_1 = expm1(-h)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        c2 = self._second_difference_coefficient()
        return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m0 + t.alpha * phi_2 * d1 - c2 * t.alpha * phi_3 * d2

