"""The reports of a benchmark run: results.csv (tidy), leaderboard.md/.html, figures/, paper_comparison.md,
claims.md, provenance, and the static site.

Works on any results directory (metric ``*.json`` files, plus shard ``.npz`` files for sample grids), with or
without Snakemake: ``dpmbench report RESULTS_DIR --out reports/ [--papers papers/]``. The modules, each one job:
``tables`` (the public table API), ``leaderboard`` (markdown and HTML), ``figures``, ``papers`` (published numbers
and the comparison; ``paper_agreement``: the agreement rule and the known differences), ``claims``, ``merge``
(several runs, provenance), ``stats`` (paired comparisons), ``site``, ``regress`` (the regression gate),
``coverage`` (which published numbers a config reproduces) and ``recommend`` (the solver to use per model and NFE
budget: ``dpmbench recommend``, the leaderboard's Recommendation).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.artifacts import named_searches
from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.io import atomic_write
from dpmbench.report.claims import claims_markdown
from dpmbench.report.figures import (
    figure_tasks,
    metric_figure,
    pareto_figure,
    pareto_tasks,
    write_figures,
    write_sample_grids,
)
from dpmbench.report.leaderboard import leaderboard_html, leaderboard_markdown
from dpmbench.report.merge import merge_runs, write_provenance
from dpmbench.report.papers import load_papers, paper_comparison_markdown, published_spread
from dpmbench.report.tables import COLUMNS, COST, UNPINNED, any_unpinned, collect, higher_is_better, is_nan


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

    from dpmbench.report.figures import pyplot

    pyplot()
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``results.csv``: DESIGN.md's columns (``seed`` only when there are several seeds), then
    ``parallel_rounds`` where a parallel solver ran, the cost columns, and last ``unpinned`` where some cell was
    computed from a file without a pinned sha256 (``--trust-unpinned``)."""
    rounds = ["parallel_rounds"] if df["parallel_rounds"].notna().any() else []  # parallel solvers ran
    marked = [UNPINNED] if any_unpinned(df) else []  # a cell computed from an unpinned file: the last column
    table = df[[c for c in COLUMNS if c in df.columns] + rounds + COST + marked]
    table = table if table["seed"].nunique() > 1 else table.drop(columns="seed")
    return table.assign(value=table["value"].map(lambda v: "nan" if is_nan(v) else v))  # nan: a diverged run


def write_report(results_dirs: str | Path | Sequence[str | Path], out: str | Path,
                 papers_dir: str | Path | None = None, site: str | Path | None = None, jobs: int = 1,
                 previous_claims: str | Path | None = None) -> pd.DataFrame:
    """Write ``results.csv``, ``provenance.csv``/``.json``, ``leaderboard.md``, ``leaderboard.html``,
    ``paper_comparison.md``, ``claims.md`` (the seed papers' claims checked on these results,
    ``dpmbench.report.claims``) and ``figures/`` (metric vs NFE per table; per model a Pareto figure of its
    recommendation's metric vs NFE and vs seconds per sample, ``pareto_*.png``) of one or several results
    directories (merged: ``dpmbench.report.merge``), and with ``site`` a static site there
    (``dpmbench.report.site``; its diagnostics pages from the cells' shards: ``dpmbench.report.persample``). With
    ``jobs`` > 1 the figures are drawn by ``jobs`` worker processes after the tables are written (the same files: a
    figure does not depend on who draws it). ``previous_claims`` (default: the ``claims.md`` already in ``out``): the
    ledger this one replaces; claims.md then closes with every verdict that changed, before -> after, with the
    reason."""
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
    table = results_table(df)
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
    fronts = pareto_tasks(df, out) if not df.empty else []
    with _figure_pool(jobs) as pool:
        submit = pool.submit if pool is not None else _done
        pending = [submit(write_sample_grids, d, out) for d in dirs]  # the sample grids first: the longest tasks
        pending += [submit(metric_figure, *args, **kwargs) for _, args, kwargs in tasks]
        pending += [submit(pareto_figure, *args, **kwargs) for _, args, kwargs in fronts]
        done = [f.result() for f in pending]
    grid_maps, drawn = done[:len(dirs)], done[len(dirs):len(dirs) + len(tasks)]
    figures = {key: path for (key, _, _), path in zip(tasks, drawn, strict=True)}
    pareto = {key: path for (key, _, _), path in zip(fronts, done[len(dirs) + len(tasks):], strict=True)}
    grids: dict[tuple[str, ...], Path] = {}
    for m in grid_maps:
        grids.update(m)
    page = leaderboard_html(df, figures, grids)
    atomic_write(out / "leaderboard.html", lambda tmp: tmp.write_text(page))
    if site is not None:
        from dpmbench.report.persample import collect_per_sample
        from dpmbench.report.site import write_site

        per_sample = collect_per_sample(dirs, models=sorted(set(df["model"])))  # the rows' diagnostics
        write_site(df, Path(site), figures, grids, entries,
                   data=[out / "results.csv", out / "provenance.csv", out / "provenance.json"], per_sample=per_sample,
                   pareto=pareto)
    return df


__all__ = ["COLUMNS", "collect", "higher_is_better", "leaderboard_html", "leaderboard_markdown", "load_papers",
           "figure_tasks", "paper_comparison_markdown", "published_spread", "results_table", "write_figures",
           "write_report", "write_sample_grids"]
