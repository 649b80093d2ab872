"""Solvers, registered by kebab-case name. Importing this package registers every built-in family."""

from dpmbench.solvers import ddim, ddpm, deis, dpm_solver, edm, pndm, sa_solver, unipc  # noqa: F401, I001  (registration)
from dpmbench.solvers import iia, momentum, time_shift  # noqa: F401  (registration: iia-*, plms-hb, ghvb, dpm-solver++-hb, ts-*)
from dpmbench.solvers.base import SOLVERS, Option, Plan, Point, Solver, get_solver, list_solvers, parse_spec

__all__ = ["SOLVERS", "Option", "Plan", "Point", "Solver", "get_solver", "list_solvers", "parse_spec"]
