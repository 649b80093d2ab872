"""The regression gate: compare a results.csv against a baseline.csv, cell by cell.

A cell is (model, solver, nfe, schedule, guidance, metric). For a lower-is-better metric a cell is worse when
its value exceeds ``baseline + |baseline| rtol + atol`` (mirrored for higher-is-better metrics) and, for a
metric marked stochastic, also lies above the
baseline's confidence interval (``ci_high``) — so sampling noise alone never fails the gate. A cell that
diverged (NaN) where the baseline was finite, or that is missing from the results, is worse too.
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
    """Every baseline cell with its new value and a verdict (``ok``, ``worse``, ``diverged``, ``missing``)."""
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
            verdicts.append("ok")  # the baseline diverged, the new run does not: an improvement
        elif higher_is_better(str(r["metric"])):  # log-likelihood, IS, CLIP score: a drop is worse
            limit = base - abs(base) * tol.rtol - tol.atol
            ci_low = r.get("ci_low_base")
            if tol.stochastic and ci_low is not None and not math.isnan(float(ci_low)):
                limit = min(limit, float(ci_low))
            verdicts.append("worse" if new < limit else "ok")
        else:
            limit = base + abs(base) * tol.rtol + tol.atol
            ci_high = r.get("ci_high_base")
            if tol.stochastic and ci_high is not None and not math.isnan(float(ci_high)):
                limit = max(limit, float(ci_high))
            verdicts.append("worse" if new > limit else "ok")
    out = merged[KEY].copy()
    out["baseline"] = merged["value_base"]
    out["value"] = merged["value_new"]
    out["verdict"] = verdicts
    return out


def regress(baseline_path: str | Path, results_path: str | Path,
            tolerances: dict[str, Tolerance] | None = None) -> tuple[bool, pd.DataFrame, str]:
    """Compare the files; return (passed, the table of failing cells, a printable summary)."""
    table = compare(_read(baseline_path, "--baseline"), _read(results_path, "--results"), tolerances)
    bad = table[table["verdict"] != "ok"]
    summary = f"{len(table)} cells compared, {len(bad)} worse than the baseline"
    if len(bad):
        lines = ["| " + " | ".join([*KEY, "baseline", "value", "verdict"]) + " |",
                 "|" + "---|" * (len(KEY) + 3)]
        for r in bad.itertuples(index=False):
            lines.append("| " + " | ".join(str(v) for v in r) + " |")
        summary = summary + "\n" + "\n".join(lines)
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
