"""Option values as solver specs write them (``NAME:key=value,...``): reading a boolean and printing a value.
Torch-free, so that ``dpmbench.catalogue`` (the listings) and ``dpmbench.solvers.base`` (the solvers) share them."""

from __future__ import annotations

from typing import Any

BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(raw: str) -> bool:
    """A boolean option from its text (true/false, 1/0, yes/no, any case); ``ValueError`` otherwise."""
    try:
        return BOOL_WORDS[raw.lower()]
    except KeyError:
        raise ValueError(raw) from None


def fmt_value(value: Any) -> str:
    """An option value as a spec writes it (booleans in lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
