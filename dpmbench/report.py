"""Aggregate metric files into ``results.csv`` (tidy) and ``leaderboard.md`` (+ figures)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.errors import DpmbenchError
from dpmbench.io import atomic_write

COLUMNS = ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low", "ci_high",
           "n_samples", "wall_s"]


def collect(results_dir: str | Path) -> pd.DataFrame:
    """Every metric file (``*.json`` with a ``metrics`` object) under ``results_dir`` as tidy rows."""
    root = Path(results_dir)
    if not root.is_dir():
        raise DpmbenchError(f"invalid RESULTS_DIR {str(root)!r}: not a directory")
    rows: list[dict[str, Any]] = []
    for path in sorted(root.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(rec, dict) or "metrics" not in rec:
            continue
        for metric, value in rec["metrics"].items():
            lo, hi = (rec.get("ci", {}).get(metric) or [None, None])[:2]
            rows.append({
                "model": rec["model"], "solver": rec["solver"], "nfe": int(rec["nfe"]),
                "schedule": rec["schedule"], "guidance": rec.get("guidance"), "metric": metric,
                "value": math.nan if value is None else value, "ci_low": lo, "ci_high": hi,
                "n_samples": rec.get("n_samples"), "wall_s": rec.get("wall_s"),
            })
    df = pd.DataFrame(rows, columns=COLUMNS)
    if not df.empty:
        df["guidance"] = df["guidance"].astype(object).where(df["guidance"].notna(), "none")
        df = df.sort_values(["model", "guidance", "schedule", "metric", "solver", "nfe"], key=_sort_key)
    return df.reset_index(drop=True)


def _sort_key(col: pd.Series) -> pd.Series:
    return col.astype(str) if col.name != "nfe" else col


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "diverged"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """Per model / guidance / schedule / metric: a solver x NFE table, the best value per NFE in bold."""
    lines = ["# dpmbench leaderboard", "",
             "Lower is better for every metric. Bold: best solver at that NFE. "
             "All solvers of a table start from the same x_T (paired). 95% bootstrap CIs are in results.csv.", ""]
    if df.empty:
        return "\n".join([*lines, "_No results._", ""])
    for (model, guidance, schedule, metric), g in df.groupby(["model", "guidance", "schedule", "metric"], sort=False):
        n = int(g["n_samples"].iloc[0]) if g["n_samples"].notna().any() else 0
        lines += [f"## {model} · guidance {guidance} · schedule {schedule} · {metric} (n={n})", ""]
        table = g.pivot_table(index="solver", columns="nfe", values="value", aggfunc="first", dropna=False)
        nfes = list(table.columns)
        lines.append("| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        best = {n: table[n].min(skipna=True) for n in nfes}
        for solver, row in table.iterrows():
            cells = []
            for n in nfes:
                v = row[n]
                s = _fmt(v)
                cells.append(f"**{s}**" if not math.isnan(v) and v == best[n] else s)
            lines.append(f"| {solver} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_figures(df: pd.DataFrame, out: Path) -> list[Path]:
    """One log-log metric-vs-NFE plot per (model, guidance, schedule, metric), a line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig_dir = out / "figures"
    for (model, guidance, schedule, metric), g in df.groupby(["model", "guidance", "schedule", "metric"], sort=False):
        fig, ax = plt.subplots(figsize=(6, 4))
        for solver, s in g.groupby("solver", sort=False):
            s = s.sort_values("nfe")
            ax.plot(s["nfe"], s["value"], marker="o", label=solver)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.set_title(f"{model} · guidance {guidance} · {schedule}")
        ax.legend(fontsize=6)
        fig.tight_layout()
        path = fig_dir / f"{model}_g{guidance}_{schedule}_{metric}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, f=fig: f.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results_dir: str | Path, out: str | Path) -> pd.DataFrame:
    """Write ``results.csv``, ``leaderboard.md`` and ``figures/`` under ``out``."""
    df = collect(results_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.csv", lambda tmp: df.to_csv(tmp, index=False))
    md = leaderboard_markdown(df)
    atomic_write(out / "leaderboard.md", lambda tmp: tmp.write_text(md))
    if not df.empty:
        write_figures(df, out)
    return df
