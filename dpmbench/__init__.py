"""dpmbench: a reproducible benchmark of fast diffusion-model samplers.

The public API is imported lazily, so that light commands (``dpmbench evaluate``, ``dpmbench report``)
start without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dpmbench.version import __version__ as __version__

_API = {
    "DpmbenchError": "dpmbench.errors",
    "get_solver": "dpmbench.solvers",
    "guided": "dpmbench.models",
    "list_models": "dpmbench.models",
    "list_solvers": "dpmbench.solvers",
    "load_model": "dpmbench.models",
    "sample": "dpmbench.api",
    "timesteps": "dpmbench.timesteps",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'dpmbench' has no attribute {name!r}")
