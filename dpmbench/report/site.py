"""A self-contained static leaderboard site: ``dpmbench report DIR... --site SITE``.

``SITE/index.html`` (models with their leading solvers per metric, the runs and their provenance, how to read the
tables), one page per model (opening with any blocks a caller puts on top, then the ranking: one rank per metric,
never averaged across metrics; then sortable solver x NFE tables per metric with CIs, best/tied marks, per-sample
median and diverged share, figures, sample grids, the paper comparison and the provenance of every table), one
diagnostics page per model (``diag-MODEL.html``: per-sample error distributions and worst samples, linked from every
leaderboard row) and ``papers.html`` (the papers' tables, published numbers beside ours). Plain HTML, one CSS and
one JS file, PNG figures and the CSV data: it opens from the file system, needs no server and names no external URL.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.io import atomic_write
from dpmbench.report.diagnostics import diagnostics_body, page_name, row_links
from dpmbench.report.markup import esc, section_anchor, slug
from dpmbench.report.merge import provenance_summary
from dpmbench.report.paper_tables import papers_html
from dpmbench.report.persample import PerSample
from dpmbench.report.ranking import Ranked, ranking
from dpmbench.report.tables import (
    UNPINNED,
    UNPINNED_MARK,
    fmt,
    fmt_ci,
    groups,
    is_nan,
    protocol_label,
    table_cells,
    title,
    unpinned_legend,
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
.spec,.card li,.card b{overflow-wrap:anywhere;word-break:break-word}
td.spec{white-space:normal;max-width:26em;text-align:left}
.links{white-space:nowrap;font-size:11px}a.diag{margin-left:5px;color:var(--muted)}
.leaders{font-size:12px;color:#344054;margin:-4px 0 8px}
.note{color:#344054;font-size:12.5px;background:#fffaeb;border-left:3px solid #f79009;padding:3px 10px;margin:4px 0}
table.paper td{min-width:5.5em}.pub{font-weight:600}
.ours{font-size:11px;white-space:nowrap}.ours.yes{color:#05603a}.ours.no{color:var(--bad)}.ours.none{color:#98a2b3}
.ours.near{color:#b54708}.kd{font-size:10.5px;color:var(--muted)}ul.kd{font-size:12px;margin:2px 0 10px}
td.bad{color:var(--bad);font-weight:600}caption{text-align:left;font-weight:600;padding:2px 0}
.tiles{display:flex;gap:8px;align-items:flex-start;margin:4px 0 12px}.tiles .labels div{display:flex;
  align-items:center;justify-content:flex-end;font-size:11px;color:var(--muted);white-space:nowrap}
img.pixel{image-rendering:pixelated;border:1px solid var(--line)}
.top-blocks{margin:10px 0 4px}
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
           "Brackets: 95% bootstrap CI, bias-shifted and clipped to the metric's range (a distance's at 0: its true "
           "value is never negative; kid / kdd are unbiased and may read below 0; recall and coverage have none). "
           "<b>Best</b> (green, bold) is marked only where the 95% paired bootstrap CI of "
           "its difference to every other solver at that NFE excludes zero; otherwise the best and every solver it "
           "cannot be told apart from are marked <i>tied</i> (light green). Red: where samples diverged, the "
           "per-sample median and the share of diverged samples (error larger than the target's own RMS). "
           "Ranking: per metric, the solver's mean rank over the NFEs (1 = best); ranks of different metrics are "
           "shown side by side, never averaged. Click a column header to sort.")

_e = esc


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
Links = Callable[[str], str]  # solver -> the HTML links of its row (to its diagnostics)


def _no_links(solver: str) -> str:
    return ""


def metric_table(g: pd.DataFrame, links: Links = _no_links) -> str:
    """A sortable solver x NFE table of one metric: value, CI, best/tied class, median/diverged where any; each
    row's solver with ``links(solver)`` (its diagnostics)."""
    nfes, rows = table_cells(g)
    by = {(r.solver, int(r.nfe)): r for r in g.itertuples()}
    head = "<thead><tr><th>solver</th>" + "".join(f"<th>NFE {n}</th>" for n in nfes) + "</tr></thead>"
    body = []
    for solver, cells in rows:
        tds = [f"<td class=spec>{_e(solver)}{links(solver)}</td>"]
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
            pin = f" {UNPINNED_MARK}" if getattr(r, UNPINNED, False) is True else ""  # an unpinned file's cell
            tds.append(f"<td{cls}{tip}{v or ' data-v=NaN'}>{_e(fmt(r.value) + pin)}{extra}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<div class=scroll><table class=\"sortable metric\">{head}<tbody>{''.join(body)}</tbody></table></div>"


def ranking_table(rank: pd.DataFrame, metrics: list[str], links: Links = _no_links) -> str:
    """A sortable ranking: per solver, its mean rank over NFE under each metric (a column each, the primary metric
    first: the rows' order) with how often it was best / tied there; no column averages metrics."""
    head = ("<thead><tr><th>solver</th>" + "".join(
        f"<th title=\"mean rank over NFE by {_e(m)}\">{'sorted by ' if i == 0 else ''}{_e(m)}</th>"
        for i, m in enumerate(metrics)) + "</tr></thead>")
    body = []
    for solver, r in rank.iterrows():
        cells = [f"<td class=spec>{_e(solver)}{links(str(solver))}</td>"]
        for m in metrics:
            v = r.get(f"{m}:mean_rank")
            if is_nan(v):
                cells.append("<td data-v=NaN>–</td>")
                continue
            best, tied = int(r[f"{m}:best"]), int(r[f"{m}:tied"])
            marks = (f"<br><span class=ci>best ×{best}</span>" if best else "") + (
                f"<br><span class=ci>tied ×{tied}</span>" if tied else "")
            cells.append(f"<td data-v=\"{v!r}\">{v:.2f}{marks}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class=scroll><table class=\"sortable ranking\">{head}<tbody>{''.join(body)}</tbody></table></div>"


RANKING_NOTE = ("Each column: the solver's rank by that metric at each NFE (1 = best; a diverged value ranks last), "
                "averaged over the NFEs; ranks of different metrics are never averaged. Each table is sorted by the "
                "column headed <i>sorted by</i> (its primary metric: the solver's own error where measured), then by "
                "the other columns in order; solvers without it (stochastic solvers have no pathwise metric) come "
                "last. best / tied: NFE columns where the solver was marked so.")


def _not_ranked(metrics: list[str], constant: list[str]) -> str:
    """The section's line on the metrics left out of its ranking ('' where none was)."""
    if not metrics:
        return "<p class=prov>Nothing to rank.</p>"
    return (f"<p class=prov>Not ranked: {_e(', '.join(constant))} (equal for every solver: it does not depend on "
            "the solver).</p>" if constant else "")


def _sections(df: pd.DataFrame) -> dict[tuple[Any, ...], list[tuple[tuple[Any, ...], pd.DataFrame]]]:
    """Tables grouped by section: (model, guidance, schedule, seed, protocol label)."""
    out: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], pd.DataFrame]]] = {}
    for key, g in groups(df):
        out.setdefault((key[0], key[1], key[2], key[3], protocol_label(g)), []).append((key, g))
    return out


