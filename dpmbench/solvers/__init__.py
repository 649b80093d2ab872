"""Solvers, registered by kebab-case name (``dpmbench.solvers.registry`` registers every built-in family; each
family is one module written on the shared mechanics of ``base``). The API below is imported lazily, so that the
plugin settings (``dpmbench.solvers.plugins``) are read without importing torch."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "SOLVERS": "dpmbench.solvers.base",
    "Option": "dpmbench.solvers.base",
    "Plan": "dpmbench.solvers.base",
    "Point": "dpmbench.solvers.base",
    "Solver": "dpmbench.solvers.base",
    "parse_spec": "dpmbench.solvers.base",
    "get_solver": "dpmbench.solvers.registry",
    "list_solvers": "dpmbench.solvers.registry",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'dpmbench.solvers' has no attribute {name!r}")
