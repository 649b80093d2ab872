"""Euler and Heun samplers of EDM (Karras et al. 2022) on the scale-free ODE.

Any schedule is viewed as EDM's ``sigma(t) = t, s(t) = 1`` by the change of variables
``x~ = x / alpha``, ``sigma~ = sigma / alpha``, where the probability-flow ODE is
``dx~/dsigma~ = eps(x, t)`` (EDM eq. 4 with s = 1), as k-diffusion does for VP models. In these
variables Euler coincides with DDIM.
"""

from __future__ import annotations

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Option, Plan, Point, SinglestepSolver, register


def scale_free_sigma(p: Point) -> float:
    """sigma~ = sigma / alpha at ``p``: EDM's noise level of the scale-free variables x~ = x / alpha."""
    return p.sigma / p.alpha


@register
class Euler(SinglestepSolver):
    """Euler's method on dx~/dsigma~ = eps (EDM Alg. 1 without the correction)."""

    name = "euler"
    summary = "Euler on the scale-free probability-flow ODE; first order"
    source = "Karras et al. 2022 (EDM), Alg. 1 lines 4-5, as k-diffusion's sample_euler"
    options = {}

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        d = self.predict(model, x, s, "eps")  # d = (x~ - D(x~)) / sigma~ = eps
        return t.alpha * (x / s.alpha + (scale_free_sigma(t) - scale_free_sigma(s)) * d)  # Alg. 1 line 5


ODD_NFE = ("last-step", "to-zero")  # heun's odd_nfe choices


@register
class Heun(SinglestepSolver):
    """Heun's 2nd-order method (EDM Alg. 1). With an odd NFE budget (``odd_nfe``): ``last-step`` makes the last
    step of the grid an Euler step (EDM Alg. 1 with its final step to sigma = 0 ending at t_end instead); ``to-zero``
    takes NFE // 2 Heun steps on the grid to t_end, then one Euler step from t_end to sigma = 0, whose result is the
    denoised x0(x_{t_end}) (the DPM-Solver-v3 paper's EDM baseline: thu-ml/DPM-Solver-v3@ba16871:codebases/edm/
    samplers/heun.py:77-101)."""

    name = "heun"
    summary = "EDM's Heun (2nd order); odd NFE -> an Euler step (the grid's last, or from t_end to sigma = 0)"
    source = ("Karras et al. 2022 (EDM), Alg. 1 (deterministic sampler), lines 4-8; odd_nfe=to-zero: "
              "thu-ml/DPM-Solver-v3@ba16871:codebases/edm/samplers/heun.py:77-101")
    options = {
        "odd_nfe": Option(str, "last-step", "an odd budget's extra NFE: last-step = the grid's last step is Euler "
                          "((NFE + 1) // 2 steps to t_end); to-zero = NFE // 2 Heun steps to t_end, then Euler from "
                          "t_end to sigma = 0 (thu-ml/DPM-Solver-v3@ba16871:codebases/edm/samplers/heun.py:77-78, "
                          "95-101)", choices=ODD_NFE),
    }

    def validate(self) -> None:
        if getattr(self, "odd_nfe", "last-step") == "to-zero" and self.denoise_to_zero:
            raise DpmbenchError(f"invalid solver {self.spec!r}: odd_nfe=to-zero already ends at sigma = 0; "
                                "allowed: denoise_to_zero=false with it")

    def min_nfe(self) -> int:
        return 2

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: object = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        if getattr(self, "odd_nfe", "last-step") == "to-zero" and nfe % 2:
            p = self.uniform_plan(nfe, nfe // 2, 2, schedule, kind, t_start, t_end)
            p.extra["to_zero"] = True
            return p
        steps = (nfe + 1) // 2
        p = self.uniform_plan(nfe, steps, 2, schedule, kind, t_start, t_end)
        p.orders = [2] * (nfe // 2) + [1] * (nfe % 2)
        return p

    def run(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Solve along the plan; ``odd_nfe=to-zero`` with an odd budget ends with the Euler step to sigma = 0:
        x~ + (0 - sigma~) eps = x0 (heun.py:100-101), alpha = 1 there."""
        x = super().run(model, x, plan)
        if plan.extra.get("to_zero"):
            x = self.predict(model, x, plan.points[-1], "x0")
        return x

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        xs, dsig = x / s.alpha, scale_free_sigma(t) - scale_free_sigma(s)
        d = self.predict(model, x, s, "eps")
        x_euler = xs + dsig * d  # Alg. 1 line 5
        if order == 1:
            return t.alpha * x_euler
        d_prime = self.predict(model, t.alpha * x_euler, t, "eps")  # line 7
        return t.alpha * (xs + dsig * 0.5 * (d + d_prime))  # line 8
