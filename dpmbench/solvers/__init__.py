"""Solvers, registered by kebab-case name. Importing this package registers every built-in family
(``dpmbench.solvers.registry``); each family is one module written on the shared mechanics of ``base``."""

from dpmbench.solvers.base import SOLVERS, Option, Plan, Point, Solver, parse_spec
from dpmbench.solvers.registry import get_solver, list_solvers

__all__ = ["SOLVERS", "Option", "Plan", "Point", "Solver", "get_solver", "list_solvers", "parse_spec"]
