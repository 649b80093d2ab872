"""Which solver is best in a column, and by how much: paired bootstrap CIs of differences, and mean ranks.

Every solver of a table starts from the same x_T and its metric's bootstrap replicates use the same resampling
indices (they depend on n, reps and seed only: ``evaluators.bootstrap``), so the replicate-wise difference of two
solvers is a paired bootstrap of the difference of their statistics. A column's best solver is marked *best* only
when the 95% CI of its difference to every other solver excludes zero; otherwise it and every solver it cannot be
told apart from are marked *tied*. Metric files without replicates (written before they were stored) fall back
to the conservative rule: tied when the two marginal CIs overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluators.bootstrap import percentile_ci


@dataclass(frozen=True)
class Mark:
    """The verdict of one cell: ``best``, ``tied`` or empty; ``diff`` the paired CI of (best - runner-up)."""

    kind: str = ""
    diff: tuple[float, float, float] | None = None  # estimate, lo, hi (of best minus runner-up)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(float(v))


def paired_replicates(a: Any, b: Any) -> tuple[float, np.ndarray] | None:
    """(a.value - b.value, the replicate-wise differences) when a and b carry pairable bootstrap replicates (same
    count, bootstrap seed and sample count), else None."""
    ra, rb = getattr(a, "boot", None), getattr(b, "boot", None)
    if not isinstance(ra, list) or not isinstance(rb, list) or len(ra) != len(rb) or len(ra) < 2:
        return None
    if a.boot_seed != b.boot_seed or a.n_samples != b.n_samples:
        return None
    x = np.array([np.nan if v is None else v for v in ra], np.float64)
    y = np.array([np.nan if v is None else v for v in rb], np.float64)
    return float(a.value) - float(b.value), x - y


def _paired(a: Any, b: Any) -> tuple[float, float, float] | None:
    """(estimate, lo, hi) of a.value - b.value from paired replicates, or None when they are not pairable."""
    pr = paired_replicates(a, b)
    if pr is None:
        return None
    est, d = pr
    lo, hi = percentile_ci(est, d)
    return None if math.isnan(lo) else (est, lo, hi)


def separated(a: Any, b: Any) -> tuple[bool, tuple[float, float, float] | None]:
    """Whether a and b differ significantly, and the paired CI (estimate, lo, hi) of a.value - b.value when there is
    one (records with fields value, ci_low, ci_high, boot, boot_seed, n_samples). Paired rule: the
    95% CI of the replicate-wise difference excludes 0; fallback (no pairable replicates): disjoint marginal CIs."""
    d = _paired(a, b)
    if d is not None:
        return d[1] > 0 or d[2] < 0, d
    if all(_finite(v) for v in (a.ci_low, a.ci_high, b.ci_low, b.ci_high)):
        return a.ci_high < b.ci_low or b.ci_high < a.ci_low, None
    return False, None


def column_marks(rows: list[Any], higher_is_better: bool = False) -> dict[str, Mark]:
    """Marks of one column (one NFE): ``rows`` are records with solver, value, ci_low, ci_high, boot, boot_seed,
    n_samples. Diverged (non-finite) values are never marked."""
    ok = [r for r in rows if _finite(r.value)]
    if len(ok) < 2:
        return {r.solver: Mark("best") for r in ok}  # alone in its column: nothing to be tied with
    ok.sort(key=lambda r: float(r.value), reverse=higher_is_better)
    best, marks = ok[0], {}
    tied = []
    for r in ok[1:]:
        sep, _ = separated(best, r)
        if not sep:
            tied.append(r)
    _, diff = separated(best, ok[1])
    if not tied:
        marks[best.solver] = Mark("best", diff)
    else:
        marks[best.solver] = Mark("tied", diff)
        for r in tied:
            marks[r.solver] = Mark("tied")
    return marks


def table_marks(g: pd.DataFrame, higher_is_better: bool = False) -> dict[tuple[str, int], Mark]:
    """:func:`column_marks` of every NFE of a table (solver x NFE), keyed by (solver, nfe)."""
    out = {}
    for nfe, col in g.groupby("nfe", sort=True):
        for solver, m in column_marks(list(col.itertuples()), higher_is_better).items():
            out[(solver, int(nfe))] = m
    return out


def mean_ranks(g: pd.DataFrame, higher_is_better: bool = False) -> pd.DataFrame:
    """Per solver: mean rank over the NFEs of the table (1 = best; ties share the average rank; a diverged value
    ranks after every finite one), the NFEs it was ranked at, and how often it was best / tied."""
    ranks: dict[str, list[float]] = {}
    marks = table_marks(g, higher_is_better)
    for _, col in g.groupby("nfe", sort=True):
        v = pd.to_numeric(col["value"], errors="coerce")
        key = -v if higher_is_better else v
        r = key.rank(method="average", na_option="bottom")
        for solver, rank in zip(col["solver"], r, strict=True):
            ranks.setdefault(solver, []).append(float(rank))
    rows = []
    for solver, rs in ranks.items():
        kinds = [m.kind for (s, _), m in marks.items() if s == solver]
        rows.append({"solver": solver, "mean_rank": float(np.mean(rs)), "nfes": len(rs),
                     "best": kinds.count("best"), "tied": kinds.count("tied")})
    return pd.DataFrame(rows, columns=["solver", "mean_rank", "nfes", "best", "tied"]).sort_values(
        ["mean_rank", "solver"], kind="stable").reset_index(drop=True)


__all__ = ["Mark", "column_marks", "mean_ranks", "paired_replicates", "separated", "table_marks"]
