"""Published numbers (``papers/*.yaml``): loading and validating them, their spread over sources, and the paper
comparison (ours beside each published number)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.errors import DpmbenchError
from dpmbench.report.paper_agreement import (
    AGREEMENT_RULE,
    agreement,
    applies,
    differences_legend,
    differences_text,
    known_differences,
    published_band,
    spread_text,
)
from dpmbench.report.tables import fmt, fmt_ci, is_nan
from dpmbench.yamlfile import read_yaml

# required fields of a published number; `page` is optional (the table id and the source's version locate it)
PAPER_KEYS = ("table", "model", "metric", "solver", "nfe", "value")


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
    """Entries of every ``papers/*.yaml`` (schema: docs/papers.md), each with its paper's name, url, version and file.

    Only ``entries`` are returned (they are compared); a file's ``unpinned`` list (numbers transcribed whose table or
    setting is unclear) is validated but not returned. A file's ``known_differences`` (``paper_agreement``) are
    validated, labelled D1, D2, ... in file order, and each entry carries those that apply to it as ``differences``
    (a list of ``{label, kind, detail, source}``); one that applies to no entry is refused (a ``where`` typo).
    """
    if papers_dir is None or not Path(papers_dir).is_dir():
        return []
    entries = []
    for path in sorted(Path(papers_dir).glob("*.yaml")):
        doc = read_yaml(path) or {}
        if not isinstance(doc, dict) or "paper" not in doc or not isinstance(doc.get("entries"), list):
            raise DpmbenchError(f"invalid papers file {str(path)!r}: needs 'paper' and a list 'entries'")
        diffs = known_differences(doc, f"invalid papers file {str(path)!r}: ")
        used: set[str] = set()
        for i, e in enumerate(doc["entries"]):
            problem = _paper_entry_problem(e if isinstance(e, dict) else {})
            if problem:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: entries[{i}] {problem}")
            mine = [{k: d[k] for k in ("label", "kind", "detail", "source")} for d in diffs if applies(d, e)]
            used |= {d["label"] for d in mine}
            entries.append({**e, "paper": doc["paper"], "url": doc.get("url", ""), "version": doc.get("version", ""),
                            "file": path.name, "differences": mine})
        for j, d in enumerate(diffs):
            if d["label"] not in used:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: known_differences[{j}] applies to no entry "
                                    f"(where: {d.get('where')!r})")
        for i, e in enumerate(doc.get("unpinned") or []):
            problem = _paper_entry_problem(e if isinstance(e, dict) else {})
            if not problem and not isinstance((e or {}).get("why"), str):
                problem = "lacks 'why' (the reason it is not compared)"
            if problem:
                raise DpmbenchError(f"invalid papers file {str(path)!r}: unpinned[{i}] {problem}")
    return entries


@functools.cache
def _canonical(spec: str) -> str:
    """The solver registry's canonical form of a spec (the spec without blanks if no solver parses it); cached:
    a comparison asks for the same few specs of hundreds of published numbers."""
    try:
        from dpmbench.solvers.registry import get_solver

        return get_solver(str(spec)).spec
    except DpmbenchError:
        return str(spec).replace(" ", "")


def setting_key(e: dict[str, Any]) -> tuple[Any, ...]:
    """What a published number measures: the key under which several sources publish the same setting. The end
    time is part of it: DPM-Solver's Sec. 5.1 (t_end 1e-3) and DPM-Solver-v3's Table 12 (1e-4) print different
    numbers for the same solver and NFE, two settings rather than one cross-source spread."""
    g = e.get("guidance", "any")
    t_end = e.get("t_end")
    return (e["model"], e["metric"], _canonical(e["solver"]), int(e["nfe"]), e.get("schedule", "any"),
            "none" if g in (None, "none") else str(float(g)) if g != "any" else "any",
            "any" if t_end is None else f"{float(t_end):.6g}")


def published_spread(entries: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[float]]:
    """Every published value of each setting (over all papers and tables), keyed by ``setting_key``."""
    spread: dict[tuple[Any, ...], list[float]] = {}
    for e in entries:
        spread.setdefault(setting_key(e), []).append(float(e["value"]))
    return spread


def published_bands(entries: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[float, float]]:
    """The published band of each setting (``paper_agreement.published_band``: the cross-source [min, max], each
    value widened by its printed rounding), keyed by ``setting_key``."""
    pairs: dict[tuple[Any, ...], list[tuple[float, str | float]]] = {}
    for e in entries:
        pairs.setdefault(setting_key(e), []).append((float(e["value"]), e.get("printed", e["value"])))
    return {k: published_band(v) for k, v in pairs.items()}


def fid_protocol(r: Any) -> str:
    """How one of our FID rows was computed beside how the published number was: reference statistics, our feature
    extractor and the FID implementation of the published numbers (a reproduction config's ``fid_implementation``),
    as far as the metrics file records them; empty for other metrics."""
    if getattr(r, "metric", None) != "fid":
        return ""
    parts = [f"{label} {v}" for label, v in (("stats", getattr(r, "reference_stats", None)),
                                             ("ours via", getattr(r, "extractor", None)),
                                             ("published with", getattr(r, "fid_implementation", None)))
             if isinstance(v, str) and v]
    return f" [{'; '.join(parts)}]" if parts else ""


def match_entry(df: pd.DataFrame, e: dict[str, Any], canon_col: pd.Series | None,
                models: set[str]) -> tuple[pd.DataFrame, str]:
    """Our rows of the setting of the published number ``e`` (model, metric, NFE, canonical solver, and schedule and
    guidance where the entry states them) and, where there is none, why: the checkpoint it needs, or the cell
    missing from the results. ``canon_col``: ``df``'s solvers in canonical form (``canonical_solvers``)."""
    want = _canonical(e["solver"])
    if e["model"] not in models or canon_col is None:  # no row can match (the model was not run)
        return df.iloc[0:0], f"not run: needs checkpoint {e.get('checkpoint', e['model'])}"
    sel = df[(df["model"] == e["model"]) & (df["metric"] == e["metric"]) & (df["nfe"] == int(e["nfe"]))
             & (canon_col == want)]
    if "schedule" in e:
        sel = sel[sel["schedule"] == str(e["schedule"])]
    if "guidance" in e:
        sel = sel[sel["guidance"] == ("none" if e["guidance"] in (None, "none") else str(float(e["guidance"])))]
    return sel, "" if not sel.empty else f"not run: no {e['metric']} at NFE {e['nfe']} for {want} in the results"


def canonical_solvers(df: pd.DataFrame) -> pd.Series | None:
    """``df``'s solver column in the registry's canonical form (None for an empty frame)."""
    return df["solver"].map(_canonical) if not df.empty else None


def paper_coverage(df: pd.DataFrame, entries: list[dict[str, Any]], found: dict[int, bool]) -> list[dict[str, Any]]:
    """Per paper: ``paper``, ``numbers``, ``ours`` (how many have a result here), ``need`` (model -> numbers not
    run for want of its checkpoint) and ``cells`` (numbers whose model ran but not their cell); ``found``: entry
    index -> whether it has a result."""
    models = set(df["model"]) if not df.empty else set()
    out = []
    for paper in dict.fromkeys(e["paper"] for e in entries):
        es = [(i, e) for i, e in enumerate(entries) if e["paper"] == paper]
        need: dict[str, int] = {}
        for i, e in es:
            if not found[i] and e["model"] not in models:
                need[e["model"]] = need.get(e["model"], 0) + 1
        out.append({"paper": paper, "numbers": len(es), "ours": sum(found[i] for i, _ in es), "need": need,
                    "cells": sum(not found[i] and e["model"] in models for i, e in es)})
    return out


def _coverage_lines(df: pd.DataFrame, entries: list[dict[str, Any]], found: dict[int, bool]) -> list[str]:
    """One line per paper: numbers, how many have a result of ours here, and what is missing to run the others."""
    lines = ["## Coverage", ""]
    for c in paper_coverage(df, entries, found):
        missing = "; ".join(f"{k}: {v}" for k, v in c["need"].items())
        lines.append(f"- **{c['paper']}**: {c['numbers']} numbers, {c['ours']} with a result here"
                     + (f"; not run, checkpoint needed: {missing}" if missing else "")
                     + (f"; {c['cells']} with the model run but not that cell" if c["cells"] else ""))
    return [*lines, ""]


def paper_comparison_markdown(df: pd.DataFrame, entries: list[dict[str, Any]]) -> str:
    """Published numbers beside ours (value, CI, delta = ours - published, the published spread and band of the
    setting, ours' agreement with it, and the known differences between the source's protocol and ours), or why a
    number was not run. Opens with a coverage summary per paper; each paper's known differences and its full table
    (collapsed) follow."""
    lines = ["# Published numbers beside ours", "",
             "From `papers/*.yaml` (schema: docs/papers.md). Delta = ours − published. Ours are from this results "
             "directory; they match the published setting only as far as model, metric, solver, NFE, schedule and "
             f"guidance are listed. {AGREEMENT_RULE} Known differences: the paper file's `known_differences` (D1, "
             "D2, ..., listed above each table with their source), and `sample-count` where our row's sample count "
             "is not the one the published number states.", ""]
    if not entries:
        return "\n".join([*lines, "_No papers/*.yaml entries._", ""])
    canon_col = canonical_solvers(df)
    models = set(df["model"]) if not df.empty else set()
    spread = published_spread(entries)
    bands = published_bands(entries)
    found: dict[int, bool] = {}
    body: list[str] = []
    for paper in dict.fromkeys(e["paper"] for e in entries):
        es = [(i, e) for i, e in enumerate(entries) if e["paper"] == paper]
        url, version = es[0][1].get("url"), es[0][1].get("version")
        body += [f"## {paper}" + (f" ({url}{', ' + str(version) if version else ''})" if url else ""), ""]
        legend = differences_legend([e for _, e in es])
        if legend:
            body += ["Known differences:", "",
                     *[f"- **{d['label']}** {d['kind']}: {d['detail']} ({d['source']})" for d in legend], ""]
        body += [f"<details><summary>all {len(es)} numbers</summary>", "",
                 "| table | page | model | metric | solver | NFE | schedule | guidance | published | ours | delta "
                 "| published spread | agreement | known differences |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, e in es:
            sel, why = match_entry(df, e, canon_col, models)
            found[i] = not sel.empty
            key = setting_key(e)
            span = spread_text(spread[key], bands[key])
            head = (f"| {e['table']} | {e.get('page', '–')} | {e['model']} | {e['metric']} | {e['solver']} | "
                    f"{e['nfe']} | {e.get('schedule', 'any')} | {e.get('guidance', 'any')} | "
                    f"{e.get('printed', e['value'])} |")
            if sel.empty:
                body.append(f"{head} {why} | | {span} | | {differences_text(e)} |")
                continue
            for r in sel.itertuples():
                delta = "" if is_nan(r.value) else f"{r.value - float(e['value']):+.3g}"
                verdict = agreement(float(r.value), r.ci_low, r.ci_high, bands[key])
                where = "" if "schedule" in e and "guidance" in e else f" ({r.schedule}, g {r.guidance})"
                body.append(f"{head} {fmt(r.value)}{fmt_ci(r.ci_low, r.ci_high)}{where}{fid_protocol(r)} | {delta} | "
                            f"{span} | {verdict} | {differences_text(e, getattr(r, 'n_samples', None))} |")
        body += ["", "</details>", ""]
    return "\n".join([*lines, *_coverage_lines(df, entries, found), *body])
