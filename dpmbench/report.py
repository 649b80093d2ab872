"""Render a results directory: results.csv (tidy), leaderboard.md/.html, figures/, paper_comparison.md.

Works on any results directory (metric ``*.json`` files, plus shard ``.npz`` files for sample grids), with or
without Snakemake: ``dpmbench report RESULTS_DIR --out reports/ [--papers papers/]``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import html
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.artifacts import named_searches
from dpmbench.claims import claims_markdown
from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.figures import metric_figure, write_sample_grids
from dpmbench.io import atomic_write
from dpmbench.merge import Records, merge_runs, write_provenance
from dpmbench.provenance import provenance_id
from dpmbench.yamlfile import read_yaml

# DESIGN.md's columns; results.csv adds a last column `seed` only when the results hold several seeds
COLUMNS = ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low", "ci_high",
           "n_samples", "wall_s", "seed"]
# beside the DESIGN.md columns, per row (not written to results.csv; see dpmbench.merge for the provenance sidecar):
# the run it comes from, the per-sample summary, the protocol, the provenance and the bootstrap replicates
EXTRA = ["run", "median", "diverged_share", "t_end", "reference", "reference_sha256", "extractor",
         "extractor_sha256", "reference_stats", "reference_stats_sha256", "provenance", "date", "boot", "boot_seed",
         "parallel_rounds"]  # parallel_rounds: a parallel solver's sequential rounds (a last results.csv column)
GROUP = ["model", "guidance", "schedule", "seed", "metric", "protocol"]  # protocol: see dpmbench.merge
# required fields of a published number; `page` is optional (the table id and the source's version locate it)
PAPER_KEYS = ("table", "model", "metric", "solver", "nfe", "value")


def collect(results_dir: str | Path) -> pd.DataFrame:
    """Every metric file (``*.json`` with a ``metrics`` object) under ``results_dir`` as tidy rows: the columns
    :data:`COLUMNS` of results.csv, then :data:`EXTRA` (run = ``results_dir``)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise DpmbenchError(f"invalid RESULTS_DIR {str(root)!r}: not a directory")
    rows: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DpmbenchError(f"invalid metrics file {str(path)!r}: truncated or not JSON; delete it and re-run "
                                "its metrics job") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
            continue  # another JSON file, not a metrics record
        rows.extend({**r, "run": str(results_dir)} for r in _rows(path, rec))
        if isinstance(rec.get("provenance"), dict):
            records[provenance_id(rec["provenance"])] = {k: v for k, v in rec["provenance"].items() if k != "date"}
    df = pd.DataFrame(rows, columns=COLUMNS + EXTRA)
    if not df.empty:
        df["guidance"] = df["guidance"].astype(object).where(df["guidance"].notna(), "none")
        df["guidance"] = df["guidance"].map(str)
        df = df.sort_values(["model", "guidance", "schedule", "seed", "metric", "solver", "nfe"], key=_sort_key)
    df = df.reset_index(drop=True)
    df.attrs["provenance"] = Records(records)  # provenance id -> record (without date)
    return df


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
    extra = _record_extras(rec)
    per_sample = rec.get("per_sample") if isinstance(rec.get("per_sample"), dict) else {}
    diverged = next((v.get("diverged_share") for v in per_sample.values() if isinstance(v, dict)), None)
    boots = rec.get("bootstrap_values") if isinstance(rec.get("bootstrap_values"), dict) else {}
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
            **extra, "median": (per_sample.get(metric) or {}).get("median"),
            "diverged_share": (per_sample.get(metric) or {}).get("diverged_share", diverged),
            "boot": boots.get(metric), "boot_seed": rec.get("bootstrap_seed"),
            "parallel_rounds": _number(path, "parallel_rounds", rec.get("parallel_rounds")),  # parallel solvers
        })
    return rows


def _record_extras(rec: dict[str, Any]) -> dict[str, Any]:
    """Protocol and provenance of a metrics record (absent fields: None; files written before they existed)."""
    proto = rec.get("protocol") if isinstance(rec.get("protocol"), dict) else {}
    prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else None
    out = {k: proto.get(k) for k in ("t_end", "reference", "reference_sha256", "extractor", "extractor_sha256",
                                     "reference_stats", "reference_stats_sha256")}
    out["provenance"] = None if prov is None else provenance_id(prov)

    out["date"] = None if prov is None else prov.get("date")
    return out


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


