"""Solvers, registered by kebab-case name. Importing this package registers every built-in family.

Registration order is listing order (`dpmbench list solvers`, "allowed:" lists): the base families first, then
the methods built on them.
"""

from dpmbench.solvers import ddim, ddpm, deis, dpm_solver, edm, pndm, sa_solver, unipc  # noqa: F401, I001
from dpmbench.solvers import dpm_solver_v3, usf, dc_solver  # noqa: F401, I001
from dpmbench.solvers import iia, momentum, time_shift  # noqa: F401, I001
from dpmbench.solvers import accelerated, aligner, dode, picard  # noqa: F401, I001
from dpmbench.solvers.base import SOLVERS, Option, Plan, Point, Solver, get_solver, list_solvers, parse_spec

__all__ = ["SOLVERS", "Option", "Plan", "Point", "Solver", "get_solver", "list_solvers", "parse_spec"]
