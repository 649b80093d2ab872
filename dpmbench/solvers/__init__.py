"""Solvers, registered by kebab-case name. Importing this package registers every built-in family."""

# isort: off  (registration order: the families built on the ones above come after them)
from dpmbench.solvers import (  # noqa: F401  (registration)
    dc_solver,  # noqa: F401
    ddim,
    ddpm,
    deis,
    dpm_solver,
    dpm_solver_v3,  # noqa: F401
    edm,
    pndm,
    sa_solver,
    unipc,
    usf,  # noqa: F401
)

# isort: on
from dpmbench.solvers.base import SOLVERS, Option, Plan, Point, Solver, get_solver, list_solvers, parse_spec

__all__ = ["SOLVERS", "Option", "Plan", "Point", "Solver", "get_solver", "list_solvers", "parse_spec"]
