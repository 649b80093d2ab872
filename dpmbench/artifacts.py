"""Cached artifacts of searches and model statistics: computed once, shared by every job, never corrupt.

Two kinds of artifacts, both JSON (a keyed artifact's numpy arrays, e.g. DPM-Solver-v3's data-sized statistics, in a
``.npz`` beside it):

- *keyed* artifacts (``cached``): the result of a deterministic computation, stored under a sha256 of
  everything it depends on (model, NFE, guidance, solver options, seed, ...). A solver's ``prepare`` asks for
  them; the first job to ask computes the artifact under a file lock, every later one reads it.
- *named* artifacts (``save_named`` / ``load_named``): a search result saved under a user-chosen name, e.g. a
  searched time grid used as ``schedule=searched:NAME``.

Both live in ``artifact_dir()``: ``$DPMBENCH_ARTIFACTS`` if set (the workflow points it into its results
directory, so artifacts are outputs of the DAG), else ``$DPMBENCH_CACHE/artifacts``. Reads also fall back to
``$DPMBENCH_CACHE/artifacts``. Writes are atomic (temp file + rename); a file that does not parse, or whose
stored key differs from its name, is treated as absent and recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from dpmbench.errors import DpmbenchError
from dpmbench.io import atomic_write, cache_dir, digest, save_json

FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


FIT_SAMPLES_MAX_ENV = "DPMBENCH_FIT_SAMPLES_MAX"


def fit_samples_max() -> int | None:
    """The run's cap on a fit's sample count (``$DPMBENCH_FIT_SAMPLES_MAX``; the workflow sets it from the config's
    ``fit_samples_max``, which the dress rehearsal's overlay sets): None when unset or empty. A fit that honours it
    (DPM-Solver-v3's EMS) computes exactly the fit of ``min(samples, cap)`` samples, keys its artifact by that count
    and records the requested one; a rehearsal setting, never a protocol one."""
    text = os.environ.get(FIT_SAMPLES_MAX_ENV, "").strip()
    if not text:
        return None
    try:
        cap = int(text)
    except ValueError:
        cap = 0
    if cap < 1:
        raise DpmbenchError(f"invalid {FIT_SAMPLES_MAX_ENV} {text!r}: a positive integer, or empty for no cap")
    return cap


def artifact_dir() -> Path:
    """Where artifacts are written: ``$DPMBENCH_ARTIFACTS``, else ``$DPMBENCH_CACHE/artifacts``."""
    env = os.environ.get("DPMBENCH_ARTIFACTS")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return cache_dir("artifacts")


def _search_dirs() -> list[Path]:
    dirs = [artifact_dir()]
    fallback = cache_dir("artifacts")
    if fallback.resolve() != dirs[0].resolve():
        dirs.append(fallback)
    return dirs


KEY_ARRAY = "__key__"  # the artifact's key, stored in its .npz too: a sidecar of another artifact is never read


def sidecar(path: Path) -> Path:
    """The ``.npz`` that holds the numpy arrays of the keyed artifact at ``path``."""
    return path.with_suffix(".npz")


def _read(path: Path, key: str | None = None) -> dict[str, Any] | None:
    """The artifact at ``path`` (its arrays read back from its ``.npz``), or None if absent, unreadable or not the
    expected one."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "data" not in obj:
        return None
    if key is not None and obj.get("key") != key:
        return None
    names = obj.get("arrays")
    if names:
        try:
            with np.load(sidecar(path), allow_pickle=False) as z:
                if str(z[KEY_ARRAY]) != obj.get("key") or not isinstance(obj["data"], dict):
                    return None
                obj["data"] = {**obj["data"], **{n: z[n] for n in names}}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None
    return obj


def _write(path: Path, obj: dict[str, Any]) -> None:
    """Write a keyed artifact: numpy arrays among the top-level values of its data go to its ``.npz`` (binary, exact;
    written first, so the JSON that names it is never there without it), the rest to the JSON."""
    data = obj["data"]
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)} if isinstance(data, dict) else {}
    if arrays:
        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **{KEY_ARRAY: np.array(obj["key"])})

        atomic_write(sidecar(path), write_npz)
        obj = {**obj, "arrays": sorted(arrays), "data": {k: v for k, v in data.items() if k not in arrays}}
    save_json(path, obj)


def artifact_key(kind: str, *items: Any) -> str:
    """The content key of an artifact of ``kind`` that depends on ``items`` (tensors, numbers, strings)."""
    return digest("artifact", FORMAT, kind, *items)


