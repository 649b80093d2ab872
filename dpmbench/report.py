"""Render a results directory: results.csv (tidy), leaderboard.md/.html, figures/, paper_comparison.md.

Works on any results directory (metric ``*.json`` files, plus shard ``.npz`` files for sample grids), with or
without Snakemake: ``dpmbench report RESULTS_DIR --out reports/ [--papers papers/]``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dpmbench.claims import claims_markdown
from dpmbench.errors import DpmbenchError
from dpmbench.io import CorruptFileError, atomic_write, load_npz, verify_npz

# DESIGN.md's columns; results.csv adds a last column `seed` only when the results hold several seeds
COLUMNS = ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low", "ci_high",
           "n_samples", "wall_s", "seed"]
GROUP = ["model", "guidance", "schedule", "seed", "metric"]
PAPER_KEYS = ("table", "page", "model", "metric", "solver", "nfe", "value")


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
            raise DpmbenchError(f"invalid metrics file {str(path)!r}: truncated or not JSON; delete it and re-run "
                                "its metrics job") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
            continue  # another JSON file, not a metrics record
        rows.extend(_rows(path, rec))
    df = pd.DataFrame(rows, columns=COLUMNS)
    if not df.empty:
        df["guidance"] = df["guidance"].astype(object).where(df["guidance"].notna(), "none")
        df["guidance"] = df["guidance"].map(str)
        df = df.sort_values(["model", "guidance", "schedule", "seed", "metric", "solver", "nfe"], key=_sort_key)
    return df.reset_index(drop=True)


def _number(path: Path, field: str, v: Any, integer: bool = False) -> Any:
    """A metrics record's number (None / NaN allowed except for integers), or a one-line error naming it."""
    if v is None and not integer:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not float(v).is_integer()):
        raise DpmbenchError(f"invalid metrics file {str(path)!r}: {field} {v!r} is not a number")
    return int(v) if integer else float(v)


