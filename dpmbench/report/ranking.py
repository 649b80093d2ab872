"""Rankings of the solvers of one section (model, guidance, schedule, seed, protocol): one rank per metric, never
an average across metrics.

Per metric, a solver's rank at each NFE (1 = best; ties share the average rank; a diverged value ranks last) is
averaged over the NFEs of the table (:func:`dpmbench.report.stats.mean_ranks`). Different metrics measure different
things (a solver's pathwise error to the exact solution, a distance between distributions, a classifier's score),
so their ranks are shown side by side and a section is *sorted* by one of them, its primary metric, named
wherever the order is used. A metric equal for every solver (``model_error``: the network's own error, whatever
the solver) ranks nothing and is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dpmbench.report.stats import mean_ranks
from dpmbench.report.tables import higher_is_better

# The metric a section is sorted by: the first of these it has. A solver's own error comes first (pathwise, against
# the exact ODE solution or a converged reference run from the same x_T: what a solver controls, with the tightest
# paired CIs), then distances of the sample distribution to the data, then scores.
PRIMARY = ("rmse_exact", "mse_ref", "fid", "fdd", "fd_true", "kid", "kdd", "sw2_true", "clip_score", "cond_acc",
           "is", "is_digits", "loglik_true")


def solver_independent(g: pd.DataFrame) -> bool:
    """Whether a table's metric takes one value for every solver at every NFE (nothing to rank: ``model_error``)."""
    if g["solver"].nunique() < 2:
        return False
    for _, col in g.groupby("nfe"):
        v = pd.to_numeric(col["value"], errors="coerce").to_numpy(np.float64)
        if len(v) > 1 and not (np.isfinite(v).all() and np.allclose(v, v[0], rtol=1e-12, atol=0)):
            return False
    return True


def primary_metric(metrics: list[str]) -> str:
    """The metric a section's ranking is sorted by: the first of :data:`PRIMARY` among ``metrics``, else the first
    of ``metrics``."""
    return next((m for m in PRIMARY if m in metrics), metrics[0])


Ranked = tuple[pd.DataFrame, list[str], list[str]]  # the ranking, the ranked metrics, the metrics left out


def ranking(tables: list[tuple[tuple[Any, ...], pd.DataFrame]]) -> Ranked:
    """The ranking of one section (its tables: (key, frame) with the metric at ``key[4]``): per solver and ranked
    metric ``m``, columns ``m:mean_rank``, ``m:best``, ``m:tied``, ``m:nfes``, sorted by the primary metric's mean
    rank (solvers without it last), then by the other metrics' in order; the ranked metrics (primary first) and the
    metrics left out as solver-independent."""
    frames, ranked, constant = [], [], []
    for key, g in tables:
        metric = str(key[4])
        if solver_independent(g):
            constant.append(metric)
            continue
        ranked.append(metric)
        r = mean_ranks(g, higher_is_better(metric)).set_index("solver")
        frames.append(r.rename(columns=lambda c, m=metric: f"{m}:{c}"))
    if not frames:
        return pd.DataFrame(), [], constant
    first = primary_metric(ranked)
    ranked = [first, *[m for m in ranked if m != first]]
    table = pd.concat(frames, axis=1)
    order = [f"{m}:mean_rank" for m in ranked]
    table = table.sort_values(order, kind="stable", na_position="last")
    return table, ranked, constant


__all__ = ["PRIMARY", "Ranked", "primary_metric", "ranking", "solver_independent"]
