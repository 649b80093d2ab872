"""Euler and Heun samplers of EDM (Karras et al. 2022) on the scale-free ODE.

Any schedule is viewed as EDM's ``sigma(t) = t, s(t) = 1`` by the change of variables
``x~ = x / alpha``, ``sigma~ = sigma / alpha``, where the probability-flow ODE is
``dx~/dsigma~ = eps(x, t)`` (EDM eq. 4 with s = 1), as k-diffusion does for VP models. In these
variables Euler coincides with DDIM.
"""

from __future__ import annotations

import torch

from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Plan, Point, SinglestepSolver, register


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


@register
class Heun(SinglestepSolver):
    """Heun's 2nd-order method (EDM Alg. 1); with an odd NFE budget the last step is Euler."""

    name = "heun"
    summary = "EDM's Heun (2nd order); odd NFE -> final Euler step"
    source = "Karras et al. 2022 (EDM), Alg. 1 (deterministic sampler), lines 4-8"
    options = {}

    def min_nfe(self) -> int:
        return 2

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: object = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        steps = (nfe + 1) // 2
        p = self.uniform_plan(nfe, steps, 2, schedule, kind, t_start, t_end)
        p.orders = [2] * (nfe // 2) + [1] * (nfe % 2)
        return p

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        xs, dsig = x / s.alpha, scale_free_sigma(t) - scale_free_sigma(s)
        d = self.predict(model, x, s, "eps")
        x_euler = xs + dsig * d  # Alg. 1 line 5
        if order == 1:
            return t.alpha * x_euler
        d_prime = self.predict(model, t.alpha * x_euler, t, "eps")  # line 7
        return t.alpha * (xs + dsig * 0.5 * (d + d_prime))  # line 8
