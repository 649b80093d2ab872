"""The solver registry as the rest of dpmbench sees it: every built-in family registered (in listing order: the
base families first, then the methods built on them) and the plugins loaded before a solver is looked up."""

from __future__ import annotations

from typing import Any

# Import order is registration order is listing order: the base families first, then the methods built on them.
# isort: off
from dpmbench.solvers import ddim, ddpm, deis, dpm_solver, edm, flow, pndm, sa_solver, unipc  # noqa: F401
from dpmbench.solvers import dpm_solver_v3, usf, dc_solver  # noqa: F401
from dpmbench.solvers import iia, momentum, time_shift  # noqa: F401
from dpmbench.solvers import accelerated, aligner, dode, picard  # noqa: F401
# isort: on
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
