"""Where a grid's files live: path-safe names, the file patterns of the workflow's rules (with wildcards), every
file of a grid, and the check for files left incomplete by a killed job.

A *cell* is (model, guidance, seed, schedule, solver, nfe); its ``num_samples`` samples are written in shards of
``samples_per_shard`` samples (``<cell>/nfe<N>/<lo>-<hi>.npz``, samples ``lo..hi-1``). Sample i's x_T depends
only on (seed, i), so the concatenated shards are bit-identical whatever the shard size. Solver specs become
path-safe slugs (``dpm-solver++:order=2,method=multistep`` -> ``dpm-solver++__order-2_method-multistep``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def slug(spec: str) -> str:
    """Path-safe, reversible name of a solver spec."""
    return spec.replace(" ", "").replace(":", "__").replace(",", "_").replace("=", "-")


def guidance_key(g: Any) -> str:
    """The guidance wildcard: ``none`` or the scale as a float string (``7.5``, ``1.0``)."""
    return "none" if g is None or g == "none" else str(float(g))


def npz_complete(path: str | os.PathLike[str]) -> bool:
    """Whether an ``.npz`` has its complete zip directory (a truncated file has not); reads only the directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            size = os.path.getsize(path)
            return all(i.header_offset + i.compress_size <= size for i in z.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def metrics_complete(path: str | os.PathLike[str]) -> bool:
    """Whether a metric file is a complete JSON object with a ``metrics`` object."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and isinstance(rec.get("metrics"), dict)


class GridPaths:
    """The file patterns and files of a grid (mixed into :class:`dpmbench.grid.cells.Grid`, which sets the
    attributes used here)."""

    results_dir: str
    models: dict[str, Any]
    prepares: set[str]
    searches: dict[str, dict[str, Any]]

    def spec(self, solver_slug: str, model: str | None = None, nfes: list[int] | None = None) -> str:  # by Grid
        raise NotImplementedError

    def schedule(self, schedule_slug: str) -> str:  # defined by Grid
        raise NotImplementedError

    def nfe_groups(self, model: str) -> list[list[int]]:  # defined by Grid
        raise NotImplementedError

    def has_reference(self, model: str) -> bool:  # defined by Grid
        raise NotImplementedError

    def artifacts_dir(self) -> str:
        """Where the DAG's searched and prepared artifacts live (``DPMBENCH_ARTIFACTS`` of its jobs)."""
        return f"{self.results_dir}/artifacts"

    def cell_dir(self) -> str:
        """The (model, guidance, seed, schedule, solver) directory, with wildcards."""
        return f"{self.results_dir}/{{model}}/g{{guidance}}/seed{{seed}}/{{schedule}}/{{solver}}"

    def reference_file(self) -> str:
        """The exact-solutions file of a (model, guidance, seed), with wildcards."""
        return f"{self.results_dir}/{{model}}/g{{guidance}}/seed{{seed}}/reference.npz"

    def shard_outputs(self, nfes: list[int]) -> list[str]:
        """Shard files of one sample job (one shard of every NFE of a solver), with wildcards."""
        return [f"{self.cell_dir()}/nfe{n}/{{shard}}.npz" for n in nfes]

    def metric_outputs(self, nfes: list[int]) -> list[str]:
        """Metric files of one metrics job (every NFE of a solver), with wildcards."""
        return [f"{self.cell_dir()}/nfe{n}.json" for n in nfes]

    def prepared_output(self) -> str:
        """The prepare summary of a cell's first NFE group (every NFE of a model without nfe_overrides)."""
        return f"{self.cell_dir()}/prepared.json"

    def prepared_group_output(self) -> str:
        """The prepare summary of a cell's further NFE group ``{nfes}`` (``12_15_20``)."""
        return f"{self.cell_dir()}/prepared-nfe{{nfes}}.json"

    def _dir(self, wc: Any) -> str:
        return f"{self.results_dir}/{wc.model}/g{wc.guidance}/seed{wc.seed}/{wc.schedule}/{wc.solver}"

    def prepared_file(self, wc: Any, nfes: list[int]) -> str:
        """The prepare summary the sample jobs of NFE group ``nfes`` of cell ``wc`` need."""
        groups = self.nfe_groups(wc.model)
        if not groups or list(nfes) == groups[0]:
            return f"{self._dir(wc)}/prepared.json"
        return f"{self._dir(wc)}/prepared-nfe{'_'.join(str(n) for n in nfes)}.json"

    def shard_pattern(self, wc: Any) -> str:
        """The ``--out`` of sample job ``wc``: its shard of every NFE (``{nfe}`` filled in by ``dpmbench sample``)."""
        return f"{self._dir(wc)}/nfe{{nfe}}/{wc.shard}.npz"

    @staticmethod
    def shard_name(lo: int, hi: int) -> str:
        """The shard wildcard of samples ``lo..hi-1``."""
        return f"{lo}-{hi}"

    def shards_of(self, model: str) -> list[str]:
        """Shard names of a cell of ``model``."""
        return [self.shard_name(lo, hi) for lo, hi in self.models[model].shards]

    def shard_inputs(self, wc: Any, nfes: list[int] | None = None) -> list[str]:
        """Every shard file of the NFEs ``nfes`` (default: every NFE) of the metrics job ``wc``."""
        d = self._dir(wc)
        return [f"{d}/nfe{n}/{s}.npz" for n in (nfes or self.models[wc.model].nfe) for s in self.shards_of(wc.model)]

    def sample_extra_inputs(self, wc: Any, nfes: list[int] | None = None) -> list[str]:
        """The searched schedule and the prepare summary a sample job (of NFE group ``nfes``) needs, if any."""
        out = self.cell_search_inputs(wc)
        if wc.solver in self.prepares:
            out.append(self.prepared_file(wc, nfes or self.nfe_groups(wc.model)[0]))
        return out

    def cell_search_inputs(self, wc: Any) -> list[str]:
        """Named searches a cell's jobs (prepare, sample) need: its searched schedule and those its solver names."""
        sched = self.schedule(wc.schedule)
        out = [f"{self.artifacts_dir()}/named/{sched.split(':', 1)[1]}.json"] if sched.startswith("searched:") else []
        return out + self.solver_search_inputs(wc)

    def solver_search_inputs(self, wc: Any) -> list[str]:
        """Named searches a solver spec refers to by an option value (e.g. ``usf:schedule_name=NAME``)."""
        from dpmbench.optvalues import split_spec

        specs = dict.fromkeys([self.spec(wc.solver), *(self.spec(wc.solver, wc.model, [n])  # nfe_options too
                                                        for n in self.models[wc.model].nfe)])
        names = dict.fromkeys(v for spec in specs for v in split_spec(spec)[1].values() if v in self.searches)
        return [f"{self.artifacts_dir()}/named/{v}.json" for v in names]

    def cells(self) -> list[dict[str, Any]]:
        """Every (model, guidance, seed, schedule, solver, nfe) cell of the grid."""
        return [
            {"model": m, "guidance": g, "seed": sd, "schedule": s, "solver": k, "nfe": n}
            for m, mg in self.models.items() for g in mg.all_guidance() for sd in mg.seeds for s in mg.all_schedules()
            for k in mg.solvers if g in mg.guidance_of(k) and s in mg.schedules_of(k) for n in mg.nfe
        ]

    def _cell_path(self, c: dict[str, Any]) -> str:
        return f"{self.results_dir}/{c['model']}/g{c['guidance']}/seed{c['seed']}/{c['schedule']}/{c['solver']}"

    def all_metric_files(self) -> list[str]:
        """Every metric file the report needs."""
        return [f"{self._cell_path(c)}/nfe{c['nfe']}.json" for c in self.cells()]

    def all_shard_files(self) -> list[str]:
        """Every shard file of the grid."""
        return [f"{self._cell_path(c)}/nfe{c['nfe']}/{s}.npz" for c in self.cells() for s in self.shards_of(c["model"])]

    def all_reference_files(self) -> list[str]:
        """Every exact-solutions file of the grid (models that have exact solutions)."""
        return [f"{self.results_dir}/{m}/g{g}/seed{sd}/reference.npz"
                for m, mg in self.models.items() if self.has_reference(m) for g in mg.all_guidance() for sd in mg.seeds]

    def remove_corrupt(self, remove: bool = True) -> list[str]:
        """Find the grid's shard, reference and metric files that exist but are incomplete — a truncated ``.npz``
        (its zip directory, at the end of the file, is unreadable) or a metric file that is not a complete JSON
        object — as left by a job or a copy killed half-way; remove them (``remove``) so that Snakemake recomputes
        them and what depends on them. Cheap (no file is read in full): the consumers verify each ``.npz``'s
        embedded sha256 when they load it. Returns the paths found."""
        found = []
        for path in [*self.all_reference_files(), *self.all_shard_files()]:
            if os.path.exists(path) and not npz_complete(path):
                found.append(path)
        for path in self.all_metric_files():
            if os.path.exists(path) and not metrics_complete(path):
                found.append(path)
        if remove:
            for path in found:
                Path(path).unlink(missing_ok=True)
        return found
