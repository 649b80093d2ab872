"""Per-sample errors of every cell of a results directory, recomputed from what the metrics job read.

A metrics file keeps, per per-sample metric (``rmse_exact``, ``mse_ref``), only the median and the share of diverged
samples. The per-sample errors themselves come from the cell's shards (``nfeN/*.npz`` beside ``nfeN.json``) and the
seed's reference (``reference.npz``, whose sha256 the metrics file records), through the metric's own formula
(``evaluators.registry.per_sample_errors``); a cell whose recomputed median differs from the recorded one is skipped
with a warning (its files changed since its metrics were computed). For image models the first samples of every
cell and each cell's worst samples (with their references) are kept for the diagnostics page.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpmbench.io import CorruptFileError, load_npz

SHARD = re.compile(r"^(\d+)-(\d+)\.npz$")
WORST = 8  # the worst samples listed (and drawn) per cell


@dataclass
class CellErrors:
    """The per-sample errors of one cell under one metric."""

    metric: str
    errors: np.ndarray  # one per sample, float64; inf where the sample is not finite
    threshold: float  # an error above it: a diverged sample (the reference's own RMS, in the metric's unit)

    def worst(self, k: int = WORST) -> np.ndarray:
        """Indices of the ``k`` largest errors, largest first (ties: the lower index first)."""
        return np.argsort(-self.errors, kind="stable")[:k]

    def quantiles(self) -> dict[str, float]:
        """min, 10%, 25%, median, 75%, 90% and max of the errors (inf where samples are not finite)."""
        e = self.errors
        with np.errstate(invalid="ignore"):
            q = np.quantile(e, [0.1, 0.25, 0.5, 0.75, 0.9], method="linear") if np.isfinite(e).all() else \
                np.array([np.quantile(e, p, method="lower") for p in (0.1, 0.25, 0.5, 0.75, 0.9)])
        return {"min": float(e.min()), "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
                "p75": float(q[3]), "p90": float(q[4]), "max": float(e.max())}

    def diverged_share(self) -> float:
        """The share of samples whose error exceeds the threshold (or is not finite)."""
        return float(np.mean(self.errors > self.threshold))


@dataclass
class Cell:
    """What the diagnostics keep of one cell (one solver at one NFE)."""

    nfe: int
    n: int
    errors: dict[str, CellErrors] = field(default_factory=dict)
    first: np.ndarray | None = None  # image models: the first samples
    worst: np.ndarray | None = None  # image models: the worst samples of the first per-sample metric ...
    worst_reference: np.ndarray | None = None  # ... and their references
    worst_index: np.ndarray | None = None


# (model, guidance, schedule, seed, solver) -> NFE -> Cell; and per (model, guidance, schedule, seed): the reference's
# first samples (image models)
Key = tuple[str, str, str, int, str]


@dataclass
class PerSample:
    """Every cell's per-sample data of one or several results directories."""

    cells: dict[Key, dict[int, Cell]] = field(default_factory=dict)
    references: dict[tuple[str, str, str, int], np.ndarray] = field(default_factory=dict)

    def of(self, model: str, guidance: str, schedule: str, seed: int, solver: str) -> dict[int, Cell]:
        """The cells of one solver of one section, by NFE (empty when none was found)."""
        return self.cells.get((model, guidance, schedule, int(seed), solver), {})


def _is_image(x: np.ndarray) -> bool:
    return x.ndim == 4 and x.shape[1] in (1, 3)


def _load_cell(folder: Path, first_only: bool = False) -> np.ndarray | None:
    """The samples of one cell: its shards ``LO-HI.npz`` concatenated in order, or only its first shard with
    ``first_only`` (None when they do not tile 0..n-1, or a shard is unreadable: the cell is left out of the
    diagnostics, with a warning)."""
    parts = sorted((int(m.group(1)), int(m.group(2)), p) for p in folder.glob("*.npz")
                   if (m := SHARD.match(p.name)))
    xs, expect = [], 0
    for lo, hi, p in parts:
        if lo != expect:
            return None
        try:
            x = load_npz(p, "shard")["x"]
        except (CorruptFileError, OSError, KeyError) as exc:
            print(f"dpmbench: warning: {exc}; not in the diagnostics", file=sys.stderr)
            return None
        xs.append(x)
        expect = hi
        if first_only:
            break
    return np.concatenate(xs) if xs else None


