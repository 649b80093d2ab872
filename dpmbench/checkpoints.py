"""Pretrained checkpoints: the manifest, ``pull`` (download with resume + sha256) and ``verify``.

The manifest (``config/checkpoints.yaml``, or the ``checkpoints:`` section of a run config) maps a model id to
an entry: the adapter that loads it (``dpmbench.models.adapters``), its source, the files it needs with their
sha256 and size, its license, noise schedule, parameterization, resolution and adapter options.

Sources:

- ``{hf: "org/repo", revision: "<commit sha or tag>"}``: files are paths inside the Hugging Face repo, fetched
  from ``{endpoint}/{repo}/resolve/{revision}/{path}``; the endpoint is ``https://huggingface.co`` unless
  ``DPMBENCH_HF_ENDPOINT`` says otherwise (a mirror, or a local server in the tests).
- ``{url: "https://..."}``: one file, fetched from that URL.
- ``{manual: "<where to get it>"}``: never downloaded (e.g. Google Drive folders); ``pull`` says which file to
  place where.
- ``{local: "trained/<id>"}``: files shipped in the repository (a folder relative to the repository root, or an
  absolute path): the networks the project trains itself (``dpmbench train``). Nothing is downloaded or copied;
  every file must have its sha256 pinned, and is verified exactly like a downloaded one.

Files (except local ones) land in ``$DPMBENCH_CACHE/checkpoints/<id>/<path>`` and are renamed into place only
after their sha256 matches (``evaluators.download.download``). With ``DPMBENCH_OFFLINE=1`` (or ``offline=True``)
no connection is ever opened: the error lists every missing file, its URL, where to place it and its sha256.

A ``sha256: null`` file (a hash that could not be pinned yet) is accepted only when it is not a pickle and comes
from a Hugging Face revision: ``pull`` records the hash it got in ``<id>/.sha256.json`` (a lock file) and warns
once; later verifications use the recorded hash. Pickle-based files (``.pt``, ``.pth``, ``.pkl``, ``.bin``, ...)
are unpickled when loaded, so a null sha256 for them is refused. ``verify`` caches its result per file, keyed by
size and modification time (``<id>/.verified.json``), so multi-GB files are hashed once, not once per job.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import yaml

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.yamlfile import load_yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = ROOT / "config" / "checkpoints.yaml"
ADAPTERS = ("diffusers-unet", "latent-diffusion", "stable-diffusion", "edm-pickle", "score-sde")
SCHEDULES = ("vp-linear", "vp-cosine", "vp-discrete", "edm", "ve", "flow")  # dpmbench.schedules.NOISE_SCHEDULES
PARAMETERIZATIONS = ("eps", "x0", "v", "flow")  # dpmbench.models.base.PARAMETERIZATIONS
CONDITIONING = ("none", "class", "text")
SOURCE_KINDS = ("hf", "url", "manual", "local")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
UNPINNED_OK_SUFFIXES = (".safetensors", ".json", ".txt")
HF_ENDPOINT_ENV = "DPMBENCH_HF_ENDPOINT"
MANIFESTS_ENV = "DPMBENCH_MANIFESTS"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
LOCK_FILE = ".sha256.json"
VERIFIED_FILE = ".verified.json"

_FIELDS = ("adapter", "source", "files", "license", "schedule", "parameterization", "resolution", "options",
           "conditioning", "num_classes", "paper", "notes")
_REQUIRED = ("adapter", "source", "files", "license", "schedule", "parameterization", "resolution")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_WARNED: set[tuple[str, str]] = set()


class UnpinnedChecksumWarning(UserWarning):
    """A checkpoint file had no sha256 in the manifest; the hash of the downloaded file was recorded instead."""


@dataclass(frozen=True)
class CheckpointFile:
    """One file of a checkpoint: its path (inside the repo / under the checkpoint directory), sha256 and size."""

    path: str
    sha256: str | None = None
    size: int | None = None

    @property
    def is_pickle(self) -> bool:
        """Whether loading the file unpickles it (a null sha256 is then refused)."""
        return PurePosixPath(self.path).suffix.lower() in PICKLE_SUFFIXES


@dataclass(frozen=True)
class CheckpointEntry:
    """A manifest entry (see the module doc); build them with :func:`load_manifest` / :func:`parse_manifest`."""

    id: str
    adapter: str
    source: dict[str, Any]
    files: tuple[CheckpointFile, ...]
    license: str
    schedule: str
    parameterization: str
    resolution: int
    options: dict[str, Any] = field(default_factory=dict)
    conditioning: str = "none"
    num_classes: int | None = None
    paper: str | None = None
    notes: str | None = None
    manifest: str | None = None  # where the entry was read from (for error messages)

    @property
    def kind(self) -> str:
        """``hf``, ``url``, ``manual`` or ``local``."""
        return next(k for k in SOURCE_KINDS if k in self.source)

    def url(self, f: CheckpointFile) -> str | None:
        """Where ``f`` is downloaded from (None for a manual source)."""
        if self.kind == "hf":
            endpoint = os.environ.get(HF_ENDPOINT_ENV, "").strip() or DEFAULT_HF_ENDPOINT
            # a branch like refs/pr/1 is one path segment: refs%2Fpr%2F1
            rev, path = quote(str(self.source["revision"]), safe=""), quote(f.path, safe="/")
            return f"{endpoint.rstrip('/')}/{self.source['hf']}/resolve/{rev}/{path}"
        if self.kind == "url":
            return str(self.source["url"])
        return None

    def as_dict(self) -> dict[str, Any]:
        """The entry as plain data (what the adapters receive)."""
        return {
            "id": self.id, "adapter": self.adapter, "source": dict(self.source),
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "license": self.license, "schedule": self.schedule, "parameterization": self.parameterization,
            "resolution": self.resolution, "options": dict(self.options), "conditioning": self.conditioning,
            "num_classes": self.num_classes, "paper": self.paper, "notes": self.notes,
        }

    def fingerprint(self) -> str:
        """A short digest of what the files depend on (source and pinned files): changes when they change."""
        import hashlib

        data = json.dumps({"source": self.source, "files": self.as_dict()["files"]}, sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:16]


# -- the manifest -----------------------------------------------------------------------------------------
def _bad(where: str, field_: str, value: Any, allowed: str) -> DpmbenchError:
    return DpmbenchError(f"invalid {field_} {value!r}; allowed: {allowed}{where}")


def _parse_source(cid: str, src: Any, where: str) -> dict[str, Any]:
    key = f"checkpoints.{cid}.source"
    forms = ("{hf: ORG/REPO, revision: COMMIT-OR-TAG}, {url: https://...}, {manual: WHERE-TO-GET-IT} or "
             "{local: FOLDER-IN-THE-REPOSITORY}")
    if not isinstance(src, Mapping):
        raise _bad(where, key, src, forms)
    kinds = [k for k in SOURCE_KINDS if k in src]
    if len(kinds) != 1:
        raise _bad(where, key, dict(src), f"exactly one of hf, url, manual: {forms}")
    kind = kinds[0]
    allowed = {"hf": ("hf", "revision"), "url": ("url",), "manual": ("manual",), "local": ("local",)}[kind]
    for k in src:
        if k not in allowed:
            raise _bad(where, f"{key}.{k}", src[k], f"keys {', '.join(allowed)} for a {kind} source")
    if kind == "hf":
        if not isinstance(src["hf"], str) or not _REPO.match(src["hf"]):
            raise _bad(where, f"{key}.hf", src["hf"], "a Hugging Face repo id ORG/NAME")
        rev = src.get("revision")
        if not isinstance(rev, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", rev):
            raise _bad(where, f"{key}.revision", rev, "a commit sha, tag or branch of the repo (required)")
    elif kind == "url":
        if not isinstance(src["url"], str) or not re.match(r"^https?://\S+$", src["url"]):
            raise _bad(where, f"{key}.url", src["url"], "an http(s) URL")
    elif kind == "local":
        if not isinstance(src["local"], str) or not src["local"].strip() or ".." in PurePosixPath(src["local"]).parts:
            raise _bad(where, f"{key}.local", src["local"], "a folder relative to the repository root (no '..'), "
                       "or an absolute path")
    elif not isinstance(src["manual"], str) or not src["manual"].strip():
        raise _bad(where, f"{key}.manual", src["manual"], "a non-empty text saying where to get the files")
    return dict(src)


def _parse_files(cid: str, files: Any, kind: str, where: str) -> tuple[CheckpointFile, ...]:
    key = f"checkpoints.{cid}.files"
    if not isinstance(files, list) or not files:
        raise _bad(where, key, files, "a non-empty list of {path, sha256, size}")
    if kind == "url" and len(files) != 1:
        raise _bad(where, key, [f.get("path") if isinstance(f, Mapping) else f for f in files],
                   "exactly one file for a url source")
    out, seen = [], set()
    for i, f in enumerate(files):
        k = f"{key}[{i}]"
        if not isinstance(f, Mapping):
            raise _bad(where, k, f, "a mapping {path, sha256, size}")
        for extra in f:
            if extra not in ("path", "sha256", "size"):
                raise _bad(where, f"{k}.{extra}", f[extra], "keys path, sha256, size")
        path = f.get("path")
        parts = PurePosixPath(path).parts if isinstance(path, str) else ()
        if (not isinstance(path, str) or not parts or path.startswith("/") or "\\" in path
                or any(p in ("..", ".") for p in parts) or parts[-1].startswith(".")):
            raise _bad(where, f"{k}.path", path, "a relative path without '..' (e.g. unet/config.json)")
        if path in seen:
            raise _bad(where, f"{k}.path", path, "each path once")
        seen.add(path)
        sha = f.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA.match(sha)):
            raise _bad(where, f"{k}.sha256", sha, "64 lowercase hex digits, or null (not pinned yet)")
        size = f.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise _bad(where, f"{k}.size", size, "an integer >= 0 (bytes), or null")
        out.append(CheckpointFile(path=path, sha256=sha, size=size))
    return tuple(out)


def parse_entry(cid: str, raw: Any, manifest: str | None = None) -> CheckpointEntry:
    """Validate one manifest entry; every problem is a one-line ``DpmbenchError`` naming the field."""
    where = f" (in {manifest})" if manifest else ""
    if not isinstance(cid, str) or not _ID.match(cid):
        raise _bad(where, "checkpoint id", cid, "lowercase letters, digits, '.', '_', '-' (a path-safe name)")
    if not isinstance(raw, Mapping):
        raise _bad(where, f"checkpoints.{cid}", raw, f"a mapping with keys {', '.join(_FIELDS)}")
    for k in raw:
        if k not in _FIELDS:
            raise _bad(where, f"checkpoints.{cid}.{k}", raw[k], f"keys {', '.join(_FIELDS)}")
    for k in _REQUIRED:
        if raw.get(k) is None:
            raise DpmbenchError(f"invalid checkpoints.{cid}: missing required field {k!r}{where}")

    def choice(k: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        v = raw.get(k, default)
        if v not in allowed:
            raise _bad(where, f"checkpoints.{cid}.{k}", v, ", ".join(allowed))
        return str(v)

    adapter = choice("adapter", ADAPTERS)
    schedule = choice("schedule", SCHEDULES)
    param = choice("parameterization", PARAMETERIZATIONS)
    cond = choice("conditioning", CONDITIONING, "none")
    source = _parse_source(cid, raw["source"], where)
    kind = next(k for k in SOURCE_KINDS if k in source)
    files = _parse_files(cid, raw["files"], kind, where)
    res = raw["resolution"]
    if isinstance(res, bool) or not isinstance(res, int) or res < 1:
        raise _bad(where, f"checkpoints.{cid}.resolution", res, "an integer >= 1 (pixels)")
    lic = raw["license"]
    if not isinstance(lic, str) or not lic.strip():
        raise _bad(where, f"checkpoints.{cid}.license", lic, "a license name (e.g. apache-2.0)")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        raise _bad(where, f"checkpoints.{cid}.options", options, "a mapping of adapter options")
    ncls = raw.get("num_classes")
    if ncls is not None and (isinstance(ncls, bool) or not isinstance(ncls, int) or ncls < 1):
        raise _bad(where, f"checkpoints.{cid}.num_classes", ncls, "an integer >= 1, or null")
    if cond == "class" and ncls is None:
        raise DpmbenchError(f"invalid checkpoints.{cid}.num_classes None: conditioning 'class' needs num_classes"
                            f"{where}")
    for k in ("paper", "notes"):
        if raw.get(k) is not None and not isinstance(raw[k], str):
            raise _bad(where, f"checkpoints.{cid}.{k}", raw[k], "a string")
    return CheckpointEntry(id=cid, adapter=adapter, source=source, files=files, license=lic.strip(),
                           schedule=schedule, parameterization=param, resolution=res, options=dict(options),
                           conditioning=cond, num_classes=ncls, paper=raw.get("paper"), notes=raw.get("notes"),
                           manifest=manifest)


def parse_manifest(data: Any, manifest: str | None = None) -> dict[str, CheckpointEntry]:
    """Validated entries of a mapping ``{id: entry}`` (the ``checkpoints:`` section of a manifest or run config)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        where = f" (in {manifest})" if manifest else ""
        raise _bad(where, "checkpoints", data, "a mapping id -> entry")
    return {cid: parse_entry(cid, raw, manifest) for cid, raw in data.items()}


