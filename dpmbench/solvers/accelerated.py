"""Provably accelerated DDIM- and DDPM-type samplers (Li, Huang, Efimov, Wei, Chi & Chen 2024, 'Accelerating
Convergence of Score-Based Diffusion Models, Provably', ICML 2024, arXiv 2403.03852v1, Sec. 3).

The paper writes a VP model in discrete time: ``alpha_t = 1 - beta_t`` is the per-step ratio
``abar_t / abar_{t-1}`` and the score is ``s_t(x) = -eps(x, t) / sqrt(1 - abar_t)``. On dpmbench's grid a step goes
from point ``s`` (noisier, the paper's t) to point ``t`` (the paper's t - 1); the paper's t + 1 is the grid point
before ``s`` (``r``), so ``alpha_t = (alpha(s) / alpha(t))^2`` and ``alpha_{t+1} = (alpha(r) / alpha(s))^2`` with
dpmbench's ``alpha = sqrt(abar)``.

``accel-ddim`` (deterministic). The base ("DDIM-type") sampler the paper accelerates is

    Y_{t-1} = (Y_t + (1 - alpha_t)/2 s_t(Y_t)) / sqrt(alpha_t)                                       (Li et al. eq. 2.5)

and the accelerated sampler (paper Sec. 3.1) first moves one step back up the trajectory, then uses the score
there for a second-order correction (a finite difference of the score along the trajectory, as DPM-Solver-2):

    Y_t^- = Phi_t(Y_t) = sqrt(alpha_{t+1}) (Y_t - (1 - alpha_{t+1})/2 s_t(Y_t))                                (3.1a)
    Y_{t-1} = Psi_t(Y_t, Y_t^-) = (Y_t + (1 - alpha_t)/2 s_t(Y_t)
              + (1 - alpha_t)^2 / (4 (1 - alpha_{t+1})) (s_t(Y_t) - sqrt(alpha_{t+1}) s_{t+1}(Y_t^-))) / sqrt(alpha_t)
                                                                                                             (3.1b)

Two score evaluations per step. The first step has no grid point above it (the paper's alpha_{T+1} would need a time
beyond T, outside a trained network's range), so it is a base step (1 NFE), as multistep solvers warm up; an even NFE
budget ends with one more base step. With budget N: ``N // 2 + 1`` steps, ``N - N // 2 - 1`` of them accelerated.

``accel-ddpm`` (stochastic). The base ("DDPM-type") sampler and its acceleration (paper Sec. 3.2) split the
step's Gaussian noise in two halves, one added before the score evaluation and one after:

    Y_t^+ = Y_t + sqrt((1 - alpha_t)/2) Z_t                                                                    (3.3a)
    Y_{t-1} = (Y_t^+ + (1 - alpha_t) s_t(Y_t^+) + sqrt((1 - alpha_t)/2) Z_t^+) / sqrt(alpha_t)                  (3.3b)

``split`` is the fraction of the variance (1 - alpha_t) added before the evaluation: 0.5 is the paper's
accelerated sampler, 0 the DDPM-type base ``Y_{t-1} = (Y_t + (1 - alpha_t) s_t(Y_t) + sqrt(1 - alpha_t) Z_t) /
sqrt(alpha_t)`` (Li et al. eq. 2.4). One score evaluation per step; noise of step k: streams 2k (before) and 2k + 1
(after).

Claims (paper Thm. 1, 2): accelerated deterministic error O(1/T^2) vs the DDIM-type O(1/T); accelerated stochastic
O(1/T) vs O(1/sqrt(T)) (TV distance, steps T). No official implementation is public; these rules are written from
the paper's equations (numbers above refer to its Sec. 3). VP schedules only (the paper's setting).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Option, Plan, Point, Solver, register


def step_ratio(s: Point, t: Point) -> float:
    """The paper's per-step alpha = abar_s / abar_t for a step from s (noisier) to t."""
    return (s.alpha / t.alpha) ** 2


def _check_vp(solver: str, plan: Plan) -> None:
    for p in plan.points:
        if abs(p.alpha**2 + p.sigma**2 - 1.0) > 1e-6:
            raise DpmbenchError(f"invalid schedule for solver {solver!r}: it needs a variance-preserving schedule "
                                "(vp-linear, vp-cosine, vp-discrete), alpha^2 + sigma^2 = 1")


