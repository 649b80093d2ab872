"""Merge the results of several runs (other machines, cluster partitions, later additions) into one table.

Rows are compared by *cell* (model, guidance, schedule, seed, solver, NFE, metric) and *protocol* (sample count,
end time, reference, reference statistics and feature extractor, with their sha256). Results measured under
different protocols are never pooled: every row carries a ``protocol`` label, tables are keyed by it (so they are
shown apart), and one line per differing field says so. A cell present in two runs under the same protocol must
agree (relative difference <= :data:`AGREE_RTOL`; float32 samples on two devices differ around 1e-6): it is
kept once, otherwise the merge is refused with one line naming the cell, both values and both runs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.errors import DpmbenchError
from dpmbench.io import atomic_write

CELL = ["model", "guidance", "schedule", "seed", "solver", "nfe", "metric"]
TABLE = ["model", "guidance", "schedule", "seed", "metric"]
PROTOCOL_FIELDS = ("n_samples", "t_end", "reference", "reference_stats", "reference_stats_sha256", "extractor",
                   "extractor_sha256")
AGREE_RTOL = 1e-3


class Records(dict):  # type: ignore[type-arg]
    """Provenance records (id -> record) in a frame's ``attrs``: read-only once built, so shared, never copied, by
    the frames derived from it (pandas deep-copies ``attrs`` on every operation: ~90,000 copies of a few hundred
    records in one report of the default benchmark, 3 s)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Records:
        return self


# the provenance sidecar: one row per results.csv row, keyed by the cell (plus the run it came from)
SIDECAR = [*CELL, "run", "median", "diverged_share", *PROTOCOL_FIELDS[1:], "reference_sha256", "provenance", "date"]


def _norm(v: Any) -> Any:
    """A protocol value comparable across runs: None for missing/NaN, floats as repr, the rest as str."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def protocol_key(row: Any) -> str:
    """The protocol of a row as a canonical JSON string of :data:`PROTOCOL_FIELDS`."""
    return json.dumps({f: _norm(getattr(row, f)) for f in PROTOCOL_FIELDS}, sort_keys=True)


def _differing(a: str, b: str) -> list[str]:
    pa, pb = json.loads(a), json.loads(b)
    return [f for f in PROTOCOL_FIELDS if pa.get(f) != pb.get(f)]


def _short(v: Any) -> str:
    s = "unrecorded" if v is None else str(v)
    return s[:12] if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s


def _warn(message: str) -> None:
    print(f"dpmbench: warning: {message}", file=sys.stderr)


def _agree(a: Any, b: Any) -> bool:
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= AGREE_RTOL * max(abs(fa), abs(fb)) + 1e-300


def merge_runs(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One frame of every run's rows with a ``protocol`` column (key of its protocol) and ``protocol_label``
    (the fields by which its table differs from another table of the same model, guidance, schedule, seed and
    metric; empty when there is none); duplicated cells are checked to agree and kept once."""
    records: dict[str, Any] = {}
    for f in frames:
        records.update(f.attrs.get("provenance", {}))
    columns = list(frames[0].columns) if frames else []
    frames = [f for f in frames if not f.empty]
    if not frames:
        out = pd.DataFrame(columns=[*columns, "protocol", "protocol_label"])
        out.attrs["provenance"] = Records(records)
        return out
    df = pd.concat(frames, ignore_index=True)
    df["protocol"] = [protocol_key(r) for r in df.itertuples()]
    df = _drop_agreeing_duplicates(df)
    df["protocol_label"] = ""
    for key, g in df.groupby(TABLE, sort=False):
        protocols = list(dict.fromkeys(g["protocol"]))
        if len(protocols) < 2:
            continue
        fields = list(dict.fromkeys(f for p in protocols[1:] for f in _differing(protocols[0], p)))
        runs = list(dict.fromkeys(g["run"]))
        _warn(f"{key[0]} {key[4]} (guidance {key[1]}, schedule {key[2]}, seed {key[3]}): runs {', '.join(runs)} "
              f"differ in {', '.join(fields)}; shown as separate tables, never pooled")
        for p in protocols:
            values = json.loads(p)
            label = ", ".join(f"{f} {_short(values.get(f))}" for f in fields)
            df.loc[g.index[g["protocol"] == p], "protocol_label"] = label
    df.attrs["provenance"] = Records(records)
    return df


def _drop_agreeing_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Cells measured by several runs under one protocol: refused unless their values agree; kept once."""
    dup = df.duplicated([*CELL, "protocol"], keep=False)
    if not dup.any():
        return df
    keep = pd.Series(True, index=df.index)
    for key, g in df[dup].groupby([*CELL, "protocol"], sort=False):
        first = g.iloc[0]
        for _, other in g.iloc[1:].iterrows():
            if not _agree(first["value"], other["value"]):
                cell = ", ".join(f"{k} {v}" for k, v in zip(CELL, key[:-1], strict=True))
                raise DpmbenchError(f"invalid results: runs {first['run']} and {other['run']} disagree on the same "
                                    f"cell ({cell}): {first['value']!r} vs {other['value']!r} (relative tolerance "
                                    f"{AGREE_RTOL:g}); check their provenance before merging")
        keep[g.index[1:]] = False
    return df[keep].reset_index(drop=True)


def write_provenance(df: pd.DataFrame, out: Path) -> None:
    """``provenance.csv`` (one row per results.csv row: the cell, its run, per-sample median and diverged share,
    protocol, provenance id and date) and ``provenance.json`` (provenance id -> record)."""
    side = df.reindex(columns=SIDECAR)
    atomic_write(out / "provenance.csv", lambda tmp: side.to_csv(tmp, index=False))
    text = json.dumps(df.attrs.get("provenance", {}), indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(out / "provenance.json", lambda tmp: tmp.write_text(text))


def provenance_summary(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per provenance id used by ``df``: the record, its runs, dates (first..last) and number of rows."""
    records = df.attrs.get("provenance", {})
    out = []
    for pid, g in df.groupby(df["provenance"].fillna("unrecorded"), sort=False):
        dates = sorted(d for d in g["date"].dropna())
        out.append({"id": pid, "record": records.get(pid), "runs": sorted(set(g["run"])), "rows": len(g),
                    "dates": (dates[0], dates[-1]) if dates else None})
    return out


__all__ = ["AGREE_RTOL", "PROTOCOL_FIELDS", "merge_runs", "protocol_key", "provenance_summary", "write_provenance"]