def _title(key: tuple[Any, ...], many_seeds: bool, label: str = "") -> str:
    model, guidance, schedule, seed, metric = key[:5]
    seed_part = f" · seed {seed}" if many_seeds else ""
    better = " (higher is better)" if higher_is_better(str(metric)) else ""
    protocol = f" · {label}" if label else ""
    return f"{metric}{better} · guidance {guidance} · schedule {schedule}{seed_part}{protocol}"


def _label(g: pd.DataFrame) -> str:
    return str(g["protocol_label"].iloc[0]) if "protocol_label" in g and len(g) else ""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (log-likelihood, IS, CLIP score); all others: lower."""
    from evaluators.registry import METRICS

    return metric in METRICS and not METRICS[metric].lower_is_better


def _spread(r: Any) -> str:
    """Per-sample median and share of diverged samples, where some samples diverged ('' otherwise)."""
    share = getattr(r, "diverged_share", None)
    if _isnan(share) or not share or (float(share) >= 1 and _isnan(r.value)):  # none, or all ('diverged' says it)
        return ""
    from evaluators.registry import PER_SAMPLE_METRICS

    med = getattr(r, "median", None)
    share_text = f"{100 * float(share):.3g}% samples diverged"
    if str(getattr(r, "metric", "")) not in PER_SAMPLE_METRICS:  # a distributional metric: no per-sample value
        return share_text
    return f"median {_fmt(med) if not _isnan(med) else 'diverged'}, {share_text}"


def _table(g: pd.DataFrame) -> tuple[list[int], list[tuple[str, list[tuple[str, str, str]]]]]:
    """NFE columns and, per solver, (cell text, mark, spread) per NFE: mark ``best`` where the paired bootstrap
    CI of the difference to every other solver excludes zero, ``tied`` for the solvers the column's best cannot
    be told apart from (dpmbench.compare); spread: per-sample median and share diverged where any diverged."""
    from dpmbench.compare import table_marks

    marks = table_marks(g, higher_is_better(str(g["metric"].iloc[0])))
    nfes = sorted(g["nfe"].unique())
    solvers = list(dict.fromkeys(g["solver"]))
    by = {(r.solver, r.nfe): r for r in g.itertuples()}
    rows = []
    for s in solvers:
        cells = []
        for n in nfes:
            r = by.get((s, n))
            if r is None:
                cells.append(("–", "", ""))
                continue
            rounds = "" if _isnan(r.parallel_rounds) else f" ({int(r.parallel_rounds)} rounds)"  # picard
            mark = marks.get((s, int(n)))
            cells.append((_fmt(r.value) + rounds + _fmt_ci(r.ci_low, r.ci_high), mark.kind if mark else "", _spread(r)))
        rows.append((s, cells))
    return [int(n) for n in nfes], rows


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """Per model, per (guidance, schedule, seed, metric, protocol): a solver x NFE table with CIs; **bold**: best
    at that NFE (the paired CI of its difference to every other solver excludes zero), _(tied)_: statistically
    tied with the best."""
    lines = ["# dpmbench leaderboard", "",
             "Lower is better, except for the metrics marked (higher is better). "
             "**Bold**: best solver at that NFE (the 95% paired bootstrap CI of its difference to every other solver "
             "excludes zero); _(tied)_: the best and the solvers it cannot be told apart from. Brackets: 95% paired "
             "bootstrap CI. All solvers of a table start from the same x_T (common random numbers). Where samples "
             "diverged, the per-sample median and the share of diverged samples follow the mean. "
             "(R rounds): a parallel sampler's sequential batched model calls (NFE: its base solver's steps).", ""]
    if df.empty:
        return "\n".join([*lines, "_No results._", ""])
    df = _with_protocol(df)
    many_seeds = df["seed"].nunique() > 1
    current = None
    for key, g in _groups(df):
        if key[0] != current:
            current = key[0]
            lines += [f"## {current}", ""]
        n = int(g["n_samples"].dropna().iloc[0]) if g["n_samples"].notna().any() else 0
        lines += [f"### {_title(key, many_seeds, _label(g))} (n={n})", ""]
        nfes, rows = _table(g)
        lines.append("| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for solver, cells in rows:
            texts = []
            for t, mark, spread in cells:
                t = f"**{t}**" if mark == "best" else f"{t} _(tied)_" if mark == "tied" else t
                texts.append(f"{t} ({spread})" if spread else t)
            lines.append(f"| {solver} | " + " | ".join(texts) + " |")
        lines.append("")
    return "\n".join(lines)


def _model_error_floor(df: pd.DataFrame, key: tuple[Any, ...]) -> float | None:
    """On an ``mse_ref`` plot of a trained network: the squared ``model_error`` of the same (model, guidance,
    schedule, seed), in mse_ref's units (the network's converged ODE solution vs the exact one of the data's
    oracle). Solver errors below it no longer show in sample quality; None where there is no model_error."""
    model, guidance, schedule, seed, metric = key[:5]
    if metric != "mse_ref":
        return None
    m = df[(df["model"] == model) & (df["guidance"] == guidance) & (df["schedule"] == schedule)
           & (df["seed"] == seed) & (df["metric"] == "model_error")]["value"].dropna()
    return float(m.median()) ** 2 if len(m) else None


def _with_protocol(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the merge's protocol columns (a single run's frame gets them from :func:`merge_runs`)."""
    if "protocol" in df.columns:
        return df
    from dpmbench.merge import merge_runs

    return merge_runs([df])


