"""The public table API of the reports: results as a tidy frame (``collect``) and the pieces every rendering of it
shares (grouping into tables, titles, number formatting, best/tied marks, per-sample spread)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.errors import DpmbenchError
from dpmbench.provenance import provenance_id
from dpmbench.report.merge import Records

# DESIGN.md's columns; results.csv adds a last column `seed` only when the results hold several seeds
COLUMNS = ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low", "ci_high",
           "n_samples", "wall_s", "seed"]
# beside the DESIGN.md columns, per row (not written to results.csv; see dpmbench.report.merge for the provenance
# sidecar): the run it comes from, the per-sample summary, the protocol, the provenance and the bootstrap replicates
EXTRA = ["run", "median", "diverged_share", "t_end", "reference", "reference_sha256", "extractor",
         "extractor_sha256", "reference_stats", "reference_stats_sha256", "provenance", "date", "boot", "boot_seed",
         "parallel_rounds", "t_start", "fid_implementation"]
# parallel_rounds: a parallel solver's sequential rounds (a results.csv column after seed); t_start: where the
# solver started, where not at the schedule's T (the protocol's t_start);
# fid_implementation: the FID implementation of the published numbers the cell reproduces (the config's statement)
# the last columns of results.csv, after every other: a cell's cost, seconds of sampling per sample (its sample jobs'
# wall_s summed over shards, divided by n_samples; model loading and a latent model's decoding excluded) and the
# device it was measured on (its name; dtype, batch size and torch threads are in the provenance, sample_*)
COST = ["s_per_sample", "device"]
# after COST, only when some cell is unpinned: computed from a file (checkpoint, reference statistics, metric weights)
# that has no sha256 pinned in its manifest, used under the per-run opt-in --trust-unpinned (the sha256 it had is
# in the provenance's unpinned_files); such cells carry UNPINNED_MARK in every table
UNPINNED = "unpinned"
UNPINNED_MARK = "‡"
GROUP = ["model", "guidance", "schedule", "seed", "metric", "protocol"]  # protocol: see dpmbench.report.merge


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
    df = pd.DataFrame(rows, columns=COLUMNS + EXTRA + COST + [UNPINNED])
    if not df.empty:
        df["guidance"] = df["guidance"].astype(object).where(df["guidance"].notna(), "none")
        df["guidance"] = df["guidance"].map(str)
        df = df.sort_values(["model", "guidance", "schedule", "seed", "metric", "solver", "nfe"], key=sort_key)
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


def _bounded(metric: str, lo: Any, hi: Any) -> tuple[Any, Any]:
    """A CI clipped to the range of its metric's true value (``evaluators.registry``: a distance is never below 0),
    as the metrics job clips it: metrics files written before it did read the same as new ones."""
    from evaluators.bootstrap import UNBOUNDED, clip_to
    from evaluators.registry import METRICS

    bounds = METRICS[metric].bounds if metric in METRICS else UNBOUNDED

    def clip(v: Any) -> Any:
        return clip_to(v, bounds) if isinstance(v, int | float) else v
    return clip(lo), clip(hi)


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
    cost = _cost(rec)
    rows = []
    for metric, value in rec["metrics"].items():
        ci = cis.get(metric)
        lo, hi = _bounded(metric, *(ci[:2] if isinstance(ci, list) and len(ci) >= 2 else [None, None]))
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
            **cost, UNPINNED: rec.get("unpinned") is True,
        })
    return rows


def _cost(rec: dict[str, Any]) -> dict[str, Any]:
    """:data:`COST` of a metrics record: ``wall_s / n_samples`` (NaN where either is missing) and the name of the
    device that sampled (the provenance's ``sample_device_name``, else ``sample_device``; None if unrecorded)."""
    wall, n = rec.get("wall_s"), rec.get("n_samples")
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (wall, n)) and n > 0
    per = float(wall) / n if ok else math.nan
    prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else {}
    device = prov.get("sample_device_name") or prov.get("sample_device")
    return {"s_per_sample": per, "device": None if device is None else str(device)}


def _record_extras(rec: dict[str, Any]) -> dict[str, Any]:
    """Protocol and provenance of a metrics record (absent fields: None; files written before they existed)."""
    proto = rec.get("protocol") if isinstance(rec.get("protocol"), dict) else {}
    prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else None
    out = {k: proto.get(k) for k in ("t_end", "reference", "reference_sha256", "extractor", "extractor_sha256",
                                     "reference_stats", "reference_stats_sha256")}
    out["provenance"] = None if prov is None else provenance_id(prov)
    out["t_start"] = proto.get("t_start")  # where the solver started (a flow model's start below pure noise)
    out["fid_implementation"] = proto.get("fid_implementation")  # the published numbers' FID implementation

    out["date"] = None if prov is None else prov.get("date")
    return out


def sort_key(col: pd.Series) -> pd.Series:
    """Sort key of a results column: numbers as numbers, the rest as text."""
    return col if col.name in ("nfe", "seed") else col.astype(str)


