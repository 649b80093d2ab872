"""The benchmark grid behind the Snakemake workflow: config -> validated grid -> cells -> shard/metric files.

A config is a grid: models x solver specs x NFEs x schedules x guidance scales x seeds, with per-model overrides
(``models.<name>.{nfe, solvers, schedules, guidance, seeds, metrics, num_samples, samples_per_shard, ...}``).
A *cell* is (model, guidance, seed, schedule, solver, nfe); its ``num_samples`` samples are written in shards of
``samples_per_shard`` samples (``<cell>/nfe<N>/<lo>-<hi>.npz``, samples ``lo..hi-1``). Sample i's x_T depends
only on (seed, i), so the concatenated shards are bit-identical whatever the shard size.

Solver specs become path-safe slugs (``dpm-solver++:order=2,method=multistep`` ->
``dpm-solver++__order-2_method-multistep``).

``python -m dpmbench.workflow evaluate`` is the metrics job: it concatenates the shards of each cell and runs
``dpmbench evaluate`` on them in one process (no torch import).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpmbench.errors import DpmbenchError, did_you_mean
from dpmbench.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMA = ROOT / "config" / "schema.yaml"
OVERRIDABLE = ("nfe", "solvers", "schedules", "guidance", "seeds", "metrics", "samples_per_shard", "batch_size")
MAX_SHARDS_PER_CELL = 10_000
STAGES = ("reference", "sample", "metrics", "report")
DEFAULT_RESOURCES: dict[str, dict[str, int]] = {
    "reference": {"mem_mb": 2000, "runtime": 60, "threads": 1},
    "sample": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "metrics": {"mem_mb": 4000, "runtime": 30, "threads": 1},
    "report": {"mem_mb": 4000, "runtime": 30, "threads": 2},  # processes drawing the figures (report --jobs)
}


def slug(spec: str) -> str:
    """Path-safe, reversible name of a solver spec."""
    return spec.replace(" ", "").replace(":", "__").replace(",", "_").replace("=", "-")


def guidance_key(g: Any) -> str:
    """The guidance wildcard: ``none`` or the scale as a float string (``7.5``, ``1.0``)."""
    return "none" if g is None or g == "none" else str(float(g))


# -- validation -------------------------------------------------------------------------------------------
def _key(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<config>"


def _hint(value: Any, allowed: Any) -> str:
    """``"; did you mean 'x'?"`` for a misspelt name (``dpmbench.errors.did_you_mean``), else ``""``."""
    hint = did_you_mean(value, allowed)
    return f"; {hint}" if hint else ""


def _bad(key: str, what: str) -> DpmbenchError:
    return DpmbenchError(f"invalid config key {key!r}: {what}")


@functools.lru_cache(maxsize=8)
def _validator(path: str, mtime_ns: int) -> Any:
    """The JSON-schema validator of a schema file (parsed once per file version)."""
    import jsonschema

    return jsonschema.Draft202012Validator(read_yaml(path))


def check_schema(config: dict[str, Any], schema_path: str | os.PathLike[str] = DEFAULT_SCHEMA) -> None:
    """Validate ``config`` against the JSON schema; raise a one-line ``DpmbenchError`` naming the bad key."""
    import jsonschema

    validator = _validator(str(schema_path), Path(schema_path).stat().st_mtime_ns)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = _key([*path, extra[0]]) if extra else _key(path)
        hint = did_you_mean(extra[0], allowed) if extra else ""
        hint = f"; {hint}" if hint else ""
        raise _bad(key, f"unknown key{hint} allowed: {', '.join(allowed)}")
    if error.validator == "required":
        raise _bad(_key(path), error.message)
    if len(path) >= 2 and path[-2] == "guidance":
        raise _bad(_key(path), f"{error.instance!r}; allowed: none or a number > 0")
    if error.validator in ("minimum", "exclusiveMinimum"):
        op = ">=" if error.validator == "minimum" else ">"
        raise _bad(_key(path), f"{error.instance!r}; allowed: a number {op} {error.validator_value}")
    raise _bad(_key(path), error.message.replace("\n", " "))


def _manifest_entries(doc: Any) -> dict[str, dict[str, Any]]:
    """Model id -> entry of a checkpoint manifest: a mapping under ``checkpoints`` or ``models`` (id -> entry, or a
    list of entries with an ``id``), or a top-level mapping id -> entry."""
    if isinstance(doc, dict):
        for key in ("checkpoints", "models"):
            if key in doc:
                return _manifest_entries(doc[key])
        return {str(k): (v if isinstance(v, dict) else {}) for k, v in doc.items()}
    if isinstance(doc, list):
        return {str(e["id"]): e for e in doc if isinstance(e, dict) and "id" in e}
    return {}


def load_manifests(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Checkpoint model ids named by the files of the config's ``checkpoints_manifest`` (a path or a list; relative
    paths are taken from the repository root), id -> raw entry; the loadable entries (``config/checkpoints.yaml``
    and the config's ``checkpoints:``) come from :func:`checkpoint_manifest`. A listed file that does not exist is an
    error naming the key."""
    paths: list[tuple[str, Path]] = []
    listed = config.get("checkpoints_manifest", [])
    for i, name in enumerate([listed] if isinstance(listed, str) else listed):
        path = Path(name) if Path(name).is_absolute() else ROOT / name
        key = "checkpoints_manifest" if isinstance(listed, str) else f"checkpoints_manifest[{i}]"
        if not path.is_file():
            raise _bad(key, f"no manifest file {str(name)!r}")
        paths.append((key, path))
    out: dict[str, dict[str, Any]] = {}
    for key, path in paths:
        try:
            doc = read_yaml(path)
        except yaml.YAMLError as exc:
            raise _bad(key, f"{str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
        for mid, entry in _manifest_entries(doc).items():
            out.setdefault(mid, entry)
    return out


def _entry_conditional(entry: Any) -> bool:
    """Whether a loadable checkpoint entry (``dpmbench.models.manifest.CheckpointEntry``) takes conditioning."""
    return bool(entry.num_classes or entry.conditioning != "none")


def _manifest_conditional(entry: dict[str, Any]) -> bool | None:
    """Whether a manifest model takes conditioning (so that guidance applies); None when the entry does not say."""
    if "num_classes" in entry:
        return bool(entry["num_classes"])
    cond = entry.get("conditioning")
    if cond is None:
        return None
    return str(cond).lower() not in ("none", "unconditional", "false")


def reference_stats_names() -> list[str]:
    """Names of reference_stats/manifest.yaml (the ``reference_stats`` a config may name)."""
    doc = read_yaml(ROOT / "reference_stats" / "manifest.yaml") or {}
    return [str(e["name"]) for e in doc.get("stats", []) if isinstance(e, dict) and "name" in e]


class _Registry:
    """Facts the grid needs about models, solvers, schedules and metrics, cached on disk (``$DPMBENCH_CACHE/workflow``)
    under a digest of the package's source files, so that parsing the Snakefile (once per run, and once per cluster
    job) does not import torch or build models when nothing changed."""

    def __init__(self) -> None:
        from dpmbench.io import cache_dir

        h = hashlib.sha256()
        root = Path(__file__).resolve().parents[1]
        for p in sorted([*root.glob("dpmbench/**/*.py"), *root.glob("evaluators/**/*.py")]):
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(os.environ.get("DPMBENCH_PLUGINS", "").encode())  # solvers from outside change the facts
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
            return {"num_classes": int(m.num_classes or 0), "exact": hasattr(m, "exact_solution")}

        return self._get(f"model:{name}", compute)

    def solver_error(self, spec: str, nfe: int | None = None) -> str:
        """The one-line problem of a solver spec (or of an NFE budget for it); empty if none."""

        def compute() -> str:
            from dpmbench.solvers.base import get_solver

            try:
                sol = get_solver(spec)
                if nfe is not None:
                    sol.check_nfe(nfe)
            except DpmbenchError as exc:
                return str(exc)
            return ""

        return self._get(f"solver:{spec}|{'' if nfe is None else nfe}", compute)

    def solver_prepares(self, spec: str) -> bool:
        """Whether the solver computes cached artifacts before sampling (``needs_prepare``)."""

        def compute() -> bool:
            from dpmbench.solvers.base import get_solver

            return bool(get_solver(spec).needs_prepare)

        return self._get(f"prepares:{spec}", compute)

    def searches(self) -> list[str]:
        def compute() -> list[str]:
            from dpmbench.search import list_searches

            return list(list_searches())

        return self._get("list:searches", compute)


@dataclass
class ModelGrid:
    """The effective grid of one model (top-level values with the model's overrides applied)."""

    name: str
    num_samples: int
    samples_per_shard: int
    nfe: list[int]
    solvers: list[str]  # slugs
    schedules: list[str]
    guidance: list[str]
    seeds: list[int]
    metrics: list[str]
    batch_size: int | None
    shards: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Grid:
    """A validated benchmark grid (build it with :func:`build_grid`)."""

    config: dict[str, Any]

    def __post_init__(self) -> None:
        c = self.config
        reg = _Registry()
        self.results_dir: str = c.get("results_dir", "results")
        self.report_dir: str = c.get("report_dir", "reports")
        self.t_end: float = float(c.get("t_end", 1e-3))
        self.device: str = c.get("device", "cpu")
        self.specs: dict[str, str] = {}  # slug -> spec
        metrics_known = reg.metrics()
        schedules_known = reg.schedules()
        self.offline: bool = str(c.get("offline", False)).strip().lower() in ("true", "1", "yes")
        manifest = checkpoint_manifest(c)  # loadable entries: config/checkpoints.yaml + the config's checkpoints
        named_only = {k: v for k, v in load_manifests(c).items() if k not in manifest}  # ids of checkpoints_manifest
        models_known = reg.models()
        if "seed" in c and "seeds" in c:
            raise _bad("seed", "give either 'seed' or 'seeds', not both")
        top = {
            "nfe": c["nfe"], "solvers": c["solvers"], "schedules": c.get("schedules", ["logsnr"]),
            "guidance": c.get("guidance", ["none"]), "seeds": c.get("seeds", [c.get("seed", 0)]),
            "metrics": c["metrics"], "samples_per_shard": c.get("samples_per_shard", 100_000),
            "batch_size": c.get("batch_size"),
        }
        self.searches = self._check_searches(c.get("searches", {}), reg, [*models_known, *manifest])
        self.schedule_specs: dict[str, str] = {}  # path slug -> schedule (``searched:NAME`` -> ``searched__NAME``)
        self.prepares: set[str] = set()  # solver slugs with a prepare step
        self.captions: dict[str, str | None] = {}  # model -> captions file (text-conditional models)
        self.models: dict[str, ModelGrid] = {}
        self._has_reference: dict[str, bool] = {}
        self.model_extra: dict[str, dict[str, Any]] = {}  # per-model t_end, reference_solver, reference_stats
        for name, mc in c["models"].items():
            if name not in models_known and name not in manifest and name not in named_only:
                allowed = [*models_known, *sorted(manifest), *sorted(named_only)]
                raise _bad(f"models.{name}", f"unknown model; allowed: {', '.join(allowed)} (oracle models and the "
                           "ids of config/checkpoints.yaml and of the config's checkpoints_manifest)"
                           f"{_hint(name, allowed)}")
            eff = {k: mc.get(k, top[k]) for k in OVERRIDABLE}
            where = {k: (f"models.{name}.{k}" if k in mc else k) for k in OVERRIDABLE}
            for k in ("nfe", "solvers", "schedules", "guidance", "seeds", "metrics"):
                if len(set(map(str, eff[k]))) != len(eff[k]):
                    raise _bad(where[k], "an entry is listed twice")
            for i, m in enumerate(eff["metrics"]):
                if m not in metrics_known:
                    raise _bad(f"{where['metrics']}[{i}]", f"unknown metric {m!r}; allowed: "
                               f"{', '.join(metrics_known)}{_hint(m, metrics_known)}")
            for i, s in enumerate(eff["schedules"]):
                if s.startswith("searched:"):
                    self._check_searched(s, f"{where['schedules']}[{i}]", name, eff["nfe"])
                elif s not in schedules_known:
                    raise _bad(f"{where['schedules']}[{i}]", f"unknown schedule {s!r}; allowed: "
                               f"{', '.join(schedules_known)}, or searched:NAME with NAME in searches"
                               f"{_hint(s, schedules_known)}")
                self.schedule_specs[slug(s)] = s
            slugs = []
            for i, spec in enumerate(eff["solvers"]):
                problem = reg.solver_error(spec)
                if problem:
                    raise _bad(f"{where['solvers']}[{i}]", problem)
                for n in eff["nfe"]:
                    problem = reg.solver_error(spec, int(n))
                    if problem:
                        raise _bad(where["nfe"], problem)
                key = slug(spec)
                if self.specs.get(key, spec) != spec:
                    raise _bad(f"{where['solvers']}[{i}]", f"{spec!r} and {self.specs[key]!r} share a path name")
                self.specs[key] = spec
                slugs.append(key)
                if reg.solver_prepares(spec):
                    self.prepares.add(key)
            guidance = [guidance_key(g) for g in eff["guidance"]]
            if name in manifest or name in named_only:  # a checkpoint id: facts from its entry, never loaded here
                conditional: bool | None = (_entry_conditional(manifest[name]) if name in manifest
                                            else _manifest_conditional(named_only[name]))
                exact = False
            else:
                info = reg.model(name)
                conditional, exact = bool(info["num_classes"]), bool(info["exact"])
            self._has_reference[name] = exact or "reference_solver" in mc
            self.captions[name] = mc.get("captions")
            if any(g != "none" for g in guidance) and conditional is False:
                raise _bad(where["guidance"], f"model {name!r} is unconditional; allowed: [none]")
            if "reference_solver" in mc:
                rs = mc["reference_solver"]
                problem = reg.solver_error(rs["solver"], int(rs["nfe"]))
                if problem:
                    raise _bad(f"models.{name}.reference_solver", problem)
                if rs.get("schedule", "logsnr") not in schedules_known:
                    raise _bad(f"models.{name}.reference_solver.schedule",
                               f"unknown schedule {rs['schedule']!r}; allowed: {', '.join(schedules_known)}")
            if "reference_stats" in mc:
                stats = str(mc["reference_stats"])
                names = reference_stats_names()
                if stats not in names and not stats.endswith(".npz"):
                    raise _bad(f"models.{name}.reference_stats",
                               f"unknown reference statistics {stats!r}; allowed: {', '.join(names)} or an .npz path")
            self.model_extra[name] = {k: mc[k] for k in ("t_end", "reference_solver", "reference_stats") if k in mc}
            n = int(mc["num_samples"])
            per = int(eff["samples_per_shard"])
            if -(-n // per) > MAX_SHARDS_PER_CELL:  # would be millions of jobs (and a list that never ends)
                raise _bad(where["samples_per_shard"] if "samples_per_shard" in mc or "samples_per_shard" in c
                           else f"models.{name}.num_samples",
                           f"{n} samples in shards of {per} make {-(-n // per)} shards per cell; allowed: at most "
                           f"{MAX_SHARDS_PER_CELL} (raise samples_per_shard)")
            self.models[name] = ModelGrid(
                name=name, num_samples=n, samples_per_shard=per, nfe=sorted(int(v) for v in eff["nfe"]),
                solvers=slugs, schedules=[slug(v) for v in eff["schedules"]], guidance=guidance,
                seeds=[int(s) for s in eff["seeds"]], metrics=list(eff["metrics"]),
                batch_size=None if eff["batch_size"] is None else int(eff["batch_size"]),
                shards=[(lo, min(lo + per, n)) for lo in range(0, n, per)],
            )
        reg.save()
        self.resources = {s: {**DEFAULT_RESOURCES[s], **c.get("resources", {}).get(s, {})} for s in STAGES}
        # the checkpoint models of the grid: their files are pulled and verified before any of their jobs
        oracles = reg.models()
        self.checkpoints: dict[str, Any] = {m: manifest[m] for m in self.models if m in manifest and m not in oracles}
        # ids named by a checkpoints_manifest without a loadable entry (adapter, files): their jobs stop at the pull
        self.unavailable: dict[str, dict[str, Any]] = {m: named_only[m] for m in self.models if m in named_only}

    def _check_searches(self, searches: dict[str, Any], reg: _Registry, models_known: list[str]
                        ) -> dict[str, dict[str, Any]]:
        """Validate the ``searches`` section: name -> {search, model, nfe, solver, guidance, seed, set, schedule}."""
        from dpmbench.artifacts import check_name

        known = reg.searches()
        for name, sc in searches.items():
            try:
                check_name(name)
            except DpmbenchError as exc:
                raise _bad(f"searches.{name}", str(exc)) from None
            if sc["search"] not in known:
                raise _bad(f"searches.{name}.search", f"unknown search {sc['search']!r}; "
                           f"allowed: {', '.join(known)}{_hint(sc['search'], known)}")
            if sc["model"] not in models_known:
                raise _bad(f"searches.{name}.model", f"unknown model; allowed: "
                           f"{', '.join(models_known)}{_hint(sc.get('model'), models_known)}")
            if "solver" in sc:
                for n in sc["nfe"]:
                    problem = reg.solver_error(sc["solver"], int(n))
                    if problem:
                        raise _bad(f"searches.{name}.solver", problem)
        return dict(searches)

    def _check_searched(self, schedule: str, key: str, model: str, nfes: list[int]) -> None:
        name = schedule.split(":", 1)[1]
        if name not in self.searches:
            raise _bad(key, f"unknown searched schedule {schedule!r}; allowed: searched:NAME with NAME in "
                       f"searches ({', '.join(self.searches) or 'none defined'})")
        sc = self.searches[name]
        missing = sorted(set(int(n) for n in nfes) - set(int(n) for n in sc["nfe"]))
        if missing:
            raise _bad(key, f"search {name!r} has no grid for nfe {missing}; its nfe: {sc['nfe']}")
        if sc["model"] != model:
            raise _bad(key, f"search {name!r} was made for model {sc['model']!r}, not {model!r}")

    def search_args(self, name: str) -> str:
        """The ``dpmbench search`` arguments of the named search ``name``."""
        sc = self.searches[name]
        args = [sc["search"], "--model", sc["model"], "--nfe", ",".join(str(n) for n in sc["nfe"]),
                "--seed", str(sc.get("seed", 0)), "--schedule", sc.get("schedule", "logsnr"),
                "--t-end", repr(self.t_end_of(sc["model"])), "--device", self.device, "--name", name]
        if sc.get("solver"):
            args += ["--solver", sc["solver"]]
        if sc.get("guidance", "none") != "none":
            args += ["--guidance", str(float(sc["guidance"]))]
        if sc.get("set"):
            args += ["--set", sc["set"]]
        return " ".join(shlex.quote(a) for a in args)

    def schedule(self, schedule_slug: str) -> str:
        """The schedule behind a path slug."""
        return self.schedule_specs[schedule_slug]

    def artifacts_dir(self) -> str:
        """Where the DAG's searched and prepared artifacts live (``DPMBENCH_ARTIFACTS`` of its jobs)."""
        return f"{self.results_dir}/artifacts"

    def sample_extra_inputs(self, wc: Any) -> list[str]:
        """The searched schedule and the prepare summary a sample job needs, if any."""
        out = self.cell_search_inputs(wc)
        if wc.solver in self.prepares:
            out.append(f"{self.results_dir}/{wc.model}/g{wc.guidance}/seed{wc.seed}/{wc.schedule}/{wc.solver}/"
                       "prepared.json")
        return out

    def cell_search_inputs(self, wc: Any) -> list[str]:
        """Named searches a cell's jobs (prepare, sample) need: its searched schedule and those its solver names."""
        sched = self.schedule(wc.schedule)
        out = [f"{self.artifacts_dir()}/named/{sched.split(':', 1)[1]}.json"] if sched.startswith("searched:") else []
        return out + self.solver_search_inputs(wc)

    def solver_search_inputs(self, wc: Any) -> list[str]:
        """Named searches a solver spec refers to by an option value (e.g. ``usf:schedule_name=NAME``)."""
        from dpmbench.solvers.base import parse_spec

        _, opts = parse_spec(self.spec(wc.solver))
        return [f"{self.artifacts_dir()}/named/{v}.json" for v in opts.values() if v in self.searches]

    # -- per-job parameters ------------------------------------------------------------------------------
    def num_samples(self, model: str) -> int:
        """Samples per cell of ``model``."""
        return self.models[model].num_samples

    def spec(self, solver_slug: str) -> str:
        """The solver spec behind a slug."""
        return self.specs[solver_slug]

    def nfes(self, model: str) -> list[int]:
        """NFE budgets of ``model``."""
        return self.models[model].nfe

    def metrics(self, model: str) -> list[str]:
        """Metric names of ``model``."""
        return self.models[model].metrics

    @staticmethod
    def guidance_arg(g: str) -> str:
        """CLI flag for a guidance wildcard."""
        return "" if g == "none" else f"--guidance {g}"

    def captions_arg(self, model: str) -> str:
        """CLI flag of the model's captions file (text-conditional models), if configured."""
        path = self.captions.get(model)
        return f"--captions {shlex.quote(path)}" if path else ""

    def batch_arg(self, model: str) -> str:
        """CLI flag for the batch size of ``model``, if configured."""
        b = self.models[model].batch_size
        return f"--batch-size {b}" if b else ""

    def t_end_of(self, model: str) -> float:
        """The sampling end time of ``model`` (its ``t_end`` override, else the config's ``t_end``)."""
        return float(self.model_extra.get(model, {}).get("t_end", self.t_end))

    def reference_args(self, model: str) -> str:
        """CLI flags of the reference job: a high-NFE solver run (``reference_solver``) or none (exact solutions)."""
        rs = self.model_extra.get(model, {}).get("reference_solver")
        if not rs:
            return ""
        return (f"--solver {shlex.quote(str(rs['solver']))} --nfe {int(rs['nfe'])} "
                f"--schedule {shlex.quote(str(rs.get('schedule', 'logsnr')))} --device {self.device}")

    def fid_stats_arg(self, model: str) -> str:
        """CLI flag naming the FID reference statistics of ``model`` (``reference_stats``), if configured."""
        stats = self.model_extra.get(model, {}).get("reference_stats")
        return f"--fid-stats {shlex.quote(str(stats))}" if stats else ""

    def resource(self, stage: str, key: str) -> int:
        """A resource of a stage's jobs (``mem_mb``, ``runtime`` minutes, ``threads``, ``gpu``)."""
        if key == "gpu":
            return int(self.resources[stage].get("gpu", 1 if self.device == "cuda" and stage != "report" else 0))
        return int(self.resources[stage][key])

    # -- NFE sets: one sample/metrics rule per distinct NFE list (rule outputs are static patterns) -----------
    def nfe_sets(self) -> list[tuple[str, list[int], list[str]]]:
        """``(rule suffix, nfes, models)`` for every distinct NFE list; the first suffix is empty."""
        sets: dict[tuple[int, ...], list[str]] = {}
        for name, m in self.models.items():
            sets.setdefault(tuple(m.nfe), []).append(name)
        return [("" if i == 0 else f"_{i}", list(k), v) for i, (k, v) in enumerate(sets.items())]

    # -- file patterns -------------------------------------------------------------------------------------
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

    @staticmethod
    def shard_name(lo: int, hi: int) -> str:
        """The shard wildcard of samples ``lo..hi-1``."""
        return f"{lo}-{hi}"

    def shards_of(self, model: str) -> list[str]:
        """Shard names of a cell of ``model``."""
        return [self.shard_name(lo, hi) for lo, hi in self.models[model].shards]

    def shard_inputs(self, wc: Any) -> list[str]:
        """Every shard file of every NFE of the metrics job ``wc`` (model, guidance, seed, schedule, solver)."""
        d = f"{self.results_dir}/{wc.model}/g{wc.guidance}/seed{wc.seed}/{wc.schedule}/{wc.solver}"
        return [f"{d}/nfe{n}/{s}.npz" for n in self.nfes(wc.model) for s in self.shards_of(wc.model)]

    def cells(self) -> list[dict[str, Any]]:
        """Every (model, guidance, seed, schedule, solver, nfe) cell of the grid."""
        return [
            {"model": m, "guidance": g, "seed": sd, "schedule": s, "solver": k, "nfe": n}
            for m, mg in self.models.items() for g in mg.guidance for sd in mg.seeds for s in mg.schedules
            for k in mg.solvers for n in mg.nfe
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
                for m, mg in self.models.items() if self.has_reference(m) for g in mg.guidance for sd in mg.seeds]

    def exact_models(self) -> list[str]:
        """Models whose reference file holds exact solutions (the ``reference`` rule)."""
        return [m for m in self.models if self._has_reference[m] and not self.reference_args(m)]

    def solver_reference_models(self) -> list[str]:
        """Models whose reference file is a high-NFE solver run (``reference_solver``; the ``reference_run`` rule)."""
        return [m for m in self.models if self.reference_args(m)]
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

    def has_reference(self, model: str) -> bool:
        """Whether ``model`` has a reference file: exact solutions (oracle models) or a ``reference_solver`` run."""
        return self._has_reference[model]


def checkpoint_manifest(config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint entries a config can use: ``config/checkpoints.yaml`` updated by the config's own
    ``checkpoints:`` section (``dpmbench.models.manifest``; one-line errors naming ``checkpoints.<id>.<field>``)."""
    from dpmbench.models.manifest import load_manifest, parse_manifest

    manifest = load_manifest()
    manifest.update(parse_manifest(config.get("checkpoints") or {}, "the config's checkpoints section"))
    return manifest
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


def build_grid(config: dict[str, Any], schema: str | os.PathLike[str] | None = None) -> Grid:
    """Validate a config (schema, then solvers/models/metrics/NFE minima) and expand it into a grid.

    Every problem raises a one-line ``DpmbenchError`` naming the config key.
    """
    check_schema(config, DEFAULT_SCHEMA if schema is None else schema)
    return Grid(config)


# -- the metrics job: concatenate each cell's shards, evaluate ----------------------------------------------
_SHARD = re.compile(r"^(\d+)-(\d+)\.npz$")


PER_SAMPLE_KEYS = ("images", "prompts")  # besides x and labels: one entry per sample, concatenated over shards


def merge_shards(paths: Sequence[str]) -> dict[str, Any]:
    """Concatenate shard files (any order) of one cell into one sample record; check they tile ``0..n-1``."""
    import numpy as np

    parts = []
    for p in paths:
        m = _SHARD.match(Path(p).name)
        if not m:
            raise DpmbenchError(f"invalid shard file {p!r}: name must be LO-HI.npz")
        parts.append((int(m.group(1)), int(m.group(2)), p))
    parts.sort()
    expect = 0
    for lo, hi, p in parts:
        if lo != expect:
            raise DpmbenchError(f"invalid shards: {p!r} starts at {lo}, expected {expect}")
        expect = hi
    from dpmbench.io import PARALLEL_COUNTERS, CorruptFileError, load_npz

    xs, labels, wall, used, meta = [], [], 0.0, -1, None
    counters: dict[str, int] = {}
    per_sample: dict[str, list[Any]] = {k: [] for k in PER_SAMPLE_KEYS}
    for lo, hi, p in parts:
        try:
            d = load_npz(p, "shard")
        except FileNotFoundError:
            raise DpmbenchError(f"invalid shard {p!r}: no such file") from None
        except CorruptFileError as exc:  # never use it; remove it so that the next run recomputes it
            Path(p).unlink(missing_ok=True)
            raise DpmbenchError(f"{exc}; removed it: re-run snakemake to recompute it") from None
        if len(d["x"]) != hi - lo:
            raise DpmbenchError(f"invalid shard {p!r}: {len(d['x'])} samples for range {lo}-{hi}")
        xs.append(d.pop("x"))
        labels.append(d.pop("labels", np.zeros(0, np.int64)))
        for k in PER_SAMPLE_KEYS:
            if k in d:
                per_sample[k].append(d.pop(k))
        wall += float(d.pop("wall_s", 0.0))
        used = max(used, int(d.pop("nfe_used", -1)))  # adaptive solvers: the most any shard used
        for k in PARALLEL_COUNTERS:  # parallel solvers: likewise
            if k in d:
                counters[k] = max(counters.get(k, 0), int(d.pop(k)))
        d.pop("start", None)
        d.pop("num_samples", None)
        if meta is None:
            meta = d
        else:
            for k in ("model", "solver", "nfe", "seed", "schedule"):
                if k in d and str(d[k]) != str(meta.get(k)):
                    raise DpmbenchError(f"invalid shard {p!r}: {k} {d[k]} differs from the first shard's {meta[k]}")
    assert meta is not None
    if used >= 0:
        meta["nfe_used"] = used
    meta.update(counters)
    for k, arrays in per_sample.items():
        if arrays and len(arrays) != len(parts):
            raise DpmbenchError(f"invalid shards: {k!r} is in some shards of the cell but not in all")
        if arrays:
            meta[k] = np.concatenate(arrays)
    return {**meta, "x": np.concatenate(xs), "labels": np.concatenate(labels), "wall_s": wall,
            "num_samples": expect, "num_shards": len(parts)}


def run_evaluate(cells: Sequence[str], outs: Sequence[str], metrics: str, reference: str | None,
                 seed: int | None = None, fid_stats: str | None = None) -> int:
    """Metrics of several cells: ``cells[i]`` is a comma list of shard files, ``outs[i]`` its metrics json."""
    from dpmbench.cli import main as cli_main
    from dpmbench.io import save_json, save_npz

    if len(cells) != len(outs):
        raise DpmbenchError(f"invalid --out: {len(outs)} files for {len(cells)} --cells")
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=Path(outs[0]).parent) as tmp:
        merged, shards = [], []
        for i, cell in enumerate(cells):
            rec = merge_shards([p for p in cell.split(",") if p])
            shards.append(int(rec.pop("num_shards")))
            path = Path(tmp) / f"cell{i}.npz"
            save_npz(path, **rec)
            merged.append(str(path))
        args = ["evaluate", "--samples", *merged, "--metrics", metrics, "--out", *outs]
        if reference:
            args += ["--reference", reference]
        if fid_stats:
            args += ["--fid-stats", fid_stats]
        rc = cli_main(args)
    if rc:
        return rc
    for out, k in zip(outs, shards, strict=True):  # record where the numbers came from
        rec = json.loads(Path(out).read_text())
        rec["num_shards"] = k
        if seed is not None:
            rec["seed"] = seed
        save_json(out, rec)
    return 0


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: temporary files are removed by their context managers


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dpmbench.workflow evaluate --cells A,B C,D --out a.json c.json --metrics m [--reference R]``."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    p = argparse.ArgumentParser(prog="python -m dpmbench.workflow")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("evaluate", help="metrics of sharded cells")
    e.add_argument("--cells", nargs="+", required=True, help="one comma list of shard files per cell")
    e.add_argument("--out", nargs="+", required=True)
    e.add_argument("--metrics", required=True)
    e.add_argument("--reference", default=None)
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--fid-stats", default=None, help="fid reference statistics (passed to dpmbench evaluate)")
    v = sub.add_parser("validate", help="validate a config file (one line naming the bad key)")
    v.add_argument("configfile")
    args = p.parse_args(argv)
    try:
        if args.command == "validate":
            build_grid(read_yaml(args.configfile) or {})
            return 0
        return run_evaluate(args.cells, args.out, args.metrics, args.reference, args.seed, args.fid_stats)
    except DpmbenchError as exc:
        print(f"dpmbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
