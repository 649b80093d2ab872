"""The published numbers as HTML tables shaped like the papers' own: per paper and table (and model, metric,
schedule, guidance), solvers as rows and NFEs as columns, the published number with ours beside it.

What keeps a number from being compared is said once: a table whose model was not run names the checkpoint it needs
above the table; a cell whose model ran but not that cell shows a dash, explained under the table. The same
matching as the markdown comparison (``dpmbench.report.papers.match_entry``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from dpmbench.report.markup import esc, slug
from dpmbench.report.paper_agreement import (
    AGREEMENT_RULE,
    DIVERGED,
    OUTSIDE,
    OVERLAPS,
    WITHIN,
    agreement,
    differences_legend,
    differences_text,
    spread_text,
)
from dpmbench.report.papers import (
    canonical_solvers,
    fid_protocol,
    match_entry,
    paper_coverage,
    published_bands,
    published_spread,
    setting_key,
)
from dpmbench.report.tables import fmt, fmt_ci, is_nan

LEGEND = ("Published numbers from <code>papers/*.yaml</code> (schema: docs/papers.md), laid out like the paper's "
          "table: solvers as rows, NFE as columns. Under each published number: ours (95% bootstrap CI), "
          "Δ = ours − published, and the known differences between the source's protocol and ours (D1, D2, ... "
          "listed under the paper's heading; sample-count where ours ran another sample count than the published "
          "number states). Colour: green within the published band, amber where only our CI meets it, red outside. "
          + esc(AGREEMENT_RULE.replace("**", "")) + " Ours match the published setting only as far as model, "
          "metric, solver, NFE, schedule and guidance are listed.")
VERDICT_CLASS = {WITHIN: "yes", OVERLAPS: "near", OUTSIDE: "no", DIVERGED: "no"}


def _table_key(e: dict[str, Any]) -> tuple[str, ...]:
    """What one paper-shaped table holds: one table of the paper, one model, metric, schedule and guidance."""
    return (str(e["table"]), str(e["model"]), str(e["metric"]), str(e.get("schedule", "any")),
            str(e.get("guidance", "any")))


def _ours(sel: pd.DataFrame, e: dict[str, Any], published: list[float], band: tuple[float, float]) -> str:
    """Our value(s) of one published number: value, CI, delta, the agreement verdict (class and tooltip) and the
    known differences that apply."""
    parts = []
    span = esc(spread_text(published, band))
    for r in sel.itertuples():
        verdict = agreement(float(r.value), r.ci_low, r.ci_high, band)
        kd = differences_text(e, getattr(r, "n_samples", None))
        kd_div = f"<div class=kd>{esc(kd)}</div>" if kd else ""
        if is_nan(r.value):
            parts.append(f"<div class=\"ours no\" title=\"{span}\">ours: diverged</div>{kd_div}")
            continue
        where = "" if "schedule" in e and "guidance" in e else f" ({r.schedule}, g {r.guidance})"
        prov = fid_protocol(r)
        parts.append(f"<div class=\"ours {VERDICT_CLASS[verdict]}\" title=\"{esc(verdict)}; {span}\">ours "
                     f"{esc(fmt(r.value))}<span class=ci>{esc(fmt_ci(r.ci_low, r.ci_high))}</span> "
                     f"Δ {float(r.value) - float(e['value']):+.3g}{esc(where)}"
                     + (f"<span class=prov>{esc(prov)}</span>" if prov else "")
                     + f"</div>{kd_div}")
    return "".join(parts)


def _table(key: tuple[str, ...], numbered: list[tuple[int, dict[str, Any]]], df: pd.DataFrame,
           canon: pd.Series | None, models: set[str], spread: dict[tuple[Any, ...], list[float]],
           bands: dict[tuple[Any, ...], tuple[float, float]], found: dict[int, bool]) -> str:
    """One paper-shaped table (solver x NFE) of the entries ``numbered`` (index in the entries, entry) with its
    caption and, once, why numbers are missing; ``found[index]``: whether the entry has a result of ours."""
    es = [e for _, e in numbered]
    table, model, metric, schedule, guidance = key
    nfes = sorted({int(e["nfe"]) for e in es})
    solvers = list(dict.fromkeys(str(e["solver"]) for e in es))
    cells: dict[tuple[str, int], str] = {}
    model_run = model in models
    missing = 0
    for i, e in numbered:
        sel, _why = match_entry(df, e, canon, models)
        found[i] = not sel.empty
        pub = f"<div class=pub>{esc(e.get('printed', e['value']))}</div>"
        if sel.empty:
            missing += model_run
            kd = differences_text(e)
            ours = ("<div class=\"ours none\">–</div>" if model_run else "") + (
                f"<div class=kd>{esc(kd)}</div>" if kd else "")
        else:
            ours = _ours(sel, e, spread[setting_key(e)], bands[setting_key(e)])
        cells[(str(e["solver"]), int(e["nfe"]))] = pub + ours
    pages = sorted({str(e["page"]) for e in es if "page" in e})
    caption = (f"Table {table}" if str(table)[:1].isdigit() else str(table)) + (
        f" (p. {', '.join(pages)})" if pages else "") + f" · {model} · {metric} · schedule {schedule}" + (
        f" · guidance {guidance}")
    head = "<thead><tr><th>solver</th>" + "".join(f"<th>NFE {n}</th>" for n in nfes) + "</tr></thead>"
    rows = []
    for s in solvers:
        tds = "".join(f"<td>{cells.get((s, n), '')}</td>" for n in nfes)
        rows.append(f"<tr><td class=spec>{esc(s)}</td>{tds}</tr>")
    notes = []
    if not model_run:
        checkpoints = sorted({str(e.get("checkpoint", e["model"])) for e in es})
        notes.append(f"Not run here: needs checkpoint {esc('; '.join(checkpoints))} (model <code>{esc(model)}</code> "
                     "is not in these results).")
    elif missing:
        notes.append(f"–: {missing} number(s) without a result of ours: the model ran, but not that solver at that "
                     "NFE with this schedule and guidance.")
    note = "".join(f"<p class=note>{n}</p>" for n in notes)
    return (f"<h3 id=\"{slug('t-' + '-'.join(key))}\">{esc(caption)}</h3>{note}<div class=scroll><table "
            f"class=\"paper\">{head}<tbody>{''.join(rows)}</tbody></table></div>")


def papers_html(df: pd.DataFrame, entries: list[dict[str, Any]], coverage: bool = True) -> str:
    """Every published number in ``entries`` beside ours, as paper-shaped tables per paper (HTML body), opening
    with one coverage line per paper (``coverage``)."""
    if not entries:
        return f"<p class=legend>{LEGEND}</p><p><i>No papers/*.yaml entries.</i></p>"
    canon = canonical_solvers(df)
    models = set(df["model"]) if not df.empty else set()
    spread = published_spread(entries)
    bands = published_bands(entries)
    found: dict[int, bool] = {}
    body = []
    for paper in dict.fromkeys(e["paper"] for e in entries):
        es = [e for e in entries if e["paper"] == paper]
        url, version = es[0].get("url"), es[0].get("version")
        cite = f"<p class=prov>Source: {esc(url)}{esc(', ' + str(version)) if version else ''}</p>" if url else ""
        legend = differences_legend(es)
        kds = ("<ul class=kd>" + "".join(f"<li><b>{esc(d['label'])}</b> {esc(d['kind'])}: {esc(d['detail'])} "
                                         f"<span class=prov>({esc(d['source'])})</span></li>" for d in legend)
               + "</ul>") if legend else ""
        body.append(f"<h2 id=\"{slug('p-' + paper)}\">{esc(paper)}</h2>{cite}{kds}")
        tables: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
        for i, e in enumerate(entries):
            if e["paper"] == paper:
                tables.setdefault(_table_key(e), []).append((i, e))
        body += [_table(k, t, df, canon, models, spread, bands, found) for k, t in tables.items()]
    head = [f"<div class=legend>{LEGEND}</div>"]
    if coverage:
        items = []
        for c in paper_coverage(df, entries, found):
            need = "; ".join(f"{esc(k)} ({v})" for k, v in c["need"].items())
            items.append(f"<li><a href=\"#{slug('p-' + c['paper'])}\"><b>{esc(c['paper'])}</b></a>: {c['numbers']} "
                         f"numbers, {c['ours']} with a result here" + (f"; not run, checkpoint needed: {need}"
                                                                        if need else "")
                         + (f"; {c['cells']} with the model run but not that cell" if c["cells"] else "") + "</li>")
        head.append("<h2 id=coverage>Coverage</h2><ul class=coverage>" + "".join(items) + "</ul>")
    return "\n".join(head + body)


__all__ = ["LEGEND", "papers_html"]
