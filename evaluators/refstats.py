"""Reference statistics named in ``reference_stats/manifest.yaml``: (mu, sigma) of a reference set's features,
fetched with sha256 verification (or shipped in the repository) and loaded without unpickling.

An entry: ``name``, ``dataset``, ``split``, ``resolution``, ``inception`` (the feature extractor and its
implementation: ``torch-fidelity/inception-v3-compat``, ``clean-fid/clean``, ``clean-fid/legacy_tensorflow``,
``edm/inception-2015-12-05.pkl``, ``dpmbench/digits-cnn``), ``url`` (or ``path`` relative to ``reference_stats/``
for shipped files), ``sha256``, optional ``format`` and ``keys``: ``mu-sigma`` (default; ``keys`` the npz keys of mean
and covariance, default ``mu``/``sigma``) or ``features`` (per-image feature rows under one key, e.g. ScoreSDE's
``cifar10_stats.npz`` with ``pool_3``: mean and covariance are computed from them as ScoreSDE's FID does).

The manifest's ``fid_implementations`` section names the FID implementations papers used (``fid_implementation`` of
a reproduction config's model): :func:`fid_implementations`.
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
FORMATS = ("mu-sigma", "features")  # an entry's ``format``: precomputed moments, or per-image feature rows
FEATURES_KEY = "pool_3"  # ScoreSDE's stats files: TF-Hub Inception pool_3 features, one row per image
CHUNK = 4096  # feature rows per step of the float64 moments (a 50k x 2048 file never held in float64 at once)
IMPLEMENTATION_REQUIRED = ("name", "summary", "inception", "resize", "frechet", "source", "dpmbench")


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
    keys: tuple[str, ...] = ("mu", "sigma")
    note: str = ""
    format: str = "mu-sigma"


def load_manifest(path: str | Path = MANIFEST) -> dict[str, StatsEntry]:
    """All entries of the manifest, by name (validated: required fields, a url or a path each)."""
    data = read_yaml(path) or {}
    out: dict[str, StatsEntry] = {}
    for i, e in enumerate(data.get("stats", [])):
        missing = [k for k in REQUIRED if k not in e]
        if missing or not (e.get("url") or e.get("path")):
            raise DpmbenchError(f"invalid {path} entry {i}: missing {missing or ['url or path']}")
        fmt = str(e.get("format", "mu-sigma"))
        if fmt not in FORMATS:
            raise bad_value(f"{path} entry {i} format", fmt, list(FORMATS))
        keys = tuple(e.get("keys", ("mu", "sigma") if fmt == "mu-sigma" else (FEATURES_KEY,)))
        if len(keys) != (2 if fmt == "mu-sigma" else 1):
            raise DpmbenchError(f"invalid {path} entry {i}: keys {list(keys)}; allowed: two keys (mean, covariance) "
                                "for format mu-sigma, one key (the feature rows) for format features")
        out[e["name"]] = StatsEntry(e["name"], e["dataset"], e["split"], int(e["resolution"]), e["inception"],
                                    e["sha256"], e.get("url"), e.get("path"), keys, e.get("note", ""), fmt)
    return out


@dataclass(frozen=True)
class FidImplementation:
    """A FID implementation a paper's numbers come from (the manifest's ``fid_implementations``)."""

    name: str
    summary: str
    inception: str
    resize: str
    frechet: str
    source: str
    dpmbench: str  # how dpmbench's own FID relates to it (same weights / resize, or the known difference)


def fid_implementations(path: str | Path = MANIFEST) -> dict[str, FidImplementation]:
    """The ``fid_implementations`` of the manifest, by name (validated: every field present, names unique)."""
    data = read_yaml(path) or {}
    out: dict[str, FidImplementation] = {}
    for i, e in enumerate(data.get("fid_implementations", [])):
        missing = [k for k in IMPLEMENTATION_REQUIRED if not isinstance(e.get(k), str) or not e.get(k)]
        if missing:
            raise DpmbenchError(f"invalid {path} fid_implementations[{i}]: missing {missing}")
        if e["name"] in out:
            raise DpmbenchError(f"invalid {path} fid_implementations[{i}]: name {e['name']!r} is listed twice")
        out[e["name"]] = FidImplementation(*(str(e[k]) for k in IMPLEMENTATION_REQUIRED))
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


def feature_moments_float64(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (divisor n - 1) of feature rows, in float64, ``CHUNK`` rows at a time: what
    ScoreSDE's FID computes from its stats file's ``pool_3`` (run_lib.py passes them to
    ``tfgan.eval.frechet_classifier_distance_from_activations``, which casts to float64 and takes the mean and
    n / (n - 1) times the biased covariance: tensorflow/gan@bc369b7:tensorflow_gan/python/eval/classifier_metrics.py:
    697-717)."""
    n = len(feats)
    mu = np.zeros(feats.shape[1], np.float64)
    for i in range(0, n, CHUNK):
        mu += feats[i:i + CHUNK].astype(np.float64).sum(axis=0)
    mu /= n
    sigma = np.zeros((feats.shape[1], feats.shape[1]), np.float64)
    for i in range(0, n, CHUNK):
        c = feats[i:i + CHUNK].astype(np.float64) - mu
        sigma += c.T @ c
    return mu, sigma / (n - 1)


