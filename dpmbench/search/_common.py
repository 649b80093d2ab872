"""Helpers shared by the built-in searches: the search's own x_T and exact solutions, single-threaded runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import FIT_START, fit_prior
from dpmbench.solvers.base import Context


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: the searches make thousands of small evaluations, for which thread start-up and
    contention on a shared machine cost more than they save (measured 10x on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def search_cond(ctx: Context, n: int) -> Any:
    """Conditioning of the search set when the run is guided (``Context.cond``: class i mod num_classes, or the
    prompts of a text-conditional model)."""
    return ctx.cond(n)


def oracle_set(ctx: Context, n: int, seed: int, what: str) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The search's own x_T (``n`` float64 samples ``FIT_START ..`` of stream ``seed``: no evaluation run of any seed
    draws them), their labels when guided, and their exact probability-flow ODE solutions (oracle models; cached on
    disk)."""
    if not hasattr(ctx.model, "exact_solution"):
        raise DpmbenchError(f"invalid model {ctx.model.name!r} for {what}: it needs exact ODE solutions "
                            "(an oracle model: gmm-2d, gmm-digits, digits-empirical)")
    x_T = fit_prior(ctx.model, n, seed)
    cond = search_cond(ctx, n)
    ref = ctx.model.exact_solution(x_T, t_end=ctx.end, t_start=ctx.start, cond=cond)
    return x_T, cond, ref.to(torch.float64)


SEARCH_START = FIT_START  # first sample index of every search set (no evaluation set reaches it)


def search_prior(ctx: Context, n: int, seed: int) -> tuple[torch.Tensor, Any, int]:
    """A search set for objectives scored against the data, not against exact solutions: ``n`` float64 x_T that no
    evaluation run draws (samples ``SEARCH_START ..`` of stream ``seed``, so independent of the evaluation x_T of any
    seed), their labels when guided, and that start index (a stochastic solver's step noise of the same samples)."""
    x_T = ctx.model.prior(n, seed=seed, dtype=torch.float64, start=SEARCH_START)
    return x_T, search_cond(ctx, n), SEARCH_START


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """sqrt(mean (a - b)^2) over samples and dimensions (the ``rmse_exact`` metric); inf if not finite."""
    v = float(((a.to(torch.float64) - b) ** 2).mean().sqrt())
    return v if v == v and v != float("inf") else float("inf")
