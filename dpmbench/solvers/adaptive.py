"""Adaptive step-size DPM-Solver-12 / DPM-Solver-23 (Lu et al. 2022, Sec. 4.2 and App. C, Alg. 4; official
code ``DPM_Solver.dpm_solver_adaptive``), for ``dpm-solver`` and ``dpm-solver++`` with ``method=adaptive``.

Every attempt from s goes to t = t(lambda_s + h) with a lower- and a higher-order singlestep update that share
their model evaluations: order 2 (DPM-Solver-12) compares DPM-Solver-1 with DPM-Solver-2 (r1 = 1/2), 2 NFE;
order 3 (DPM-Solver-23) compares DPM-Solver-2 (r1 = 1/3) with DPM-Solver-3 (r1 = 1/3, r2 = 2/3), 3 NFE. As in the
official code, the evaluation at s is repeated after a rejected attempt, so every attempt costs ``order`` NFE.
Error control (Alg. 4): delta = max(atol, rtol * max(|x_lower|, |x_prev|)), E = max over the batch of the RMS of
(x_higher - x_lower) / delta; accept if E <= 1; h <- min(theta h E^{-1/order}, lambda_end - lambda_s); stop when
|s - t_end| <= t_err. Like the official code, E is a maximum over the batch, so the steps (and the result) of a
sample depend on the batch it is solved in.

NFE contract (the one design addition to the core): the solver sets ``adaptive = True``; for it the NFE budget of
``sample()`` is a *cap*, not an exact count. ``sample()`` asserts ``used <= nfe`` (``used == nfe`` for every other
solver) and reports ``nfe_used`` (and ``steps_accepted``, ``steps_rejected``, ``budget_exhausted``) in its
``stats`` dict; the CLI stores ``nfe_used`` in the samples file. The solver always ends at t_end: when the budget
left allows only one more attempt, that attempt goes straight to t_end and is accepted without error control
(``budget_exhausted = True``), so a small cap gives a coarse but complete solve, never an error or an overrun.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dpmbench.models.base import NFECounter
from dpmbench.solvers.base import Plan, Point


class _Replay:
    """A model proxy that records the evaluations of the lower-order update and replays them to the higher-order
    one, so the pair shares its evaluations (official code: ``return_intermediate`` / ``model_s1``)."""

    def __init__(self, model: NFECounter):
        self.model, self.schedule, self.noise = model, model.schedule, model.noise
        self.cache: dict[float, tuple[torch.Tensor, str, torch.Tensor]] = {}
        self.replay = False

    def predict(self, x: torch.Tensor, t: float, kind: str) -> torch.Tensor:
        if self.replay and t in self.cache:
            x_rec, kind_rec, out = self.cache.pop(t)
            same = x_rec.shape == x.shape and bool(((x_rec == x) | (x_rec.isnan() & x.isnan())).all())  # NaN: diverged
            if kind_rec == kind and same:
                return out
            raise RuntimeError("adaptive DPM-Solver: the higher-order update did not reuse the lower one's point")
        out = self.model.predict(x, t, kind)
        if not self.replay:
            self.cache[t] = (x, kind, out)
        return out


def _error_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS over all dimensions (official ``norm_fn``)."""
    return v.reshape(v.shape[0], -1).square().mean(dim=-1).sqrt()


def solve_adaptive(solver: Any, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Integrate from ``plan.points[0]`` to ``plan.points[-1]`` with step-size control (Alg. 4), within the cap
    ``plan.extra['cap']`` NFE; fills ``plan.extra['report']``."""
    sch = model.schedule
    order, cap = solver.order, plan.extra["cap"]
    s, end = plan.points[0], plan.points[-1]
    h = solver.h_init
    x_prev = x
    used = accepted = rejected = 0
    exhausted = False
    r_lower = 0.5 if order == 2 else 1.0 / 3.0
    while abs(s.t - end.t) > solver.t_err:
        last = cap - used < 2 * order  # only one more attempt fits in the budget: go to the end, no control
        if last or s.lam + h >= end.lam:
            h, t = end.lam - s.lam, end
        else:
            t = Point.at_lambda(sch, s.lam + h)
        proxy = _Replay(model)
        m_s = solver.predict(proxy, x, s, solver.prediction)
        if order == 2:  # DPM-Solver-1 vs DPM-Solver-2
            x_lower = solver.first_order(x, m_s, s, t)
            s1 = Point.at_lambda(sch, s.lam + 0.5 * h)
            x_higher = solver.singlestep_second(proxy, x, m_s, s, s1, t, 0.5)
        else:  # DPM-Solver-2 (r1 = 1/3) vs DPM-Solver-3 (r1 = 1/3, r2 = 2/3), sharing the point s1
            s1 = Point.at_lambda(sch, s.lam + r_lower * h)
            s2 = Point.at_lambda(sch, s.lam + 2.0 * h / 3.0)
            x_lower = solver.singlestep_second(proxy, x, m_s, s, s1, t, r_lower)
            proxy.replay = True
            x_higher = solver.singlestep_third(proxy, x, m_s, s, s1, s2, t, r_lower, 2.0 / 3.0)
        used += order
        delta = torch.clamp(solver.rtol * torch.maximum(x_lower.abs(), x_prev.abs()), min=solver.atol)
        err = float(_error_norm((x_higher - x_lower) / delta).max())
        if err <= 1.0 or last:
            x, x_prev, s = x_higher, x_lower, t
            accepted += 1
            exhausted = exhausted or (last and not err <= 1.0)
        else:
            rejected += 1
        if abs(s.t - end.t) <= solver.t_err:
            break
        # a diverged or overflowing attempt (err NaN/inf) halves the step; the budget bounds the attempts
        grow = (0.5 / solver.theta) if not math.isfinite(err) else math.inf if err == 0.0 else err ** (-1.0 / order)
        h = min(solver.theta * h * grow, end.lam - s.lam)
    plan.extra["report"] = {"steps_accepted": accepted, "steps_rejected": rejected, "budget_exhausted": exhausted}
    return x