def _heading(skey: tuple[Any, ...], many_seeds: bool) -> str:
    _, guidance, schedule, seed, label = skey
    return f"guidance {guidance} · schedule {schedule}" + (f" · seed {seed}" if many_seeds else "") + (
        f" · {label}" if label else "")


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
def _rankings(df: pd.DataFrame) -> dict[tuple[Any, ...], Ranked]:
    """The ranking of every section of ``df`` (the cards and the model pages share them: computed once)."""
    return {skey: ranking(tables) for skey, tables in _sections(df).items()}


def model_page(model: str, df: pd.DataFrame, figures: dict[tuple[Any, ...], Path],
               grids: dict[tuple[str, ...], Path], entries: list[dict[str, Any]],
               per_sample: PerSample | None = None, top_blocks: Sequence[str] = (),
               rankings: dict[tuple[Any, ...], Ranked] | None = None,
               pareto: dict[tuple[Any, ...], Path] | None = None) -> str:
    """A model's page: its answer (which solver at each NFE budget, the sentence to copy, the Pareto figures:
    :func:`answer_html`) and ``top_blocks`` (HTML blocks put first, in order), then the ranking of every section, the
    sections' tables and figures, the sample grids, the published numbers and the provenance. Each leaderboard row
    links to the solver's diagnostics (``per_sample``: ``diag-MODEL.html``). ``rankings``: the sections' rankings
    where already computed (:func:`_rankings`)."""
    many_seeds = df["seed"].nunique() > 1
    mine = df[df["model"] == model]
    sections = _sections(mine)
    top_blocks = [answer_html(model, df, pareto), *top_blocks]
    toc = ["<li><a href=\"#answer\">Which solver?</a></li>", "<li><a href=\"#ranking\">Ranking</a></li>"]
    ranks, body = [], []
    for skey, tables in sections.items():
        _, guidance, schedule, seed, _label = skey
        anchor = section_anchor(guidance, schedule, seed, _label)
        heading = _heading(skey, many_seeds)

        def links(solver: str, g: Any = guidance, s: Any = schedule, sd: Any = seed) -> str:
            return row_links(per_sample, model, str(g), str(s), int(sd), solver)

        rank, metrics, constant = rankings[skey] if rankings and skey in rankings else ranking(tables)
        ranks.append(f"<h3 id=\"rank-{anchor}\">{_e(heading)} <a class=diag href=\"#{anchor}\">tables</a></h3>"
                     + (ranking_table(rank, metrics, links) if metrics else "") + _not_ranked(metrics, constant))
        toc.append(f"<li><a href=\"#{anchor}\">{_e(heading)}</a></li>")
        body.append(f"<h2 id=\"{anchor}\">{_e(heading)}</h2>")
        for key, g in tables:
            body.append(f"<h3 id=\"{anchor}-{slug(key[4])}\">{_e(title(key, many_seeds, _label))}</h3>")
            body.append(metric_table(g, links))
            body.append(_protocol_line(g))
            if key in figures:
                body.append(f"<figure><img src=\"figures/{_e(figures[key].name)}\" alt=\"{_e(key[4])} vs NFE\" "
                            f"><figcaption>{_e(key[4])} vs NFE, log-log; the "
                            "5 best by mean rank bold with 95% CI bands; colour = solver family, line style = "
                            "variant.</figcaption></figure>")
    my_grids = [(k, p) for k, p in grids.items() if k[0] == model]
    if my_grids:
        toc.append("<li><a href=\"#samples\">Samples</a></li>")
        body.append("<h2 id=samples>Samples</h2>")
        for k, p in my_grids:
            body.append(f"<figure><img src=\"figures/{_e(p.name)}\" alt=\"samples of {_e(model)}\">"
                        f"<figcaption>First samples of every solver at the smallest NFE (guidance {_e(k[1])}, seed "
                        f"{_e(k[2])}, schedule {_e(k[3])}); top row: the reference from the same x_T (the exact ODE "
                        "solutions, or a trained network's high-NFE solver run, as labelled). Every NFE of one "
                        f"solver: its <i>samples</i> link, on the <a href=\"{page_name(model)}\">diagnostics page"
                        "</a>.</figcaption></figure>")
    mine_entries = [e for e in entries if e["model"] == model]
    if mine_entries:
        toc.append("<li><a href=\"#papers\">Published numbers</a></li>")
        body.append("<h2 id=papers>Published numbers beside ours</h2>" + papers_html(mine, mine_entries, False))
    toc.append("<li><a href=\"#provenance\">Provenance</a></li>")
    body.append("<h2 id=provenance>Provenance</h2>" + provenance_table(mine))
    nfes = sorted(int(n) for n in mine["nfe"].unique())
    header = (f"<nav class=crumbs><a href=\"index.html\">dpmbench leaderboard</a> › {_e(model)}</nav>"
              f"<h1>{_e(model)}</h1><p>{mine['solver'].nunique()} solvers · NFE {nfes[0]}–{nfes[-1]} · metrics "
              f"{_e(', '.join(sorted(set(mine['metric']))))}"
              + (f" · <a href=\"{page_name(model)}\">per-sample diagnostics</a>" if per_sample is not None else "")
              + "</p>")
    top = ("<!-- top blocks: HTML put first on the page (model_page's top_blocks) -->"
           + (f"<div class=top-blocks>{''.join(top_blocks)}</div>" if top_blocks else ""))
    pins = f"<p class=legend>{_e(unpinned_legend(mine))}</p>" if unpinned_legend(mine) else ""
    first = (pins + f"<section id=ranking><h2>Ranking</h2><p class=prov>{RANKING_NOTE}</p>" + "".join(ranks)
             + "</section>"
             f"<details class=legend><summary>How to read the tables</summary>{READING}</details>")
    nav = "<details><summary>Sections</summary><ul>" + "".join(toc) + "</ul></details>"
    return _page(f"{model} · dpmbench", header, top + first + nav + "\n".join(body))


