"""Provenance of a number: which code, libraries, device and protocol produced it.

:func:`environment` describes the running process (dpmbench version and git commit with a dirty flag, Python and
library versions, CPU model or GPU name, date); :func:`config_sha256` hashes a run config (the workflow exports it
as ``DPMBENCH_CONFIG_SHA256`` to its jobs). Library versions come from the installed distributions' metadata, so
nothing heavy is imported. Everything here is cached per process: a metrics job writes many files.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "DPMBENCH_CONFIG_SHA256"
# distributions whose versions are recorded (metric libraries: torch-fidelity, clean-fid, open_clip_torch)
LIBRARIES = ("torch", "numpy", "scipy", "diffusers", "transformers", "torch-fidelity", "clean-fid",
             "open_clip_torch", "snakemake")


@functools.lru_cache(maxsize=1)
def git_state(root: str = str(ROOT)) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding dpmbench (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Python and the installed version of each of :data:`LIBRARIES` (None when not installed; read once per
    process: each lookup parses the distribution's metadata). Callers get a copy of the cached dict."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` model name, else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str = "cpu") -> str:
    """A readable name of ``device``: the CPU model, or the GPU's name (``cuda``, ``cuda:1``)."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(torch.device(device)))
        return f"{device} (unavailable)"
    return cpu_name()


def environment(device: str = "cpu") -> dict[str, Any]:
    """The provenance of the running process: code, libraries, device, the config hash (when a workflow job
    runs) and the date (UTC, ISO 8601)."""
    from dpmbench.version import __version__

    return {
        "dpmbench": __version__, "git_commit": git_state()["commit"], "git_dirty": git_state()["dirty"],
        "versions": dict(library_versions()), "platform": platform.platform(),
        "device": str(device), "device_name": device_name(device),
        "config_sha256": os.environ.get(CONFIG_ENV) or None,
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
    }


def config_sha256(config: dict[str, Any]) -> str:
    """sha256 of a run config (canonical JSON: sorted keys), the same for the same settings in any key order."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def provenance_id(record: dict[str, Any]) -> str:
    """A short id of a provenance record without its date (files of one run and machine share it)."""
    return hashlib.sha256(json.dumps({k: v for k, v in record.items() if k != "date"}, sort_keys=True,
                                     default=str).encode()).hexdigest()[:12]


__all__ = ["CONFIG_ENV", "provenance_id", "config_sha256", "cpu_name", "device_name", "environment", "git_state",
           "library_versions"]
