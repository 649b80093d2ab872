"""Imports the modules that register the built-in searches (one import line per search module)."""

from dpmbench.search import dc_ratios  # noqa: F401  (DC-Solver's ratio search)
