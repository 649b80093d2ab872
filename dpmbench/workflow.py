"""The benchmark grid behind the Snakemake workflow: config -> cells -> file paths.

A cell is (model, guidance, schedule, solver, nfe). Solver specs become path-safe slugs
(``dpm-solver++:order=2,method=multistep`` -> ``dpm-solver++__order-2_method-multistep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpmbench.errors import DpmbenchError
from dpmbench.models.registry import load_model
from dpmbench.solvers.base import get_solver


def slug(spec: str) -> str:
    """Path-safe, reversible name of a solver spec."""
    return spec.replace(" ", "").replace(":", "__").replace(",", "_").replace("=", "-")


def guidance_key(g: Any) -> str:
    """The guidance wildcard: ``none`` or the scale as a float string (``7.5``, ``1.0``)."""
    return "none" if g is None or g == "none" else str(float(g))


@dataclass
class Grid:
    """A validated benchmark grid."""

    config: dict[str, Any]

    def __post_init__(self) -> None:
        c = self.config
        self.results_dir: str = c.get("results_dir", "results")
        self.report_dir: str = c.get("report_dir", "reports")
        self.seed: int = int(c.get("seed", 0))
        self.t_end: float = float(c.get("t_end", 1e-3))
        self.device: str = c.get("device", "cpu")
        self.metrics: list[str] = list(c["metrics"])
        self.schedules: list[str] = list(c.get("schedules", ["logsnr"]))
        self.nfe: list[int] = sorted(set(int(n) for n in c["nfe"]))
        self.specs: dict[str, str] = {}
        for spec in c["solvers"]:
            solver = get_solver(spec)  # raises a one-line error naming the bad solver or option
            if solver.min_nfe() > self.nfe[0]:
                raise DpmbenchError(
                    f"invalid nfe {self.nfe[0]} for solver {spec!r} in config: it needs nfe >= {solver.min_nfe()}")
            key = slug(spec)
            if key in self.specs:
                raise DpmbenchError(f"invalid solvers: {spec!r} is listed twice")
            self.specs[key] = spec
        self.models: dict[str, dict[str, Any]] = {}
        for name, m in c["models"].items():
            model = load_model(name)
            guidance = [guidance_key(g) for g in m.get("guidance", ["none"])]
            if any(g != "none" for g in guidance) and not model.num_classes:
                raise DpmbenchError(f"invalid guidance for model {name!r} in config: it is unconditional")
            self.models[name] = {"num_samples": int(m["num_samples"]), "guidance": guidance}

    # -- per-cell parameters ------------------------------------------------------------------------
    def num_samples(self, model: str) -> int:
        """Samples per cell of ``model``."""
        return self.models[model]["num_samples"]

    def spec(self, solver_slug: str) -> str:
        """The solver spec behind a slug."""
        return self.specs[solver_slug]

    def nfes(self, model: str) -> list[int]:
        """NFE budgets of ``model``."""
        return self.nfe

    @staticmethod
    def guidance_arg(g: str) -> str:
        """CLI flag for a guidance wildcard."""
        return "" if g == "none" else f"--guidance {g}"

    def batch_arg(self) -> str:
        """CLI flag for the batch size, if configured."""
        b = self.config.get("batch_size")
        return f"--batch-size {int(b)}" if b else ""

    # -- file patterns ------------------------------------------------------------------------------
    def _cell_dir(self) -> str:
        return f"{self.results_dir}/{{model}}/g{{guidance}}/{{schedule}}/{{solver}}"

    def sample_outputs(self) -> list[str]:
        """Sample files of one (model, guidance, schedule, solver) job, with wildcards."""
        return [f"{self._cell_dir()}/nfe{n}.npz" for n in self.nfe]

    def metric_outputs(self) -> list[str]:
        """Metric files of one (model, guidance, schedule, solver) job, with wildcards."""
        return [f"{self._cell_dir()}/nfe{n}.json" for n in self.nfe]

    def cells(self) -> list[dict[str, Any]]:
        """Every (model, guidance, schedule, solver, nfe) cell of the grid."""
        return [
            {"model": m, "guidance": g, "schedule": s, "solver": k, "nfe": n}
            for m, mc in self.models.items() for g in mc["guidance"] for s in self.schedules
            for k in self.specs for n in self.nfe
        ]

    def all_metric_files(self) -> list[str]:
        """Every metric file the report needs."""
        return [f"{self.results_dir}/{c['model']}/g{c['guidance']}/{c['schedule']}/{c['solver']}/nfe{c['nfe']}.json"
                for c in self.cells()]


def build_grid(config: dict[str, Any]) -> Grid:
    """Validate a (schema-checked) config and expand it into a grid."""
    return Grid(config)
