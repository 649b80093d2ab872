"""Imports the modules that register the built-in searches (one import line per search module)."""
