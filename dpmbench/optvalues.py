"""Solver specs and their option values (``NAME:key=value,...``): splitting a spec, reading a boolean, printing a
value. Torch-free, so that ``dpmbench.catalogue`` (the listings), ``dpmbench.grid`` (the config check, which need not
import torch) and ``dpmbench.solvers.base`` (the solvers) share them."""

from __future__ import annotations

from typing import Any

from dpmbench.errors import DpmbenchError

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


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a non-empty spec ``NAME[:key=value,...]`` into the name and the raw options (a one-line error for a
    malformed option or one given twice)."""
    name, _, rest = spec.strip().partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DpmbenchError(f"invalid solver spec {spec!r}: options must be key=value, got {item!r}")
        if key.strip() in opts:
            raise DpmbenchError(f"invalid solver spec {spec!r}: option {key.strip()!r} given twice")
        opts[key.strip()] = value.strip()
    return name.strip(), opts
