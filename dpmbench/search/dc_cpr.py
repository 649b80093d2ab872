"""The ``dc-cpr`` fit: DC-Solver's ratios of one cell predicted by cascade polynomial regression (CPR; official
``cascade_polynomial_regression``), fitted to the ``dc-ratios`` searches of a grid of (NFE, guidance) cells.

The ratio of step i (1-based index j = i + 1 of ``steps`` N, guidance G) is a polynomial in x = j / N whose
coefficients are quadratics in G / 12 whose coefficients are quadratics in N / 50::

    rho(G, N, x) = sum_k c_k(G, N) x^k,  c_k(G, N) = sum_a (sum_b C[k, a, b] (N/50)^(2-b)) (G/12)^(2-a)

which is linear in the coefficients C: they are fitted by least squares (numpy ``lstsq``, minimum norm) to the
ratios searched on the grid (``cpr_nfes`` x ``cpr_guidances`` of the solver; unguided runs fit on the NFE grid alone,
G = 0), then predict the ratios of unseen cells (the official code ships coefficients fitted offline; its fitting
code is not published). Steps without compensation (the first ``dc_order``) get 1. The fit is cached once per grid
and shared by every cell it predicts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from dpmbench.artifacts import cached
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Guided, guided
from dpmbench.search.base import register_search, run_search
from dpmbench.solvers.base import Context, Solver
from dpmbench.solvers.dc_solver import DCSolver, grid_values


def cpr_features(guidance: float | None, steps: int, index: int, degree: int) -> np.ndarray:
    """CPR design row of step ``index`` (0-based) of ``steps``: G^(2-a) N^(2-b) x^k for k = 0..degree, a, b = 0..2,
    with the official normalizations G = guidance / 12 (0 when unguided), N = steps / 50, x = (index + 1) / steps."""
    g = 0.0 if guidance is None else float(guidance) / 12.0
    n, x = steps / 50.0, (index + 1) / steps
    return np.array([g ** (2 - a) * n ** (2 - b) * x**k for k in range(degree + 1) for a in range(3)
                     for b in range(3)], dtype=np.float64)


def cpr_grid(solver: DCSolver, guidance: float | None) -> list[tuple[int, float | None]]:
    """The (NFE, guidance) cells the CPR is fitted on."""
    nfes = [int(v) for v in grid_values(solver.cpr_nfes)]
    if guidance is None:
        return [(n, None) for n in nfes]
    return [(n, g) for g in grid_values(solver.cpr_guidances) for n in nfes]


@register_search(
    "dc-cpr",
    "DC-Solver compensation ratios predicted by cascade polynomial regression fitted to dc-ratios searches on the "
    "solver's cpr_nfes x cpr_guidances grid",
    "Zhao et al. 2024, 'DC-Solver' (ECCV), cascade polynomial regression; official code "
    "cascade_polynomial_regression (fitting code not published: least squares here)",
    produces="dc-ratios",
    needs_solver=True,
)
def dc_cpr(ctx: Context, solver: Solver | None, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """The CPR prediction of the ratios of ``solver`` (a ``dc-solver``, whose options give the grid, the degree and
    the searches' settings) for the context's cell, from the (cached) fit on the grid."""
    if not isinstance(solver, DCSolver):
        raise DpmbenchError(f"invalid --solver {getattr(solver, 'spec', solver)!r} for search 'dc-cpr': "
                            "allowed: dc-solver[:options]")
    base = ctx.model.base if isinstance(ctx.model, Guided) else ctx.model
    grid = cpr_grid(solver, ctx.guidance)
    searched, options = solver.search_solver(), solver.search_options()

    def fit() -> dict[str, Any]:
        rows, targets, cells = [], [], []
        for nfe, g in grid:
            cell = dataclasses.replace(ctx, model=guided(base, g), nfe=nfe, guidance=g)
            ratios = run_search("dc-ratios", cell, searched, seed, options)["ratios"]
            cells.append({"nfe": nfe, "guidance": g, "ratios": ratios})
            for i in range(solver.dc_order, len(ratios)):  # the compensated steps only
                rows.append(cpr_features(g, len(ratios), i, solver.cpr_degree))
                targets.append(ratios[i])
        a, y = np.stack(rows), np.array(targets)
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        resid = float(np.sqrt(np.mean((a @ coef - y) ** 2)))
        return {"coef": coef.tolist(), "fit_rmse": resid, "cells": cells}

    items = (base.cache_key(), ctx.kind if isinstance(ctx.kind, str) else torch.as_tensor(ctx.kind),
             ctx.start, ctx.end, ctx.guidance is None, searched.spec, seed, sorted(options.items()), grid,
             solver.cpr_degree)
    data = cached("dc-cpr", items, fit, {"grid": grid, "degree": solver.cpr_degree})
    steps = ctx.nfe - int(solver.denoise_to_zero)
    coef = np.array(data["coef"])
    ratios = [1.0 if i < solver.dc_order else float(cpr_features(ctx.guidance, steps, i, solver.cpr_degree) @ coef)
              for i in range(steps)]
    return {"ratios": ratios, "fit_rmse": data["fit_rmse"]}
