"""Shared pieces of the checkpoint adapters: manifest-entry checks, sha256 gates, dtypes, time tensors.

A manifest ``entry`` is a plain mapping with ``id``, ``adapter``, ``parameterization``, ``schedule``,
``resolution`` and ``options`` (a mapping of adapter options); pickled checkpoints also carry ``sha256`` (of the
pickle) or ``files`` (the sha256 of every file, as ``{name: sha256}`` or a list of ``{"path"|"name"|"file": ...,
"sha256": ...}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Rows per network call. Convolution kernels pick their algorithm by batch size, so a sample's output would change
# in the last float32 bits with the batch it is evaluated in; calls on fixed-size chunks (the last one padded)
# make samples bit-identical whatever the batch size or shard count. 0: one call per batch (no padding).
DEFAULT_MICRO_BATCH = {"cpu": 8, "cuda": 64}
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}  # diffusers -> dpmbench


def options(entry: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """The entry's ``options``, checked against the adapter's ``allowed`` names (one-line error otherwise)."""
    opts = dict(entry.get("options") or {})
    allowed = sorted(allowed)
    for key in opts:
        if key not in allowed:
            raise bad_value(f"option of adapter {entry.get('adapter')!r}", key, allowed or "none")
    return opts


def model_dtype(opts: Mapping[str, Any]) -> torch.dtype:
    """The network's dtype (option ``dtype``: float32, float16 or bfloat16; default float32)."""
    name = opts.get("dtype", "float32")
    if name not in DTYPES:
        raise bad_value("option dtype", name, DTYPES)
    return DTYPES[name]


def check_entry_field(entry: Mapping[str, Any], field: str, actual: Any, what: str) -> None:
    """Fail when the manifest states ``field`` and it disagrees with what the checkpoint itself says."""
    stated = entry.get(field)
    if stated is not None and stated != actual:
        raise DpmbenchError(f"invalid {field} {stated!r} for checkpoint {entry.get('id')!r}: {what} says {actual!r}")


