"""Downloads with resume and sha256 verification, an offline mode, and local-path overrides.

Files are cached under ``$DPMBENCH_CACHE/downloads`` (default ``~/.cache/dpmbench``). ``DPMBENCH_OFFLINE=1``
never opens a connection: a file that is not already present (and verified) is an error that names the file
to place and where. A partial download is kept as ``NAME.part`` and resumed with an HTTP Range request; the
final file is renamed into place only after its sha256 matches.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from dpmbench.errors import DpmbenchError
from dpmbench.io import cache_dir, file_lock

CHUNK = 1 << 20


def offline() -> bool:
    """True when ``DPMBENCH_OFFLINE`` is set to a true value (1/true/yes)."""
    return os.environ.get("DPMBENCH_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, sha256: str | None, what: str = "file") -> Path:
    """Raise a one-line ``DpmbenchError`` if ``path``'s sha256 differs from ``sha256`` (a full hex digest, or a
    prefix of at least 8 hex digits as in torch-hub file names); ``None`` skips the check."""
    path = Path(path)
    if sha256:
        got = sha256_file(path)
        if not got.startswith(sha256.lower()):
            raise DpmbenchError(
                f"checksum mismatch for {what} {str(path)!r}: sha256 {got} but expected {sha256}; "
                "the file is corrupted or not the expected one: delete it and fetch it again")
    return path


def fetch(url: str, sha256: str | None, filename: str | None = None, subdir: str = "downloads",
          timeout: float = 60.0) -> Path:
    """The verified local copy of ``url`` (cached by file name): download it if absent, resuming a partial
    ``.part`` file, and check its sha256; a cached copy that fails its sha256 is fetched again. Offline
    (``DPMBENCH_OFFLINE=1``) only the cache is consulted."""
    dest = cache_dir(subdir) / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    if dest.is_file():
        try:
            return verify_sha256(dest, sha256, "cached file")
        except DpmbenchError:
            if offline():
                raise
    with file_lock(dest):  # concurrent jobs: one downloads (appending to one .part file), the others wait
        if dest.is_file():
            try:
                return verify_sha256(dest, sha256, "cached file")
            except DpmbenchError:
                dest.unlink()  # a corrupted cache entry is fetched again, never used
        return _download(url, sha256, dest, timeout)


def _download(url: str, sha256: str | None, dest: Path, timeout: float) -> Path:
    if offline():
        raise DpmbenchError(f"offline (DPMBENCH_OFFLINE=1) and {dest.name!r} is not cached: download {url} "
                            f"and place it at {dest}" + (f" (sha256 {sha256})" if sha256 else ""))
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = getattr(resp, "status", 200)
            if have and status != 206:  # server ignored the Range request: start over
                have = 0
            with open(part, "ab" if have else "wb") as fh:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    fh.write(block)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            pass
        else:
            raise DpmbenchError(f"download of {url} failed: HTTP {exc.code}; place the file at {dest}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DpmbenchError(f"download of {url} failed ({exc.__class__.__name__}: {exc}); "
                            f"place the file at {dest} (partial data kept in {part.name} for resuming)") from None
    try:
        verify_sha256(part, sha256, f"download of {url}")
    except DpmbenchError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


def resolve_local(explicit: str | None, env_var: str, what: str, expected: str | Path | None = None) -> Path | None:
    """A local-path override: ``explicit`` (config / CLI) first, then ``$env_var``. Returns None when neither is
    set; raises a one-line error when the named file does not exist."""
    path = explicit or os.environ.get(env_var) or None
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        hint = f" (expected: {expected})" if expected else ""
        raise DpmbenchError(f"invalid {what} path {str(p)!r} (from {'config/CLI' if explicit else env_var}): "
                            f"no such file{hint}")
    return p
