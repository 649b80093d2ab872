"""A model's diagnostics page of the static site: per section (guidance, schedule, seed) and solver, the
distribution of its per-sample errors at every NFE (quantiles, the share of diverged samples, the worst samples by
index) and, for image models, its samples at every NFE beside the reference and its worst samples beside theirs.

The leaderboard rows of the model page link here (:func:`row_links`); the data comes from
``dpmbench.report.persample``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dpmbench.io import atomic_write
from dpmbench.report.figures import tile_mosaic
from dpmbench.report.markup import esc, section_anchor, slug, solver_anchor
from dpmbench.report.persample import WORST, Cell, PerSample
from dpmbench.report.tables import fmt

INTRO = ("Per-sample error: each sample's distance to its own target from the same x<sub>T</sub> (rmse_exact: the "
         "exact ODE solution; mse_ref: the reference run), recomputed from the cell's samples with the metric's own "
         "formula; the table's value is the metric over all samples (rmse_exact: the root of the mean squared error, "
         "mse_ref: the mean). A sample is <i>diverged</i> when its error exceeds the reference's own root-mean-square "
         "magnitude. Worst: the sample indices with the largest errors (the same index is the same x<sub>T</sub> for "
         "every solver).")


def page_name(model: str) -> str:
    """The file of a model's diagnostics page."""
    return f"diag-{slug(model)}.html"


def row_links(per_sample: PerSample | None, model: str, guidance: str, schedule: str, seed: int, solver: str) -> str:
    """The links of one leaderboard row to its diagnostics: ``errors`` where per-sample errors exist, ``samples``
    where the model's samples are images ('' where there is neither)."""
    if per_sample is None:
        return ""
    cells = per_sample.of(model, guidance, schedule, seed, solver)
    anchor = solver_anchor(guidance, schedule, seed, solver)
    links = []
    if any(c.errors for c in cells.values()):
        links.append(f"<a class=diag href=\"{page_name(model)}#{anchor}-errors\">errors</a>")
    if any(c.first is not None for c in cells.values()):
        links.append(f"<a class=diag href=\"{page_name(model)}#{anchor}-samples\">samples</a>")
    return f" <span class=links>{' '.join(links)}</span>" if links else ""


def _png(rows: list[np.ndarray], ncol: int, path: Path) -> tuple[int, int]:
    """A tile mosaic of ``rows`` written as a PNG (one pixel per sample pixel; the page scales it up);
    returns its width and height."""
    import matplotlib.image

    mosaic, _ = tile_mosaic(rows, ncol)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: matplotlib.image.imsave(tmp, mosaic, format="png"))
    return mosaic.shape[1], mosaic.shape[0]


