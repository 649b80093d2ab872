"""Solvers, registered by kebab-case name (``dpmbench.solvers.registry`` registers every built-in family; each
family is one module written on the shared mechanics of ``base``). The API below is imported lazily, so that the
plugin settings (``dpmbench.solvers.plugins``) are read without importing torch."""

from __future__ import annotations

from dpmbench.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _API)
