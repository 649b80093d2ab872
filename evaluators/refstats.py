"""Reference statistics named in ``reference_stats/manifest.yaml``: (mu, sigma) of a reference set's features,
fetched with sha256 verification (or shipped in the repository) and loaded without unpickling.

An entry: ``name``, ``dataset``, ``split``, ``resolution``, ``inception`` (the feature extractor and its
implementation: ``torch-fidelity/inception-v3-compat``, ``clean-fid/clean``, ``clean-fid/legacy_tensorflow``,
``edm/inception-2015-12-05.pkl``, ``dpmbench/digits-cnn``), ``url`` (or ``path`` relative to ``reference_stats/``
for shipped files), ``sha256``, optional ``keys`` (the npz keys of mean and covariance, default ``mu``/``sigma``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpmbench.download import OPT_IN, fetch, note_unpinned, sha256_file, trust_unpinned, verify_sha256
from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.yamlfile import read_yaml

STATS_DIR = Path(__file__).resolve().parent.parent / "reference_stats"
MANIFEST = STATS_DIR / "manifest.yaml"
REQUIRED = ("name", "dataset", "split", "resolution", "inception", "sha256")


@dataclass(frozen=True)
class StatsEntry:
    """One manifest entry."""

    name: str
    dataset: str
    split: str
    resolution: int
    inception: str
    sha256: str | None
    url: str | None = None
    path: str | None = None
    keys: tuple[str, str] = ("mu", "sigma")
    note: str = ""


def load_manifest(path: str | Path = MANIFEST) -> dict[str, StatsEntry]:
    """All entries of the manifest, by name (validated: required fields, a url or a path each)."""
    data = read_yaml(path) or {}
    out: dict[str, StatsEntry] = {}
    for i, e in enumerate(data.get("stats", [])):
        missing = [k for k in REQUIRED if k not in e]
        if missing or not (e.get("url") or e.get("path")):
            raise DpmbenchError(f"invalid {path} entry {i}: missing {missing or ['url or path']}")
        keys = tuple(e.get("keys", ("mu", "sigma")))
        out[e["name"]] = StatsEntry(e["name"], e["dataset"], e["split"], int(e["resolution"]), e["inception"],
                                    e["sha256"], e.get("url"), e.get("path"), keys, e.get("note", ""))
    return out


def stats_file(name: str, manifest: str | Path = MANIFEST) -> tuple[Path, StatsEntry]:
    """The verified local file of manifest entry ``name`` (downloaded into the cache if needed). An entry without a
    pinned sha256 is refused unless this run opted in (``--trust-unpinned``): the file is then downloaded unchecked
    and the sha256 it has is noted for the provenance of the metrics computed from it."""
    entries = load_manifest(manifest)
    if name not in entries:
        raise bad_value("reference stats", name, list(entries))
    e = entries[name]
    if not e.sha256 and e.url and trust_unpinned():
        path = fetch(str(e.url), None, subdir="reference_stats")
        note_unpinned(f"reference_stats:{name}", sha256_file(path))
        return path, e
    if not e.sha256:
        raise DpmbenchError(
            f"reference stats {name!r} have no sha256 pinned in {manifest}: download {e.url}, check it against "
            f"its publisher and record `sha256sum FILE` in the manifest, or opt in for this run with {OPT_IN} "
            "(the sha256 it has is recorded and every metric computed from it is marked unpinned)")
    if e.path:
        p = (Path(manifest).parent / e.path).resolve()
        if not p.is_file():
            raise DpmbenchError(f"reference stats {name!r}: shipped file {p} is missing")
        return verify_sha256(p, e.sha256, f"reference stats {name!r}"), e
    return fetch(str(e.url), e.sha256, subdir="reference_stats"), e


def load_stats(path: str | Path, keys: tuple[str, str] = ("mu", "sigma")) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an ``.npz`` (never unpickled), as float64."""
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = np.asarray(f[keys[0]], np.float64), np.asarray(f[keys[1]], np.float64)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # truncated: BadZipFile
        raise DpmbenchError(f"invalid reference stats {str(path)!r}: need npz keys {list(keys)} "
                            f"({exc.__class__.__name__})") from None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise DpmbenchError(f"invalid reference stats {str(path)!r}: mu {mu.shape}, sigma {sigma.shape}")
    return mu, sigma


def reference_stats(spec: str, manifest: str | Path = MANIFEST) -> tuple[np.ndarray, np.ndarray, str]:
    """(mu, sigma, description) of ``spec``: a manifest name, or a path to an ``.npz`` with ``mu``/``sigma``."""
    if spec.endswith(".npz") and Path(spec).is_file():
        mu, sigma = load_stats(spec)
        return mu, sigma, f"file {spec}"
    path, e = stats_file(spec, manifest)
    mu, sigma = load_stats(path, e.keys)
    return mu, sigma, f"{e.name} ({e.dataset}/{e.split}, {e.resolution}px, {e.inception})"
