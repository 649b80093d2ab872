"""dpmbench: a reproducible benchmark of fast diffusion-model samplers.

The public API is imported lazily, so that light commands (``dpmbench evaluate``, ``dpmbench report``)
start without importing torch.
"""

from __future__ import annotations

from dpmbench.lazy import lazy_exports
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

__getattr__ = lazy_exports(__name__, _API)
