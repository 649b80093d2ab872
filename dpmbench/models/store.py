"""Pretrained checkpoints, their files: where they live, ``pull`` (download with resume + sha256), ``verify``, and
the lock file of hashes recorded for unpinned files (the manifest itself: ``dpmbench.models.manifest``)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from dpmbench.errors import DpmbenchError
from dpmbench.models.manifest import ROOT, SHA256, CheckpointEntry, CheckpointFile

LOCK_FILE = ".sha256.json"
VERIFIED_FILE = ".verified.json"
_WARNED: set[tuple[str, str]] = set()


class UnpinnedChecksumWarning(UserWarning):
    """A checkpoint file had no sha256 in the manifest; the hash of the downloaded file was recorded instead."""
UNPINNED_OK_SUFFIXES = (".safetensors", ".json", ".txt")


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
    return {k: v for k, v in data.get("files", {}).items() if isinstance(v, str) and SHA256.match(v)}


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
    from dpmbench.download import sha256_file

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

    from dpmbench.download import download
    from dpmbench.download import offline as env_offline

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
