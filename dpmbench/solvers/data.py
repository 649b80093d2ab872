"""x_0 samples of a model's data distribution, for fits that need data (searches, solvers' ``prepare``)."""

from __future__ import annotations

from typing import Any

import torch

from dpmbench.models.base import NFECounter, fit_prior, has_exact_solution
from dpmbench.solvers.base import Context, make_solver


def data_samples(ctx: Context, n: int, seed: int, cond: Any) -> torch.Tensor:
    """``n`` float64 x_0 samples of stream ``seed``: draws of the mixture for an unguided mixture oracle (a torch
    generator of their own, seeded ``seed * 7919 + 17``: no evaluation draws x_0 that way), else the exact ODE
    solutions of ``n`` prior samples (samples of the guided model's output distribution), else a 100-NFE
    DPM-Solver++ run of the model (a trained network's own samples). The prior samples are the fit's own,
    ``FIT_START ..`` of the stream (``fit_prior``), never an evaluated x_T."""
    model = ctx.model
    if hasattr(model, "log_w") and cond is None:
        gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
        k = torch.multinomial(torch.exp(model.log_w), n, replacement=True, generator=gen)
        x = model.means[k].clone()
        if model.covs is not None:
            z = torch.randn(n, model.dim, generator=gen, dtype=torch.float64)
            x = x + torch.einsum("nde,ne->nd", model.evecs[k], z * model.evals[k].sqrt())
        return x
    x_T = fit_prior(model, n, seed)
    if has_exact_solution(model):  # an oracle, guided or not (a guided network has none)
        return model.exact_solution(x_T, t_end=ctx.end, t_start=ctx.start, cond=cond).to(torch.float64)
    sol = make_solver("dpm-solver++")
    plan = sol.make_plan(100, model.schedule, "logsnr", ctx.start, ctx.end)
    with torch.no_grad():
        return sol.run(NFECounter(model, cond), x_T, plan)
