"""Timestep Aligner / TimeTuner (ta-ddim; Xia et al., "Towards More Accurate Diffusion Model Acceleration with A
Timestep Aligner", arXiv:2310.09469v1; CVPR 2024 as "... with A Timestep Tuner", v2).

The method keeps a sampler's update and, at every step, conditions the network on an *aligned* timestep
t'_i = r_i t_i instead of the nominal t_i; the ratios r_i are fitted once per (model, NFE, grid, guidance) in
``prepare`` (outside the sampling budget) and cached as an artifact (``dpmbench.artifacts.cached``). Over DDIM
(the paper's and the official code's sampler), step i from t_i to t_{i+1}:

    eps_i   = eps_theta(x_i, r_i t_i)                                  (the network at the aligned time)
    x_{i+1} = alpha_{i+1} (x_i - sigma_i eps_i) / alpha_i + sigma_{i+1} eps_i     (DDIM eq. 12, nominal alpha, sigma)

as in the official ``TimeTuner.ddim_step_fn`` (github.com/THU-LYJ-Lab/time-tuner@366bb74, time_tuner.py:358-391:
the model gets ``t * t_ratio``, the update keeps alpha_t of the nominal t). With every r_i = 1 it is DDIM bit for
bit (``fit=false``).

Objective (official ``TimeTuner.optimize_timesteps``, time_tuner.py:454-537): for each step i but the last, in
order, r_i minimizes

    L_i(r) = E || eps_theta(x_i, t_i) - eps_theta(x_{i+1}(r), t_{i+1}) ||^2      (sum over dimensions, mean over x_i)

where x_{i+1}(r) is the aligned DDIM step from x_i and x_i comes from real data x_0 and Gaussian z: with the
``sequential`` strategy (official default, :460) x_i is the aligned sampler's state after steps 0..i-1 from
x_{t_0} = alpha_{t_0} x_0 + sigma_{t_0} z (ratios fitted so far); with ``parallel``, x_i = alpha_{t_i} x_0 +
sigma_{t_i} z (the true marginal at t_i). The last step keeps r = 1 (official: ``t_ratios + [1.]``, :537). The
loss asks the direction used over the interval to agree with the model's direction where the step lands: DDIM is
exact when eps is constant along the path.

Data x_0 (``dpmbench.solvers.data.data_samples``): draws of the mixture on an unguided oracle (the real data
distribution, exactly), the exact ODE solutions of prior samples when guided, and a 100-NFE DPM-Solver++ run of the
network otherwise (the official code reads a data set; a network carries none here).

Deviations, stated: the official optimizer is Adam (lr 2e-3, 500 iterations of fresh mini-batches, r initialized
to 1, :461-472). Here one fixed fit batch (``fit_samples`` of ``fit_seed``) and the minimizer of its loss: a scan
of 9 log-spaced ratios, then Brent's bounded method around the best, keeping r = 1 unless it lowers the loss.
The search interval is t'_i in [t_{i+1}, min(2 t_i, T)]: the aligned time stays above the step's end (a constant
direction over [t_{i+1}, t_i] is the model's at some time of the interval when eps is smooth) and at most 2 t_i, the
range 500 Adam steps of lr 2e-3 can reach from r = 1, and within the model's time domain.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from scipy.optimize import minimize_scalar

from dpmbench.artifacts import cached
from dpmbench.models.base import FIT_START, Model, NFECounter, fit_stream, prior_noise
from dpmbench.solvers.base import Context, Option, Plan, Point, SinglestepSolver, register
from dpmbench.solvers.data import data_samples
from dpmbench.solvers.ddim import ddim_update

SCAN = 9  # log-spaced ratios scanned before Brent's refinement
RATIO_MAX = 2.0  # aligned time at most 2 t_i (the official Adam's reach from r = 1, see the module doc)
NOISE_STREAM = 5  # the fit's z, a stream of its own (independent of the data draws of the same seed)


def aligned(schedule: Any, s: Point, ratio: float) -> Point:
    """The point at the aligned time ``ratio * s.t`` (``s`` itself for ratio 1, so DDIM is reproduced bit for bit)."""
    return s if ratio == 1.0 else Point.at(schedule, ratio * s.t)


@register
class TimestepAlignerDDIM(SinglestepSolver):
    """DDIM with the network conditioned on fitted aligned timesteps (no extra NFE)."""

    name = "ta-ddim"
    summary = "Timestep Aligner over DDIM: network at fitted aligned timesteps r_i t_i (fit cached; same NFE)"
    source = ("Xia et al. 2024, 'Towards More Accurate Diffusion Model Acceleration with A Timestep Aligner/Tuner' "
              "(CVPR), arXiv:2310.09469; update and objective from the official THU-LYJ-Lab/time-tuner@366bb74 "
              "time_tuner.py (ddim_step_fn, optimize_timesteps)")
    needs_prepare = True
    tune: str
    fit_samples: int
    fit_seed: int
    fit: bool
    options = {
        "tune": Option(str, "sequential", "x_i of the fit: sequential = the aligned sampler's own states from "
                       "noised data; parallel = the true marginal at t_i (official default sequential, "
                       "time_tuner.py:460)", choices=("sequential", "parallel")),
        "fit_samples": Option(int, 256, "data samples x_0 of the fit batch", minimum=2),
        "fit_seed": Option(int, 1234, "seed of the fit batch (its own streams, not the sampled x_T)", minimum=0),
        "fit": Option(bool, True, "fit the aligned timesteps; false: every ratio 1, i.e. DDIM"),
    }

    # -- fit (prepare) ------------------------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> dict[str, Any]:
        plan = self.make_plan(ctx.nfe, ctx.model.schedule, ctx.kind, ctx.t_start, ctx.t_end)
        steps = len(plan.orders)
        if not self.fit:
            self.ratios = [1.0] * steps
            return {"aligned_steps": steps, "fitted": False}
        opts = (self.tune, self.fit_samples, self.fit_seed)

        def compute() -> dict[str, list[float]]:
            return self.fit_ratios(ctx, plan)

        meta = {"solver": self.spec, "nfe": ctx.nfe, "stream": fit_stream(self.fit_seed, self.fit_samples)}
        fitted = cached("ta-ratios", (*ctx.key(), *opts), compute, meta=meta)
        self.ratios = fitted["ratios"]
        return {"aligned_steps": steps, "fitted": True}

    def fit_ratios(self, ctx: Context, plan: Plan) -> dict[str, list[float]]:
        """The ratios r_i minimizing the official per-step loss on the fit batch (float64), and the loss at r = 1
        and at r_i per step (the last step is not fitted: r = 1, both losses nan)."""
        model: Model = ctx.model
        cond = ctx.cond(self.fit_samples)
        net = NFECounter(model, cond)
        x0 = data_samples(ctx, self.fit_samples, self.fit_seed, cond).reshape(self.fit_samples, *model.shape)
        z = prior_noise(self.fit_samples, tuple(model.shape), self.fit_seed, FIT_START,
                        stream=NOISE_STREAM).to(torch.float64)  # the fit's own samples, never an evaluated run's
        first = plan.points[0]
        x = first.alpha * x0 + first.sigma * z
        ratios: list[float] = []
        loss_base: list[float] = []
        loss_fit: list[float] = []
        last = len(plan.orders) - 1
        for i, (s, t) in enumerate(zip(plan.points[:-1], plan.points[1:], strict=True)):
            if self.tune == "parallel":
                x = s.alpha * x0 + s.sigma * z
            r = 1.0
            if i < last:
                r, l1, lr = self._fit_step(net, x, s, t, model.schedule)
                loss_base.append(l1)
                loss_fit.append(lr)
            else:
                loss_base.append(math.nan)
                loss_fit.append(math.nan)
            ratios.append(r)
            if self.tune == "sequential":
                x = ddim_update(x, net.eps(x, aligned(model.schedule, s, r).t), s, t)
        return {"ratios": ratios, "loss_base": loss_base, "loss_fit": loss_fit}

    @staticmethod
    def _fit_step(net: NFECounter, x: torch.Tensor, s: Point, t: Point, schedule: Any) -> tuple[float, float, float]:
        """argmin_r L_i(r) over t' = r s.t in [t.t, min(2 s.t, T)] (scan, then Brent): (r, L(1), L(r))."""
        target = net.eps(x, s.t)

        def loss(u: float) -> float:  # u = log r
            p = aligned(schedule, s, math.exp(u)) if u != 0.0 else s
            x_next = ddim_update(x, net.eps(x, p.t), s, t)
            d = target - net.eps(x_next, t.t)
            v = float(d.reshape(len(d), -1).pow(2).sum(1).mean())  # official mean_flat: sum over dims, mean
            return v if math.isfinite(v) else math.inf

        lo, hi = math.log(t.t / s.t), math.log(min(RATIO_MAX * s.t, float(schedule.T)) / s.t)
        base = loss(0.0)
        grid = torch.linspace(lo, hi, SCAN, dtype=torch.float64).tolist()
        vals = [loss(u) for u in grid]
        k = min(range(SCAN), key=vals.__getitem__)
        a, b = grid[max(k - 1, 0)], grid[min(k + 1, SCAN - 1)]
        res = minimize_scalar(loss, bounds=(a, b), method="bounded", options={"xatol": 1e-4})
        u, best = (float(res.x), float(res.fun)) if res.fun < vals[k] else (grid[k], vals[k])
        if not best < base:
            return 1.0, base, base
        return math.exp(u), base, best

    # -- sampling ---------------------------------------------------------------------------------------------------
    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        ratios = getattr(self, "ratios", None)
        if ratios is None or len(ratios) != len(plan.orders):
            raise RuntimeError(f"solver {self.spec} was not prepared for this plan (run it through dpmbench.sample)")
        for s, t, r in zip(plan.points[:-1], plan.points[1:], ratios, strict=True):
            eps = self.predict(model, x, aligned(model.schedule, s, r), "eps")  # eps_theta(x_i, r_i t_i)
            x = ddim_update(x, eps, s, t)  # DDIM eq. (12) with the nominal alpha_i, sigma_i
        return x
