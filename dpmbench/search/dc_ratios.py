"""The ``dc-ratios`` search: DC-Solver's compensation ratios for one (model, NFE, guidance) cell.

The search data are ``size`` prior samples of the search seed's stream from index ``FIT_START`` on
(``dpmbench.models.base.fit_prior``; balanced class labels when guided), never an x_T any evaluation run draws.
Their ground-truth trajectory at the solver's grid times is the exact ODE solution for oracle models (chained from
grid point to grid point), else a DPM-Solver++(3M) trajectory of about ``reference_nfe`` NFE chained the same way
(the official code uses a 200-step DDIM trajectory). The ratios are then searched greedily by
``DCSolver.search_ratios`` (see dpmbench/solvers/dc_solver.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter, fit_prior
from dpmbench.search import register_search
from dpmbench.solvers.base import Context, Option, Point, Solver


def reference_trajectory(model: Any, x_T: torch.Tensor, cond: Any, points: list[Point],
                         reference_nfe: int) -> tuple[list[torch.Tensor], str]:
    """The ground-truth states at every grid point (float64) and how they were computed."""
    from dpmbench.sampling import sample
    from dpmbench.solvers.dc_solver import has_exact_solution

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
    from dpmbench.solvers.dc_solver import DCSolver

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
                ratios, losses = solver.search_ratios(NFECounter(model, cond), x_T, plan, truth, opts["iters"],
                                                      opts["lr"])
    finally:
        torch.set_num_threads(threads)
    return {"ratios": ratios, "losses": losses, "reference": how, "steps": len(plan.orders)}
