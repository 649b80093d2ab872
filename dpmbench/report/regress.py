"""The regression gate: compare a results.csv against a baseline.csv, cell by cell.

A cell is (model, solver, nfe, schedule, guidance, metric). For a lower-is-better metric a cell is worse when
its value exceeds ``baseline + |baseline| rtol + atol`` (mirrored for higher-is-better metrics) and, for a
metric marked stochastic, also lies above the
baseline's confidence interval (``ci_high``) — so sampling noise alone never fails the gate. A cell that
diverged (NaN) where the baseline was finite, or that is missing from the results, is worse too.

The gate is two-sided: a cell that moved beyond the same tolerance the other way (and, stochastic, below the
baseline's ``ci_low``), or that is finite where the baseline diverged, is *better*. Improvements are always
reported; with ``fail_on_improvement`` (``dpmbench regress --fail-on-improvement``, exit code 3, as ``make regress``
runs it) they fail the gate too, until the baseline is refreshed on purpose (``make baseline``): a bug in a reference
or a metric that lowers errors is seen as surely as one that raises them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.errors import DpmbenchError
from dpmbench.report.tables import higher_is_better

KEY = ["model", "solver", "nfe", "schedule", "guidance", "metric"]
REQUIRED = [*KEY, "value"]


@dataclass(frozen=True)
class Tolerance:
    """Allowed degradation of one metric."""

    rtol: float = 0.0
    atol: float = 0.0
    stochastic: bool = False


DEFAULT_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-9)


def _read(path: str | Path, what: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DpmbenchError(f"invalid {what} {str(p)!r}: no such file")
    try:
        df = pd.read_csv(p, dtype={"guidance": str, "solver": str, "schedule": str, "model": str, "metric": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise DpmbenchError(f"invalid {what} {str(p)!r}: not a results CSV") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DpmbenchError(f"invalid {what} {str(p)!r}: missing columns {', '.join(missing)}")
    if df.duplicated(KEY).any():
        raise DpmbenchError(f"invalid {what} {str(p)!r}: duplicated cells")
    for col in ("value", "ci_low", "ci_high"):  # numbers, or empty / nan (a diverged run)
        if col in df.columns:
            num = pd.to_numeric(df[col], errors="coerce")
            bad = df[col][num.isna() & df[col].notna()]
            if len(bad):
                raise DpmbenchError(f"invalid {what} {str(p)!r}: column {col} holds {bad.iloc[0]!r}, not a number")
            df[col] = num
    return df


def compare(baseline: pd.DataFrame, results: pd.DataFrame,
            tolerances: dict[str, Tolerance] | None = None) -> pd.DataFrame:
    """Every baseline cell with its new value and a verdict (``ok``, ``worse``, ``diverged``, ``missing``,
    ``better``)."""
    tolerances = tolerances or {}
    merged = baseline.merge(results, on=KEY, how="left", suffixes=("_base", "_new"), indicator="found")
    verdicts = []
    for row in merged.itertuples(index=False):
        r: dict[str, Any] = row._asdict()
        tol = tolerances.get(r["metric"], DEFAULT_TOLERANCE)
        base, new = float(r["value_base"]), float(r["value_new"]) if r["found"] == "both" else math.nan
        if r["found"] != "both":
            verdicts.append("missing")
        elif math.isnan(new):
            verdicts.append("ok" if math.isnan(base) else "diverged")
        elif math.isnan(base):
            verdicts.append("better")  # the baseline diverged, the new run does not
        else:
            # in "lower is better" units: a drop of a higher-is-better metric (log-likelihood, IS, CLIP) is worse
            sign = -1.0 if higher_is_better(str(r["metric"])) else 1.0
            band = abs(base) * tol.rtol + tol.atol
            up, down = base + band, base - band  # the tolerance band around the baseline
            ci = [r.get("ci_low_base"), r.get("ci_high_base")]
            if tol.stochastic and all(c is not None and not math.isnan(float(c)) for c in ci):
                up, down = max(up, float(ci[1])), min(down, float(ci[0]))
            worse_limit, better_limit = (up, down) if sign > 0 else (down, up)
            if sign * (new - worse_limit) > 0:
                verdicts.append("worse")
            elif sign * (new - better_limit) < 0:
                verdicts.append("better")
            else:
                verdicts.append("ok")
    out = merged[KEY].copy()
    out["baseline"] = merged["value_base"]
    out["value"] = merged["value_new"]
    out["verdict"] = verdicts
    return out


def _table(rows: pd.DataFrame) -> str:
    lines = ["| " + " | ".join([*KEY, "baseline", "value", "verdict"]) + " |", "|" + "---|" * (len(KEY) + 3)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows.itertuples(index=False)]
    return "\n".join(lines)


def regress(baseline_path: str | Path, results_path: str | Path, tolerances: dict[str, Tolerance] | None = None,
            fail_on_improvement: bool = False) -> tuple[bool, pd.DataFrame, str]:
    """Compare the files; return (passed, the table of failing cells, a printable summary). Cells better than the
    baseline beyond tolerance are listed in the summary either way, and fail the gate with
    ``fail_on_improvement``."""
    table = compare(_read(baseline_path, "--baseline"), _read(results_path, "--results"), tolerances)
    worse = table[~table["verdict"].isin(["ok", "better"])]
    better = table[table["verdict"] == "better"]
    bad = pd.concat([worse, better]) if fail_on_improvement and len(better) else worse
    summary = f"{len(table)} cells compared, {len(worse)} worse than the baseline"
    if len(worse):
        summary += "\n" + _table(worse)
    summary += f"\n{len(better)} better than the baseline beyond tolerance"
    if len(better):
        summary += (" (" + ("failing: --fail-on-improvement" if fail_on_improvement else "not failing") + "; refresh "
                    "the baseline on purpose if the change is meant: make baseline)\n" + _table(better))
    return bad.empty, bad, summary


def load_tolerances(config: dict[str, Any]) -> dict[str, Tolerance]:
    """Tolerances from a config's ``regression.tolerances`` mapping: metric -> {rtol, atol, stochastic}."""
    out: dict[str, Tolerance] = {}
    section = config.get("regression") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(section or {}, dict):
        raise DpmbenchError("invalid config key 'regression': must be a mapping with 'tolerances'")
    tolerances = (section or {}).get("tolerances") or {}
    if not isinstance(tolerances, dict):
        raise DpmbenchError("invalid config key 'regression.tolerances': must be a mapping metric -> "
                            "{rtol, atol, stochastic}")
    for metric, spec in tolerances.items():
        key = f"regression.tolerances.{metric}"
        if not isinstance(spec, dict):
            raise DpmbenchError(f"invalid config key {key!r}: {spec!r}; allowed: a mapping of rtol, atol, stochastic")
        unknown = set(spec) - {"rtol", "atol", "stochastic"}
        if unknown:
            raise DpmbenchError(f"invalid {key} key {sorted(unknown)[0]!r}; allowed: rtol, atol, stochastic")
        vals = {}
        for name in ("rtol", "atol"):
            v = spec.get(name, 0.0)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise DpmbenchError(f"invalid config key '{key}.{name}': {v!r}; allowed: a number >= 0")
            vals[name] = float(v)
        if not isinstance(spec.get("stochastic", False), bool):
            raise DpmbenchError(f"invalid config key '{key}.stochastic': {spec['stochastic']!r}; allowed: true, false")
        out[metric] = Tolerance(vals["rtol"], vals["atol"], bool(spec.get("stochastic", False)))
    return out
