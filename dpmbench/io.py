"""File plumbing shared by the library: cache directory, atomic writes, content hashes, verified loads and
locked cache entries.

Every ``.npz`` written by :func:`save_npz` embeds a sha256 of its arrays (key ``content_sha256``); :func:`load_npz`
checks it, so a truncated or corrupted file (a job or a copy killed half-way, a bad disk) is reported as
:class:`CorruptFileError` instead of being used. :func:`cached_npz` keeps an expensive, shared computation on disk:
a corrupt entry is recomputed, and a file lock makes concurrent processes compute it once."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError

# a parallel solver's counters (sampling.sample's stats), kept in the samples file and the metrics record
PARALLEL_COUNTERS = ("parallel_rounds", "nfe_total")

CHECKSUM_KEY = "content_sha256"
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) and restored
os.umask(_UMASK)


def cache_dir(*parts: str) -> Path:
    """The dpmbench cache (env ``DPMBENCH_CACHE``, default ``~/.cache/dpmbench``), sub-folder ``parts``."""
    root = Path(os.environ.get("DPMBENCH_CACHE", Path.home() / ".cache" / "dpmbench"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place.

    A reader never sees a partial file: either the old content, or the complete new one. The file gets the mode
    ``open()`` would give it (0666 minus the umask), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; a published file gets open()'s mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


class CorruptFileError(DpmbenchError):
    """A file that exists but cannot be used: truncated, not the expected format, or failing its checksum."""


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the named arrays (sorted by name; dtype, shape and bytes of each)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(name.encode() + b"\x00" + str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Atomically write an uncompressed ``.npz`` with an embedded sha256 of its arrays (``content_sha256``)."""
    arrays.pop(CHECKSUM_KEY, None)
    data = {k: np.asarray(v) for k, v in arrays.items()}
    data[CHECKSUM_KEY] = np.asarray(arrays_sha256(data))

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)

    return atomic_write(path, _write)


def load_npz(path: str | os.PathLike[str], what: str = "file") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (never unpickled), its embedded checksum verified and removed.

    Raises ``FileNotFoundError`` if ``path`` is absent and :class:`CorruptFileError` (one line naming the file)
    if it is truncated, not an ``.npz`` or fails its checksum. Files without a checksum (written by other
    tools) are accepted once they load.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(str(p))
    try:
        with np.load(p, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError) as exc:
        raise CorruptFileError(f"invalid {what} {str(p)!r}: truncated or not a readable .npz "
                               f"({exc.__class__.__name__})") from None
    stored = data.pop(CHECKSUM_KEY, None)
    if stored is not None and str(stored) != arrays_sha256(data):
        raise CorruptFileError(f"invalid {what} {str(p)!r}: content does not match its sha256 (corrupted)")
    return data


def verify_npz(path: str | os.PathLike[str], what: str = "file", remove: bool = False) -> bool:
    """Whether ``path`` loads and matches its checksum; a corrupt file is deleted when ``remove``."""
    try:
        load_npz(path, what)
    except FileNotFoundError:
        return False
    except CorruptFileError:
        if remove:
            Path(path).unlink(missing_ok=True)
        return False
    return True


def file_lock(path: str | os.PathLike[str], timeout: float = -1) -> Any:
    """An inter-process lock guarding ``path`` (``filelock.FileLock``, released when its process dies); the lock
    file lives in ``$DPMBENCH_CACHE/locks``, named by a hash of the absolute path, so that data folders hold only
    data. Use as a context manager."""
    from filelock import FileLock

    name = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    return FileLock(str(cache_dir("locks") / f"{name}.lock"), timeout=timeout)


def cached_npz(path: str | os.PathLike[str], compute: Callable[[], dict[str, Any]],
               what: str = "cache entry") -> dict[str, np.ndarray]:
    """The arrays cached in ``path``, computing and writing them once if absent or corrupt.

    A corrupt entry (truncated, or failing its checksum) is recomputed, never used. Concurrent processes
    asking for the same entry take a file lock, so ``compute`` runs in one of them and the others read its
    result; the file itself is written atomically, so even a reader without the lock never sees it partial.
    """
    path = Path(path)
    try:
        return load_npz(path, what)
    except (FileNotFoundError, CorruptFileError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        try:  # another process may have computed it while we waited for the lock
            return load_npz(path, what)
        except (FileNotFoundError, CorruptFileError):
            pass
        out = {k: np.asarray(v) for k, v in compute().items()}
        save_npz(path, **out)
    return out


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""

    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    return atomic_write(path, _write)


def digest(*items: Any) -> str:
    """A sha256 over arrays, tensors, strings and numbers: a cache key of everything given."""
    h = hashlib.sha256()
    for item in items:
        if hasattr(item, "detach"):
            item = item.detach().cpu().numpy()
        if isinstance(item, np.ndarray):
            h.update(str(item.dtype).encode())
            h.update(str(item.shape).encode())
            h.update(np.ascontiguousarray(item).tobytes())
        else:
            h.update(repr(item).encode())
        h.update(b"\x00")
    return h.hexdigest()
