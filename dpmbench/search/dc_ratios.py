"""The ``dc-ratios`` search: DC-Solver's compensation ratios for one (model, NFE, guidance) cell.

The search data are ``size`` prior samples of the search seed's stream from index ``FIT_START`` on
(``dpmbench.models.base.fit_prior``; balanced class labels when guided), never an x_T any evaluation run draws.
Their ground-truth trajectory at the solver's grid times is the exact ODE solution for oracle models (chained from
grid point to grid point), else a DPM-Solver++(3M) trajectory of about ``reference_nfe`` NFE chained the same way
(the official code uses a 200-step DDIM trajectory). The ratios are then searched greedily along the solver's own
trajectory (``search_ratios``: official ``search_dc`` / ``find_optim_ratio``, AdamW on each ratio; the
compensation itself is in dpmbench/solvers/dc_solver.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter, fit_prior, has_exact_solution
from dpmbench.search.base import register_search
from dpmbench.solvers.base import Context, History, Option, Plan, Point, Solver
from dpmbench.solvers.dc_solver import DCSolver, compensated_output


def reference_trajectory(model: Any, x_T: torch.Tensor, cond: Any, points: list[Point],
                         reference_nfe: int) -> tuple[list[torch.Tensor], str]:
    """The ground-truth states at every grid point (float64) and how they were computed."""
    from dpmbench.sampling import sample

    states = [x_T.to(torch.float64)]
    exact = has_exact_solution(model)
    per_step = max(3, math.ceil(reference_nfe / max(len(points) - 1, 1)))
    for s, t in zip(points[:-1], points[1:], strict=True):
        if exact:
            nxt = model.exact_solution(states[-1], t_end=t.t, t_start=s.t, cond=cond)
        else:
            nxt = sample(model, "dpm-solver++:order=3,method=multistep", per_step, states[-1], schedule="logsnr",
                         t_start=s.t, t_end=t.t, cond=cond)
        states.append(nxt.to(torch.float64))
    how = "exact ODE solution" if exact else f"DPM-Solver++(3M), {per_step} NFE per grid interval"
    return states, how


@register_search(
    "dc-ratios",
    "DC-Solver compensation ratios: greedy per-step AdamW search against the ground-truth trajectory",
    "Zhao et al. 2024, 'DC-Solver' (ECCV), ratio search; official code search_dc / find_optim_ratio",
    produces="dc-ratios",
    options={
        "size": Option(int, 10, "number of search samples (official: 10)", minimum=1),
        "iters": Option(int, 40, "AdamW iterations per step (official LDM code: 40)", minimum=1),
        "lr": Option(float, 0.1, "AdamW learning rate (official: 0.1)", minimum=0.0),
        "reference_nfe": Option(int, 200, "NFE of the reference trajectory for non-oracle models", minimum=10),
    },
    needs_solver=True,
)
def dc_ratio_search(ctx: Context, solver: Solver | None, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Search the ratios of ``solver`` (a ``dc-solver``) for the context's cell."""
    if not isinstance(solver, DCSolver):
        raise DpmbenchError(f"invalid --solver {getattr(solver, 'spec', solver)!r} for search 'dc-ratios': "
                            "allowed: dc-solver[:options]")
    model = ctx.model
    x_T = fit_prior(model, opts["size"], seed, device=ctx.device)
    cond = model.labels(opts["size"]) if ctx.guidance is not None else None
    solver = DCSolver(**{**solver.opts, "ratios": "fixed", "ratio": 1.0})
    plan = solver.make_plan(ctx.nfe, model.schedule, ctx.kind, ctx.t_start, ctx.t_end)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 10 samples: thread start-up costs more than it saves (12x slower on 2 busy cores)
    try:
        with model.fixed_batch():  # every evaluation is on the `size` search samples: no padded chunks needed
            truth, how = reference_trajectory(model, x_T, cond, plan.points, opts["reference_nfe"])
            with torch.no_grad():
                ratios, losses = search_ratios(solver, NFECounter(model, cond), x_T, plan, truth, opts["iters"],
                                               opts["lr"])
    finally:
        torch.set_num_threads(threads)
    return {"ratios": ratios, "losses": losses, "reference": how, "steps": len(plan.orders)}


