"""File plumbing shared by the library: cache directory, atomic writes, content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir(*parts: str) -> Path:
    """The dpmbench cache (env ``DPMBENCH_CACHE``, default ``~/.cache/dpmbench``), sub-folder ``parts``."""
    root = Path(os.environ.get("DPMBENCH_CACHE", Path.home() / ".cache" / "dpmbench"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place.

    A reader never sees a partial file: either the old content, or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Atomically write an uncompressed ``.npz``."""

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, _write)


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
