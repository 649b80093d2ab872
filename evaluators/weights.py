"""Feature-extractor weights named in the ``weights`` section of ``reference_stats/manifest.yaml``: fetched into
``$DPMBENCH_CACHE/weights/<name>/`` with resume and sha256 verification (``dpmbench.download.fetch``), or taken
from a local override.

An entry: ``name``, ``source`` (``hf:owner/repo`` or ``url``), ``revision`` (the Hugging Face commit; files are
fetched from ``https://huggingface.co/<repo>/resolve/<revision>/<file>``), ``used_by`` (the metrics reading it),
``files`` (each ``name``, ``sha256``, ``size``; with ``source: url`` also its ``url``), ``note``. A file whose
``sha256`` is ``null`` has no published checksum pinned yet: it is not downloaded unless the run opts in with
``--trust-unpinned`` (the sha256 it has is then noted for the metrics' provenance, which marks them unpinned);
otherwise place a copy you checked yourself and name it with the metric's weights option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpmbench.download import OPT_IN, fetch, note_unpinned, sha256_file, trust_unpinned
from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.yamlfile import read_yaml
from evaluators.refstats import MANIFEST

HF_RESOLVE = "https://huggingface.co/{repo}/resolve/{revision}/{file}"


@dataclass(frozen=True)
class WeightsFile:
    """One file of a weights entry."""

    name: str
    url: str
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class WeightsEntry:
    """One weights entry: where its files come from and how they are checked."""

    name: str
    source: str
    revision: str | None
    files: tuple[WeightsFile, ...]
    used_by: str = ""
    note: str = ""


def _entry(i: int, e: dict, path: str | Path) -> WeightsEntry:
    missing = [k for k in ("name", "source", "files") if k not in e]
    if missing:
        raise DpmbenchError(f"invalid {path} weights entry {i}: missing {missing}")
    source, revision = str(e["source"]), e.get("revision")
    files = []
    for f in e["files"]:
        if source.startswith("hf:"):
            if not revision:
                raise DpmbenchError(f"invalid {path} weights entry {e['name']!r}: an hf: source needs a revision")
            url = HF_RESOLVE.format(repo=source[3:], revision=revision, file=f["name"])
        elif source == "url" and f.get("url"):
            url = str(f["url"])
        else:
            raise DpmbenchError(f"invalid {path} weights entry {e['name']!r}: source {source!r}; allowed: "
                                "hf:owner/repo (with revision), url (with a url per file)")
        size = f.get("size")
        files.append(WeightsFile(str(f["name"]), url, f.get("sha256"), None if size is None else int(size)))
    return WeightsEntry(str(e["name"]), source, revision, tuple(files), str(e.get("used_by", "")),
                        str(e.get("note", "")))


def load_weights_manifest(path: str | Path = MANIFEST) -> dict[str, WeightsEntry]:
    """The ``weights`` entries of the manifest, by name (validated)."""
    data = read_yaml(path) or {}
    return {w.name: w for w in (_entry(i, e, path) for i, e in enumerate(data.get("weights", [])))}


def weights_files(name: str, override_hint: str, manifest: str | Path = MANIFEST) -> Path:
    """The folder holding the verified files of weights entry ``name`` (downloaded into the cache when absent;
    offline, only the cache). An entry with an unpinned file is a one-line error that says how to pin it and which
    option (``override_hint``) takes a local copy instead."""
    entries = load_weights_manifest(manifest)
    if name not in entries:
        raise bad_value("weights", name, list(entries))
    entry = entries[name]
    unpinned = [f.name for f in entry.files if not f.sha256]
    if unpinned and not trust_unpinned():
        raise DpmbenchError(
            f"weights {name!r} have no sha256 pinned in {manifest} for {unpinned}: download {entry.files[0].url} "
            f"(and the entry's other files), check them against their publisher and record `sha256sum FILE` in the "
            f"manifest, pass a local copy with {override_hint}, or opt in for this run with {OPT_IN} (the sha256 "
            "they have is recorded and every metric computed from them is marked unpinned)")
    folder = Path("weights") / name
    paths = [fetch(f.url, f.sha256, filename=f.name, subdir=str(folder)) for f in entry.files]
    for f, p in zip(entry.files, paths, strict=True):
        if not f.sha256:  # used under the per-run opt-in: the hash it has goes into the provenance
            note_unpinned(f"weights:{name}/{f.name}", sha256_file(p))
    for f, p in zip(entry.files, paths, strict=True):
        if f.size is not None and p.stat().st_size != f.size:
            raise DpmbenchError(f"invalid weights file {str(p)!r}: {p.stat().st_size} bytes, expected {f.size}")
    return paths[0].parent
