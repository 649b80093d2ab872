"""User-facing errors: one line, naming the bad field and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable


class DpmbenchError(ValueError):
    """An error caused by bad input. The CLI prints it as one line and exits with code 2."""


def bad_value(field: str, value: object, allowed: Iterable[object] | str) -> DpmbenchError:
    """Build the standard one-line error for ``field`` having an unusable ``value``."""
    if not isinstance(allowed, str):
        allowed = ", ".join(str(a) for a in allowed)
    return DpmbenchError(f"invalid {field} {value!r}; allowed: {allowed}")
