"""Imports the modules that register the built-in searches (one import line per search module)."""

from dpmbench.search import ays, dc_ratios, usf  # noqa: F401  (AYS grids, DC-Solver ratios, USF schedules)
