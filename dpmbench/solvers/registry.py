"""The solver registry as the rest of dpmbench sees it: every built-in family registered (in listing order: the
base families first, then the methods built on them) and the plugins loaded before a solver is looked up."""

from __future__ import annotations

from typing import Any

from dpmbench.solvers import (  # noqa: F401, I001  # noqa: F401, I001  # noqa: F401, I001  # noqa: F401, I001
    accelerated,
    aligner,
    dc_solver,
    ddim,
    ddpm,
    deis,
    dode,
    dpm_solver,
    dpm_solver_v3,
    edm,
    iia,
    momentum,
    picard,
    pndm,
    sa_solver,
    time_shift,
    unipc,
    usf,
)
from dpmbench.solvers.base import SOLVERS, Solver, make_solver
from dpmbench.solvers.plugins import load_plugins


def list_solvers() -> list[str]:
    """Registered solver names (built-in families and plugins)."""
    load_plugins()
    return list(SOLVERS)


def get_solver(spec: str | Solver, **overrides: Any) -> Solver:
    """Build a solver from a spec string (``NAME[:key=value,...]``) or return it unchanged; plugins are loaded
    first."""
    if isinstance(spec, Solver):
        return spec
    load_plugins()
    return make_solver(spec, **overrides)
