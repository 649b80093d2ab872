"""Time-Shift samplers (Li, Qu, Yao, Sun & Moens 2024, 'Alleviating Exposure Bias in Diffusion Models through
Sampling with Shifted Time Steps', ICLR 2024; official code github.com/Mingxiao-Li/TS-DPM).

The Time-Shift Sampler (paper Sec. 4, Alg. 1 "TS-DDPM" / Alg. 2 "TS-DDIM") keeps the solver's update rule but,
at every step after the first and while the nominal time is above a cutoff ``t_c``, couples the current sample
x with the time t_s whose noise level best matches the sample's own variance, searched in a window of ``w``
training steps around the nominal time:

    t_s = argmin_{tau in [t - w/2, t + w/2]} | Var(x) - (1 - abar_tau) |      (variance matching, Sec. 4.2)

``Var(x)`` is the (unbiased) variance over the entries of each sample (``th.var(x.view(n, -1), dim=-1)`` in the
official ``apply_time_shift``) and ``1 - abar_tau = sigma(tau)^2``; every sample gets its own t_s. The model is
then evaluated at (x, t_s) and the step starts from t_s (its alpha, sigma, lambda) and ends at the next nominal
time, so the grid itself is unchanged and the NFE budget is the base solver's.

Window and cutoff are counted in training steps of a 1000-step DDPM (official ``window_size`` / ``cut_off_value``;
the window is +-``window // 2`` steps); here a training step is ``T / grid`` in continuous time (``grid = 1000``), so
index k corresponds to t = k T / 1000 (the official DPM-Solver integration maps t = (k + 1) / 1000). Defaults
``window = 30``, ``cutoff = 300``: the official README's low-step example (DPM-Solver, 5 steps).

``ts-ddim`` is DDIM (eta = 0) with the shift (official ``pnm_solver`` method ``euler``); ``ts-dpm-solver`` is the
multistep noise-prediction DPM-Solver (order 2, ``lower_order_final``) with the shift, as the official
``DPMSolverSampler`` runs it; as there, the first ``order`` evaluations (the warm-up) are not shifted.

Deviations from the official code, both deliberate and documented: (1) the official DDIM integration moves the
*end* of a step to the shifted time and starts the next step from the nominal one, whereas the paper's Alg. 2
(and the official DPM-Solver integration) evaluate the model at the shifted time and start the step there; both
solvers here follow the paper. (2) The official DPM-Solver integration measures the variance of the last *model
output* (``model_prev_list[-1]``), the paper and the official DDIM/DEIS integrations that of the sample x; here
it is always the sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import History, MultistepSolver, Option, Plan, Point, register


@dataclass
class Coupled:
    """Per-sample time points: ``t`` has shape (n,), the schedule values broadcast against x (n, 1, ..., 1)."""

    t: torch.Tensor
    lam: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor


def _coupled(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> Coupled:
    shape = (-1, *([1] * (like.ndim - 1)))
    t64 = t.to(torch.float64)
    vals = [v.to(like.dtype).reshape(shape) for v in (schedule.lambda_(t64), schedule.alpha(t64), schedule.sigma(t64))]
    return Coupled(t64, *vals)


def _nominal(p: Point, like: torch.Tensor) -> Coupled:
    """A scalar point as a per-sample one (every sample at the same time)."""
    n, shape = like.shape[0], (-1, *([1] * (like.ndim - 1)))

    def full(v: float) -> torch.Tensor:
        return torch.full((n,), v, dtype=like.dtype, device=like.device).reshape(shape)

    return Coupled(torch.full((n,), p.t, dtype=torch.float64), full(p.lam), full(p.alpha), full(p.sigma))


def sample_variance(x: torch.Tensor) -> torch.Tensor:
    """Var(x) per sample: the unbiased variance over all entries of each sample (official apply_time_shift)."""
    return x.reshape(x.shape[0], -1).to(torch.float64).var(dim=1)


def _bounds(plan: Plan, i: int) -> tuple[float, float]:
    """The window of grid point i (0 < i < steps) is kept within a third of the way to its neighbours, so that
    coupled times stay strictly decreasing (the multistep differences divide by lambda gaps). The official code has
    no such guard: its windows (+-15 of 1000 steps) are far narrower than the 5-20-step grids it was run with;
    here the guard matters only for fine grids (it binds when a grid step is shorter than a window)."""
    ts = plan.points
    return ts[i].t - (ts[i].t - ts[i + 1].t) / 3.0, ts[i].t + (ts[i - 1].t - ts[i].t) / 3.0


def _options() -> dict[str, Option]:
    return {
        "window": Option(int, 30, "window size w in training steps: t_s is searched in t +- w//2 steps (official "
                         "--window_size; README low-step example 30)", minimum=0),
        "cutoff": Option(int, 300, "cutoff t_c in training steps: no shift once the nominal time is at or below "
                         "t_c (official --cut_off_value; README low-step example 300)", minimum=0),
        "grid": Option(int, 1000, "training steps per unit T that window and cutoff are counted in (official: the "
                       "1000-step DDPM)", minimum=1),
    }


class _TimeShift:
    """The variance-matching shift, shared by both samplers (mixin over their options ``window``, ``cutoff``,
    ``grid``)."""

    window: int
    cutoff: int
    grid: int
    times_known = False  # the shifted times depend on each sample's variance

    def shift(self, schedule: NoiseSchedule, x: torch.Tensor, p: Point, lo: float, hi: float,
              log: list[tuple[float, torch.Tensor, torch.Tensor]]) -> Coupled:
        """t_s = argmin over the window around ``p.t`` of |Var(x) - sigma(tau)^2| (Li et al. 2024, Sec. 4.2),
        per sample; the nominal point when ``p.t`` is at or below the cutoff. Window times are clamped to
        [lo, hi]. The choice is appended to ``log`` (nominal t, Var(x), t_s)."""
        dt = float(schedule.T) / self.grid
        if p.t <= self.cutoff * dt or self.window // 2 == 0:
            return _nominal(p, x)
        half = self.window // 2
        taus = (p.t + dt * torch.arange(-half, half + 1, dtype=torch.float64)).clamp(lo, hi)
        var = sample_variance(x)
        dist = (var[:, None] - schedule.sigma(taus)[None, :] ** 2) ** 2  # official: squared distance, argmin
        t_s = taus[dist.argmin(dim=1)]
        log.append((p.t, var, t_s))
        return _coupled(schedule, t_s, x)

    @staticmethod
    def new_log(plan: Plan) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """A fresh record of the shifts of one run, kept in the run's plan (``plan.extra["shift_log"]``)."""
        log: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        plan.extra["shift_log"] = log
        return log


