"""Imports the modules that register the built-in searches (one import line per search module)."""

# AutoDiffusion time steps, AYS grids, DC-Solver ratios, USF schedules
from dpmbench.search import autodiffusion, ays, dc_cpr, dc_ratios, usf  # noqa: F401
