"""``sample``: run one solver with one NFE budget from given x_T; the NFE budget is enforced."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model, NFECounter, NoiseSource, guided
from dpmbench.models.registry import load_model
from dpmbench.solvers.base import Context, Plan, Solver
from dpmbench.solvers.registry import get_solver


def make_plan(
    model: Model, solver: str | Solver, nfe: int, schedule: str | Sequence[float] | torch.Tensor = "logsnr",
    t_start: float | None = None, t_end: float | None = None,
) -> tuple[Solver, Plan]:
    """Parse the solver, check the NFE budget and build its plan (time grid and step orders)."""
    sol = get_solver(solver)
    return sol, sol.make_plan(nfe, model.schedule, schedule, t_start, t_end)


def sample(
    model: Model | str,
    solver: str | Solver,
    nfe: int,
    x_T: torch.Tensor,
    schedule: str | Sequence[float] | torch.Tensor = "logsnr",
    t_end: float | None = None,
    guidance: float | None = None,
    cond: Any = None,
    t_start: float | None = None,
    seed: int = 0,
    start: int = 0,
    stats: dict[str, Any] | None = None,
    searcher: Callable[..., Any] | None = None,
    prompts: Callable[[int], list[str]] | None = None,
    prompts_id: str = "",
) -> torch.Tensor:
    """Sample from ``model`` with ``solver`` using exactly ``nfe`` model evaluations, starting at ``x_T``.

    ``schedule`` is a timestep-schedule kind (``logsnr``, ``time-uniform``, ``time-quadratic``, ``karras``) or
    an explicit decreasing sequence of times. ``guidance`` applies classifier-free guidance (needs ``cond``);
    with ``cond`` and no guidance the model is sampled conditionally. The solver runs in ``x_T``'s dtype
    and device. Stochastic solvers draw the noise of step k for sample ``start + i`` from (``seed``, k), so
    results do not depend on batching.

    Solvers with ``needs_prepare`` first run ``solver.prepare`` (searches, model statistics; cached artifacts)
    with the uncounted model: that work is outside the sampling budget, as in the papers. Solvers whose
    preparation runs searches (``dc-solver``, ``usf:search=true``) need ``searcher`` (``dpmbench.search.run_search``;
    the sampling layer does not import the searches, which sit above it): ``dpmbench.sample`` passes it. A guided
    text-conditional model's fits need ``prompts`` and ``prompts_id`` (``Context``; ``shards.fit_prompts``), the
    same as its prepare step's, so that the sample job reads the artifact the prepare step wrote.

    NFE contract: a fixed-step solver spends exactly ``nfe`` evaluations (asserted). An adaptive solver
    (``solver.adaptive``, e.g. ``dpm-solver:method=adaptive``) takes a data-dependent number of steps: for it
    ``nfe`` is a cap that it never exceeds (asserted), and the evaluations actually spent are reported in
    ``stats["nfe_used"]`` when a ``stats`` dict is passed (it is filled for every solver, with ``nfe_budget``
    and, for adaptive solvers, whatever the solver reports, e.g. ``steps_accepted``/``budget_exhausted``).
    A parallel solver (``solver.parallel``, ``picard``) has two counters: its sequential rounds (batched model
    calls, the NFE counter; at most ``nfe``, the base solver's sequential NFE) in ``stats["parallel_rounds"]`` and
    its evaluations per sample summed over rounds in ``stats["nfe_total"]`` (both asserted consistent here).
    """
    if isinstance(model, str):
        model = load_model(model)
    if guidance is not None and cond is None:
        raise DpmbenchError("invalid cond None: guidance needs class labels (cond)")
    net = guided(model, guidance)
    sol = get_solver(solver)
    sol.check_nfe(nfe)
    if sol.needs_prepare:
        with torch.no_grad():
            sol.prepare(Context(net, nfe, schedule, t_start, t_end, guidance, x_T.dtype, x_T.device, searcher,
                                prompts, prompts_id))
    plan = sol.make_plan(nfe, net.schedule, schedule, t_start, t_end)
    counter = NFECounter(net, cond, NoiseSource(seed, start, x_T) if sol.stochastic else None)
    with torch.no_grad():
        x = sol.run(counter, x_T, plan)
    if counter.count > nfe or (counter.count != nfe and not (sol.adaptive or sol.parallel)):  # invariant (above)
        raise RuntimeError(f"solver {sol.spec} used {counter.count} NFE for a budget of {nfe}")
    if sol.parallel:
        rep = plan.extra.get("report", {})
        if rep.get("parallel_rounds") != counter.count or not counter.count <= rep.get("nfe_total", -1) <= \
                counter.count * nfe:
            raise RuntimeError(f"solver {sol.spec}: {counter.count} batched calls, counters {rep}")
    if stats is not None:
        stats.update(plan.extra.get("report", {}), nfe_used=counter.count, nfe_budget=nfe)
    return x
