"""User-facing errors: one line, naming the bad field and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DpmbenchError(ValueError):
    """An error caused by bad input. The CLI prints it as one line and exits with code 2."""


def did_you_mean(value: object, allowed: Iterable[object]) -> str:
    """``"did you mean 'x'?"`` for the allowed name closest to a misspelt ``value`` (difflib), else ``""``."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
    return f"did you mean {close[0]!r}?" if close and close[0] != value else ""


def bad_value(field: str, value: object, allowed: Iterable[object] | str) -> DpmbenchError:
    """Build the standard one-line error for ``field`` having an unusable ``value`` (with a "did you mean" hint
    when ``value`` is close to one of the allowed names)."""
    hint = ""
    if not isinstance(allowed, str):
        allowed = [str(a) for a in allowed]
        hint = did_you_mean(value, allowed)
        allowed = ", ".join(allowed)
    return DpmbenchError(f"invalid {field} {value!r}; allowed: {allowed}{'; ' + hint if hint else ''}")