def keyed_path(kind: str, key: str) -> Path:
    """The file of the keyed artifact (in the write directory)."""
    return artifact_dir() / kind / f"{key[:32]}.json"


@functools.cache
def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "?"


def code_version(fn: Callable[..., Any]) -> str:
    """A digest of the source file that defines ``fn``: artifacts are recomputed when the code computing them
    changes (a conservative key: any edit of that module counts)."""
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None)
    return _file_digest(code.co_filename) if code is not None else "?"


def cached(kind: str, items: tuple[Any, ...], compute: Callable[[], Any], meta: dict[str, Any] | None = None,
           code: Callable[..., Any] | None = None) -> Any:
    """The artifact of ``kind`` keyed by ``items``: read it if present, else compute it once (file lock, so
    concurrent jobs wait for the first instead of repeating the work) and store it atomically.

    ``compute()`` returns JSON-able data (a dict's top-level values may also be numpy arrays: they are stored in a
    ``.npz`` beside the JSON and read back bit for bit); ``meta`` (JSON-able, e.g. the search's settings and wall
    time) is stored beside it for people reading the file. The key also holds the version of the code that computes the
    artifact (``code_version`` of ``code``, default ``compute``'s module), so stale results are never reused.
    """
    key = artifact_key(kind, *items, code_version(code or compute))
    for d in _search_dirs():
        obj = _read(d / kind / f"{key[:32]}.json", key)
        if obj is not None:
            return obj["data"]
    path = keyed_path(kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        obj = _read(path, key)  # another job may have finished it while we waited
        if obj is not None:
            return obj["data"]
        data = compute()
        _write(path, {"format": FORMAT, "kind": kind, "key": key, "meta": meta or {}, "data": data})
    return data


def check_name(name: str) -> str:
    """Validate an artifact name (letters, digits and ``_.+-``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DpmbenchError(f"invalid artifact name {name!r}: use letters, digits and _.+- (no slashes)")
    return name


def named_path(name: str) -> Path:
    """The file of the named artifact (in the write directory)."""
    return artifact_dir() / "named" / f"{check_name(name)}.json"


def save_named(name: str, kind: str, data: Any, meta: dict[str, Any] | None = None) -> Path:
    """Save ``data`` (JSON-able) as the named artifact ``name`` of ``kind``; returns its path."""
    return save_json(named_path(name), {"format": FORMAT, "kind": kind, "name": name, "meta": meta or {},
                                        "data": data})


def load_named(name: str, kind: str | None = None) -> Any:
    """The data of the named artifact ``name`` (one-line error if it is missing or of another kind)."""
    check_name(name)
    for d in _search_dirs():
        obj = _read(d / "named" / f"{name}.json")
        if obj is not None:
            if kind is not None and obj.get("kind") != kind:
                raise DpmbenchError(f"invalid artifact {name!r}: it is a {obj.get('kind')!r} artifact, "
                                    f"expected {kind!r}")
            return obj["data"]
    raise DpmbenchError(f"unknown searched artifact {name!r}: run `dpmbench search ... --name {name}` first, or place "
                        f"its JSON at {named_path(name)}")


def list_named() -> dict[str, str]:
    """Names of the saved named artifacts and their kinds."""
    out: dict[str, str] = {}
    for d in reversed(_search_dirs()):
        for p in sorted((d / "named").glob("*.json")) if (d / "named").is_dir() else ():
            obj = _read(p)
            if obj is not None:
                out[p.stem] = str(obj.get("kind"))
    return out


def named_searches(dirs: Sequence[Path] = ()) -> dict[str, str | None]:
    """The search that produced each named artifact (its ``meta["search"]``, None where not recorded). Read from
    ``<d>/named`` of each of ``dirs`` (e.g. results directories' ``artifacts``), where a name whose files there
    disagree maps to None; then names found only in this process's artifact directories, as ``load_named`` finds
    them."""
    out: dict[str, str | None] = {}
    for i, d in enumerate([*dirs, *_search_dirs()]):
        for p in sorted((d / "named").glob("*.json")) if (d / "named").is_dir() else ():
            obj = _read(p)
            if obj is None or (i >= len(dirs) and p.stem in out):
                continue
            meta = obj.get("meta")
            search = meta.get("search") if isinstance(meta, dict) and isinstance(meta.get("search"), str) else None
            out[p.stem] = search if out.get(p.stem, search) == search else None
    return out