class _LiSampler(Solver):
    """Shared: score evaluation, VP check."""

    def score(self, model: NFECounter, x: torch.Tensor, p: Point) -> torch.Tensor:
        """s_t(x) = -eps(x, t) / sigma_t (1 NFE)."""
        return -self.predict(model, x, p, "eps") / p.sigma


@register
class AcceleratedDDIM(_LiSampler):
    """Li et al. 2024's accelerated deterministic sampler (2 NFE per step) over their DDIM-type base."""

    name = "accel-ddim"
    summary = "provably accelerated DDIM-type sampler (2 NFE/step; claimed O(1/T^2) vs O(1/T)); accelerated=false: base"
    source = ("Li, Huang, Efimov, Wei, Chi & Chen 2024, 'Accelerating Convergence of Score-Based Diffusion Models, "
              "Provably' (ICML), arXiv 2403.03852v1 Sec. 3.1 (Phi_t, Psi_t); no official code")
    accelerated: bool
    options = {
        "accelerated": Option(bool, True, "the accelerated update (3.1); false: the DDIM-type base (2.5), 1 NFE/step"),
    }

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        if not self.accelerated:
            p = self.uniform_plan(nfe, nfe, 1, schedule, kind, t_start, t_end)
        else:
            steps = nfe // 2 + 1
            p = self.uniform_plan(nfe, steps, 2, schedule, kind, t_start, t_end)
            p.orders = [1] + [2] * (nfe - steps) + [1] * (2 * steps - 1 - nfe)
        _check_vp(self.name, p)
        return p

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        pts = plan.points
        for i, (s, t, order) in enumerate(zip(pts[:-1], pts[1:], plan.orders, strict=True)):
            a = step_ratio(s, t)  # alpha_t
            sc = self.score(model, x, s)
            x_new = x + (1 - a) / 2 * sc  # (2.5) before the 1/sqrt(alpha_t)
            if order == 2:
                r = pts[i - 1]
                a1 = step_ratio(r, s)  # alpha_{t+1}
                y = math.sqrt(a1) * (x - (1 - a1) / 2 * sc)  # (3.1a)
                sc_r = self.score(model, y, r)
                x_new = x_new + (1 - a) ** 2 / (4 * (1 - a1)) * (sc - math.sqrt(a1) * sc_r)  # (3.1b)
            x = x_new / math.sqrt(a)
        return x


@register
class AcceleratedDDPM(_LiSampler):
    """Li et al. 2024's accelerated stochastic sampler (noise split around the score evaluation; 1 NFE per step)."""

    name = "accel-ddpm"
    summary = "provably accelerated DDPM-type sampler (claimed O(1/T) vs O(1/sqrt T)); split=0: base; stochastic"
    source = ("Li, Huang, Efimov, Wei, Chi & Chen 2024, 'Accelerating Convergence of Score-Based Diffusion Models, "
              "Provably' (ICML), arXiv 2403.03852v1 Sec. 3.2; no official code")
    split: float
    options = {
        "split": Option(float, 0.5, "fraction of the step's noise variance added before the score evaluation (paper: "
                        "0.5; 0: the DDPM-type base)", minimum=0.0),
    }
    stochastic = True

    def validate(self) -> None:
        if self.split > 1.0:
            raise DpmbenchError(f"invalid option 'split' of solver {self.name!r}: {self.split} (allowed: 0..1)")

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        p = self.uniform_plan(nfe, nfe, 1, schedule, kind, t_start, t_end)
        _check_vp(self.name, p)
        return p

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        for k, (s, t) in enumerate(zip(plan.points[:-1], plan.points[1:], strict=True)):
            a = step_ratio(s, t)
            if self.split > 0:
                x = x + math.sqrt(self.split * (1 - a)) * self.noise(model, 2 * k)  # (3.3a)
            x = x + (1 - a) * self.score(model, x, s) + math.sqrt((1 - self.split) * (1 - a)) * self.noise(
                model, 2 * k + 1)  # (3.3b)
            x = x / math.sqrt(a)
        return x