@register
class TimeShiftDDIM(_TimeShift, MultistepSolver):
    """DDIM (eta = 0) with the Time-Shift Sampler: one eps evaluation per step, at the variance-matched time."""

    name = "ts-ddim"
    summary = "TS-DDIM: DDIM with variance-matched shifted time steps (exposure-bias correction); first order"
    source = ("Li et al. 2024, 'Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time "
              "Steps' (ICLR), Alg. 2 (TS-DDIM) with the variance matching of Sec. 4.2; official code TS-DPM")
    prediction = "eps"
    options = _options()

    def full_order(self) -> int:
        return 1

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        log = self.new_log(plan)
        sch = model.schedule
        for i, (s, t) in enumerate(zip(plan.points[:-1], plan.points[1:], strict=True)):
            c = self.shift(sch, x, s, *_bounds(plan, i), log) if i > 0 else _nominal(s, x)
            eps = self.predict(model, x, c, "eps")  # type: ignore[arg-type]  # per-sample point
            x0 = (x - c.sigma * eps) / c.alpha  # "predicted x_0" at the coupled time t_s (Alg. 2; DDIM eq. 12)
            x = t.alpha * x0 + t.sigma * eps  # DDIM eq. (12), eta = 0, to the nominal next time
        return x


@register
class TimeShiftDPMSolver(_TimeShift, MultistepSolver):
    """Multistep DPM-Solver (noise prediction) with the Time-Shift Sampler."""

    name = "ts-dpm-solver"
    summary = "TS-DPM-Solver: multistep DPM-Solver (eps) with variance-matched shifted time steps"
    source = ("Li et al. 2024, 'Alleviating Exposure Bias ... Shifted Time Steps' (ICLR), Sec. 4.2 + Sec. 5 "
              "(TS-DPM-Solver); update rules Lu et al. 2022 DPM-Solver eq. (3.7) and multistep order 2 "
              "(official code TS-DPM sampler/dpm_solver_utils.py, order 2, time_uniform, lower_order_final)")
    prediction = "eps"
    order: int
    lower_order_final: bool
    options = {
        "order": Option(int, 2, "multistep order (official TS-DPM-Solver runs order 2)", choices=(1, 2)),
        "lower_order_final": Option(bool, True, "lower the order of the final steps below 10 steps (official)"),
        **_options(),
    }

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        log = self.new_log(plan)
        sch = model.schedule
        hist = self.new_history(model, plan)
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            hist.step = i
            c = self.shift(sch, x, s, *_bounds(plan, i), log) if i >= self.order else _nominal(s, x)  # none in warm-up
            hist.push(c, self.predict(model, x, c, "eps"))  # type: ignore[arg-type]
            x = self.update(x, hist, t, order)
        return x

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        s, m0 = hist[-1].point, hist[-1].out
        h = t.lam - s.lam
        phi_1 = torch.expm1(h)
        x_t = (t.alpha / s.alpha) * x - t.sigma * phi_1 * m0  # DPM-Solver-1, eq. (3.7)
        if order == 2:  # multistep DPM-Solver-2 ('dpmsolver' form): D1 = (m0 - m1) / r0
            r0 = (s.lam - hist[-2].point.lam) / h
            x_t = x_t - 0.5 * t.sigma * phi_1 * (m0 - hist[-2].out) / r0
        return x_t
