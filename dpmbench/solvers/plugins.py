"""Solvers from outside the package: entry points of group ``dpmbench.solvers`` and modules named in the
environment variable ``DPMBENCH_PLUGINS`` (comma-separated import paths).

A plugin is a module that defines ``Solver`` subclasses decorated with ``dpmbench.solvers.base.register``, or an
entry point that resolves to such a module or to a ``Solver`` subclass (registered on load)::

    # pyproject.toml of another project
    [project.entry-points."dpmbench.solvers"]
    my-solver = "my_package.my_solver:MySolver"

    # or, without installing anything:
    DPMBENCH_PLUGINS=my_package.my_solver dpmbench sample --solver my-solver ...
"""

from __future__ import annotations

import functools
import importlib
import os
from importlib.metadata import entry_points
from typing import Any

from dpmbench.errors import DpmbenchError

ENTRY_POINT_GROUP = "dpmbench.solvers"
ENV_VAR = "DPMBENCH_PLUGINS"
_loaded: set[str] = set()


def plugin_modules() -> list[str]:
    """The module paths named in ``DPMBENCH_PLUGINS``."""
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


@functools.lru_cache(maxsize=1)
def _entry_points() -> tuple[Any, ...]:
    """The installed entry points of the group, discovered once per process (scanning every installed
    distribution's metadata costs milliseconds, and ``get_solver`` runs on every ``sample`` call)."""
    return tuple(entry_points(group=ENTRY_POINT_GROUP))


def load_plugins() -> None:
    """Import every plugin once; a broken plugin is a one-line error naming it."""
    from dpmbench.solvers.base import SOLVERS, Solver, register  # torch: only once solvers are looked up

    for ep in _entry_points():
        key = f"ep:{ep.value}"
        if key in _loaded:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001  (any import failure of third-party code)
            raise DpmbenchError(f"invalid solver plugin {ep.value!r} (entry point {ep.name!r}): "
                                f"{type(exc).__name__}: {exc}") from None
        if isinstance(obj, type) and issubclass(obj, Solver) and obj.name not in SOLVERS:
            register(obj)
        _loaded.add(key)
    for module in plugin_modules():
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001
            raise DpmbenchError(f"invalid {ENV_VAR} entry {module!r}: {type(exc).__name__}: {exc}") from None
        _loaded.add(module)