def _img(site: Path, rows: list[np.ndarray], labels: list[str], name: str, alt: str) -> str:
    """An image of sample rows with their labels beside it (HTML), written under ``site/figures/diag/``."""
    ncol = max(len(r) for r in rows)
    w, h = _png(rows, ncol, site / "figures" / "diag" / name)
    tile = rows[0].shape[-1]
    scale = max(1, 40 // tile)  # small images drawn bigger, pixel for pixel
    row_h = (h + max(1, tile // 8)) / len(rows) * scale
    labels_html = "".join(f"<div style=\"height:{row_h:.1f}px\">{esc(t)}</div>" for t in labels)
    return (f"<div class=tiles><div class=labels>{labels_html}</div><img class=pixel src=\"figures/diag/{esc(name)}\" "
            f"width=\"{w * scale}\" height=\"{h * scale}\" alt=\"{esc(alt)}\"></div>")


def _errors_table(cells: dict[int, Cell], df: pd.DataFrame, metric: str) -> str:
    """Per NFE: the metric's value, n, the error quantiles, the diverged share and the worst samples."""
    rows = []
    for nfe in sorted(cells):
        ce = cells[nfe].errors.get(metric)
        if ce is None:
            continue
        q = ce.quantiles()
        value = df[(df["nfe"] == nfe) & (df["metric"] == metric)]["value"]
        worst = " · ".join(f"#{i}: {fmt(ce.errors[i]) if np.isfinite(ce.errors[i]) else 'not finite'}"
                          for i in ce.worst(WORST)[:5])
        share = ce.diverged_share()
        rows.append(f"<tr><td>{nfe}</td><td>{cells[nfe].n}</td><td>{esc(fmt(value.iloc[0]) if len(value) else '–')}"
                    "</td>" + "".join(f"<td>{esc(fmt(q[k]) if np.isfinite(q[k]) else 'not finite')}</td>"
                                      for k in ("min", "p25", "median", "p75", "p90", "max"))
                    + f"<td class=\"{'bad' if share else ''}\">{100 * share:.3g}%</td><td class=spec>{esc(worst)}</td>"
                      "</tr>")
    head = ("<thead><tr><th>NFE</th><th>n</th><th>value</th><th>min</th><th>25%</th><th>median</th><th>75%</th>"
            "<th>90%</th><th>max</th><th>diverged</th><th>worst samples (index, error)</th></tr></thead>")
    return (f"<div class=scroll><table class=\"errors\"><caption>{esc(metric)}: per-sample error</caption>{head}<tbody>"
            + "".join(rows) + "</tbody></table></div>")


def _solver_block(site: Path, model: str, skey: tuple[Any, ...], solver: str, cells: dict[int, Cell],
                  reference: np.ndarray | None, df: pd.DataFrame) -> str:
    guidance, schedule, seed = skey
    anchor = solver_anchor(guidance, schedule, seed, solver)
    parts = [f"<h3 id=\"{anchor}\" class=spec>{esc(solver)}</h3>"]
    metrics = list(dict.fromkeys(m for c in cells.values() for m in c.errors))
    if metrics:
        parts.append(f"<div id=\"{anchor}-errors\">"
                     + "".join(_errors_table(cells, df, m) for m in metrics) + "</div>")
    else:
        parts.append(f"<p id=\"{anchor}-errors\" class=note>No per-sample error: no per-sample metric of this "
                     "solver (stochastic solvers have no pathwise error; distributional metrics have no per-sample "
                     "value).</p>")
    nfes = sorted(n for n, c in cells.items() if c.first is not None)
    if nfes:
        rows = ([reference] if reference is not None else []) + [cells[n].first for n in nfes]
        labels = (["reference"] if reference is not None else []) + [f"NFE {n}" for n in nfes]
        name = f"{slug(model)}_{anchor}_samples.png"
        parts.append(f"<div id=\"{anchor}-samples\"><p class=prov>The first samples at every NFE; top: the reference "
                     "from the same x<sub>T</sub>.</p>" + _img(site, rows, labels, name, f"samples of {solver}")
                     + "</div>")
        worst = [n for n in nfes if cells[n].worst is not None]
        if worst:
            c = cells[worst[0]]
            assert c.worst is not None and c.worst_reference is not None and c.worst_index is not None
            metric = next(iter(c.errors))
            name = f"{slug(model)}_{anchor}_worst.png"
            parts.append(f"<p class=prov>The worst samples at NFE {worst[0]} by {esc(metric)} (indices "
                         f"{', '.join(str(i) for i in c.worst_index)}), above their references.</p>"
                         + _img(site, [c.worst, c.worst_reference], ["samples", "references"], name,
                                f"worst samples of {solver}"))
    return "".join(parts)


def diagnostics_body(site: Path, model: str, df: pd.DataFrame, per_sample: PerSample) -> str:
    """The body of a model's diagnostics page (its images written under ``site/figures/diag/``)."""
    mine = df[df["model"] == model]
    body, toc = [f"<div class=legend>{INTRO}</div>"], []
    for (guidance, schedule, seed), g in mine.groupby(["guidance", "schedule", "seed"], sort=False):
        skey = (str(guidance), str(schedule), int(seed))
        heading = f"guidance {guidance} · schedule {schedule} · seed {seed}"
        anchor = "diag-" + section_anchor(guidance, schedule, seed)
        toc.append(f"<li><a href=\"#{anchor}\">{esc(heading)}</a></li>")
        body.append(f"<h2 id=\"{anchor}\">{esc(heading)}</h2>")
        reference = per_sample.references.get((model, *skey))
        for solver in dict.fromkeys(g["solver"]):
            cells = per_sample.of(model, *skey, solver)
            if cells:
                body.append(_solver_block(site, model, skey, solver, cells, reference, g[g["solver"] == solver]))
    nav = "<details open><summary>Sections</summary><ul>" + "".join(toc) + "</ul></details>"
    return nav + "\n".join(body)


__all__ = ["INTRO", "diagnostics_body", "page_name", "row_links"]