def _figure_name(key: tuple[Any, ...], many_seeds: bool, label: str = "") -> str:
    model, guidance, schedule, seed, metric = key[:5]
    protocol = f"_p{hashlib.sha256(label.encode()).hexdigest()[:8]}" if label else ""  # tables shown apart
    return f"{model}_g{guidance}_{schedule}{f'_seed{seed}' if many_seeds else ''}_{metric}{protocol}.png"


def figure_tasks(df: pd.DataFrame, out: Path) -> list[tuple[tuple[Any, ...], tuple[Any, ...], dict[str, Any]]]:
    """The metric-vs-NFE figures (dpmbench.figures.metric_figure), one per table (model, guidance, schedule, seed,
    metric, protocol): (table key, positional and keyword arguments of ``metric_figure``)."""
    df = _with_protocol(df)
    many_seeds = df["seed"].nunique() > 1
    tasks = []
    for key, g in _groups(df):
        label = _label(g)
        tasks.append((key, (g, f"{key[0]} · {_title(key, many_seeds, label)}",
                            out / "figures" / _figure_name(key, many_seeds, label), higher_is_better(str(key[4]))),
                      {"floor": _model_error_floor(df, key)}))
    return tasks


def write_figures(df: pd.DataFrame, out: Path) -> dict[tuple[Any, ...], Path]:
    """Every figure of ``figure_tasks``, drawn in this process."""
    return {key: metric_figure(*args, **kwargs) for key, args, kwargs in figure_tasks(df, out)}


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def leaderboard_html(df: pd.DataFrame, figures: dict[tuple[Any, ...], Path],
                     grids: dict[tuple[str, ...], Path]) -> str:
    """A self-contained HTML leaderboard: the markdown's tables plus the figures, embedded as data URIs."""
    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
           "table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}"
           "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child{text-align:left}"
           "th{background:#f3f3f3}td.best{font-weight:bold;background:#e8f5e9}td.tied{background:#f4faf4}"
           ".spread{color:#b34;font-size:11px}"
           "img{max-width:100%;display:block;margin:.3em 0 1.5em}.ci{color:#777;font-size:11px}")
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>dpmbench leaderboard</title>',
             f"<style>{css}</style></head><body>", "<h1>dpmbench leaderboard</h1>",
             "<p>Lower is better, except for the metrics marked (higher is better). "
             "<b>Bold</b>: best solver at that NFE (the 95% paired bootstrap CI of its difference to every other "
             "solver excludes zero); light green: tied with the best. Grey: 95% paired bootstrap "
             "CI. All solvers of a table start from the same x<sub>T</sub>. Red: per-sample median and share of "
             "diverged samples, where some diverged.</p>"]
    if df.empty:
        parts.append("<p><i>No results.</i></p>")
    df = _with_protocol(df) if not df.empty else df
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
        parts.append(f"<h3>{html.escape(_title(key, many_seeds, _label(g)))} (n={n})</h3>")
        nfes, rows = _table(g)
        parts.append("<table><tr><th>solver</th>" + "".join(f"<th>NFE {n}</th>" for n in nfes) + "</tr>")
        for solver, cells in rows:
            tds = []
            for text, mark, spread in cells:
                value, _, ci = text.partition(" [")
                ci_html = f'<br><span class="ci">[{html.escape(ci)}</span>' if ci else ""
                spread_html = f'<br><span class="spread">{html.escape(spread)}</span>' if spread else ""
                tds.append(f'<td{f" class={mark}" if mark else ""}>{html.escape(value)}{ci_html}{spread_html}</td>')
            parts.append(f"<tr><td>{html.escape(solver)}</td>{''.join(tds)}</tr>")
        parts.append("</table>")
        if key in figures:
            parts.append(_img_tag(figures[key]))
    parts.append("</body></html>")
    return "\n".join(parts)


