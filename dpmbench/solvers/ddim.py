"""DDIM (Song, Meng & Ermon 2021), deterministic (eta = 0)."""

from __future__ import annotations

import torch

from dpmbench.models.base import NFECounter
from dpmbench.solvers.base import Point, SinglestepSolver, register


@register
class DDIM(SinglestepSolver):
    """Denoising diffusion implicit model sampler, eta = 0: one eps evaluation per step."""

    name = "ddim"
    summary = "DDIM, deterministic (eta=0); first order"
    source = "Song, Meng & Ermon 2021, 'Denoising Diffusion Implicit Models', eq. (12) with sigma_t = 0"
    options = {}
    pure_noise_start = True

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        if s.alpha == 0.0:  # pure noise (a flow model at t = 1): eps = x / sigma exactly, x0 only the model knows
            return t.alpha * self.predict(model, x, s, "x0") + t.sigma * (x / s.sigma)  # eq. (12), eta = 0
        return ddim_update(x, self.predict(model, x, s, "eps"), s, t)


def ddim_update(x: torch.Tensor, eps: torch.Tensor, s: Point, t: Point) -> torch.Tensor:
    """DDIM's deterministic update from s to t with the noise prediction ``eps`` (eq. (12), eta = 0)."""
    x0 = (x - s.sigma * eps) / s.alpha  # "predicted x_0", eq. (12)
    return t.alpha * x0 + t.sigma * eps  # "direction pointing to x_t", eq. (12), eta = 0
