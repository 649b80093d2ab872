"""The leaderboard: per model, a solver x NFE table per metric with CIs and best/tied marks, as markdown and as one
self-contained HTML page (figures embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.report.recommend import recommendation_markdown
from dpmbench.report.tables import groups, protocol_label, table_cells, title, unpinned_legend, with_protocol


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """The Recommendation (``dpmbench.report.recommend``: per model and NFE budget, the solver to use), then per
    model, per (guidance, schedule, seed, metric, protocol): a solver x NFE table with CIs; **bold**: best at that NFE
    (the paired CI of its difference to every other solver excludes zero), _(tied)_: statistically tied with the
    best."""
    lines = ["# dpmbench leaderboard", "",
             "Lower is better, except for the metrics marked (higher is better). "
             "**Bold**: best solver at that NFE (the 95% paired bootstrap CI of its difference to every other solver "
             "excludes zero); _(tied)_: the best and the solvers it cannot be told apart from. Brackets: 95% paired "
             "bootstrap CI, bias-shifted and clipped to the metric's range (a distance's at 0: its true value is never "
             "negative; kid / kdd are unbiased and may read below 0; recall and coverage have none: docs/metrics.md). "
             "All solvers of a table start from the same x_T (common random numbers). Where samples "
             "diverged, the per-sample median and the share of diverged samples follow the mean. "
             "(R rounds): a parallel sampler's sequential batched model calls (NFE: its base solver's steps).", ""]
    if df.empty:
        return "\n".join([*lines, "_No results._", ""])
    if unpinned_legend(df):
        lines += [unpinned_legend(df), ""]
    df = with_protocol(df)
    lines.append(recommendation_markdown(df))  # the answer first, then the tables it comes from
    many_seeds = df["seed"].nunique() > 1
    current = None
    for key, g in groups(df):
        if key[0] != current:
            current = key[0]
            lines += [f"## {current}", ""]
        n = int(g["n_samples"].dropna().iloc[0]) if g["n_samples"].notna().any() else 0
        lines += [f"### {title(key, many_seeds, protocol_label(g))} (n={n})", ""]
        nfes, rows = table_cells(g)
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
             "CI, clipped to the metric's range (a distance's at 0; kid / kdd are unbiased and may read below 0). "
             "All solvers of a table start from the same x<sub>T</sub>. Red: per-sample median and share of "
             "diverged samples, where some diverged.</p>"]
    if not df.empty and unpinned_legend(df):
        parts.append(f"<p>{html.escape(unpinned_legend(df))}</p>")
    if df.empty:
        parts.append("<p><i>No results.</i></p>")
    df = with_protocol(df) if not df.empty else df
    many_seeds = not df.empty and df["seed"].nunique() > 1
    current = None
    for key, g in groups(df) if not df.empty else []:
        if key[0] != current:
            current = key[0]
            parts.append(f"<h2>{html.escape(str(current))}</h2>")
            for gkey, path in grids.items():
                if gkey[0] == current:
                    parts.append(_img_tag(path))
        n = int(g["n_samples"].dropna().iloc[0]) if g["n_samples"].notna().any() else 0
        parts.append(f"<h3>{html.escape(title(key, many_seeds, protocol_label(g)))} (n={n})</h3>")
        nfes, rows = table_cells(g)
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

