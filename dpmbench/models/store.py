"""Pretrained checkpoints, their files: where they live, ``pull`` (download with resume + sha256), ``verify``, and
the lock file of hashes recorded for unpinned files (the manifest itself: ``dpmbench.models.manifest``)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpmbench.errors import DpmbenchError
from dpmbench.models.manifest import ROOT, SHA256, CheckpointEntry, CheckpointFile

LOCK_FILE = ".sha256.json"
VERIFIED_FILE = ".verified.json"
_WARNED: set[tuple[str, str]] = set()


class UnpinnedChecksumWarning(UserWarning):
    """A checkpoint file had no sha256 in the manifest and was used under ``--trust-unpinned``; the sha256 it had
    was recorded (lock file, provenance) instead."""


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
    """One warning per checkpoint (and process) for the unpinned files used under ``--trust-unpinned``."""
    new = [p for p in recorded if (entry.id, p) not in _WARNED]
    if new:
        _WARNED.update((entry.id, p) for p in new)
        pickles = [p for p in new if CheckpointFile(p).is_pickle]
        danger = (f"; {len(pickles)} of them ({', '.join(repr(p) for p in pickles)}) are pickles: loading them "
                  "runs whatever code they contain, so use them only if you trust their source" if pickles else "")
        warnings.warn(f"checkpoint {entry.id!r}: {len(new)} file(s) have no sha256 in the manifest "
                      f"({', '.join(repr(p) for p in new)}) and are used because of --trust-unpinned{danger}; the "
                      f"sha256 they had is recorded in {root / LOCK_FILE} and in the provenance of every result "
                      "computed from them (marked unpinned in the tables): pin them in the manifest",
                      UnpinnedChecksumWarning, stacklevel=3)


def _expected(entry: CheckpointEntry, f: CheckpointFile, lock: Mapping[str, str]) -> tuple[str | None, str]:
    if f.sha256:
        return f.sha256, "the manifest"
    return lock.get(f.path), "the lock file"


def _check_pinnable(entry: CheckpointEntry, trust: bool) -> None:
    """Refuse files whose sha256 is null, unless this run opted in (``trust``); a shipped (local) file always needs
    its sha256 pinned."""
    from dpmbench.download import OPT_IN

    for i, f in enumerate(entry.files):
        if f.sha256:
            continue
        field_ = f"checkpoints.{entry.id}.files[{i}].sha256"
        where = f" ({entry.manifest})" if entry.manifest else ""
        if entry.kind == "local":
            raise DpmbenchError(
                f"refusing checkpoint {entry.id!r} file {f.path!r}: a local (shipped) file needs its sha256 pinned "
                f"in the manifest{where} at {field_} (`sha256sum {checkpoint_dir(entry) / f.path}`)")
        if trust:
            continue
        origin = entry.url(f) or " ".join(str(entry.source.get("manual")).split())
        goes = f" (the file: {origin}, placed at {checkpoint_dir(entry) / f.path})"
        what = "it is a pickle (unpickled when loaded) and has no sha256 pinned" if f.is_pickle else "no sha256 pinned"
        raise DpmbenchError(
            f"refusing checkpoint {entry.id!r} file {f.path!r}: {what}; pin its sha256 in the manifest{where} at "
            f"{field_}, or opt in for this run with {OPT_IN}: the sha256 it has is then recorded and every result "
            f"computed from it is marked unpinned{goes}")


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
    size and mtime). Returns (sha256, whether the manifest pins no sha256 for it)."""
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
    return got, f.sha256 is None


def _note(entry: CheckpointEntry, root: Path, f: CheckpointFile, sha: str, lock: dict[str, str],
          recorded: list[str]) -> dict[str, str]:
    """An unpinned file used under the opt-in: its sha256 recorded in the lock file (where it is new) and noted for
    the provenance of what this process computes from it (``dpmbench.download.unpinned_used``)."""
    from dpmbench.download import note_unpinned

    if lock.get(f.path) != sha:
        _record_lock(entry, root, f.path, sha)
        lock = _lock(entry, root)
    note_unpinned(unpinned_label(entry.id, f.path), sha)
    recorded.append(f.path)
    return lock


def unpinned_label(cid: str, path: str) -> str:
    """The label under which an unpinned checkpoint file is noted and recorded in provenance."""
    return f"checkpoint:{cid}/{path}"


def seen_hashes(entry: CheckpointEntry) -> dict[str, str]:
    """The sha256 recorded (lock file) for the files of ``entry`` that the manifest does not pin."""
    lock = _lock(entry, state_dir(entry))
    return {f.path: lock[f.path] for f in entry.files if f.sha256 is None and f.path in lock}


def verify(entry: CheckpointEntry, trust_unpinned: bool | None = None) -> Path:
    """Check that every file of ``entry`` is in its checkpoint directory with its sha256; return the directory.

    Never downloads: a missing file is a one-line error naming each missing file, its URL and where to place it.
    Hashes are cached by (size, mtime), so an unchanged file is hashed once. A file without a pinned sha256 is
    refused unless ``trust_unpinned`` (default: :func:`dpmbench.download.trust_unpinned`, the per-run opt-in); under
    the opt-in it is checked against the hash recorded when it was first used, and that hash is noted.
    """
    from dpmbench.download import trust_unpinned as opted_in

    _check_pinnable(entry, opted_in() if trust_unpinned is None else bool(trust_unpinned))
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
                lock = _note(entry, state, f, got, lock, recorded)
    finally:
        if json.dumps(cache, sort_keys=True) != before:
            save_json(state / VERIFIED_FILE, cache)
    _warn_unpinned(entry, state, recorded)
    return root


def pull(entry: CheckpointEntry, offline: bool | None = None, progress: bool = True, timeout: float = 60.0,
         trust_unpinned: bool | None = None) -> Path:
    """Download the missing files of ``entry`` (resuming ``.part`` files, sha256 checked before the rename),
    then :func:`verify` it; return the checkpoint directory.

    ``offline`` (default: ``DPMBENCH_OFFLINE``) never opens a connection. A present file whose hash is wrong is
    downloaded again (online) or reported (offline / manual source). A ``local`` source is only verified. Files
    without a pinned sha256 are refused unless ``trust_unpinned`` (default: the per-run opt-in, as :func:`verify`).
    """
    from filelock import FileLock

    from dpmbench.download import download
    from dpmbench.download import offline as env_offline
    from dpmbench.download import trust_unpinned as opted_in

    trust = opted_in() if trust_unpinned is None else bool(trust_unpinned)
    _check_pinnable(entry, trust)
    if entry.kind == "local":
        return verify(entry, trust)
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
            if f.sha256 is None:
                lock = _note(entry, root, f, sha, lock, recorded)
        _warn_unpinned(entry, root, recorded)
    return verify(entry, trust)


def stamp_text(entry: CheckpointEntry, trust_unpinned: bool | None = None) -> str:
    """``sha256  path`` lines (``sha256sum -c`` format, relative to the checkpoint directory) of a verified
    checkpoint: the workflow's verification stamp."""
    verify(entry, trust_unpinned)
    lock = _lock(entry, state_dir(entry))
    cache = _read_json(state_dir(entry) / VERIFIED_FILE)
    lines = []
    for f in entry.files:
        sha = f.sha256 or lock.get(f.path) or cache.get(f.path, [None, None, ""])[2]
        lines.append(f"{sha}  {f.path}")
    return "\n".join(lines) + "\n"