def search_ratios(solver: DCSolver, model: NFECounter, x: torch.Tensor, plan: Plan, truth: list[torch.Tensor],
                  iters: int, lr: float) -> tuple[list[float], list[float]]:
    """Greedy ratio search along ``solver``'s own trajectory from ``x`` (official ``search_dc``): at step i,
    rho_i minimizes the MSE between the state at t_{i+1} (UniP step from the compensated history, then UniC
    with the model output at the predicted state, unless it is the last step) and ``truth[i + 1]``, by AdamW
    from rho = 1; the trajectory then continues with rho_i. Returns the ratios and the final losses."""
    hist = solver.new_history(model, plan)
    x_prev: torch.Tensor | None = None
    steps = len(plan.orders)
    ratios: list[float] = []
    losses: list[float] = []
    for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
        hist.step = i
        out = solver.predict(model, x, s, solver.prediction)
        if x_prev is not None:
            x = solver.correct(x_prev, x, hist, s, out, plan.orders[i - 1])
        hist.push(s, out)
        rho, loss = 1.0, float("nan")
        if len(hist) > solver.dc_order:
            corrected = i + 1 < steps and solver.corrector == "unic"
            rho, loss = _optimize_ratio(solver, model, x, hist, t, order, truth[i + 1], corrected, iters, lr)
        ratios.append(rho)
        losses.append(loss)
        if rho != 1.0:
            hist[-1].out = compensated_output(hist, rho, solver.dc_order)
        x_prev = x
        x = solver.update(x, hist, t, order)
    return ratios, losses


def _optimize_ratio(solver: DCSolver, model: NFECounter, x: torch.Tensor, hist: History, t: Point, order: int,
                    target: torch.Tensor, corrected: bool, iters: int, lr: float) -> tuple[float, float]:
    """AdamW on rho from 1, ``iters`` iterations (official ``find_optim_ratio``: torch.optim.AdamW(lr=0.1), its
    other settings torch's defaults; ``adamw_step`` is that update, checked against torch in the tests)."""
    original = hist[-1].out
    rho, state = 1.0, AdamWState()
    loss_value = float("nan")
    with torch.enable_grad():
        for _ in range(iters):
            param = torch.tensor(rho, dtype=torch.float64, device=x.device, requires_grad=True)
            hist[-1].out = compensated_output(hist, param, solver.dc_order)
            x_t = solver.update(x, hist, t, order)  # UniP with the compensated output
            if corrected:  # UniC at t with the output at the predicted state (the next step's evaluation)
                x_t = solver.correct(x, x_t, hist, t, solver.predict(model, x_t, t, solver.prediction), order)
            loss = torch.mean((x_t - target) ** 2)
            (grad,) = torch.autograd.grad(loss, param)
            hist[-1].out = original
            rho = adamw_step(rho, float(grad), state, lr)
            loss_value = float(loss.detach())
    return rho, loss_value


@dataclasses.dataclass
class AdamWState:
    """Moments and step count of a scalar AdamW."""

    m: float = 0.0
    v: float = 0.0
    step: int = 0


def adamw_step(p: float, grad: float, state: AdamWState, lr: float, betas: tuple[float, float] = (0.9, 0.999),
               eps: float = 1e-8, weight_decay: float = 1e-2) -> float:
    """One step of AdamW (Loshchilov & Hutter 2019, Algorithm 2) for a scalar, with torch.optim.AdamW's defaults and
    its update order: decoupled decay p <- p (1 - lr wd), then p <- p - lr m_hat / (sqrt(v_hat) + eps) with the bias
    corrections folded as torch does. Written out so that the search does not import torch.optim (6 s: dynamo)."""
    state.step += 1
    p = p * (1.0 - lr * weight_decay)
    state.m = betas[0] * state.m + (1.0 - betas[0]) * grad
    state.v = betas[1] * state.v + (1.0 - betas[1]) * grad * grad
    bias1, bias2 = 1.0 - betas[0] ** state.step, 1.0 - betas[1] ** state.step
    denom = math.sqrt(state.v) / math.sqrt(bias2) + eps
    return p - (lr / bias1) * state.m / denom
