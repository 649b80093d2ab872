"""Lazy package attributes (PEP 562): a package names the module each public name lives in, and the module is
imported on first use, so that importing the package itself imports nothing heavy (torch above all)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, api: Mapping[str, str]) -> Callable[[str], Any]:
    """The module-level ``__getattr__`` of ``package``: ``api`` maps each public name to its module's dotted name."""

    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(import_module(api[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