def load_stats(path: str | Path, keys: tuple[str, ...] = ("mu", "sigma"),
               fmt: str = "mu-sigma") -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an ``.npz`` (never unpickled), as float64: stored moments (``mu-sigma``), or the moments of
    stored feature rows (``features``, :func:`feature_moments_float64`)."""
    if fmt not in FORMATS:
        raise bad_value("reference stats format", fmt, list(FORMATS))
    try:
        with np.load(path, allow_pickle=False) as f:
            if fmt == "features":
                feats = np.asarray(f[keys[0]])
            else:
                mu, sigma = np.asarray(f[keys[0]], np.float64), np.asarray(f[keys[1]], np.float64)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # truncated: BadZipFile
        raise DpmbenchError(f"invalid reference stats {str(path)!r}: need npz keys {list(keys)} "
                            f"({exc.__class__.__name__})") from None
    if fmt == "features":
        if feats.ndim != 2 or len(feats) < 2 or not np.issubdtype(feats.dtype, np.floating):
            raise DpmbenchError(f"invalid reference stats {str(path)!r}: {keys[0]} {feats.shape} {feats.dtype}; "
                                "allowed: float feature rows (n >= 2, dim)")
        if not np.isfinite(feats).all():
            raise DpmbenchError(f"invalid reference stats {str(path)!r}: {keys[0]} holds non-finite values")
        return feature_moments_float64(feats)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise DpmbenchError(f"invalid reference stats {str(path)!r}: mu {mu.shape}, sigma {sigma.shape}")
    return mu, sigma


def reference_stats(spec: str, manifest: str | Path = MANIFEST) -> tuple[np.ndarray, np.ndarray, str]:
    """(mu, sigma, description) of ``spec``: a manifest name, or a path to an ``.npz`` with ``mu``/``sigma`` (or,
    without them, ScoreSDE's format: per-image ``pool_3`` feature rows)."""
    if spec.endswith(".npz") and Path(spec).is_file():
        fmt = "mu-sigma"
        try:
            with np.load(spec, allow_pickle=False) as f:
                if "mu" not in f.files and FEATURES_KEY in f.files:
                    fmt = "features"
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):
            pass  # load_stats names the problem
        mu, sigma = load_stats(spec, (FEATURES_KEY,) if fmt == "features" else ("mu", "sigma"), fmt)
        return mu, sigma, f"file {spec}" + (f" ({FEATURES_KEY} features)" if fmt == "features" else "")
    path, e = stats_file(spec, manifest)
    mu, sigma = load_stats(path, e.keys, e.format)
    return mu, sigma, f"{e.name} ({e.dataset}/{e.split}, {e.resolution}px, {e.inception})"
