"""Downloads with resume and sha256 verification, an offline mode, and local-path overrides.

Files are cached under ``$DPMBENCH_CACHE/downloads`` (default ``~/.cache/dpmbench``). ``DPMBENCH_OFFLINE=1``
never opens a connection: a file that is not already present (and verified) is an error that names the file
to place and where. A partial download is kept as ``NAME.part`` and resumed with an HTTP Range request (also
within one call, after a cut connection); the final file is renamed into place only after its sha256 matches,
and a download whose sha256 differs leaves nothing behind. :func:`download` is the one implementation, shared
by :func:`fetch` (metric weights, reference statistics) and ``dpmbench.models.store`` (model checkpoints).

Unpinned files (no sha256 in their manifest) are used only under an explicit per-run opt-in: ``--trust-unpinned``
(:func:`trusting`), the workflow's ``trust_unpinned: true`` or ``DPMBENCH_TRUST_UNPINNED=1`` (:func:`trust_unpinned`).
Every unpinned file a process uses is noted with the sha256 it had (:func:`note_unpinned`), so that what the process
writes can record it in its provenance and be marked unpinned in the tables (:func:`unpinned_used`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from dpmbench.errors import DpmbenchError
from dpmbench.io import cache_dir, file_lock

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 8 << 20  # a progress bar only for files at least this big
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
TRUST_ENV = "DPMBENCH_TRUST_UNPINNED"
OPT_IN = f"--trust-unpinned (workflow config trust_unpinned: true, or {TRUST_ENV}=1)"
_TRUST: ContextVar[bool] = ContextVar("dpmbench_trust_unpinned", default=False)
_UNPINNED: dict[str, str] = {}  # label ("checkpoint:ID/PATH", "reference_stats:NAME", ...) -> sha256 seen


def offline() -> bool:
    """True when ``DPMBENCH_OFFLINE`` is set to a true value (1/true/yes)."""
    return os.environ.get("DPMBENCH_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def trust_unpinned() -> bool:
    """Whether this run opted in to files without a pinned sha256: ``--trust-unpinned`` (:func:`trusting`) or
    ``DPMBENCH_TRUST_UNPINNED`` set to a true value (the workflow sets it from its config's ``trust_unpinned``)."""
    return _TRUST.get() or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


@contextmanager
def trusting(flag: bool = True) -> Iterator[None]:
    """Within the block (and this thread's context only), unpinned files are trusted when ``flag`` is true."""
    token = _TRUST.set(bool(flag) or _TRUST.get())
    try:
        yield
    finally:
        _TRUST.reset(token)


def note_unpinned(label: str, sha256: str) -> None:
    """Record that this process used the unpinned file ``label`` (e.g. ``checkpoint:ID/PATH``) with ``sha256``."""
    _UNPINNED[label] = sha256


def unpinned_used(prefix: str = "") -> dict[str, str]:
    """The unpinned files this process used whose label starts with ``prefix``: ``{label: sha256}``."""
    return {k: v for k, v in sorted(_UNPINNED.items()) if k.startswith(prefix)}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _matches(got: str, expected: str) -> bool:
    return got.startswith(expected.lower())


def verify_sha256(path: str | Path, sha256: str | None, what: str = "file") -> Path:
    """Raise a one-line ``DpmbenchError`` if ``path``'s sha256 differs from ``sha256`` (a full hex digest, or a
    prefix of at least 8 hex digits as in torch-hub file names); ``None`` skips the check."""
    path = Path(path)
    if sha256:
        got = sha256_file(path)
        if not _matches(got, sha256):
            raise DpmbenchError(
                f"checksum mismatch for {what} {str(path)!r}: sha256 {got} but expected {sha256}; "
                "the file is corrupted or not the expected one: delete it and fetch it again")
    return path


class _Cut(Exception):
    """The connection ended before the whole file arrived (the partial file is kept)."""


def _hash_of(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
    return h


def download(url: str, dest: str | Path, sha256: str | None = None, *, size: int | None = None,
             timeout: float = 60.0, retries: int = 3, progress: bool = False, what: str | None = None) -> str:
    """Download ``url`` to ``dest`` through ``dest.part`` and return the file's sha256.

    A ``.part`` file left by an earlier call is resumed with ``Range: bytes=N-``; a connection cut in the middle
    is resumed the same way up to ``retries`` times. The data are hashed while they arrive; ``dest`` appears
    (atomic rename) only when the sha256 (and ``size``, if given) match: otherwise the ``.part`` file is removed
    and a one-line ``DpmbenchError`` names the file and both hashes. Errors that are worth a second try
    (unreachable server, a cut after the last retry) keep the ``.part`` file and say so.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    label = what or url
    h = _hash_of(part)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:  # not a prefix of the expected file
        part.unlink()
        h, have = hashlib.sha256(), 0
    cuts = 0
    bar = None
    try:
        while size is None or have < size:
            req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    status = getattr(resp, "status", 200)
                    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "")) if status == 206 else None
                    if have and m is not None and int(m.group(1)) != have:  # not the range asked for
                        part.unlink(missing_ok=True)
                        h, have = hashlib.sha256(), 0
                        continue  # ask again for the whole file
                    if have and status != 206:  # the server ignored the Range request: start over
                        h, have = hashlib.sha256(), 0
                    length = resp.headers.get("Content-Length")
                    expected = have + int(length) if length is not None else size
                    if bar is None and progress and (expected or 0) >= PROGRESS_MIN_BYTES:
                        from tqdm import tqdm

                        bar = tqdm(total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                   desc=dest.name, file=sys.stderr, leave=False)
                    got = 0
                    with open(part, "ab" if have else "wb") as fh:
                        try:
                            for block in iter(lambda: resp.read(CHUNK), b""):
                                fh.write(block)
                                h.update(block)
                                got += len(block)
                                if bar is not None:
                                    bar.update(len(block))
                        except (http.client.HTTPException, OSError) as exc:
                            raise _Cut(exc) from None
                        finally:
                            have += got
                    if expected is not None and have < expected:  # the server closed the connection early
                        raise _Cut(f"{have} of {expected} bytes")
                    break
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:  # the partial file is already complete
                    break
                raise DpmbenchError(f"download of {label} failed: HTTP {exc.code}; place the file at {dest}") from None
            except _Cut as exc:
                cuts += 1
                if cuts > retries:
                    raise DpmbenchError(f"download of {label} was cut {cuts} times (last: {exc}); partial data kept "
                                        f"in {part} ({have} bytes): run again to resume") from None
            except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
                kept = f" (partial data kept in {part.name} for resuming)" if have else ""
                raise DpmbenchError(f"download of {label} failed ({exc.__class__.__name__}: {exc}); "
                                    f"place the file at {dest}{kept}") from None
    finally:
        if bar is not None:
            bar.close()
    if size is not None and have != size:
        part.unlink(missing_ok=True)
        raise DpmbenchError(f"size mismatch for download of {label}: {have} bytes but expected {size}; "
                            "nothing was kept")
    digest = h.hexdigest()
    if sha256 and not _matches(digest, sha256):
        part.unlink(missing_ok=True)
        raise DpmbenchError(f"checksum mismatch for download of {label}: sha256 {digest} but expected {sha256}; "
                            "the download is corrupted or not the expected file: nothing was kept")
    os.replace(part, dest)
    return digest


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
    download(url, dest, sha256, timeout=timeout)
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