# -- papers ----------------------------------------------------------------------------------------------------
def _paper_entry_problem(e: dict[str, Any]) -> str:
    """The first problem of a papers entry (missing key or wrong type), or an empty string."""
    missing = [k for k in PAPER_KEYS if k not in e]
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
    if "page" in e:
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

    Only ``entries`` are returned (they are compared); a file's ``unpinned`` list (numbers transcribed whose table or
    setting is unclear) is validated but not returned.
    """
    if papers_dir is None or not Path(papers_dir).is_dir():
        return []
    entries = []
    for path in sorted(Path(papers_dir).glob("*.yaml")):
        doc = read_yaml(path) or {}
        if not isinstance(doc, dict) or "paper" not in doc or not isinstance(doc.get("entries"), list):
            raise DpmbenchError(f"invalid papers file {str(path)!r}: needs 'paper' and a list 'entries'")
        for i, e in enumerate(doc["entries"]):
            problem = _paper_entry_problem(e if isinstance(e, dict) else {})
            if problem:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: entries[{i}] {problem}")
            entries.append({**e, "paper": doc["paper"], "url": doc.get("url", ""), "version": doc.get("version", ""),
                            "file": path.name})
        for i, e in enumerate(doc.get("unpinned") or []):
            problem = _paper_entry_problem(e if isinstance(e, dict) else {})
            if not problem and not isinstance((e or {}).get("why"), str):
                problem = "lacks 'why' (the reason it is not compared)"
            if problem:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: unpinned[{i}] {problem}")
    return entries


def _canonical(spec: str) -> str:
    try:
        from dpmbench.solvers.base import get_solver

        return get_solver(str(spec)).spec
    except DpmbenchError:
        return str(spec).replace(" ", "")


SPREAD_ONE_SOURCE = 0.03  # a reproduction of a number published once is "within" at +-3% of it


def _setting(e: dict[str, Any]) -> tuple[Any, ...]:
    """What a published number measures: the key under which several sources publish the same setting."""
    g = e.get("guidance", "any")
    return (e["model"], e["metric"], _canonical(e["solver"]), int(e["nfe"]), e.get("schedule", "any"),
            "none" if g in (None, "none") else str(float(g)) if g != "any" else "any")


def published_spread(entries: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[float]]:
    """Every published value of each setting (over all papers and tables), keyed by ``_setting``."""
    spread: dict[tuple[Any, ...], list[float]] = {}
    for e in entries:
        spread.setdefault(_setting(e), []).append(float(e["value"]))
    return spread


def _within(value: float, published: list[float]) -> str:
    """'yes' when ours lies inside the published spread ([min, max] of several sources; +-3% of a single one)."""
    lo, hi = min(published), max(published)
    if len(set(published)) == 1:
        lo, hi = lo - SPREAD_ONE_SOURCE * abs(lo), hi + SPREAD_ONE_SOURCE * abs(hi)
    return "yes" if lo <= value <= hi else "no"


def _coverage_lines(df: pd.DataFrame, entries: list[dict[str, Any]], found: dict[int, bool]) -> list[str]:
    """One line per paper: numbers, how many have a result of ours here, and what is missing to run the others."""
    lines = ["## Coverage", ""]
    models = set(df["model"]) if not df.empty else set()
    for paper in dict.fromkeys(e["paper"] for e in entries):
        es = [(i, e) for i, e in enumerate(entries) if e["paper"] == paper]
        ours = sum(found[i] for i, _ in es)
        need: dict[str, int] = {}
        for i, e in es:
            if not found[i] and e["model"] not in models:
                need[e["model"]] = need.get(e["model"], 0) + 1
        cells = sum(not found[i] and e["model"] in models for i, e in es)
        missing = "; ".join(f"{k}: {v}" for k, v in need.items())
        lines.append(f"- **{paper}**: {len(es)} numbers, {ours} with a result here"
                     + (f"; not run, checkpoint needed: {missing}" if missing else "")
                     + (f"; {cells} with the model run but not that cell" if cells else ""))
    return [*lines, ""]


def paper_comparison_markdown(df: pd.DataFrame, entries: list[dict[str, Any]]) -> str:
    """Published numbers beside ours (value, CI, delta = ours - published, the published spread of the setting and
    whether ours lies within it), or why a number was not run. Opens with a coverage summary per paper; each
    paper's full table follows in a collapsed section."""
    lines = ["# Published numbers beside ours", "",
             "From `papers/*.yaml` (schema: papers/README.md). Delta = ours − published. Ours are from this results "
             "directory; they match the published setting only as far as model, metric, solver, NFE, schedule and "
             "guidance are listed. Spread: every value published for the same setting (all papers and tables); ours "
             f"is within it when inside [min, max], or within ±{SPREAD_ONE_SOURCE:.0%} of a single published value.",
             ""]
    if not entries:
        return "\n".join([*lines, "_No papers/*.yaml entries._", ""])
    canon = {s: _canonical(s) for s in df["solver"].unique()} if not df.empty else {}
    models = set(df["model"]) if not df.empty else set()
    spread = published_spread(entries)
    found: dict[int, bool] = {}
    body: list[str] = []
    for paper in dict.fromkeys(e["paper"] for e in entries):
        es = [(i, e) for i, e in enumerate(entries) if e["paper"] == paper]
        url, version = es[0][1].get("url"), es[0][1].get("version")
        body += [f"## {paper}" + (f" ({url}{', ' + str(version) if version else ''})" if url else ""), "",
                 f"<details><summary>all {len(es)} numbers</summary>", "",
                 "| table | page | model | metric | solver | NFE | schedule | guidance | published | ours | delta "
                 "| published spread | within |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, e in es:
            want = _canonical(e["solver"])
            sel = df[(df["model"] == e["model"]) & (df["metric"] == e["metric"]) & (df["nfe"] == int(e["nfe"]))
                     & (df["solver"].map(canon) == want)] if not df.empty else df
            if "schedule" in e:
                sel = sel[sel["schedule"] == str(e["schedule"])]
            if "guidance" in e:
                sel = sel[sel["guidance"] == ("none" if e["guidance"] in (None, "none") else str(float(e["guidance"])))]
            found[i] = not sel.empty
            pub = spread[_setting(e)]
            span = f"{min(pub):g} .. {max(pub):g} ({len(pub)} values)" if len(pub) > 1 else "one source"
            head = (f"| {e['table']} | {e.get('page', '–')} | {e['model']} | {e['metric']} | {e['solver']} | "
                    f"{e['nfe']} | {e.get('schedule', 'any')} | {e.get('guidance', 'any')} | "
                    f"{e.get('printed', e['value'])} |")
            if sel.empty:
                if e["model"] not in models:
                    why = f"not run: needs checkpoint {e.get('checkpoint', e['model'])}"
                else:
                    why = f"not run: no {e['metric']} at NFE {e['nfe']} for {want} in the results"
                body.append(f"{head} {why} | | {span} | |")
                continue
            for r in sel.itertuples():
                delta = "" if _isnan(r.value) else f"{r.value - float(e['value']):+.3g}"
                within = "" if _isnan(r.value) else _within(float(r.value), pub)
                where = "" if "schedule" in e and "guidance" in e else f" ({r.schedule}, g {r.guidance})"
                body.append(f"{head} {_fmt(r.value)}{_fmt_ci(r.ci_low, r.ci_high)}{where} | {delta} | {span} | "
                            f"{within} |")
        body += ["", "</details>", ""]
    return "\n".join([*lines, *_coverage_lines(df, entries, found), *body])


def _done(fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
    """``fn(*args, **kwargs)`` run here, as a finished future (``_figure_pool``'s one-job case)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.set_result(fn(*args, **kwargs))
    return future


@contextlib.contextmanager
def _figure_pool(jobs: int) -> Iterator[concurrent.futures.ProcessPoolExecutor | None]:
    """``jobs`` forked worker processes for the figures (None with one job: draw them here; this process only waits
    meanwhile). matplotlib is imported (Agg) before the fork, so the workers do not import it again."""
    if jobs <= 1:
        yield None
        return
    import multiprocessing

    from dpmbench.figures import _pyplot

    _pyplot()
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


def write_report(results_dirs: str | Path | Sequence[str | Path], out: str | Path,
                 papers_dir: str | Path | None = None, site: str | Path | None = None, jobs: int = 1,
                 previous_claims: str | Path | None = None) -> pd.DataFrame:
    """Write ``results.csv``, ``provenance.csv``/``.json``, ``leaderboard.md``, ``leaderboard.html``,
    ``paper_comparison.md``, ``claims.md`` (the seed papers' claims checked on these
    results, ``dpmbench.claims``) and ``figures/`` of one or several results directories (merged: dpmbench.merge), and
    with ``site`` a static site there (dpmbench.site). With ``jobs`` > 1 the figures are drawn by ``jobs`` worker
    processes after the tables are written (the same files: a figure does not depend on who draws it).
    ``previous_claims`` (default: the ``claims.md`` already in ``out``): the ledger this one replaces; claims.md then
    closes with every verdict that changed, before -> after, with the reason."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise bad_value("jobs", jobs, "an integer >= 1")
    dirs = [results_dirs] if isinstance(results_dirs, str | Path) else list(results_dirs)
    if not dirs:
        raise DpmbenchError("invalid RESULTS_DIR: give at least one results directory")
    df = merge_runs([collect(d) for d in dirs])  # refuses disagreeing cells before writing anything
    out = Path(out)
    if papers_dir is None and Path("papers").is_dir():
        papers_dir = "papers"
    entries = load_papers(papers_dir)  # validate before writing anything
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    rounds = ["parallel_rounds"] if df["parallel_rounds"].notna().any() else []  # parallel solvers ran
    table = df[[c for c in COLUMNS if c in df.columns] + rounds]
    table = table if table["seed"].nunique() > 1 else table.drop(columns="seed")
    table = table.assign(value=table["value"].map(lambda v: "nan" if _isnan(v) else v))  # nan: a diverged run
    atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_provenance(df, out)
    md = leaderboard_markdown(df)
    atomic_write(out / "leaderboard.md", lambda tmp: tmp.write_text(md))
    comparison = paper_comparison_markdown(df, entries)
    atomic_write(out / "paper_comparison.md", lambda tmp: tmp.write_text(comparison))
    produced = named_searches([Path(d) / "artifacts" for d in dirs])  # the workflow's DPMBENCH_ARTIFACTS
    prev = Path(previous_claims) if previous_claims is not None else out / "claims.md"  # the ledger it replaces
    claims = claims_markdown(df, {f"searched:{n}": s for n, s in produced.items() if s is not None},
                             prev.read_text() if prev.is_file() else None)
    atomic_write(out / "claims.md", lambda tmp: tmp.write_text(claims))
    tasks = figure_tasks(df, out) if not df.empty else []
    with _figure_pool(jobs) as pool:
        submit = pool.submit if pool is not None else _done
        pending = [submit(write_sample_grids, d, out) for d in dirs]  # the sample grids first: the longest tasks
        pending += [submit(metric_figure, *args, **kwargs) for _, args, kwargs in tasks]
        done = [f.result() for f in pending]
    grid_maps, drawn = done[:len(dirs)], done[len(dirs):]
    figures = {key: path for (key, _, _), path in zip(tasks, drawn, strict=True)}
    grids: dict[tuple[str, ...], Path] = {}
    for m in grid_maps:
        grids.update(m)
    page = leaderboard_html(df, figures, grids)
    atomic_write(out / "leaderboard.html", lambda tmp: tmp.write_text(page))
    if site is not None:
        from dpmbench.site import write_site

        write_site(df, Path(site), figures, grids, entries,
                   data=[out / "results.csv", out / "provenance.csv", out / "provenance.json"])
    return df


__all__ = ["COLUMNS", "collect", "leaderboard_html", "leaderboard_markdown", "load_papers",
           "figure_tasks", "paper_comparison_markdown", "published_spread", "write_figures", "write_report",
           "write_sample_grids"]
