"""Euler and Heun in flow-matching time: the samplers of diffusers' ``FlowMatchEulerDiscreteScheduler`` and
``FlowMatchHeunDiscreteScheduler`` (SD3, FLUX.1).

On the ``flow`` schedule (x_t = (1 - t) x0 + t eps) the probability-flow ODE is dx/dt = v = eps - x0 (Lipman et al.
2023, "Flow Matching for Generative Modeling", eq. 1 with the conditional path of their eq. 20 in its rectified
form; Liu et al. 2023, "Flow Straight and Fast", eq. 1), and these are Euler's and Heun's methods on it. Any other
schedule is viewed in the same coordinates by the change of variables of equal signal-to-noise ratio,
``x~ = x / (alpha + sigma)``, ``tau = sigma / (alpha + sigma)`` (then x~ = (1 - tau) x0 + tau eps): the velocity
eps - x0 needs no rescaling, so every model runs here. Euler in tau is DDIM on every schedule: both land on
alpha_t x0 + sigma_t eps with the x0 and eps of the step's one evaluation.
"""

from __future__ import annotations

import torch

from dpmbench.models.base import NFECounter
from dpmbench.solvers.base import Point, SinglestepSolver, register
from dpmbench.solvers.edm import Heun


def flow_time(p: Point) -> tuple[float, float]:
    """(tau, c) at ``p``: the flow time tau = sigma / (alpha + sigma) of equal signal-to-noise ratio and the scale c =
    alpha + sigma with x = c x~; on the ``flow`` schedule tau = t and c = 1."""
    c = p.alpha + p.sigma
    return p.sigma / c, c


@register
class FlowEuler(SinglestepSolver):
    """Euler's method in flow time: x~_t = x~_s + (tau_t - tau_s) v(x_s, s)."""

    name = "flow-euler"
    summary = "Euler on the flow velocity, in flow time (diffusers' FlowMatchEulerDiscreteScheduler); first order"
    source = ("Lipman et al. 2023 / Liu et al. 2023 (rectified flow), Euler on dx/dt = v; diffusers 0.42.1 "
              "scheduling_flow_match_euler_discrete.py step(): prev_sample = sample + (sigma_next - sigma) * v")
    options = {}
    pure_noise_start = True

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        (tau_s, c_s), (tau_t, c_t) = flow_time(s), flow_time(t)
        v = self.predict(model, x, s, "flow")
        return c_t * (x / c_s + (tau_t - tau_s) * v)  # explicit Euler on dx~/dtau = v


@register
class FlowHeun(Heun):
    """Heun's method in flow time; with an odd NFE budget the last step is Euler (as FlowMatchHeun's final step):
    EDM Heun's plan, its step in flow time instead of EDM's scale-free noise level."""

    name = "flow-heun"
    summary = "Heun on the flow velocity, in flow time (diffusers' FlowMatchHeunDiscreteScheduler); 2nd order"
    source = ("Heun's method on dx/dt = v (Karras et al. 2022, Alg. 1, in flow time); diffusers 0.42.1 "
              "scheduling_flow_match_heun_discrete.py step(): first- and second-order stages")
    options = {}
    pure_noise_start = True

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        (tau_s, c_s), (tau_t, c_t) = flow_time(s), flow_time(t)
        xs, dtau = x / c_s, tau_t - tau_s
        v = self.predict(model, x, s, "flow")
        x_euler = xs + dtau * v  # first-order stage
        if order == 1:
            return c_t * x_euler
        v_next = self.predict(model, c_t * x_euler, t, "flow")
        return c_t * (xs + dtau * 0.5 * (v + v_next))  # second-order stage: the trapezoidal rule