class _References:
    """The seeds' reference files, each read and hashed once."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[str, np.ndarray | None]] = {}

    def get(self, path: Path) -> tuple[str, np.ndarray | None]:
        if path not in self._cache:
            if not path.is_file():
                self._cache[path] = ("", None)
            else:
                try:
                    self._cache[path] = (hashlib.sha256(path.read_bytes()).hexdigest(), load_npz(path)["x"])
                except (CorruptFileError, KeyError) as exc:
                    print(f"dpmbench: warning: {exc}; its cells are not in the diagnostics", file=sys.stderr)
                    self._cache[path] = ("", None)
        return self._cache[path]


def _guidance(g: Any) -> str:
    return "none" if g is None or (isinstance(g, float) and math.isnan(g)) else str(float(g))


def _errors(rec: dict[str, Any], x: np.ndarray, reference: np.ndarray | None, path: Path) -> dict[str, CellErrors]:
    """The per-sample errors of every per-sample metric of the record whose recomputed median matches the recorded
    one."""
    from evaluators.registry import PER_SAMPLE_METRICS, per_sample_errors

    out: dict[str, CellErrors] = {}
    if reference is None or len(reference) != len(x):
        return out
    for metric in (m for m in PER_SAMPLE_METRICS if m in rec["metrics"]):
        err, threshold = per_sample_errors(metric, x, reference)
        recorded = ((rec.get("per_sample") or {}).get(metric) or {}).get("median")
        median = float(np.median(err))
        if recorded is not None and not math.isclose(median, float(recorded), rel_tol=1e-6, abs_tol=1e-12):
            print(f"dpmbench: warning: {str(path)!r}: the per-sample {metric} of its shards (median {median:.6g}) is "
                  f"not the recorded one ({float(recorded):.6g}); not in the diagnostics", file=sys.stderr)
            continue
        out[metric] = CellErrors(metric, err, threshold)
    return out


def collect_per_sample(results_dirs: Iterable[str | Path], columns: int = 8, models: Sequence[str] | None = None
                       ) -> PerSample:
    """The per-sample data of every cell in ``results_dirs`` (a cell found in an earlier directory wins), for the
    models ``models`` (all when None). Needs the workflow's layout: ``nfeN.json`` beside its shards ``nfeN/``, the
    seed's ``reference.npz`` three levels up."""
    from evaluators.registry import PER_SAMPLE_METRICS  # lazily, like dpmbench.report.tables

    out = PerSample()
    refs = _References()
    for root in results_dirs:
        for path in sorted(Path(root).rglob("nfe*.json")):
            folder = path.with_suffix("")
            if not folder.is_dir():
                continue
            try:
                rec = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # collect() has refused it already, with its name
            if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict) or "model" not in rec:
                continue
            if models is not None and rec["model"] not in models:
                continue
            key = (str(rec["model"]), _guidance(rec.get("guidance")), str(rec["schedule"]), int(rec.get("seed", 0)),
                   str(rec["solver"]))
            nfe = int(rec["nfe"])
            if nfe in out.cells.get(key, {}):
                continue
            x = _load_cell(folder, first_only=not any(m in rec["metrics"] for m in PER_SAMPLE_METRICS))
            if x is None:
                continue
            sha, reference = refs.get(path.parents[2] / "reference.npz")
            recorded = (rec.get("protocol") or {}).get("reference_sha256")
            if reference is not None and recorded and recorded != sha:
                reference = None  # another reference than the one the metrics were computed with
            cell = Cell(nfe, int(rec.get("n_samples") or len(x)), _errors(rec, x, reference, path))
            if _is_image(x):
                cell.first = x[:columns]
                ref_key = key[:4]
                if reference is not None and ref_key not in out.references:
                    out.references[ref_key] = reference[:columns]
                if cell.errors and reference is not None:
                    idx = next(iter(cell.errors.values())).worst(columns)
                    cell.worst, cell.worst_reference, cell.worst_index = x[idx], reference[idx], idx
            out.cells.setdefault(key, {})[nfe] = cell
    return out


__all__ = ["WORST", "Cell", "CellErrors", "PerSample", "collect_per_sample"]
