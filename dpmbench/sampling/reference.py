"""What one reference job (``dpmbench reference``) computes: the exact ODE solutions of an oracle model from the
run's x_T (or a high-NFE float64 run of a solver from the same x_T), with the target's moments."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.io import save_npz
from dpmbench.models.base import Model, guided
from dpmbench.sampling.loop import make_plan, sample
from dpmbench.sampling.shards import Request, batches, conditioning, run_meta, t_end_of
from dpmbench.solvers.registry import get_solver


def write_reference(req: Request, model: Model, out: str, solver: str | None = None, nfe: int | None = None,
                    schedule: Any = "logsnr", t_end: float | None = None,
                    device: torch.device | str = "cpu", searcher: Callable[..., Any] | None = None,
                    t_start: float | None = None) -> None:
    """Write the reference of ``req`` to ``out``: exact solutions (oracle models; ``solver`` None) or a high-NFE
    run of ``solver`` with ``nfe`` in float64, both from x_T at ``t_start`` (default the schedule's T, as the
    samples it is compared with); oracle references carry the target distribution's moments."""
    oracle = hasattr(model, "exact_solution")
    if (solver is None) != (nfe is None):
        raise DpmbenchError("invalid reference: --solver and --nfe go together (a high-NFE reference run)")
    if solver is None and not oracle:
        raise DpmbenchError(f"invalid --model {req.model!r} for an exact reference: only oracle models have exact "
                            "solutions; give --solver SPEC --nfe N for a high-NFE reference run")
    t_end = t_end_of(model, t_end)
    meta = run_meta(req, model, t_end, t_start)
    start = time.perf_counter()
    cond = conditioning(req, model, 0, req.num_samples, "cpu")
    if solver is None:
        net = guided(model, req.guidance)
        x_T = model.prior(req.num_samples, seed=req.seed, dtype=torch.float64)
        x = net.exact_solution(x_T, t_end=t_end, t_start=t_start, cond=cond)
        run: dict[str, Any] = {"solver": "exact", "nfe": -1, "schedule": "adaptive"}
    else:  # a high-NFE run of a solver from the same x_T as `dpmbench sample` (float64)
        sol = get_solver(solver)
        make_plan(model, sol, nfe, schedule, t_start, t_end)
        chunks = []
        for lo, hi in batches(req.num_samples, req.batch_size):
            x_T = model.prior(hi - lo, seed=req.seed, dtype=torch.float64, device=device, start=lo)
            c = conditioning(req, model, lo, hi, device)
            chunks.append(sample(model, sol, nfe, x_T, schedule=schedule, t_start=t_start, t_end=t_end,
                                 guidance=req.guidance, cond=c, seed=req.seed, start=lo,
                                 searcher=searcher).cpu())
        x = torch.cat(chunks)
        run = {"solver": solver.replace(" ", ""), "solver_canonical": sol.spec, "nfe": nfe,
               "schedule": str(schedule)}
    extra = {}
    if oracle:  # the target distribution's moments travel with the reference, so metrics need no model
        if req.guidance is None or req.guidance == 1.0:
            mu, cov = model.data_moments(cond, t=t_end)
        else:
            mu, cov = x.reshape(len(x), -1).mean(0), torch.cov(x.reshape(len(x), -1).T)
        extra = {"target_mu": mu.numpy(), "target_cov": cov.numpy()}
    save_npz(out, x=x.numpy(), wall_s=time.perf_counter() - start, **run, **extra, **meta)