def entry_digest(entry: Mapping[str, Any]) -> str:
    """A short digest of everything in the entry that identifies the weights and how they are used."""
    keys = ("id", "adapter", "source", "revision", "sha256", "files", "parameterization", "schedule", "options")
    blob = json.dumps({k: entry.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def expected_sha256(entry: Mapping[str, Any], name: str) -> str | None:
    """The sha256 the manifest gives for file ``name``: from ``files`` (by name or path), else ``sha256``."""
    files = entry.get("files")
    if isinstance(files, Mapping):
        for key, value in files.items():
            if key in (name, Path(name).name):
                return str(value["sha256"] if isinstance(value, Mapping) else value).lower()
    elif isinstance(files, list):
        for item in files:
            if isinstance(item, Mapping):
                path = item.get("path") or item.get("name") or item.get("file")
                if path is not None and (path == name or Path(str(path)).name == Path(name).name):
                    return str(item.get("sha256", "")).lower() or None
    sha = entry.get("sha256")
    return str(sha).lower() if sha else None


def verified_file(entry: Mapping[str, Any], root: Path, name: str) -> Path:
    """``root / name`` after checking its sha256 against the manifest; raises before anything reads it otherwise.

    This is the gate in front of every ``pickle.load``: an unverified pickle can run arbitrary code.
    """
    path = Path(root) / name
    if not path.is_file():
        raise DpmbenchError(f"invalid checkpoint {entry.get('id')!r}: file {str(path)!r} not found")
    want = expected_sha256(entry, name)
    if not want:
        raise DpmbenchError(f"refusing to unpickle {str(path)!r}: the manifest entry {entry.get('id')!r} "
                            "gives no sha256 for it")
    got = sha256_file(path)
    if got != want:
        raise DpmbenchError(f"refusing to unpickle {str(path)!r}: sha256 {got} != manifest {want}")
    return path


def add_code_path(opts: Mapping[str, Any], adapter: str, env: str, repo: str) -> Path:
    """Put the checkpoint's source tree first on ``sys.path``: option ``code_path``, else environment variable
    ``env`` (a checkout is machine-specific, so a shared manifest need not name it)."""
    raw = opts.get("code_path") or os.environ.get(env, "").strip()
    if not raw:
        raise DpmbenchError(f"invalid options of adapter {adapter!r}: no code_path; set option code_path or {env} "
                            f"to a checkout of {repo}")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise DpmbenchError(f"invalid code_path {str(path)!r} (adapter {adapter!r}): no such directory")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


def checkpoint_file(entry: Mapping[str, Any], opts: Mapping[str, Any], suffixes: tuple[str, ...]) -> str:
    """The checkpoint file's name: option ``file``, else the one file of the entry's ``files`` with one of
    ``suffixes``."""
    if opts.get("file"):
        return str(opts["file"])
    files = entry.get("files") or []
    names = [str(f.get("path")) if isinstance(f, Mapping) else str(f) for f in files]
    if isinstance(files, Mapping):
        names = [str(k) for k in files]
    found = [n for n in names if n.lower().endswith(suffixes)]
    if len(found) != 1:
        raise DpmbenchError(f"invalid options of adapter {entry.get('adapter')!r}: no 'file' option and "
                            f"{len(found)} files ending in {', '.join(suffixes)} in the entry; allowed: exactly one")
    return found[0]


def time_column(t: float | torch.Tensor, x: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """``scale * t + shift`` as a float64 vector of length ``len(x)`` on ``x``'s device, without a host sync.

    ``t`` is a Python float (the usual case: solvers pass the grid time) or a 0-d / per-sample tensor.
    """
    n = x.shape[0]
    if isinstance(t, torch.Tensor):
        v = t.to(device=x.device, dtype=torch.float64) * scale + shift
        return v.expand(n) if v.ndim == 0 else v.reshape(n)
    return torch.full((n,), float(t) * scale + shift, device=x.device, dtype=torch.float64)


def in_chunks(call: Callable[..., torch.Tensor], rows: Sequence[Any], micro_batch: int | None,
              device: torch.device) -> torch.Tensor:
    """``call(*rows)`` evaluated on fixed chunks of ``micro_batch`` rows (None: ``DEFAULT_MICRO_BATCH`` of the
    device; 0: one call), the last chunk padded by repeating its final row, so that every row's result is
    independent of the batch it came in. ``rows[0]`` is the batch (n rows); any other item with n rows along its
    first axis (a tensor, or a mapping of such tensors) is cut with it, anything else is passed whole."""
    n = rows[0].shape[0]
    mb = micro_batch if micro_batch is not None else DEFAULT_MICRO_BATCH.get(device.type, 0)
    if not mb or n == mb:
        return call(*rows)

    def cut(v: Any, idx: torch.Tensor) -> Any:
        if isinstance(v, Mapping):
            return {k: cut(w, idx) for k, w in v.items()}
        return v[idx] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v

    outs = []
    for lo in range(0, n, mb):
        idx = torch.arange(lo, lo + mb, device=device).clamp(max=n - 1)  # pad: repeat the last row
        outs.append(call(*(cut(v, idx) for v in rows))[: min(mb, n - lo)])
    return torch.cat(outs)


class MicroBatched:
    """A model whose network calls run in chunks of ``micro_batch`` rows (``in_chunks``): mixed in before ``Model``."""

    micro_batch: int | None = None  # rows per network call (None: DEFAULT_MICRO_BATCH of the device; 0: none)

    @contextlib.contextmanager
    def fixed_batch(self) -> Iterator[None]:
        """One network call per batch inside the block (see ``Model.fixed_batch``): a search on 10 samples costs a
        10-row call, not a padded 64-row one (digits-unet on one core: 6.3 ms of CPU instead of 25 ms)."""
        before = self.micro_batch
        self.micro_batch = 0
        try:
            yield
        finally:
            self.micro_batch = before


def set_micro_batch(model: Any, opts: Mapping[str, Any]) -> Any:
    """Apply the ``micro_batch`` option to a ``MicroBatched`` model (rows per network call; default per device,
    0 = none)."""
    if "micro_batch" in opts:
        mb = opts["micro_batch"]
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 0:
            raise bad_value("option micro_batch", mb, "an integer >= 0")
        model.micro_batch = mb
    return model


def load_fitting(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Load the keys of ``state`` that fit ``module`` (``strict=False``) and say what did not fit: ``""`` when
    everything did, else ``"missing M, unexpected U, other shape S keys"`` (for the caller's one-line error; a key of
    another shape would otherwise stop ``load_state_dict`` with a multi-line traceback)."""
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing, unexpected = module.load_state_dict({k: v for k, v in state.items() if k not in wrong}, strict=False)
    missing = [k for k in missing if k not in wrong]  # left out above for their shape, not absent
    if missing or unexpected or wrong:
        return f"missing {len(missing)}, unexpected {len(unexpected)}, other shape {len(wrong)} keys"
    return ""


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255]: round((x / 2 + 0.5).clamp(0, 1) * 255), as diffusers' pipelines
    (``image / 2 + 0.5`` clamped, then ``numpy_to_pil``'s ``(images * 255).round()``)."""
    return ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
