"""What every page of the static site shares: escaping and anchor-safe names."""

from __future__ import annotations

import html
import re
from typing import Any


def esc(x: Any) -> str:
    """``x`` as HTML text (quotes escaped too: safe inside an attribute)."""
    return html.escape(str(x))


def slug(text: Any) -> str:
    """A file- and anchor-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def section_anchor(guidance: Any, schedule: Any, seed: Any, label: str = "") -> str:
    """The anchor of one section of a model (guidance, schedule, seed, protocol label) on the site's pages."""
    return slug(f"g{guidance}-{schedule}-s{seed}-{label}")


def solver_anchor(guidance: Any, schedule: Any, seed: Any, solver: str) -> str:
    """The anchor of one solver's diagnostics within a section on a model's diagnostics page."""
    return slug(f"d-g{guidance}-{schedule}-s{seed}-{solver}")


__all__ = ["esc", "section_anchor", "slug", "solver_anchor"]
