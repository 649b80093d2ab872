"""A self-contained static leaderboard site: ``dpmbench report DIR... --site SITE``.

``SITE/index.html`` (models with their leading solvers, the runs and their provenance, how to read the tables),
one page per model (a ranking view, sortable solver x NFE tables per metric with CIs, best/tied marks, per-sample
median and diverged share, figures, sample grids, the paper comparison and the provenance of every table) and
``papers.html``. Plain HTML, one CSS and one JS file, PNG figures and the CSV data: it opens from the file system,
needs no server and names no external URL.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.io import atomic_write
from dpmbench.report.merge import provenance_summary
from dpmbench.report.papers import paper_comparison_markdown
from dpmbench.report.stats import mean_ranks
from dpmbench.report.tables import (
    fmt,
    fmt_ci,
    groups,
    higher_is_better,
    is_nan,
    protocol_label,
    table_cells,
    title,
    with_protocol,
)

CSS = """
:root{--ink:#1d2433;--muted:#667085;--line:#e4e7ec;--best:#d1fadf;--tied:#eef8f1;--accent:#2f5fd0;--bad:#b42318}
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);margin:0;
  background:#f8f9fb}
header.top{background:linear-gradient(120deg,#1f3a8a,#2f5fd0);color:#fff;padding:28px 40px 22px}
header.top h1{margin:0 0 4px;font-size:26px}header.top p{margin:2px 0;opacity:.92;max-width:1100px}
header.top a{color:#fff}
main{padding:18px 40px 40px;max-width:1500px}
nav.crumbs{font-size:13px;margin-bottom:6px}nav.crumbs a{color:#fff}
h2{font-size:20px;margin:28px 0 8px;border-bottom:2px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
a{color:var(--accent)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:16px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 18px;
  box-shadow:0 1px 2px rgba(16,24,40,.05)}
.card h2{border:0;margin:0 0 2px;font-size:18px}.card .meta{color:var(--muted);font-size:12px;margin-bottom:8px}
.card ol{margin:4px 0 8px 18px;padding:0}.card li{margin:1px 0}
.pill{display:inline-block;border-radius:9px;padding:0 7px;font-size:11px;background:#eef2ff;color:#3538cd;
  margin-left:4px}
.pill.best{background:var(--best);color:#05603a}.pill.tied{background:#f2f4f7;color:#475467}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:6px 0 4px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f2f4f7;position:sticky;top:0}
td:first-child,th:first-child{text-align:left;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th::after{content:" \\2195";color:#98a2b3;font-size:10px}
th[aria-sort=ascending]::after{content:" \\25B2";color:var(--ink)}th[aria-sort=descending]::after{content:" \\25BC";
  color:var(--ink)}
td.best{background:var(--best);font-weight:600}td.tied{background:var(--tied)}
.ci{color:var(--muted);font-size:10.5px;white-space:nowrap}.spread{color:var(--bad);font-size:10.5px}
.scroll{overflow-x:auto;max-width:100%}
table.text td,table.text th{text-align:left}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid var(--line);background:#fff;
  border-radius:6px}
figcaption{color:var(--muted);font-size:12px}
.prov{color:var(--muted);font-size:12px;margin:2px 0 10px}
.legend{font-size:12.5px;color:#344054;background:#fff;border:1px solid var(--line);border-radius:8px;
  padding:8px 14px;max-width:1100px}
details{margin:6px 0}summary{cursor:pointer;color:var(--accent)}
code{font-size:12px;background:#f2f4f7;padding:0 3px;border-radius:3px}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:18px;align-items:start}
@media(max-width:1100px){.grid2{grid-template-columns:1fr}}
"""

JS = """'use strict';
// Sortable tables: click a header to sort by that column (numbers by data-v, else text); click again to reverse.
(function () {
  function key(cell) {
    if (cell.dataset.v === undefined) { return cell.textContent.trim().toLowerCase(); }
    const x = parseFloat(cell.dataset.v);
    return Number.isNaN(x) ? Infinity : x;
  }
  function sortBy(table, index, th) {
    const asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = key(a.cells[index]);
      const y = key(b.cells[index]);
      if (x === y) { return 0; }
      if (typeof x === 'string' || typeof y === 'string') {
        return (asc ? 1 : -1) * String(x).localeCompare(String(y));
      }
      if (x === Infinity) { return 1; }
      if (y === Infinity) { return -1; }
      return asc ? x - y : y - x;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, i) {
      th.addEventListener('click', function () { sortBy(table, i, th); });
    });
  });
})();
"""

READING = ("Every solver of a table starts from the same initial noise x<sub>T</sub> (common random numbers). "
           "Brackets: 95% bootstrap CI. <b>Best</b> (green, bold) is marked only where the 95% paired bootstrap CI of "
           "its difference to every other solver at that NFE excludes zero; otherwise the best and every solver it "
           "cannot be told apart from are marked <i>tied</i> (light green). Red: where samples diverged, the "
           "per-sample median and the share of diverged samples (error larger than the target's own RMS). "
           "Ranking: mean rank over the NFEs (1 = best). Click a column header to sort.")


def _e(x: Any) -> str:
    return html.escape(str(x))


def slug(text: str) -> str:
    """A file- and anchor-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def _page(title: str, header: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><link rel=\"stylesheet\" href=\"assets/site.css\"></head><body>"
            f"<header class=\"top\">{header}</header><main>{body}</main>"
            "<script src=\"assets/site.js\"></script></body></html>\n")


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _copy(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


# -- provenance ---------------------------------------------------------------------------------------------
def _code(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "unrecorded"
    commit = rec.get("git_commit")
    dirty = " (dirty)" if rec.get("git_dirty") else ""
    return f"dpmbench {rec.get('dpmbench')}" + (f" @ {commit[:10]}{dirty}" if commit else " (no git)")


def _versions(rec: dict[str, Any] | None) -> str:
    v = (rec or {}).get("versions") or {}
    keys = ("python", "torch", "numpy", "diffusers", "torch-fidelity", "clean-fid", "open_clip_torch")
    return ", ".join(f"{k} {v[k]}" for k in keys if v.get(k))


def provenance_table(df: pd.DataFrame) -> str:
    """The runs and provenance records behind ``df``: one row per provenance id."""
    rows = []
    for p in provenance_summary(df):
        rec = p["record"]
        dates = "" if not p["dates"] else (p["dates"][0][:10] if p["dates"][0][:10] == p["dates"][1][:10]
                                           else f"{p['dates'][0][:10]} – {p['dates'][1][:10]}")
        config = (rec or {}).get("config_sha256")
        rows.append(f"<tr id=\"prov-{_e(p['id'])}\"><td><code>{_e(p['id'])}</code></td><td>{_e(_code(rec))}</td>"
                    f"<td>{_e(_versions(rec))}</td>"
                    f"<td>{_e((rec or {}).get('device_name', ''))}<br><span class=ci>sampled on "
                    f"{_e((rec or {}).get('sample_device_name') or '?')}, {_e((rec or {}).get('sample_dtype', '?'))}"
                    f"</span></td><td>{_e(config[:12] if config else '—')}</td><td>{_e(dates)}</td>"
                    f"<td>{_e(', '.join(p['runs']))}</td><td data-v=\"{p['rows']}\">{p['rows']}</td></tr>")
    return ("<div class=scroll><table class=\"sortable text\"><thead><tr><th>provenance</th><th>code</th>"
            "<th>libraries</th><th>device</th><th>config sha256</th><th>date</th><th>run</th><th>rows</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _protocol_line(g: pd.DataFrame) -> str:
    """One line under a table: its protocol and where its numbers come from."""
    r = g.iloc[0]
    n = int(r["n_samples"]) if not is_nan(r["n_samples"]) else "?"
    parts = [f"n = {n}", f"t_end {r['t_end']}" if not is_nan(r["t_end"]) else "t_end unrecorded"]
    if r["reference"]:
        sha = r["reference_sha256"]
        parts.append(f"reference: {r['reference']}" + (f" (sha256 {sha[:12]}…)" if isinstance(sha, str) else ""))
    if isinstance(r["extractor"], str):
        parts.append(f"extractor {r['extractor']}")
    if isinstance(r["reference_stats"], str):
        sha = r["reference_stats_sha256"]
        parts.append(f"reference statistics {r['reference_stats']}" + (f" (sha256 {sha[:12]}…)"
                                                                        if isinstance(sha, str) else ""))
    ids = sorted(set(g["provenance"].dropna()))
    links = ", ".join(f"<a href=\"#prov-{_e(i)}\"><code>{_e(i)}</code></a>" for i in ids) or "unrecorded"
    runs = ", ".join(sorted(set(g["run"])))
    dates = sorted(g["date"].dropna())
    when = f" · {dates[0][:10]}" + (f" – {dates[-1][:10]}" if dates[-1][:10] != dates[0][:10] else "") if dates else ""
    return f"<p class=prov>{_e(' · '.join(parts))} · run {_e(runs)}{_e(when)} · provenance {links}</p>"


# -- tables -------------------------------------------------------------------------------------------------
def metric_table(g: pd.DataFrame) -> str:
    """A sortable solver x NFE table of one metric: value, CI, best/tied class, median/diverged where any."""
    nfes, rows = table_cells(g)
    by = {(r.solver, int(r.nfe)): r for r in g.itertuples()}
    head = "<thead><tr><th>solver</th>" + "".join(f"<th>NFE {n}</th>" for n in nfes) + "</tr></thead>"
    body = []
    for solver, cells in rows:
        tds = [f"<td>{_e(solver)}</td>"]
        for n, (_text, mark, spread) in zip(nfes, cells, strict=True):
            r = by.get((solver, n))
            v = "" if r is None or is_nan(r.value) else f" data-v=\"{float(r.value)!r}\""
            if r is None:
                tds.append("<td data-v=\"NaN\">–</td>")
                continue
            ci = fmt_ci(r.ci_low, r.ci_high).strip()
            extra = (f"<br><span class=ci>{_e(ci)}</span>" if ci else "") + (
                f"<br><span class=spread>{_e(spread)}</span>" if spread else "")
            cls = f" class={mark}" if mark else ""
            tip = f" title=\"{mark}\"" if mark else ""
            tds.append(f"<td{cls}{tip}{v or ' data-v=NaN'}>{_e(fmt(r.value))}{extra}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<div class=scroll><table class=\"sortable metric\">{head}<tbody>{''.join(body)}</tbody></table></div>"


def ranking(groups: list[tuple[tuple[Any, ...], pd.DataFrame]]) -> pd.DataFrame:
    """Mean rank over NFE per solver and metric of one section, and their mean (``overall``), best first."""
    frames = []
    for key, g in groups:
        r = mean_ranks(g, higher_is_better(str(key[4]))).set_index("solver")
        frames.append(r.rename(columns=lambda c, m=key[4]: f"{m}:{c}"))
    table = pd.concat(frames, axis=1)
    metrics = [str(k[4]) for k, _ in groups]
    table["overall"] = table[[f"{m}:mean_rank" for m in metrics]].mean(axis=1)
    table["best"] = table[[f"{m}:best" for m in metrics]].sum(axis=1)
    table["tied"] = table[[f"{m}:tied" for m in metrics]].sum(axis=1)
    return table.sort_values(["overall"], kind="stable")


def ranking_table(rank: pd.DataFrame, metrics: list[str]) -> str:
    head = ("<thead><tr><th>solver</th><th>mean rank</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics)
            + "<th>best</th><th>tied</th></tr></thead>")
    body = []
    for solver, r in rank.iterrows():
        cells = [f"<td>{_e(solver)}</td>", f"<td data-v=\"{r['overall']!r}\"><b>{r['overall']:.2f}</b></td>"]
        for m in metrics:
            v = r.get(f"{m}:mean_rank")
            cells.append("<td data-v=NaN>–</td>" if is_nan(v) else f"<td data-v=\"{v!r}\">{v:.2f}</td>")
        cells.append(f"<td data-v=\"{int(r['best'])}\">{int(r['best'])}</td>")
        cells.append(f"<td data-v=\"{int(r['tied'])}\">{int(r['tied'])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class=scroll><table class=\"sortable ranking\">{head}<tbody>{''.join(body)}</tbody></table></div>"


def _sections(df: pd.DataFrame) -> dict[tuple[Any, ...], list[tuple[tuple[Any, ...], pd.DataFrame]]]:
    """Tables grouped by section: (model, guidance, schedule, seed, protocol label)."""
    out: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], pd.DataFrame]]] = {}
    for key, g in groups(df):
        out.setdefault((key[0], key[1], key[2], key[3], protocol_label(g)), []).append((key, g))
    return out


# -- markdown (paper comparison) ------------------------------------------------------------------------------
def markdown_html(md: str) -> str:
    """The subset of markdown the report writes (headings, paragraphs, pipe tables, `code`) as HTML."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0

    def inline(t: str) -> str:
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(t))

    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not re.fullmatch(r"\|(-+\|)+", lines[i].replace(" ", "")):
                    rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<div class=scroll><table class=sortable><thead><tr>{head}</tr></thead><tbody>{body}"
                       "</tbody></table></div>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


# -- the answer (dpmbench.report.recommend) ---------------------------------------------------------------------
def _answer_row(a: Any, many_seeds: bool) -> str:
    """One row of a recommendation table: setting, budget, the cell to use with its CI and cost, the ties."""
    setting = a.guidance + (f", seed {a.seed}" if many_seeds else "") + (f", {a.label}" if a.label else "")
    if a.best is None:
        return (f"<tr><td>{_e(a.model)}</td><td>{_e(setting)}</td><td>≤ {a.budget}</td><td colspan=4>no "
                f"{_e(a.metric)} result at NFE ≤ {a.budget}</td></tr>")
    b = a.best
    from dpmbench.report.recommend import ties_text

    ties = ties_text(a)
    per = "" if is_nan(b.s_per_sample) else fmt(b.s_per_sample)
    return (f"<tr><td>{_e(a.model)}</td><td>{_e(setting)}</td><td>≤ {a.budget}</td><td><b>{_e(b.solver)}</b><br>"
            f"<span class=ci>{_e(b.schedule)}, NFE {b.nfe}</span></td><td data-v=\"{b.value!r}\">{_e(fmt(b.value))}"
            f"<br><span class=ci>{_e(fmt_ci(*b.ci).strip())}</span></td><td>{_e(per)}</td><td>{_e(ties)}</td></tr>")


def _answer_table(answers: list[Any], many_seeds: bool) -> str:
    head = ("<thead><tr><th>model</th><th>guidance</th><th>NFE budget</th><th>use</th><th>value [95% CI]</th>"
            "<th>s/sample</th><th>tied with</th></tr></thead>")
    rows = "".join(_answer_row(a, many_seeds) for a in answers)
    return f"<div class=scroll><table class=\"sortable text\">{head}<tbody>{rows}</tbody></table></div>"


def recommendation_html(df: pd.DataFrame) -> str:
    """The index page's "Which solver?" section: per model, setting and NFE budget (5 / 10 / 20 within its NFEs), the
    solver and schedule to use (``dpmbench.report.recommend``)."""
    from dpmbench.report.recommend import RULE, table_answers

    answers = table_answers(df) if not df.empty else []
    if not answers:
        return ""
    return (f"<h2 id=answer>Which solver?</h2><p class=prov>{_e(RULE)}</p>"
            + _answer_table(answers, df["seed"].nunique() > 1))


def answer_html(model: str, df: pd.DataFrame, pareto: dict[tuple[Any, ...], Path] | None = None) -> str:
    """A model page's first section: which solver at each NFE budget (5 / 10 / 20 within its NFEs), the sentence to copy
    (with the diffusers line) and the model's Pareto figures (``pareto``: key (model, ...) -> figure)."""
    from dpmbench.report.recommend import RULE, budgets, default_metric, recommend, sentence

    metric = default_metric(df, model)
    answers = [a for n in budgets(df, model, metric) for a in recommend(df, model, n, metric)]
    parts = [f"<h2 id=answer>Which solver? ({_e(metric)})</h2><p class=prov>{_e(RULE)}</p>",
             _answer_table(answers, df["seed"].nunique() > 1), "<ul>"]
    code = re.compile(r"`([^`]+)`")  # the sentence's `spans` as code
    parts += ["<li>" + code.sub(r"<code>\1</code>", _e(sentence(a))) + "</li>" for a in answers if a.best is not None]
    parts.append("</ul>")
    for key, path in (pareto or {}).items():
        if key[0] == model:
            parts.append(f"<figure><img src=\"figures/{_e(path.name)}\" alt=\"{_e(key[4])}: Pareto fronts\">"
                         f"<figcaption>{_e(key[4])} vs NFE and vs seconds of sampling per sample (guidance "
                         f"{_e(key[1])}): every (solver, schedule, NFE) cell; the step line is the Pareto front; "
                         "stars: the best at each NFE; rings: the best within the same time.</figcaption></figure>")
    return "\n".join(parts)


# -- pages --------------------------------------------------------------------------------------------------
def model_page(model: str, df: pd.DataFrame, figures: dict[tuple[Any, ...], Path],
               grids: dict[tuple[str, ...], Path], entries: list[dict[str, Any]],
               pareto: dict[tuple[Any, ...], Path] | None = None) -> str:
    many_seeds = df["seed"].nunique() > 1
    sections = _sections(df[df["model"] == model])
    toc, body = ["<li><a href=\"#answer\">Which solver?</a></li>"], [answer_html(model, df, pareto)]
    my_grids = [(k, p) for k, p in grids.items() if k[0] == model]
    if my_grids:
        body.append("<h2 id=samples>Samples</h2>")
        for k, p in my_grids:
            body.append(f"<figure><img src=\"figures/{_e(p.name)}\" alt=\"samples of {_e(model)}\">"
                        f"<figcaption>First samples of every solver at the smallest NFE (guidance {_e(k[1])}, seed "
                        f"{_e(k[2])}, schedule {_e(k[3])}); top row: the reference from the same x_T (the exact ODE "
                        "solutions, or a trained network's high-NFE solver run, as labelled)."
                        "</figcaption></figure>")
    for skey, tables in sections.items():
        _, guidance, schedule, seed, label = skey
        anchor = slug(f"g{guidance}-{schedule}-s{seed}-{label}")
        heading = f"guidance {guidance} · schedule {schedule}" + (f" · seed {seed}" if many_seeds else "") + (
            f" · {label}" if label else "")
        toc.append(f"<li><a href=\"#{anchor}\">{_e(heading)}</a></li>")
        body.append(f"<h2 id=\"{anchor}\">{_e(heading)}</h2>")
        metrics = [str(k[4]) for k, _ in tables]
        body.append("<h3>Ranking (mean rank over NFE)</h3>" + ranking_table(ranking(tables), metrics)
                    + "<p class=prov>Per metric: the solver's rank at each NFE (1 = best; a diverged value ranks "
                    "last), averaged over NFE; mean rank: the average over the metrics the solver has (stochastic "
                    "solvers have no pathwise metric such as rmse_exact). best / tied: columns where it was marked "
                    "so.</p>")
        for key, g in tables:
            body.append(f"<h3 id=\"{anchor}-{slug(key[4])}\">{_e(title(key, many_seeds, label))}</h3>")
            body.append(metric_table(g))
            body.append(_protocol_line(g))
            if key in figures:
                body.append(f"<figure><img src=\"figures/{_e(figures[key].name)}\" alt=\"{_e(key[4])} vs NFE\" "
                            f"><figcaption>{_e(key[4])} vs NFE, log-log; the "
                            "5 best by mean rank bold with 95% CI bands; colour = solver family, line style = "
                            "variant.</figcaption></figure>")
    mine = [e for e in entries if e["model"] == model]
    if mine:
        body.append("<h2 id=papers>Published numbers beside ours</h2>")
        body.append(markdown_html(paper_comparison_markdown(df[df["model"] == model], mine).split("\n", 2)[2]))
    body.append("<h2 id=provenance>Provenance</h2>" + provenance_table(df[df["model"] == model]))
    header = (f"<nav class=crumbs><a href=\"index.html\">dpmbench leaderboard</a> › {_e(model)}</nav>"
              f"<h1>{_e(model)}</h1><p>{READING}</p>")
    nav = "<details open><summary>Sections</summary><ul>" + "".join(toc) + "</ul></details>"
    return _page(f"{model} · dpmbench", header, nav + "\n".join(body))


def _card(model: str, df: pd.DataFrame) -> str:
    g = df[df["model"] == model]
    nfes = sorted(int(n) for n in g["nfe"].unique())
    meta = (f"{g['solver'].nunique()} solvers · NFE {nfes[0]}–{nfes[-1]} · metrics "
            f"{', '.join(sorted(set(g['metric'])))} · guidance {', '.join(dict.fromkeys(g['guidance']))}")
    parts = [f"<div class=card><h2><a href=\"model-{slug(model)}.html\">{_e(model)}</a></h2>"
             f"<div class=meta>{_e(meta)}</div>"]
    for skey, tables in _sections(g).items():
        rank = ranking(tables).head(3)
        heading = f"guidance {skey[1]} · {skey[2]}" + (f" · seed {skey[3]}" if g["seed"].nunique() > 1 else "") + (
            f" · {skey[4]}" if skey[4] else "")
        items = []
        for solver, r in rank.iterrows():
            pill = (f"<span class=\"pill best\">best ×{int(r['best'])}</span>" if r["best"] else "") + (
                f"<span class=\"pill tied\">tied ×{int(r['tied'])}</span>" if r["tied"] else "")
            items.append(f"<li><b>{_e(solver)}</b> <span class=ci>mean rank {r['overall']:.2f}</span>{pill}</li>")
        parts.append(f"<div><b>{_e(heading)}</b><ol>{''.join(items)}</ol></div>")
    parts.append("</div>")
    return "".join(parts)


def index_page(df: pd.DataFrame, models: Iterable[str], data_files: list[str]) -> str:
    runs = sorted(set(df["run"])) if not df.empty else []
    dates = sorted(df["date"].dropna()) if not df.empty else []
    when = f"{dates[0][:10]} – {dates[-1][:10]}" if dates and dates[0][:10] != dates[-1][:10] else (
        dates[0][:10] if dates else "date unrecorded")
    header = ("<h1>dpmbench leaderboard</h1><p>Which diffusion sampler gives the best samples at a given budget of "
              f"network evaluations (NFE)? {df['solver'].nunique() if not df.empty else 0} solvers on "
              f"{len(list(models))} models, merged from {len(runs)} run(s) ({_e(when)}).</p>")
    body = ["<div class=legend>" + READING + "</div>", recommendation_html(df), "<h2>Models</h2><div class=cards>"]
    body += [_card(m, df) for m in models]
    body.append("</div>")
    body.append("<h2>Runs and provenance</h2>" + provenance_table(df))
    links = " · ".join(f"<a href=\"{_e(f)}\">{_e(f)}</a>" for f in data_files)
    body.append(f"<h2>Data</h2><p><a href=\"papers.html\">Published numbers beside ours</a> · {links}</p>")
    return _page("dpmbench leaderboard", header, "\n".join(body))


def write_site(df: pd.DataFrame, site: Path, figures: dict[tuple[Any, ...], Path],
               grids: dict[tuple[str, ...], Path], entries: list[dict[str, Any]],
               data: Iterable[Path] = (), pareto: dict[tuple[Any, ...], Path] | None = None) -> list[Path]:
    """Write the static site into ``site`` (figures, ``pareto`` figures and data files copied in); returns the HTML
    pages."""
    df = with_protocol(df) if not df.empty else df
    site.mkdir(parents=True, exist_ok=True)
    _write(site / "assets" / "site.css", CSS)
    _write(site / "assets" / "site.js", JS)
    for p in [*figures.values(), *grids.values(), *(pareto or {}).values()]:
        _copy(p, site / "figures" / p.name)
    data_files = []
    for p in data:
        _copy(Path(p), site / Path(p).name)
        data_files.append(Path(p).name)
    models = list(dict.fromkeys(df["model"])) if not df.empty else []
    pages = []
    for m in models:
        pages.append(site / f"model-{slug(m)}.html")
        _write(pages[-1], model_page(m, df, figures, grids, entries, pareto))
    papers = markdown_html(paper_comparison_markdown(df, entries))
    header = ("<nav class=crumbs><a href=\"index.html\">dpmbench leaderboard</a> › papers</nav>"
              "<h1>Published numbers beside ours</h1>")
    pages.append(site / "papers.html")
    _write(pages[-1], _page("papers · dpmbench", header, papers))
    pages.insert(0, site / "index.html")
    _write(pages[0], index_page(df, models, data_files))
    _write(site / "site.json", json.dumps({"pages": [p.name for p in pages]}, indent=1) + "\n")
    return pages


__all__ = ["answer_html", "markdown_html", "metric_table", "model_page", "provenance_table", "ranking",
           "recommendation_html", "write_site"]