def _card(model: str, df: pd.DataFrame, rankings: dict[tuple[Any, ...], Ranked] | None = None) -> str:
    g = df[df["model"] == model]
    nfes = sorted(int(n) for n in g["nfe"].unique())
    meta = (f"{g['solver'].nunique()} solvers · NFE {nfes[0]}–{nfes[-1]} · metrics "
            f"{', '.join(sorted(set(g['metric'])))} · guidance {', '.join(dict.fromkeys(g['guidance']))}")
    parts = [f"<div class=card><h2><a href=\"model-{slug(model)}.html\">{_e(model)}</a></h2>"
             f"<div class=meta>{_e(meta)}</div>"]
    for skey, tables in _sections(g).items():
        rank, metrics, _ = rankings[skey] if rankings and skey in rankings else ranking(tables)
        heading = f"guidance {skey[1]} · {skey[2]}" + (f" · seed {skey[3]}" if g["seed"].nunique() > 1 else "") + (
            f" · {skey[4]}" if skey[4] else "")
        if not metrics:
            parts.append(f"<div><b>{_e(heading)}</b>: nothing to rank</div>")
            continue
        first = metrics[0]
        items = []
        for solver, r in rank[rank[f"{first}:mean_rank"].notna()].head(3).iterrows():
            best, tied = int(r[f"{first}:best"]), int(r[f"{first}:tied"])
            pill = (f"<span class=\"pill best\">best ×{best}</span>" if best else "") + (
                f"<span class=\"pill tied\">tied ×{tied}</span>" if tied else "")
            items.append(f"<li><b>{_e(solver)}</b> <span class=ci>mean rank {r[f'{first}:mean_rank']:.2f}</span>"
                         f"{pill}</li>")
        leaders = []
        for m in metrics[1:]:
            top = rank[f"{m}:mean_rank"].dropna()
            if len(top):
                leaders.append(f"{_e(m)}: <span class=spec>{_e(top.idxmin())}</span>")
        parts.append(f"<div><b>{_e(heading)}</b> <span class=ci>· by {_e(first)}, mean rank over NFE</span>"
                     f"<ol>{''.join(items)}</ol>"
                     + (f"<div class=leaders>First by {' · '.join(leaders)}</div>" if leaders else "") + "</div>")
    parts.append("</div>")
    return "".join(parts)


