"""Figures of a report: metric vs NFE per table (readable with dozens of solvers), and sample grids.

Solvers are styled by family (the spec's name: one colour each) and variant (its options: line style and marker);
the best few by mean rank over NFE are drawn bold, with CI bands, and lead the legend. Where some samples diverged,
two panels beside the mean show the per-sample median and the share of diverged samples, so a reader sees *how*
a solver fails (a few samples blowing up, or all of them drifting).
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dpmbench.io import CorruptFileError, atomic_write, load_npz, verify_npz
from dpmbench.report.stats import mean_ranks
from dpmbench.report.tables import groups, higher_is_better, model_error_floor, protocol_label, title, with_protocol

HIGHLIGHT = 5  # solvers drawn bold (best mean rank), with CI bands
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")


def _palette(n: int) -> list[Any]:
    """``n`` distinct colours: tab10, then the darker and lighter halves of tab20b/tab20c."""
    import matplotlib

    colours = list(matplotlib.colormaps["tab10"].colors)
    for name in ("tab20b", "tab20c"):
        cmap = matplotlib.colormaps[name].colors
        colours += [cmap[i] for i in range(0, 20, 4)] + [cmap[i] for i in range(2, 20, 4)]
    return [colours[i % len(colours)] for i in range(n)]


def solver_styles(solvers: list[str]) -> dict[str, tuple[Any, str, str]]:
    """(colour, line style, marker) per solver spec: one colour per family (the name before ':'), the variants of
    a family (its option sets, in order of appearance) told apart by line style and marker."""
    families = list(dict.fromkeys(s.split(":", 1)[0] for s in solvers))
    colours = dict(zip(families, _palette(len(families)), strict=True))
    seen: dict[str, int] = {}
    out = {}
    for s in solvers:
        fam = s.split(":", 1)[0]
        i = seen.get(fam, 0)
        seen[fam] = i + 1
        out[s] = (colours[fam], LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
    return out


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_figure(g: pd.DataFrame, title: str, path: Path, higher_is_better: bool = False,
                  floor: float | None = None) -> Path:
    """Metric vs NFE (log-log) of one table, a line per solver (styled by :func:`solver_styles`); the
    :data:`HIGHLIGHT` best by mean rank are bold with 95% CI bands and lead the legend (numbered by rank). With
    diverged samples: panels of the per-sample median and of the share of diverged samples beside it. ``floor``
    (a trained network's squared model error, on ``mse_ref``) is drawn as a dashed line: below it a better solver
    no longer shows in sample quality."""
    plt = pyplot()
    ranking = list(mean_ranks(g, higher_is_better)["solver"])
    styles = solver_styles(list(dict.fromkeys(g["solver"])))
    spread = "diverged_share" in g and pd.to_numeric(g["diverged_share"], errors="coerce").fillna(0).gt(0).any()
    ncols = 3 if spread else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7.5 + 4.2 * (ncols - 1), 4.8), squeeze=False)
    ax = axes[0][0]
    positive, finite = True, False
    for rank, solver in enumerate(ranking, start=1):
        s = g[g["solver"] == solver].sort_values("nfe")
        colour, ls, marker = styles[solver]
        top = rank <= HIGHLIGHT
        ok = s["value"].notna()
        finite |= bool(ok.any())
        diverged = "" if ok.all() else f" (diverged at NFE {', '.join(str(n) for n in s['nfe'][~ok])})"
        ax.plot(s["nfe"][ok], s["value"][ok], color=colour, ls=ls, marker=marker, ms=4 if top else 2.5,
                lw=2.2 if top else 0.9, alpha=1.0 if top else 0.75, zorder=3 if top else 2,
                label=f"{rank}. {solver}{diverged}")
        lo, hi = pd.to_numeric(s["ci_low"], errors="coerce"), pd.to_numeric(s["ci_high"], errors="coerce")
        band = ok & lo.notna() & hi.notna()
        if top and band.any():
            ax.fill_between(s["nfe"][band], lo[band], hi[band], color=colour, alpha=0.15, lw=0)
        positive &= bool((s["value"][ok] > 0).all())
    if floor is not None:
        ax.axhline(floor, color="black", ls="--", lw=1.2,
                   label=f"model error² {floor:.3g}: network vs exact ODE solution (floor)")
        positive &= floor > 0
    _axes(ax, g, ("log" if positive else "symlog") if finite else "linear", str(g["metric"].iloc[0]) + " (mean)")
    values = pd.to_numeric(g["value"], errors="coerce").dropna()
    if positive and finite and (values > 0).any():  # limits from the values: a CI reaching 0 does not squash them
        low = min([values[values > 0].min(), *([floor] if floor else [])])
        ax.set_ylim(low / 2, values.max() * 2)
    if spread:
        _spread_panels(axes[0][1], axes[0][2], g, ranking, styles)
    fig.suptitle(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5),
                       title="mean rank over NFE", title_fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def _axes(ax: Any, g: pd.DataFrame, yscale: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale(yscale)
    nfes = sorted(g["nfe"].unique())
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ax.set_xlabel("NFE")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _spread_panels(ax_med: Any, ax_share: Any, g: pd.DataFrame, ranking: list[str],
                   styles: dict[str, tuple[Any, str, str]]) -> None:
    """Per-sample median and share of diverged samples vs NFE, for the solvers that have them."""
    any_median = False
    for rank, solver in enumerate(ranking, start=1):
        s = g[g["solver"] == solver].sort_values("nfe")
        colour, ls, marker = styles[solver]
        top = rank <= HIGHLIGHT
        kw = {"color": colour, "ls": ls, "marker": marker, "ms": 3, "lw": 2.0 if top else 0.9}
        med = pd.to_numeric(s["median"], errors="coerce")
        if med.notna().any():
            any_median = True
            ax_med.plot(s["nfe"][med.notna()], med[med.notna()], **kw)
        share = pd.to_numeric(s["diverged_share"], errors="coerce")
        if share.notna().any():
            ax_share.plot(s["nfe"][share.notna()], 100 * share[share.notna()], **kw)
    _axes(ax_med, g, "log" if any_median else "linear", "per-sample median")
    if not any_median:  # a distributional metric (fd_true, fdd, ...): one value per set, no per-sample median
        ax_med.axis("off")
        ax_med.text(0.5, 0.5, "no per-sample median:\na distributional metric", ha="center", va="center",
                    transform=ax_med.transAxes, fontsize=8, color="0.4")
    _axes(ax_share, g, "linear", "% samples diverged")
    ax_share.set_ylim(-2, 102)


def _npz_meta(path: Path) -> dict[str, Any]:
    f = load_npz(path, "shard")
    return {k: f[k].item() for k in ("model", "solver", "schedule", "guidance", "seed", "nfe") if k in f}


def tile_mosaic(rows: list[np.ndarray], ncol: int) -> tuple[np.ndarray, list[float]]:
    """The samples of every row (N x C x H x W in [-1, 1], C in 1, 3) as one RGB image in [0, 1]: ``ncol`` tiles
    per row, white gaps of H / 8 pixels (at least 1) between tiles; and each row's centre (pixels from the top)."""
    c, h, w = rows[0].shape[1:]
    gap = max(1, h // 8)
    mosaic = np.ones((len(rows) * (h + gap) - gap, ncol * (w + gap) - gap, 3))
    for i, xs in enumerate(rows):
        for j, x in enumerate(np.asarray(xs, np.float64)[:ncol]):
            tile = np.clip((x + 1) / 2, 0, 1)
            mosaic[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = (
                np.repeat(tile, 3, axis=0) if c == 1 else tile).transpose(1, 2, 0)
    return mosaic, [i * (h + gap) + (h - 1) / 2 for i in range(len(rows))]


def write_sample_grids(results_dir: str | Path, out: Path, columns: int = 8) -> dict[tuple[str, ...], Path]:
    """For image models (samples shaped N x C x H x W, C in 1, 3): a grid of the first samples of every solver at the
    smallest NFE, first row the reference (exact ODE solutions, or a trained network's high-NFE solver run), per
    (model, guidance, seed, schedule)."""
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
    plt = pyplot()
    paths = {}
    for key, by_nfe in groups.items():
        nfe = min(by_nfe)
        rows: list[tuple[str, np.ndarray]] = []
        ref = next(iter(by_nfe[nfe].values())).parents[3] / "reference.npz"
        if ref.is_file() and verify_npz(ref):
            f = load_npz(ref)  # exact ODE solutions, or a trained network's high-NFE solver run (reference_solver)
            label = f"reference: {f['solver'].item()} NFE {int(f['nfe'])}" if "solver" in f else "exact"
            rows.append((label, f["x"][:columns]))
        for solver, path in by_nfe[nfe].items():
            rows.append((solver, load_npz(path)["x"][:columns]))
        ncol = max(len(x) for _, x in rows)
        fig, ax = plt.subplots(figsize=(0.75 * ncol + 2.6, 0.75 * len(rows) + 0.4))
        mosaic, centers = tile_mosaic([xs for _, xs in rows], ncol)
        ax.imshow(mosaic, interpolation="nearest")  # one image of every tile: one axes, not one per sample
        ax.set_xticks([])
        ax.set_yticks(centers, [label for label, _ in rows], fontsize=6)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        height = 0.75 * len(rows) + 0.4  # inches: the title keeps 0.3 of them, whatever the number of rows
        fig.suptitle(f"{key[0]} · guidance {key[1]} · seed {key[2]} · {key[3]} · NFE {nfe}", fontsize=8,
                     y=1 - 0.06 / height, va="top")
        fig.subplots_adjust(left=2.4 / (0.75 * ncol + 2.6), right=0.99, top=1 - 0.3 / height, bottom=0.05 / height,
                            wspace=0.05, hspace=0.05)
        paths[key] = _save(fig, out / "figures" / f"samples_{key[0]}_g{key[1]}_seed{key[2]}_{key[3]}_nfe{nfe}.png")
    return paths


# -- cost: the Pareto figures ----------------------------------------------------------------------------------
def running_best(points: list[tuple[float, float, Any]], higher: bool = False) -> list[tuple[float, float, Any]]:
    """The Pareto front of (cost, value, tag) points: sorted by cost (ties by value), each point better than every
    cheaper one (the best within each budget: lower value, or higher with ``higher``); non-finite points skipped."""
    sign = -1.0 if higher else 1.0
    ok = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    front: list[tuple[float, float, Any]] = []
    for p in sorted(ok, key=lambda p: (p[0], sign * p[1])):
        if not front or sign * p[1] < sign * front[-1][1]:
            front.append(p)
    return front


def matched_winners(g: pd.DataFrame, higher: bool = False) -> list[tuple[Any, Any]]:
    """Per NFE of ``g`` (ascending): the NFE-matched winner (the best cell at that NFE) and the time-matched winner
    (the best cell whose seconds per sample are at most the NFE-matched winner's; None without its time)."""
    sign = -1.0 if higher else 1.0
    ok = [r for r in g.itertuples() if math.isfinite(float(r.value))]
    out = []
    for n in sorted({int(r.nfe) for r in ok}):
        at = min((r for r in ok if int(r.nfe) == n), key=lambda r: (sign * float(r.value), str(r.solver)))
        t = float(at.s_per_sample)
        cheaper = [r for r in ok if math.isfinite(float(r.s_per_sample)) and float(r.s_per_sample) <= t]
        timed = min(cheaper, key=lambda r: (sign * float(r.value), float(r.s_per_sample))) if cheaper else None
        out.append((at, timed))
    return out


def pareto_figure(g: pd.DataFrame, title: str, path: Path, higher_is_better: bool = False) -> Path:
    """Two panels of one (model, guidance, seed, protocol, metric), every (solver, schedule, NFE) cell a grey dot: the
    metric vs NFE and vs seconds of sampling per sample, each with its Pareto front (the best within each budget,
    a step line); stars: the NFE-matched winners (best at each NFE), rings: the time-matched winners (best within the
    same time as that NFE's winner; a ring around a star: that winner is also the time-matched one), coloured by
    winning (solver, schedule). Times from several devices are not comparable: the
    title says so."""
    plt = pyplot()
    g = g.assign(value=pd.to_numeric(g["value"], errors="coerce"),
                 s_per_sample=pd.to_numeric(g["s_per_sample"], errors="coerce"))
    winners = matched_winners(g, higher_is_better)
    marked = list(dict.fromkeys(f"{r.solver} ({r.schedule})" for pair in winners for r in pair if r is not None))
    styles = dict(zip(marked, _palette(len(marked)), strict=True))  # one colour per winning (solver, schedule)
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 5.0), squeeze=False)
    finite = g[g["value"].notna()]
    positive = bool(len(finite)) and bool((finite["value"] > 0).all())
    seen: set[str] = set()
    for ax, xcol, xlabel in ((axes[0][0], "nfe", "NFE"), (axes[0][1], "s_per_sample", "seconds per sample")):
        pts = [(float(getattr(r, xcol)), float(r.value), r) for r in finite.itertuples()]
        front = running_best(pts, higher_is_better)
        if not front:
            ax.axis("off")
            ax.text(0.5, 0.5, f"no {xlabel} recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        xs = [p[0] for p in pts if math.isfinite(p[0])]
        ax.scatter(xs, [p[1] for p in pts if math.isfinite(p[0])], s=9, color="0.75", zorder=1,
                   label="a (solver, schedule, NFE) cell" if xcol == "nfe" else None)
        fx, fy = [p[0] for p in front], [p[1] for p in front]
        ax.step(fx + [max(xs)], fy + [fy[-1]], where="post", color="black", lw=1.3, zorder=2,
                label="Pareto front: best within the budget" if xcol == "nfe" else None)
        for nfe_win, time_win in winners:
            for r, marker, size, kind in ((nfe_win, "*", 150, "NFE"), (time_win, "o", 300, "time")):
                x = float(getattr(r, xcol)) if r is not None else math.nan
                if not math.isfinite(x) or (kind == "time" and xcol == "nfe"):
                    continue  # the NFE panel marks the NFE-matched winners only
                key = f"{r.solver} ({r.schedule})"
                face = styles[key] if kind == "NFE" else "none"
                ax.scatter([x], [float(r.value)], marker=marker, s=size, facecolors=face, edgecolors=styles[key],
                           linewidths=1.6, zorder=4, label=None if key in seen else key)
                seen.add(key)
            if xcol == "s_per_sample" and math.isfinite(float(nfe_win.s_per_sample)):
                ax.annotate(str(int(nfe_win.nfe)), (float(nfe_win.s_per_sample), float(nfe_win.value)), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log" if positive else "symlog")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{g['metric'].iloc[0]} ({'higher' if higher_is_better else 'lower'} is better)")
        ax.grid(True, which="major", alpha=0.3)
        if xcol == "nfe":
            nfes = sorted(int(n) for n in finite["nfe"].unique())
            ax.set_xticks(nfes, [str(n) for n in nfes])
            ax.minorticks_off()
    axes[0][0].set_title("vs NFE: stars, the best at each NFE", fontsize=8)
    axes[0][1].set_title("vs time: stars as left (labelled with their NFE); rings, the best within the same time "
                         "(around a star: the same cell)", fontsize=8)
    devices = sorted({str(d) for d in g["device"].dropna()}) if "device" in g else []
    where = f" · timed on {devices[0]}" if len(devices) == 1 else (
        f" · times from {len(devices)} devices: not comparable" if devices else "")
    fig.suptitle(title + where, fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    h2, l2 = axes[0][1].get_legend_handles_labels()
    handles, labels = handles + h2, labels + l2
    axes[0][1].legend(handles, labels, fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5),
                      title="winners (filled star: NFE-matched; ring: time-matched)", title_fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def pareto_tasks(df: pd.DataFrame, out: Path) -> list[tuple[tuple[Any, ...], tuple[Any, ...], dict[str, Any]]]:
    """The Pareto figures (:func:`pareto_figure`): one per model, guidance, seed and protocol, on the metric its
    recommendation uses (``dpmbench.report.recommend.default_metric``); key (model, guidance, seed, protocol label,
    metric)."""
    from dpmbench.report.recommend import default_metric

    df = with_protocol(df)
    many_seeds = df["seed"].nunique() > 1
    tasks = []
    for model in dict.fromkeys(df["model"]):
        metric = default_metric(df, model)
        d = df[(df["model"] == model) & (df["metric"] == metric)]
        for (guidance, seed, _), g in d.groupby(["guidance", "seed", "protocol"], sort=False):
            label = protocol_label(g)
            key = (model, guidance, seed, label, metric)
            seed_part = f"_seed{seed}" if many_seeds else ""
            tag = f"_p{hashlib.sha256(label.encode()).hexdigest()[:8]}" if label else ""
            name = f"pareto_{model}_g{guidance}{seed_part}_{metric}{tag}.png"
            head = f"{model} · {metric} · guidance {guidance}" + (f" · seed {seed}" if many_seeds else "") + (
                f" · {label}" if label else "") + " · every schedule"
            tasks.append((key, (g, head, out / "figures" / name, higher_is_better(metric)), {}))
    return tasks


__all__ = ["HIGHLIGHT", "matched_winners", "metric_figure", "pareto_figure", "pareto_tasks", "running_best",
           "solver_styles", "tile_mosaic", "write_sample_grids"]


def _figure_name(key: tuple[Any, ...], many_seeds: bool, label: str = "") -> str:
    model, guidance, schedule, seed, metric = key[:5]
    protocol = f"_p{hashlib.sha256(label.encode()).hexdigest()[:8]}" if label else ""  # tables shown apart
    return f"{model}_g{guidance}_{schedule}{f'_seed{seed}' if many_seeds else ''}_{metric}{protocol}.png"


def figure_tasks(df: pd.DataFrame, out: Path) -> list[tuple[tuple[Any, ...], tuple[Any, ...], dict[str, Any]]]:
    """The metric-vs-NFE figures (:func:`metric_figure`), one per table (model, guidance, schedule, seed,
    metric, protocol): (table key, positional and keyword arguments of ``metric_figure``)."""
    df = with_protocol(df)
    many_seeds = df["seed"].nunique() > 1
    tasks = []
    for key, g in groups(df):
        label = protocol_label(g)
        tasks.append((key, (g, f"{key[0]} · {title(key, many_seeds, label)}",
                            out / "figures" / _figure_name(key, many_seeds, label), higher_is_better(str(key[4]))),
                      {"floor": model_error_floor(df, key)}))
    return tasks


def write_figures(df: pd.DataFrame, out: Path) -> dict[tuple[Any, ...], Path]:
    """Every figure of ``figure_tasks``, drawn in this process."""
    return {key: metric_figure(*args, **kwargs) for key, args, kwargs in figure_tasks(df, out)}

