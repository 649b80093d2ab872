"""Searches and fits that run before sampling: AutoDiffusion time steps, AYS grids, DC-Solver's ratios and its CPR
fit, USF schedules. Importing this package registers every built-in search (``base`` holds the registry and the
runner); solver plugins are loaded too, since they may register searches."""

from __future__ import annotations

from typing import Any

from dpmbench.search import autodiffusion, ays, dc_cpr, dc_ratios, usf  # noqa: F401  (register the searches)
from dpmbench.search.base import SEARCHES, Search, parse_options, register_search
from dpmbench.search.base import get_search as _get_registered
from dpmbench.search.base import run_search as _run_registered
from dpmbench.solvers.base import Context, Solver
from dpmbench.solvers.registry import list_solvers


def list_searches() -> list[str]:
    """Registered search names (plugins loaded)."""
    list_solvers()
    return list(SEARCHES)


def get_search(name: str) -> Search:
    """The search ``name`` (one-line error listing the registered ones; plugins loaded)."""
    list_solvers()
    return _get_registered(name)


def run_search(kind: str, ctx: Context, solver: Solver | None = None, seed: int = 0,
               options: dict[str, Any] | None = None, name: str | None = None) -> Any:
    """Run (or load from the cache) the search ``kind`` for this context; save it as ``name`` if given
    (``dpmbench.search.base.run_search`` once the plugins are loaded)."""
    list_solvers()
    return _run_registered(kind, ctx, solver, seed, options, name)


__all__ = ["SEARCHES", "Search", "get_search", "list_searches", "parse_options", "register_search", "run_search"]