def _rows(path: Path, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The tidy rows of one metrics record; a record lacking a field, or with a non-numeric value, is a one-line
    error naming the file and the field. A value of None (JSON null) is a diverged run: NaN."""
    for key in ("model", "solver", "nfe", "schedule"):
        if key not in rec:
            raise DpmbenchError(f"invalid metrics file {str(path)!r}: missing key {key!r}")
    g = rec.get("guidance")
    guidance = None if g is None else _number(path, "guidance", g)
    cis = rec.get("ci") if isinstance(rec.get("ci"), dict) else {}
    rows = []
    for metric, value in rec["metrics"].items():
        ci = cis.get(metric)
        lo, hi = (ci[:2] if isinstance(ci, list) and len(ci) >= 2 else [None, None])
        rows.append({
            "model": str(rec["model"]), "solver": str(rec["solver"]), "nfe": _number(path, "nfe", rec["nfe"], True),
            "schedule": str(rec["schedule"]), "guidance": guidance, "metric": str(metric),
            "value": _number(path, f"metrics.{metric}", value), "ci_low": _number(path, f"ci.{metric}", lo),
            "ci_high": _number(path, f"ci.{metric}", hi),
            "n_samples": rec.get("n_samples"), "wall_s": rec.get("wall_s"),
            "seed": _number(path, "seed", rec.get("seed", 0), True),
        })
    return rows


def _sort_key(col: pd.Series) -> pd.Series:
    return col if col.name in ("nfe", "seed") else col.astype(str)


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if _isnan(v):
        return "diverged"
    v = float(v)
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _fmt_ci(lo: Any, hi: Any) -> str:
    return "" if _isnan(lo) or _isnan(hi) else f" [{_fmt(lo)}, {_fmt(hi)}]"


def _groups(df: pd.DataFrame) -> Iterable[tuple[tuple[Any, ...], pd.DataFrame]]:
    return df.groupby(GROUP, sort=False)


def _title(key: tuple[Any, ...], many_seeds: bool) -> str:
    model, guidance, schedule, seed, metric = key
    seed_part = f" · seed {seed}" if many_seeds else ""
    better = " (higher is better)" if higher_is_better(str(metric)) else ""
    return f"{metric}{better} · guidance {guidance} · schedule {schedule}{seed_part}"


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (log-likelihood, IS, CLIP score); all others: lower."""
    from evaluators.registry import METRICS

    return metric in METRICS and not METRICS[metric].lower_is_better


def _table(g: pd.DataFrame) -> tuple[list[int], list[tuple[str, list[tuple[str, bool]]]]]:
    """NFE columns and, per solver, (cell text, is best) per NFE; best = lowest value at that NFE (highest for
    the higher-is-better metrics)."""
    pick = max if higher_is_better(str(g["metric"].iloc[0])) else min
    nfes = sorted(g["nfe"].unique())
    solvers = list(dict.fromkeys(g["solver"]))
    by = {(r.solver, r.nfe): r for r in g.itertuples()}
    best = {}
    for n in nfes:
        vals = [by[(s, n)].value for s in solvers if (s, n) in by and not _isnan(by[(s, n)].value)]
        best[n] = pick(vals) if vals else None
    rows = []
    for s in solvers:
        cells = []
        for n in nfes:
            r = by.get((s, n))
            if r is None:
                cells.append(("–", False))
                continue
            cells.append((_fmt(r.value) + _fmt_ci(r.ci_low, r.ci_high),
                          best[n] is not None and not _isnan(r.value) and r.value == best[n]))
        rows.append((s, cells))
    return [int(n) for n in nfes], rows


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """Per model, per (guidance, schedule, seed, metric): a solver x NFE table with CIs, the best per NFE in bold."""
    lines = ["# dpmbench leaderboard", "",
             "Lower is better, except for the metrics marked (higher is better). "
             "**Bold**: best solver at that NFE. Brackets: 95% paired bootstrap "
             "CI. All solvers of a table start from the same x_T (common random numbers).", ""]
    if df.empty:
        return "\n".join([*lines, "_No results._", ""])
    many_seeds = df["seed"].nunique() > 1
    current = None
    for key, g in _groups(df):
        if key[0] != current:
            current = key[0]
            lines += [f"## {current}", ""]
        n = int(g["n_samples"].dropna().iloc[0]) if g["n_samples"].notna().any() else 0
        lines += [f"### {_title(key, many_seeds)} (n={n})", ""]
        nfes, rows = _table(g)
        lines.append("| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for solver, cells in rows:
            lines.append(f"| {solver} | " + " | ".join(f"**{t}**" if b else t for t, b in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _figure_name(key: tuple[Any, ...], many_seeds: bool) -> str:
    model, guidance, schedule, seed, metric = key
    return f"{model}_g{guidance}_{schedule}{f'_seed{seed}' if many_seeds else ''}_{metric}.png"


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figures(df: pd.DataFrame, out: Path) -> dict[tuple[Any, ...], Path]:
    """One log-log metric-vs-NFE plot per (model, guidance, schedule, seed, metric), a line (and CI band) per
    solver."""
    plt = _pyplot()
    paths = {}
    many_seeds = df["seed"].nunique() > 1
    for key, g in _groups(df):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        positive, finite = True, False
        for solver, s in g.groupby("solver", sort=False):
            s = s.sort_values("nfe")
            ok = s["value"].notna()
            finite |= bool(ok.any())
            diverged = "" if ok.all() else f" (diverged at NFE {', '.join(str(n) for n in s['nfe'][~ok])})"
            line = ax.plot(s["nfe"][ok], s["value"][ok], marker="o", ms=3, label=f"{solver}{diverged}")[0]
            lo, hi = pd.to_numeric(s["ci_low"], errors="coerce"), pd.to_numeric(s["ci_high"], errors="coerce")
            band = ok & lo.notna() & hi.notna()
            if band.any():
                ax.fill_between(s["nfe"][band], lo[band], hi[band], color=line.get_color(), alpha=0.15, lw=0)
            positive &= bool((s["value"][ok] > 0).all())
        floor = _model_error_floor(df, key)
        if floor is not None:
            ax.axhline(floor, color="black", ls="--", lw=1.2,
                       label=f"model error² {floor:.3g}: network vs exact ODE solution (floor)")
            positive &= floor > 0
        ax.set_xscale("log")
        ax.set_yscale(("log" if positive else "symlog") if finite else "linear")  # nothing finite: no log axis
        nfes = sorted(g["nfe"].unique())
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.minorticks_off()
        ax.set_xlabel("NFE")
        ax.set_ylabel(key[4])
        ax.set_title(f"{key[0]} · {_title(key, many_seeds)}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        paths[key] = _save(fig, out / "figures" / _figure_name(key, many_seeds))
    return paths


def _model_error_floor(df: pd.DataFrame, key: tuple[Any, ...]) -> float | None:
    """On an ``mse_ref`` plot of a trained network: the squared ``model_error`` of the same (model, guidance,
    schedule, seed), in mse_ref's units (the network's converged ODE solution vs the exact one of the data's
    oracle). Solver errors below it no longer show in sample quality; None where there is no model_error."""
    model, guidance, schedule, seed, metric = key
    if metric != "mse_ref":
        return None
    m = df[(df["model"] == model) & (df["guidance"] == guidance) & (df["schedule"] == schedule)
           & (df["seed"] == seed) & (df["metric"] == "model_error")]["value"].dropna()
    return float(m.median()) ** 2 if len(m) else None


def _npz_meta(path: Path) -> dict[str, Any]:
    f = load_npz(path, "shard")
    return {k: f[k].item() for k in ("model", "solver", "schedule", "guidance", "seed", "nfe") if k in f}


def write_sample_grids(results_dir: str | Path, out: Path, columns: int = 8) -> dict[tuple[str, ...], Path]:
    """For image models (samples shaped N x C x H x W, C in 1, 3): a grid of the first samples of every solver at the
    smallest NFE, first row the exact solutions, per (model, guidance, seed, schedule)."""
    groups: dict[tuple[str, ...], dict[int, dict[str, Path]]] = {}
    image: dict[str, bool] = {}
    for path in sorted(Path(results_dir).rglob("nfe*/0-*.npz")):
        try:
            meta = _npz_meta(path)
        except CorruptFileError as exc:  # a sample grid is an illustration: skip the file, say so
            print(f"dpmbench: warning: {exc}; not in the sample grids", file=sys.stderr)
            continue
        except (OSError, ValueError, KeyError):
            continue
        model = str(meta.get("model"))
        if model not in image:
            shape = load_npz(path, "shard")["x"].shape
            image[model] = len(shape) == 4 and shape[1] in (1, 3)
        if not image[model]:
            continue
        g = meta.get("guidance")
        gkey = "none" if g is None or (isinstance(g, float) and math.isnan(g)) else str(float(g))
        key = (model, gkey, str(meta.get("seed", 0)), str(meta.get("schedule")))
        groups.setdefault(key, {}).setdefault(int(meta["nfe"]), {})[str(meta["solver"])] = path
    plt = _pyplot()
    paths = {}
    for key, by_nfe in groups.items():
        nfe = min(by_nfe)
        rows: list[tuple[str, np.ndarray]] = []
        ref = next(iter(by_nfe[nfe].values())).parents[3] / "reference.npz"
        if ref.is_file() and verify_npz(ref):
            rows.append(("exact", load_npz(ref)["x"][:columns]))
        for solver, path in by_nfe[nfe].items():
            rows.append((solver, load_npz(path)["x"][:columns]))
        ncol = max(len(x) for _, x in rows)
        fig, axes = plt.subplots(len(rows), ncol, figsize=(0.75 * ncol + 2.6, 0.75 * len(rows) + 0.4), squeeze=False)
        for i, (label, xs) in enumerate(rows):
            for j in range(ncol):
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(xs):
                    img = np.clip((np.asarray(xs[j], np.float64) + 1) / 2, 0, 1)
                    if img.shape[0] == 1:
                        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                    else:
                        ax.imshow(img.transpose(1, 2, 0))
            axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=6)
        fig.suptitle(f"{key[0]} · guidance {key[1]} · seed {key[2]} · {key[3]} · NFE {nfe}", fontsize=8)
        fig.subplots_adjust(left=2.4 / (0.75 * ncol + 2.6), right=0.99, wspace=0.05, hspace=0.05)
        paths[key] = _save(fig, out / "figures" / f"samples_{key[0]}_g{key[1]}_seed{key[2]}_{key[3]}_nfe{nfe}.png")
    return paths


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def leaderboard_html(df: pd.DataFrame, figures: dict[tuple[Any, ...], Path],
                     grids: dict[tuple[str, ...], Path]) -> str:
    """A self-contained HTML leaderboard: the markdown's tables plus the figures, embedded as data URIs."""
    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
           "table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}"
           "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child{text-align:left}"
           "th{background:#f3f3f3}td.best{font-weight:bold;background:#e8f5e9}"
           "img{max-width:100%;display:block;margin:.3em 0 1.5em}.ci{color:#777;font-size:11px}")
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>dpmbench leaderboard</title>',
             f"<style>{css}</style></head><body>", "<h1>dpmbench leaderboard</h1>",
             "<p>Lower is better, except for the metrics marked (higher is better). "
             "<b>Bold</b>: best solver at that NFE. Grey: 95% paired bootstrap "
             "CI. All solvers of a table start from the same x<sub>T</sub>.</p>"]
    if df.empty:
        parts.append("<p><i>No results.</i></p>")
    many_seeds = not df.empty and df["seed"].nunique() > 1
    current = None
    for key, g in _groups(df) if not df.empty else []:
        if key[0] != current:
            current = key[0]
            parts.append(f"<h2>{html.escape(str(current))}</h2>")
            for gkey, path in grids.items():
                if gkey[0] == current:
                    parts.append(_img_tag(path))
        n = int(g["n_samples"].dropna().iloc[0]) if g["n_samples"].notna().any() else 0
        parts.append(f"<h3>{html.escape(_title(key, many_seeds))} (n={n})</h3>")
        nfes, rows = _table(g)
        parts.append("<table><tr><th>solver</th>" + "".join(f"<th>NFE {n}</th>" for n in nfes) + "</tr>")
        for solver, cells in rows:
            tds = []
            for text, best in cells:
                value, _, ci = text.partition(" [")
                ci_html = f'<br><span class="ci">[{html.escape(ci)}</span>' if ci else ""
                tds.append(f'<td{" class=best" if best else ""}>{html.escape(value)}{ci_html}</td>')
            parts.append(f"<tr><td>{html.escape(solver)}</td>{''.join(tds)}</tr>")
        parts.append("</table>")
        if key in figures:
            parts.append(_img_tag(figures[key]))
    parts.append("</body></html>")
    return "\n".join(parts)


# -- papers ----------------------------------------------------------------------------------------------------
def _paper_entry_problem(e: dict[str, Any], pinned: bool = True) -> str:
    """The first problem of a papers entry (missing key or wrong type), or an empty string."""
    keys = PAPER_KEYS if pinned else tuple(k for k in PAPER_KEYS if k != "page")
    missing = [k for k in keys if k not in e]
    if missing:
        return f"lacks {missing[0]!r}"
    checks: list[tuple[str, bool, str]] = [
        ("nfe", isinstance(e["nfe"], int) and not isinstance(e["nfe"], bool) and e["nfe"] >= 1, "an integer >= 1"),
        ("value", isinstance(e["value"], (int, float)) and not isinstance(e["value"], bool), "a number"),
        ("table", isinstance(e["table"], (int, str)) and not isinstance(e["table"], bool), "a table number or label"),
        ("model", isinstance(e["model"], str) and bool(e["model"]), "a model id"),
        ("metric", isinstance(e["metric"], str) and bool(e["metric"]), "a metric name"),
        ("solver", isinstance(e["solver"], str) and bool(e["solver"]), "a solver spec"),
    ]
    if pinned:
        checks.append(("page", isinstance(e["page"], int) and not isinstance(e["page"], bool) and e["page"] >= 1,
                       "the PDF page, an integer >= 1"))
    if "guidance" in e:
        g = e["guidance"]
        checks.append(("guidance", g in (None, "none") or (isinstance(g, (int, float)) and not isinstance(g, bool)
                                                            and g > 0), "none or a number > 0"))
    if "printed" in e:
        try:
            same = math.isclose(float(str(e["printed"])), float(e["value"]), rel_tol=0, abs_tol=1e-12)
        except (TypeError, ValueError):
            same = False
        checks.append(("printed", isinstance(e["printed"], str) and same,
                       "the value as printed (a string), equal to value"))
    if "t_end" in e:
        checks.append(("t_end", isinstance(e["t_end"], (int, float)) and not isinstance(e["t_end"], bool)
                       and e["t_end"] > 0, "a number > 0"))
    for key in ("source", "schedule", "note", "checkpoint", "not_in_config"):
        if key in e:
            checks.append((key, isinstance(e[key], str) and bool(e[key]), "a non-empty string"))
    for key, ok, allowed in checks:
        if not ok:
            return f"has {key}={e[key]!r}; allowed: {allowed}"
    return ""


def load_papers(papers_dir: str | Path | None) -> list[dict[str, Any]]:
    """Entries of every ``papers/*.yaml`` (schema: papers/README.md), each with its paper's name, url, version and file.

    Only ``entries`` are returned (they are compared); a file's ``unpinned`` list (numbers transcribed whose PDF page
    could not be determined) is validated but not returned.
    """
    if papers_dir is None or not Path(papers_dir).is_dir():
        return []
    entries = []
    for path in sorted(Path(papers_dir).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict) or "paper" not in doc or not isinstance(doc.get("entries"), list):
            raise DpmbenchError(f"invalid papers file {str(path)!r}: needs 'paper' and a list 'entries'")
        for i, e in enumerate(doc["entries"]):
            problem = _paper_entry_problem(e if isinstance(e, dict) else {})
            if problem:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: entries[{i}] {problem}")
            entries.append({**e, "paper": doc["paper"], "url": doc.get("url", ""), "version": doc.get("version", ""),
                            "file": path.name})
        for i, e in enumerate(doc.get("unpinned") or []):
            problem = _paper_entry_problem(e if isinstance(e, dict) else {}, pinned=False)
            if not problem and not isinstance((e or {}).get("why"), str):
                problem = "lacks 'why' (the reason its page is not given)"
            if problem:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: unpinned[{i}] {problem}")
    return entries


def _canonical(spec: str) -> str:
    try:
        from dpmbench.solvers.base import get_solver

        return get_solver(str(spec)).spec
    except DpmbenchError:
        return str(spec).replace(" ", "")


def paper_comparison_markdown(df: pd.DataFrame, entries: list[dict[str, Any]]) -> str:
    """Published numbers beside ours (value, CI, delta = ours - published), or why a number was not run."""
    lines = ["# Published numbers beside ours", "",
             "From `papers/*.yaml` (schema: papers/README.md). Delta = ours − published. Ours are from this results "
             "directory; they match the published setting only as far as model, metric, solver, NFE, schedule and "
             "guidance are listed.", ""]
    if not entries:
        return "\n".join([*lines, "_No papers/*.yaml entries._", ""])
    canon = {s: _canonical(s) for s in df["solver"].unique()} if not df.empty else {}
    models = set(df["model"]) if not df.empty else set()
    for paper in dict.fromkeys(e["paper"] for e in entries):
        es = [e for e in entries if e["paper"] == paper]
        url, version = es[0].get("url"), es[0].get("version")
        lines += [f"## {paper}" + (f" ({url}{', ' + str(version) if version else ''})" if url else ""), "",
                  "| table | page | model | metric | solver | NFE | schedule | guidance | published | ours | delta |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in es:
            want = _canonical(e["solver"])
            sel = df[(df["model"] == e["model"]) & (df["metric"] == e["metric"]) & (df["nfe"] == int(e["nfe"]))
                     & (df["solver"].map(canon) == want)] if not df.empty else df
            if "schedule" in e:
                sel = sel[sel["schedule"] == str(e["schedule"])]
            if "guidance" in e:
                sel = sel[sel["guidance"] == ("none" if e["guidance"] in (None, "none") else str(float(e["guidance"])))]
            head = (f"| {e['table']} | {e['page']} | {e['model']} | {e['metric']} | {e['solver']} | {e['nfe']} | "
                    f"{e.get('schedule', 'any')} | {e.get('guidance', 'any')} | {e.get('printed', e['value'])} |")
            if sel.empty:
                if e["model"] not in models:
                    why = f"not run: needs checkpoint {e.get('checkpoint', e['model'])}"
                else:
                    why = f"not run: no {e['metric']} at NFE {e['nfe']} for {want} in the results"
                lines.append(f"{head} {why} | |")
                continue
            for r in sel.itertuples():
                delta = "" if _isnan(r.value) else f"{r.value - float(e['value']):+.3g}"
                where = "" if "schedule" in e and "guidance" in e else f" ({r.schedule}, g {r.guidance})"
                lines.append(f"{head} {_fmt(r.value)}{_fmt_ci(r.ci_low, r.ci_high)}{where} | {delta} |")
        lines.append("")
    return "\n".join(lines)


def write_report(results_dir: str | Path, out: str | Path, papers_dir: str | Path | None = None) -> pd.DataFrame:
    """Write ``results.csv``, ``leaderboard.md``, ``leaderboard.html``, ``paper_comparison.md``, ``claims.md`` (the
    seed papers' claims checked on these results, ``dpmbench.claims``) and ``figures/``."""
    df = collect(results_dir)
    out = Path(out)
    if papers_dir is None and Path("papers").is_dir():
        papers_dir = "papers"
    entries = load_papers(papers_dir)  # validate before writing anything
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    table = df if df["seed"].nunique() > 1 else df.drop(columns="seed")
    table = table.assign(value=table["value"].map(lambda v: "nan" if _isnan(v) else v))  # nan: a diverged run
    atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
    md = leaderboard_markdown(df)
    atomic_write(out / "leaderboard.md", lambda tmp: tmp.write_text(md))
    figures = write_figures(df, out) if not df.empty else {}
    grids = write_sample_grids(results_dir, out)
    page = leaderboard_html(df, figures, grids)
    atomic_write(out / "leaderboard.html", lambda tmp: tmp.write_text(page))
    comparison = paper_comparison_markdown(df, entries)
    atomic_write(out / "paper_comparison.md", lambda tmp: tmp.write_text(comparison))
    claims = claims_markdown(df)
    atomic_write(out / "claims.md", lambda tmp: tmp.write_text(claims))
    return df


__all__ = ["COLUMNS", "collect", "leaderboard_html", "leaderboard_markdown", "load_papers",
           "paper_comparison_markdown", "write_figures", "write_report", "write_sample_grids"]