def index_page(df: pd.DataFrame, models: Iterable[str], data_files: list[str],
               rankings: dict[tuple[Any, ...], Ranked] | None = None) -> str:
    """The site's front page: a card per model (its leading solvers per section, by metric), the runs and their
    provenance, the data files."""
    runs = sorted(set(df["run"])) if not df.empty else []
    dates = sorted(df["date"].dropna()) if not df.empty else []
    when = f"{dates[0][:10]} – {dates[-1][:10]}" if dates and dates[0][:10] != dates[-1][:10] else (
        dates[0][:10] if dates else "date unrecorded")
    header = ("<h1>dpmbench leaderboard</h1><p>Which diffusion sampler gives the best samples at a given budget of "
              f"network evaluations (NFE)? {df['solver'].nunique() if not df.empty else 0} solvers on "
              f"{len(list(models))} models, merged from {len(runs)} run(s) ({_e(when)}).</p>")
    pins = f"<p class=legend>{_e(unpinned_legend(df))}</p>" if not df.empty and unpinned_legend(df) else ""
    body = [pins + "<div class=legend>" + READING + "</div>", recommendation_html(df),
            "<h2>Models</h2><div class=cards>"]
    body += [_card(m, df, rankings) for m in models]
    body.append("</div>")
    body.append("<h2>Runs and provenance</h2>" + provenance_table(df))
    links = " · ".join(f"<a href=\"{_e(f)}\">{_e(f)}</a>" for f in data_files)
    body.append(f"<h2>Data</h2><p><a href=\"papers.html\">Published numbers beside ours</a> · {links}</p>")
    return _page("dpmbench leaderboard", header, "\n".join(body))


