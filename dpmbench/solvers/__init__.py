"""Solvers, registered by kebab-case name. Importing this package registers every built-in family."""

from dpmbench.solvers import (  # noqa: F401  (registration)
    dc_solver,
    ddim,
    ddpm,
    deis,
    dpm_solver,
    edm,
    pndm,
    sa_solver,
    unipc,
)
from dpmbench.solvers.base import SOLVERS, Option, Plan, Point, Solver, get_solver, list_solvers, parse_spec

__all__ = ["SOLVERS", "Option", "Plan", "Point", "Solver", "get_solver", "list_solvers", "parse_spec"]