def is_nan(v: Any) -> bool:
    """Whether ``v`` is missing (None or NaN: a diverged run)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v: Any) -> str:
    """A value as the tables print it (3 significant digits; ``diverged`` for NaN)."""
    if is_nan(v):
        return "diverged"
    v = float(v)
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def fmt_ci(lo: Any, hi: Any) -> str:
    """A CI as the tables print it, `` [lo, hi]`` (empty where a bound is missing)."""
    return "" if is_nan(lo) or is_nan(hi) else f" [{fmt(lo)}, {fmt(hi)}]"


def groups(df: pd.DataFrame) -> Iterable[tuple[tuple[Any, ...], pd.DataFrame]]:
    """The tables of a results frame: one per (model, guidance, schedule, seed, metric, protocol)."""
    return df.groupby(GROUP, sort=False)


def title(key: tuple[Any, ...], many_seeds: bool, label: str = "") -> str:
    """The title of the table ``key`` (metric, direction, guidance, schedule, seed, protocol)."""
    model, guidance, schedule, seed, metric = key[:5]
    seed_part = f" · seed {seed}" if many_seeds else ""
    better = " (higher is better)" if higher_is_better(str(metric)) else ""
    protocol = f" · {label}" if label else ""
    return f"{metric}{better} · guidance {guidance} · schedule {schedule}{seed_part}{protocol}"


def protocol_label(g: pd.DataFrame) -> str:
    """The protocol label of one table (empty when there is one protocol)."""
    return str(g["protocol_label"].iloc[0]) if "protocol_label" in g and len(g) else ""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (log-likelihood, IS, CLIP score); all others: lower."""
    from evaluators.registry import METRICS

    return metric in METRICS and not METRICS[metric].lower_is_better


def spread_text(r: Any) -> str:
    """Per-sample median and share of diverged samples, where some samples diverged ('' otherwise)."""
    share = getattr(r, "diverged_share", None)
    if is_nan(share) or not share or (float(share) >= 1 and is_nan(r.value)):  # none, or all ('diverged' says it)
        return ""
    from evaluators.registry import PER_SAMPLE_METRICS

    med = getattr(r, "median", None)
    share_text = f"{100 * float(share):.3g}% samples diverged"
    if str(getattr(r, "metric", "")) not in PER_SAMPLE_METRICS:  # a distributional metric: no per-sample value
        return share_text
    return f"median {fmt(med) if not is_nan(med) else 'diverged'}, {share_text}"


def table_cells(g: pd.DataFrame) -> tuple[list[int], list[tuple[str, list[tuple[str, str, str]]]]]:
    """NFE columns and, per solver, (cell text, mark, spread) per NFE: mark ``best`` where the paired bootstrap
    CI of the difference to every other solver excludes zero, ``tied`` for the solvers the column's best cannot
    be told apart from (dpmbench.report.stats); spread: per-sample median and share diverged where any diverged."""
    from dpmbench.report.stats import table_marks

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
            rounds = "" if is_nan(r.parallel_rounds) else f" ({int(r.parallel_rounds)} rounds)"  # picard
            mark = marks.get((s, int(n)))
            pin = f" {UNPINNED_MARK}" if getattr(r, UNPINNED, False) is True else ""  # before the CI: stays with it
            text = fmt(r.value) + rounds + pin + fmt_ci(r.ci_low, r.ci_high)
            cells.append((text, mark.kind if mark else "", spread_text(r)))
        rows.append((s, cells))
    return [int(n) for n in nfes], rows



def any_unpinned(df: pd.DataFrame) -> bool:
    """Whether some row of ``df`` was computed from a file without a pinned sha256."""
    return UNPINNED in df.columns and bool((df[UNPINNED] == True).any())  # noqa: E712 - elementwise on objects


def unpinned_legend(df: pd.DataFrame) -> str:
    """The legend of :data:`UNPINNED_MARK` (plain text), or ``""`` when no row of ``df`` is unpinned."""
    if not any_unpinned(df):
        return ""
    return (f"{UNPINNED_MARK} unpinned: computed from a file (checkpoint, reference statistics or metric weights) "
            "that has no sha256 pinned in its manifest, used because the run opted in with --trust-unpinned; the "
            "sha256 the file had is recorded in provenance.json (unpinned_files). Pin it to drop the mark.")


def model_error_floor(df: pd.DataFrame, key: tuple[Any, ...]) -> float | None:
    """On an ``mse_ref`` plot of a trained network: the squared ``model_error`` of the same (model, guidance,
    schedule, seed), in mse_ref's units (the network's converged ODE solution vs the exact one of the data's
    oracle). Solver errors below it no longer show in sample quality; None where there is no model_error."""
    model, guidance, schedule, seed, metric = key[:5]
    if metric != "mse_ref":
        return None
    m = df[(df["model"] == model) & (df["guidance"] == guidance) & (df["schedule"] == schedule)
           & (df["seed"] == seed) & (df["metric"] == "model_error")]["value"].dropna()
    return float(m.median()) ** 2 if len(m) else None


def with_protocol(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the merge's protocol columns (a single run's frame gets them from :func:`merge_runs`)."""
    if "protocol" in df.columns:
        return df
    from dpmbench.report.merge import merge_runs

    return merge_runs([df])