def load_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, CheckpointEntry]:
    """The entries of a manifest file or of a run config's ``checkpoints:`` section. Without ``path``:
    ``config/checkpoints.yaml`` updated by the files listed in ``$DPMBENCH_MANIFESTS`` (os.pathsep-separated; the
    workflow lists its config's own ``checkpoints:`` entries there, so that its jobs load those models too)."""
    if path is None:
        entries = _load_manifest_file(None)
        for extra in filter(None, os.environ.get(MANIFESTS_ENV, "").split(os.pathsep)):
            entries.update(_load_manifest_file(extra))
        return entries
    return _load_manifest_file(path)


def _load_manifest_file(path: str | os.PathLike[str] | None) -> dict[str, CheckpointEntry]:
    p = Path(path) if path is not None else DEFAULT_MANIFEST
    if not p.is_file():
        if path is None:
            return {}
        raise DpmbenchError(f"invalid manifest {str(p)!r}: no such file")
    try:
        data = load_yaml(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DpmbenchError(f"invalid manifest {str(p)!r}: not valid YAML ({first})") from None
    if not isinstance(data, Mapping) or "checkpoints" not in data:
        if isinstance(data, Mapping) and ("models" in data or "solvers" in data):  # a run config without entries
            return {}
        raise DpmbenchError(f"invalid manifest {str(p)!r}: no top-level 'checkpoints:' mapping")
    section = data["checkpoints"]
    if isinstance(section, Mapping):  # entries with neither adapter nor files only name a checkpoint (dpmbench.grid)
        section = {k: v for k, v in section.items()
                   if not (isinstance(v, Mapping) and "adapter" not in v and "files" not in v)}
    return parse_manifest(section, str(p))


def get_entry(cid: str, manifest: Mapping[str, CheckpointEntry] | None = None) -> CheckpointEntry:
    """The entry ``cid`` of ``manifest`` (default: :func:`load_manifest`)."""
    entries = load_manifest() if manifest is None else manifest
    if cid not in entries:
        if entries:
            raise bad_value("checkpoint id", cid, list(entries))
        raise _bad("", "checkpoint id", cid, "(the manifest is empty)")
    return entries[cid]


# -- local state: directory, lock file (hashes recorded for unpinned files), verification cache -----------
def checkpoint_dir(entry: CheckpointEntry) -> Path:
    """Where the files of ``entry`` are: ``$DPMBENCH_CACHE/checkpoints/<id>/`` (created), or the repository folder
    of a ``local`` source."""
    if entry.kind == "local":
        folder = Path(str(entry.source["local"]))
        return folder if folder.is_absolute() else ROOT / folder
    return state_dir(entry)


def state_dir(entry: CheckpointEntry) -> Path:
    """``$DPMBENCH_CACHE/checkpoints/<id>/`` (created): the lock file, verification cache and file lock (never
    written into a repository folder)."""
    from dpmbench.io import cache_dir

    return cache_dir("checkpoints", entry.id)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lock(entry: CheckpointEntry, root: Path) -> dict[str, str]:
    """Hashes recorded for unpinned files, if recorded for this same source."""
    data = _read_json(root / LOCK_FILE)
    if data.get("source") != entry.source:
        return {}
    return {k: v for k, v in data.get("files", {}).items() if isinstance(v, str) and _SHA.match(v)}


def _record_lock(entry: CheckpointEntry, root: Path, path: str, sha: str) -> None:
    from dpmbench.io import save_json

    files = _lock(entry, root)
    files[path] = sha
    save_json(root / LOCK_FILE, {"id": entry.id, "source": entry.source, "files": files})


def _warn_unpinned(entry: CheckpointEntry, root: Path, recorded: list[str]) -> None:
    """One warning per checkpoint (and process) for the files whose hash was just recorded in the lock file."""
    new = [p for p in recorded if (entry.id, p) not in _WARNED]
    if new:
        _WARNED.update((entry.id, p) for p in new)
        warnings.warn(f"checkpoint {entry.id!r}: {len(new)} file(s) have no sha256 in the manifest "
                      f"({', '.join(repr(p) for p in new)}); recorded the sha256 of the files obtained in "
                      f"{root / LOCK_FILE}: pin them in the manifest", UnpinnedChecksumWarning, stacklevel=3)


def _expected(entry: CheckpointEntry, f: CheckpointFile, lock: Mapping[str, str]) -> tuple[str | None, str]:
    if f.sha256:
        return f.sha256, "the manifest"
    return lock.get(f.path), "the lock file"


def _check_pinnable(entry: CheckpointEntry) -> None:
    """Refuse files whose sha256 is null where that is unsafe (pickles) or unverifiable (not an HF revision)."""
    for i, f in enumerate(entry.files):
        if f.sha256:
            continue
        field_ = f"checkpoints.{entry.id}.files[{i}].sha256"
        where = f" ({entry.manifest})" if entry.manifest else ""
        origin = entry.url(f) or " ".join(str(entry.source.get("manual") or entry.source.get("local")).split())
        goes = f" (the file: {origin}, placed at {checkpoint_dir(entry) / f.path})"
        if f.is_pickle:
            raise DpmbenchError(
                f"refusing checkpoint {entry.id!r} file {f.path!r}: it is a pickle (unpickled when loaded) and has "
                f"no sha256 pinned; pin its sha256 in the manifest{where} at {field_}{goes}")
        if entry.kind == "local":
            raise DpmbenchError(
                f"refusing checkpoint {entry.id!r} file {f.path!r}: a local (shipped) file needs its sha256 pinned "
                f"in the manifest{where} at {field_} (`sha256sum {checkpoint_dir(entry) / f.path}`)")
        if entry.kind != "hf" or PurePosixPath(f.path).suffix.lower() not in UNPINNED_OK_SUFFIXES:
            raise DpmbenchError(
                f"refusing checkpoint {entry.id!r} file {f.path!r}: no sha256 pinned, which is allowed only for "
                f"{', '.join(UNPINNED_OK_SUFFIXES)} files of a Hugging Face revision; pin its sha256 in the "
                f"manifest{where} at {field_}{goes}")


def _sha_text(sha: str | None) -> str:
    return f"sha256 {sha}" if sha else "sha256 not pinned: it is recorded when verified"


def _missing_error(entry: CheckpointEntry, root: Path, missing: list[CheckpointFile], lead: str = "") -> DpmbenchError:
    lock = _lock(entry, state_dir(entry))
    if entry.kind == "local":
        return DpmbenchError(f"{lead}checkpoint {entry.id!r} is shipped in the repository ({root}) but "
                             f"{len(missing)} file(s) are missing: {', '.join(f.path for f in missing)}; restore them "
                             f"from version control (git checkout -- {root})")
    if entry.kind == "manual":
        places = "; ".join(f"place {f.path} at {root / f.path} ({_sha_text(_expected(entry, f, lock)[0])})"
                           for f in missing)
        manual = " ".join(str(entry.source["manual"]).split())
        return DpmbenchError(f"checkpoint {entry.id!r} is a manual download ({manual}) and "
                             f"{len(missing)} file(s) are missing: {places}; then run `dpmbench pull {entry.id}`")
    places = "; ".join(f"download {entry.url(f)} and place it at {root / f.path} "
                       f"({_sha_text(_expected(entry, f, lock)[0])})" for f in missing)
    hint = "" if lead else f" (or run `dpmbench pull {entry.id}`)"
    return DpmbenchError(f"{lead}checkpoint {entry.id!r} is missing {len(missing)} file(s){hint}: {places}")


def _verify_file(entry: CheckpointEntry, root: Path, f: CheckpointFile, lock: Mapping[str, str],
                 cache: dict[str, Any]) -> tuple[str, bool]:
    """sha256 of a present file, checked against the manifest / lock file; uses and updates ``cache`` (keyed by
    size and mtime). Returns (sha256, whether it was recorded from an unpinned file)."""
    from evaluators.download import sha256_file

    path = root / f.path
    st = path.stat()
    expected, origin = _expected(entry, f, lock)
    if f.size is not None and st.st_size != f.size:
        raise DpmbenchError(f"size mismatch for checkpoint {entry.id!r} file {str(path)!r}: {st.st_size} bytes but "
                            f"expected {f.size}; " + (f"restore it from version control (git checkout -- {path})"
                                                      if entry.kind == "local"
                                                      else f"delete it and run `dpmbench pull {entry.id}`"))
    rec = cache.get(f.path)
    if (isinstance(rec, list) and len(rec) == 3 and rec[0] == st.st_size and rec[1] == st.st_mtime_ns
            and (expected is None or rec[2] == expected)):
        got = str(rec[2])
    else:
        got = sha256_file(path)
        cache[f.path] = [st.st_size, st.st_mtime_ns, got]
    if expected is not None and got != expected:
        cache.pop(f.path, None)
        fix = (f"restore it from version control (git checkout -- {path})" if entry.kind == "local"
               else f"delete it and run `dpmbench pull {entry.id}`")
        raise DpmbenchError(f"checksum mismatch for checkpoint {entry.id!r} file {str(path)!r}: sha256 {got} but "
                            f"expected {expected} (from {origin}); {fix}")
    return got, expected is None


def verify(entry: CheckpointEntry) -> Path:
    """Check that every file of ``entry`` is in its checkpoint directory with its sha256; return the directory.

    Never downloads: a missing file is a one-line error naming each missing file, its URL and where to place it.
    Hashes are cached by (size, mtime), so an unchanged file is hashed once.
    """
    _check_pinnable(entry)
    root = checkpoint_dir(entry)
    missing = [f for f in entry.files if not (root / f.path).is_file()]
    if missing:
        raise _missing_error(entry, root, missing)
    from dpmbench.io import save_json

    state = state_dir(entry)
    lock = _lock(entry, state)
    cache = _read_json(state / VERIFIED_FILE)
    before = json.dumps(cache, sort_keys=True)
    recorded = []
    try:
        for f in entry.files:
            got, unpinned = _verify_file(entry, root, f, lock, cache)
            if unpinned:
                _record_lock(entry, state, f.path, got)
                recorded.append(f.path)
                lock = _lock(entry, state)
    finally:
        if json.dumps(cache, sort_keys=True) != before:
            save_json(state / VERIFIED_FILE, cache)
    _warn_unpinned(entry, state, recorded)
    return root


def pull(entry: CheckpointEntry, offline: bool | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download the missing files of ``entry`` (resuming ``.part`` files, sha256 checked before the rename),
    then :func:`verify` it; return the checkpoint directory.

    ``offline`` (default: ``DPMBENCH_OFFLINE``) never opens a connection. A present file whose hash is wrong is
    downloaded again (online) or reported (offline / manual source). A ``local`` source is only verified.
    """
    from filelock import FileLock

    from evaluators.download import download
    from evaluators.download import offline as env_offline

    _check_pinnable(entry)
    if entry.kind == "local":
        return verify(entry)
    offline = env_offline() if offline is None else bool(offline)
    root = checkpoint_dir(entry)
    with FileLock(str(root / ".lock")):
        lock = _lock(entry, root)
        cache = _read_json(root / VERIFIED_FILE)
        todo = []
        for f in entry.files:
            if not (root / f.path).is_file():
                todo.append(f)
                continue
            try:
                _verify_file(entry, root, f, lock, cache)
            except DpmbenchError:
                if offline or entry.kind == "manual":
                    raise
                (root / f.path).unlink()  # a wrong file: fetch it again
                todo.append(f)
        from dpmbench.io import save_json

        save_json(root / VERIFIED_FILE, cache)
        if todo and (offline or entry.kind == "manual"):
            lead = "offline (DPMBENCH_OFFLINE=1, --offline or config offline: true) and "
            raise _missing_error(entry, root, todo, lead)
        recorded = []
        for f in todo:
            dest = root / f.path
            expected = _expected(entry, f, lock)[0]
            sha = download(str(entry.url(f)), dest, expected, size=f.size, timeout=timeout, progress=progress,
                           what=f"checkpoint {entry.id!r} file {f.path!r} ({entry.url(f)})")
            st = dest.stat()
            cache[f.path] = [st.st_size, st.st_mtime_ns, sha]
            save_json(root / VERIFIED_FILE, cache)
            if expected is None:
                _record_lock(entry, root, f.path, sha)
                recorded.append(f.path)
                lock = _lock(entry, root)
        _warn_unpinned(entry, root, recorded)
    return verify(entry)


def stamp_text(entry: CheckpointEntry) -> str:
    """``sha256  path`` lines (``sha256sum -c`` format, relative to the checkpoint directory) of a verified
    checkpoint: the workflow's verification stamp."""
    verify(entry)
    lock = _lock(entry, state_dir(entry))
    cache = _read_json(state_dir(entry) / VERIFIED_FILE)
    lines = []
    for f in entry.files:
        sha = f.sha256 or lock.get(f.path) or cache.get(f.path, [None, None, ""])[2]
        lines.append(f"{sha}  {f.path}")
    return "\n".join(lines) + "\n"
