"""Imports the modules that register the built-in searches (one import line per search module)."""

import dpmbench.search.ays  # noqa: F401,E402  Align Your Steps time grids
import dpmbench.search.usf  # noqa: F401,E402  USF / S^3 solver schedules