def write_site(df: pd.DataFrame, site: Path, figures: dict[tuple[Any, ...], Path],
               grids: dict[tuple[str, ...], Path], entries: list[dict[str, Any]],
               data: Iterable[Path] = (), per_sample: PerSample | None = None,
               top_blocks: Mapping[str, Sequence[str]] | None = None,
               pareto: dict[tuple[Any, ...], Path] | None = None) -> list[Path]:
    """Write the static site into ``site`` (figures, ``pareto`` figures and data files copied in); returns the HTML
    pages. ``per_sample`` (``dpmbench.report.persample.collect_per_sample``): the per-sample data of the diagnostics
    pages (none without it); ``top_blocks``: per model, HTML blocks put first on its page (after its answer)."""
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
    rankings = _rankings(df) if not df.empty else {}
    for m in models:
        pages.append(site / f"model-{slug(m)}.html")
        _write(pages[-1], model_page(m, df, figures, grids, entries, per_sample, (top_blocks or {}).get(m, ()),
                                     rankings, pareto))
        if per_sample is not None:
            pages.append(site / page_name(m))
            header = (f"<nav class=crumbs><a href=\"index.html\">dpmbench leaderboard</a> › <a href=\"model-{slug(m)}"
                      f".html\">{_e(m)}</a> › diagnostics</nav><h1>{_e(m)}: per-sample diagnostics</h1>")
            _write(pages[-1], _page(f"{m} diagnostics · dpmbench", header, diagnostics_body(site, m, df, per_sample)))
    header = ("<nav class=crumbs><a href=\"index.html\">dpmbench leaderboard</a> › papers</nav>"
              "<h1>Published numbers beside ours</h1>")
    pages.append(site / "papers.html")
    _write(pages[-1], _page("papers · dpmbench", header, papers_html(df, entries)))
    pages.insert(0, site / "index.html")
    _write(pages[0], index_page(df, models, data_files, rankings))
    _write(site / "site.json", json.dumps({"pages": [p.name for p in pages]}, indent=1) + "\n")
    return pages


__all__ = ["answer_html", "index_page", "metric_table", "model_page", "provenance_table", "ranking_table",
           "recommendation_html", "write_site"]
