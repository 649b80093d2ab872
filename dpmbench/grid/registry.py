"""Facts the grid needs about models, solvers, schedules, metrics and searches, cached on disk
(``$DPMBENCH_CACHE/workflow``) so that parsing the Snakefile (once per run, and once per cluster job) does not
import torch or build models when nothing changed.

The cache is keyed by everything the facts depend on: the project's source files, and the identity of every solver
plugin that would be loaded (``dpmbench.solvers.plugins``: the entry points of group ``dpmbench.solvers`` and the
modules of ``$DPMBENCH_PLUGINS``, each with the digest of its module's source, or "missing"). A config naming a
solver of a plugin that is no longer loadable is therefore checked afresh, and fails before anything runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from dpmbench.errors import DpmbenchError
from dpmbench.grid.schema import ROOT
from dpmbench.yamlfile import read_yaml


def reference_stats_names() -> list[str]:
    """Names of reference_stats/manifest.yaml (the ``reference_stats`` a config may name)."""
    doc = read_yaml(ROOT / "reference_stats" / "manifest.yaml") or {}
    return [str(e["name"]) for e in doc.get("stats", []) if isinstance(e, dict) and "name" in e]


def fid_implementation_names() -> list[str]:
    """Names of the ``fid_implementations`` of reference_stats/manifest.yaml (the ``fid_implementation`` a config's
    model may state: the FID implementation behind the published numbers it reproduces)."""
    doc = read_yaml(ROOT / "reference_stats" / "manifest.yaml") or {}
    return [str(e["name"]) for e in doc.get("fid_implementations", []) if isinstance(e, dict) and "name" in e]


def file_digest(path: str | os.PathLike[str] | None) -> str:
    """sha256 of a file's bytes (first 16 hex digits), or ``missing``."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else "missing"
    except OSError:
        return "missing"


def module_digest(module: str) -> str:
    """The digest of a module's source file, found without importing it (its parent packages are imported)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return "missing"
    return file_digest(spec.origin if spec is not None else None)


def plugins_identity() -> list[str]:
    """What identifies the solver plugins a process would load: entry points (name, target, distribution,
    module digest) and ``$DPMBENCH_PLUGINS`` modules (name, module digest)."""
    from importlib.metadata import entry_points

    from dpmbench.solvers.plugins import ENTRY_POINT_GROUP, plugin_modules

    out = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        version = f"{dist.name}=={dist.version}" if dist is not None else "?"
        out.append(f"ep:{ep.name}={ep.value}:{version}:{module_digest(ep.module)}")
    out += [f"env:{m}:{module_digest(m)}" for m in plugin_modules()]
    return out


class Registry:
    """The facts, computed on first use and cached under a key of the sources and plugins they depend on."""

    def __init__(self) -> None:
        from dpmbench.io import cache_dir

        h = hashlib.sha256()
        for p in sorted([*ROOT.glob("dpmbench/**/*.py"), *ROOT.glob("evaluators/**/*.py")]):
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
        for line in plugins_identity():  # solvers from outside change the facts
            h.update(f"{line};".encode())
        self.path = cache_dir("workflow") / f"registry-{h.hexdigest()[:20]}.json"
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    def _get(self, key: str, compute: Any) -> Any:
        if key not in self.data:
            self.data[key] = compute()
            self.dirty = True
        return self.data[key]

    def save(self) -> None:
        """Write the cache if anything was computed."""
        if self.dirty:
            from dpmbench.io import save_json

            with contextlib.suppress(OSError):  # a read-only cache only costs time
                save_json(self.path, self.data)

    def models(self) -> list[str]:
        """The oracle models (checkpoint ids come from the manifest, read on every parse, not cached)."""

        def compute() -> list[str]:
            from dpmbench.models.registry import ORACLES

            return list(ORACLES)

        return self._get("list:oracles", compute)

    def schedules(self) -> list[str]:
        def compute() -> list[str]:
            from dpmbench.timesteps import ALL_KINDS

            return [k for k in ALL_KINDS if k != "custom"]

        return self._get("list:schedules", compute)

    def metrics(self) -> list[str]:
        def compute() -> list[str]:
            from evaluators.registry import list_metrics

            return list(list_metrics())

        return self._get("list:metrics", compute)

    def model(self, name: str) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            from dpmbench.models.registry import load_model

            m = load_model(name)
            return {"num_classes": int(m.num_classes or 0), "exact": hasattr(m, "exact_solution"),
                    "schedule": m.schedule.kind}

        return self._get(f"model:{name}", compute)

    def solver_error(self, spec: str, nfe: int | None = None) -> str:
        """The one-line problem of a solver spec (or of an NFE budget for it); empty if none."""

        def compute() -> str:
            from dpmbench.solvers.registry import get_solver

            try:
                sol = get_solver(spec)
                if nfe is not None:
                    sol.check_nfe(nfe)
            except DpmbenchError as exc:
                return str(exc)
            return ""

        return self._get(f"solver:{spec}|{'' if nfe is None else nfe}", compute)

    def solver_pure_noise(self, spec: str) -> bool:
        """Whether the solver can start at pure noise (a flow model's t = 1; ``pure_noise_start``)."""

        def compute() -> bool:
            from dpmbench.solvers.registry import get_solver

            return bool(get_solver(spec).pure_noise_start)

        return self._get(f"pure-noise:{spec}", compute)

    def pure_noise_solvers(self) -> list[str]:
        """The solver families that start at pure noise."""

        def compute() -> list[str]:
            from dpmbench.solvers.registry import SOLVERS

            return [n for n, c in SOLVERS.items() if c.pure_noise_start]

        return self._get("list:pure-noise", compute)

    def solver_prepares(self, spec: str) -> bool:
        """Whether the solver computes cached artifacts before sampling (``needs_prepare``)."""

        def compute() -> bool:
            from dpmbench.solvers.registry import get_solver

            return bool(get_solver(spec).needs_prepare)

        return self._get(f"prepares:{spec}", compute)

    def solver_code(self, spec: str) -> str:
        """``module:digest`` of the module defining a plugin solver (its results depend on that code); empty for
        the project's own solvers (their code is the project's)."""

        def compute() -> str:
            import sys

            from dpmbench.solvers.registry import get_solver

            module = type(get_solver(spec)).__module__
            if module == "dpmbench" or module.startswith("dpmbench."):
                return ""
            return f"{module}:{file_digest(getattr(sys.modules.get(module), '__file__', None))}"

        return self._get(f"code:{spec}", compute)

    def searches(self) -> list[str]:
        def compute() -> list[str]:
            from dpmbench.search import list_searches

            return list(list_searches())

        return self._get("list:searches", compute)
