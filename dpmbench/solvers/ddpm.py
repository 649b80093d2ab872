"""DDPM ancestral sampling (Ho, Jain & Abbeel 2020, Alg. 2) between arbitrary time points.

Each step from s to t < s draws x_t from the forward-process posterior q(x_t | x_s, x_0) with x_0 replaced by
the model's data prediction (Ho et al. eq. (6)-(7), written for continuous time as in Kingma et al. 2021,
"Variational Diffusion Models", eq. (29)-(32)): with alpha_{s|t} = alpha_s / alpha_t and
sigma_{s|t}^2 = sigma_s^2 - alpha_{s|t}^2 sigma_t^2,

    mean = alpha_{s|t} sigma_t^2 / sigma_s^2 * x_s + alpha_t sigma_{s|t}^2 / sigma_s^2 * x0_pred
    var  = sigma_{s|t}^2 sigma_t^2 / sigma_s^2

On the 1000-step discrete grid this is Alg. 2 with sigma_t^2 = beta-tilde ("fixed small" variance). Noise is
added on every step, the last one included (the grid ends at t_end > 0, a noisy level); ``denoise_to_zero``
spends one more NFE on x0(x_{t_end}).
"""

from __future__ import annotations

import math

import torch

from dpmbench.models.base import NFECounter
from dpmbench.solvers.base import Plan, Point, SinglestepSolver, register


@register
class DDPM(SinglestepSolver):
    """Ancestral sampling from the posterior q(x_t | x_s, x0_pred): one x0 evaluation per step."""

    name = "ddpm"
    summary = "DDPM ancestral sampling (posterior q(x_t|x_s,x0) between grid points); stochastic, first order"
    source = "Ho, Jain & Abbeel 2020, 'Denoising Diffusion Probabilistic Models', Alg. 2 with eq. (6)-(7)"
    options = {}
    stochastic = True

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        for k, (s, t) in enumerate(zip(plan.points[:-1], plan.points[1:], strict=True)):
            x = self.ancestral_step(model, x, s, t, k)
        return x

    def ancestral_step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, k: int) -> torch.Tensor:
        """One draw of x_t ~ q(x_t | x_s, x0_pred) with the noise of step k."""
        x0 = self.predict(model, x, s, "x0")
        a_st = s.alpha / t.alpha  # alpha_{s|t}
        var_st = s.sigma**2 - a_st**2 * t.sigma**2  # sigma_{s|t}^2
        mean = (a_st * t.sigma**2 / s.sigma**2) * x + (t.alpha * var_st / s.sigma**2) * x0  # eq. (7), mu-tilde
        std = math.sqrt(max(var_st, 0.0) * t.sigma**2 / s.sigma**2)  # eq. (7), beta-tilde
        return mean + std * self.noise(model, k)
