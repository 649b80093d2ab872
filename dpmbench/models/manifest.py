"""Pretrained checkpoints, the manifest: what each entry says and how it is parsed and checked (``pull`` and
``verify`` of the files: ``dpmbench.models.store``).

The manifest (``config/checkpoints.yaml``, or the ``checkpoints:`` section of a run config) maps a model id to
an entry: the adapter that loads it (``dpmbench.models.adapters``), its source, the files it needs with their
sha256 and size, its license, noise schedule, parameterization, resolution and adapter options.

Sources:

- ``{hf: "org/repo", revision: "<commit sha or tag>"}``: files are paths inside the Hugging Face repo, fetched
  from ``{endpoint}/{repo}/resolve/{revision}/{path}``; the endpoint is ``https://huggingface.co`` unless
  ``DPMBENCH_HF_ENDPOINT`` says otherwise (a mirror, or a local server in the tests).
- ``{url: "https://..."}``: one file, fetched from that URL; a folder URL (ending in ``/``) holds several files, each
  fetched from the folder URL followed by its path.
- ``{manual: "<where to get it>"}``: never downloaded (e.g. Google Drive folders); ``pull`` says which file to
  place where.
- ``{local: "trained/<id>"}``: files shipped in the repository (a folder relative to the repository root, or an
  absolute path): the networks the project trains itself (``dpmbench train``). Nothing is downloaded or copied;
  every file must have its sha256 pinned, and is verified exactly like a downloaded one.

Files (except local ones) land in ``$DPMBENCH_CACHE/checkpoints/<id>/<path>`` and are renamed into place only
after their sha256 matches (``dpmbench.download.download``). With ``DPMBENCH_OFFLINE=1`` (or ``offline=True``)
no connection is ever opened: the error lists every missing file, its URL, where to place it and its sha256.

A ``sha256: null`` file (no public source of its hash found yet) is refused, with one line naming the field to pin
and the opt-in, unless the run opts in with ``--trust-unpinned`` (``DPMBENCH_TRUST_UNPINNED=1``, the workflow's
``trust_unpinned: true``; ``dpmbench.download.trust_unpinned``): ``pull`` then records the hash it got in
``<id>/.sha256.json`` (a lock file; later opted-in runs check the file against it), warns once (saying so for
pickles, which are unpickled when loaded), and notes the hash for the provenance of every result computed from the
file, which the tables mark unpinned. A shipped (``local``) file always needs its sha256 pinned. ``verify`` caches
its result per file, keyed by size and modification time (``<id>/.verified.json``), so multi-GB files are hashed
once, not once per job.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import yaml

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.yamlfile import load_yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = ROOT / "config" / "checkpoints.yaml"
ADAPTERS = ("diffusers-unet", "latent-diffusion", "stable-diffusion", "sd3", "flux", "edm-pickle", "score-sde",
            "guided-diffusion")
SCHEDULES = ("vp-linear", "vp-cosine", "vp-discrete", "edm", "ve", "flow")  # dpmbench.schedules.NOISE_SCHEDULES
PARAMETERIZATIONS = ("eps", "x0", "v", "flow")  # dpmbench.models.base.PARAMETERIZATIONS
CONDITIONING = ("none", "class", "text")
SOURCE_KINDS = ("hf", "url", "manual", "local")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
HF_ENDPOINT_ENV = "DPMBENCH_HF_ENDPOINT"
MANIFESTS_ENV = "DPMBENCH_MANIFESTS"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"

_FIELDS = ("adapter", "source", "files", "license", "schedule", "parameterization", "resolution", "options",
           "conditioning", "num_classes", "paper", "notes")
_REQUIRED = ("adapter", "source", "files", "license", "schedule", "parameterization", "resolution")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


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
            url = str(self.source["url"])
            return url + quote(f.path, safe="/") if url.endswith("/") else url  # a folder URL: each file in it
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


def _parse_files(cid: str, files: Any, kind: str, where: str, url: str = "") -> tuple[CheckpointFile, ...]:
    key = f"checkpoints.{cid}.files"
    if not isinstance(files, list) or not files:
        raise _bad(where, key, files, "a non-empty list of {path, sha256, size}")
    if kind == "url" and len(files) != 1 and not str(url).endswith("/"):
        raise _bad(where, key, [f.get("path") if isinstance(f, Mapping) else f for f in files],
                   "exactly one file for a url source (a folder URL, ending in '/', takes several: each file's path "
                   "is appended to it)")
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
        if sha is not None and (not isinstance(sha, str) or not SHA256.match(sha)):
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
    files = _parse_files(cid, raw["files"], kind, where, str(source.get("url", "")))
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
