"""Solvers, registered by kebab-case name. Importing this package registers every built-in family."""

from dpmbench.solvers import ddim, ddpm, deis, dpm_solver, edm, pndm, sa_solver, unipc  # noqa: F401  (registration)
from dpmbench.solvers.base import SOLVERS, Option, Plan, Point, Solver, get_solver, list_solvers, parse_spec

__all__ = ["SOLVERS", "Option", "Plan", "Point", "Solver", "get_solver", "list_solvers", "parse_spec"]

from dpmbench.solvers import dc_solver  # noqa: E402, F401  (registration, listed after the families it builds on)
