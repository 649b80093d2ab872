"""The benchmark grid behind the Snakemake workflow: config -> validated grid -> cells and each job's parameters.

A config is a grid: models x solver specs x NFEs x schedules x guidance scales x seeds, with per-model overrides
(``models.<name>.{nfe, solvers, solver_options, schedules, guidance, seeds, metrics, num_samples, samples_per_shard,
nfe_overrides, ...}``, :mod:`dpmbench.grid.overrides`). :func:`build_grid` checks it (the JSON schema, then the
registries: solvers, models, metrics, schedules, NFE minima) and raises one line naming the bad key.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from dpmbench.errors import DpmbenchError
from dpmbench.flowgrids import PARAMETERIZED, is_flow_kind, parse_kind
from dpmbench.grid.manifests import checkpoint_manifest, entry_conditional, load_manifests, manifest_conditional
from dpmbench.grid.overrides import apply_solver_options, nfe_groups, nfe_settings, nfe_specs, solver_entries
from dpmbench.grid.paths import GridPaths, guidance_key, slug
from dpmbench.grid.registry import Registry, fid_implementation_names, reference_stats_names
from dpmbench.grid.schema import DEFAULT_SCHEMA, bad, check_schema, hint

OVERRIDABLE = ("nfe", "solvers", "schedules", "guidance", "seeds", "metrics", "samples_per_shard", "batch_size",
               "nfe_overrides")
MAX_SHARDS_PER_CELL = 10_000
STAGES = ("reference", "sample", "metrics", "report")
DEFAULT_RESOURCES: dict[str, dict[str, int]] = {
    "reference": {"mem_mb": 2000, "runtime": 60, "threads": 1},
    "sample": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "metrics": {"mem_mb": 4000, "runtime": 30, "threads": 1},
    "report": {"mem_mb": 4000, "runtime": 30, "threads": 2},  # processes drawing the figures (report --jobs)
}


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
    nfe_settings: dict[int, dict[str, Any]] = field(default_factory=dict)  # per NFE: t_end, specs (nfe_options)
    solver_schedules: dict[str, list[str]] = field(default_factory=dict)  # slug -> its own schedules (slugs)
    solver_guidance: dict[str, list[str]] = field(default_factory=dict)  # slug -> its own guidance scales

    def schedules_of(self, solver: str) -> list[str]:
        """The schedules (slugs) solver ``solver`` (a slug) runs on: its entry's, else the model's."""
        return self.solver_schedules.get(solver, self.schedules)

    def guidance_of(self, solver: str) -> list[str]:
        """The guidance scales solver ``solver`` (a slug) runs at: its entry's, else the model's."""
        return self.solver_guidance.get(solver, self.guidance)

    def all_schedules(self) -> list[str]:
        """Every schedule some solver of the model runs on (the model's first)."""
        return list(dict.fromkeys([*self.schedules, *(s for v in self.solver_schedules.values() for s in v)]))

    def all_guidance(self) -> list[str]:
        """Every guidance scale some solver of the model runs at (the model's first)."""
        return list(dict.fromkeys([*self.guidance, *(g for v in self.solver_guidance.values() for g in v)]))

    @property
    def nfe_groups(self) -> list[list[int]]:
        """The NFEs grouped by equal settings (one group unless nfe_overrides change some)."""
        return nfe_groups(self.nfe_settings) if self.nfe_settings else [list(self.nfe)]


def _check_schedule(s: str, key: str, known: list[str], more: str = "") -> None:
    """A time-grid name of the config at ``key``: a known kind, or a parametric flow grid (``flow-shift:S``,
    ``diffusers-flow-sd3``, ...) whose parameters parse; ``more``: what else the key allows, for the message."""
    if is_flow_kind(s):
        try:
            parse_kind(s)
        except DpmbenchError as exc:
            raise bad(key, str(exc).removeprefix("invalid ")) from None
    elif s not in known:
        raise bad(key, f"unknown schedule {s!r}; allowed: {', '.join([*known, *PARAMETERIZED])}{more}"
                       f"{hint(s, known)}")


@dataclass
class Grid(GridPaths):
    """A validated benchmark grid (build it with :func:`build_grid`)."""

    config: dict[str, Any]

    def __post_init__(self) -> None:
        reg = Registry()
        try:  # the facts computed are kept even when the config is refused (the next check of it starts warm)
            self._check(reg)
        finally:
            reg.save()
        self.resources = {s: {**DEFAULT_RESOURCES[s], **self.config.get("resources", {}).get(s, {})} for s in STAGES}

    def _check(self, reg: Registry) -> None:
        """Validate the config against the registries' facts and build the per-model grids."""
        c = self.config
        self.results_dir: str = c.get("results_dir", "results")
        self.report_dir: str = c.get("report_dir", "reports")
        self.t_end: float = float(c.get("t_end", 1e-3))
        self.device: str = c.get("device", "cpu")
        self.specs: dict[str, str] = {}  # slug -> spec
        metrics_known = reg.metrics()
        schedules_known = reg.schedules()
        self.offline: bool = str(c.get("offline", False)).strip().lower() in ("true", "1", "yes")
        self.trust_unpinned: bool = str(c.get("trust_unpinned", False)).strip().lower() in ("true", "1", "yes")
        manifest = checkpoint_manifest(c)  # loadable entries: config/checkpoints.yaml + the config's checkpoints
        named_only = {k: v for k, v in load_manifests(c).items() if k not in manifest}  # named, not loadable
        models_known = reg.models()
        if "seed" in c and "seeds" in c:
            raise bad("seed", "give either 'seed' or 'seeds', not both")
        top = {
            "nfe": c["nfe"], "solvers": c["solvers"], "schedules": c.get("schedules", ["logsnr"]),
            "guidance": c.get("guidance", ["none"]), "seeds": c.get("seeds", [c.get("seed", 0)]),
            "metrics": c["metrics"], "samples_per_shard": c.get("samples_per_shard", 100_000),
            "batch_size": c.get("batch_size"), "nfe_overrides": c.get("nfe_overrides", []),
        }
        self.searches = self._check_searches(c.get("searches", {}), reg, [*models_known, *manifest])
        self.schedule_specs: dict[str, str] = {}  # path slug -> schedule (``searched:NAME`` -> ``searched__NAME``)
        self.prepares: set[str] = set()  # solver slugs with a prepare step
        self.plugin_code: dict[str, str] = {}  # solver slug -> module:digest of a plugin solver
        self.captions: dict[str, str | None] = {}  # model -> captions file (text-conditional models)
        self.models: dict[str, ModelGrid] = {}
        self._has_reference: dict[str, bool] = {}
        self.model_extra: dict[str, dict[str, Any]] = {}  # per-model t_end, reference_solver, reference_stats
        for name, mc in c["models"].items():
            if name not in models_known and name not in manifest and name not in named_only:
                allowed = [*models_known, *sorted(manifest), *sorted(named_only)]
                raise bad(f"models.{name}", f"unknown model; allowed: {', '.join(allowed)} (oracle models and the "
                          "ids of config/checkpoints.yaml, of the config's checkpoints_manifest and checkpoints)"
                          f"{hint(name, allowed)}")
            eff = {k: mc.get(k, top[k]) for k in OVERRIDABLE}
            where = {k: (f"models.{name}.{k}" if k in mc else k) for k in OVERRIDABLE}
            for k in ("nfe", "solvers", "schedules", "guidance", "seeds", "metrics"):
                if len(set(map(str, eff[k]))) != len(eff[k]):
                    raise bad(where[k], "an entry is listed twice")
            for i, m in enumerate(eff["metrics"]):
                if m not in metrics_known:
                    raise bad(f"{where['metrics']}[{i}]", f"unknown metric {m!r}; allowed: "
                               f"{', '.join(metrics_known)}{hint(m, metrics_known)}")
            for i, s in enumerate(eff["schedules"]):
                self._add_schedule(s, f"{where['schedules']}[{i}]", name, eff["nfe"], schedules_known)
            entries = solver_entries(list(eff["solvers"]))
            if "solver_options" in mc:
                for e, spec in zip(entries, apply_solver_options([e.spec for e in entries], mc["solver_options"],
                                                                 f"models.{name}.solver_options"), strict=True):
                    e.spec = spec
            eff["solvers"] = [e.spec for e in entries]
            nfes = sorted(int(v) for v in eff["nfe"])
            slugs: list[str] = []
            per_nfe: dict[str, dict[int, str]] = {}  # slug -> the spec at the NFEs its entry's nfe_options name
            own_schedules: dict[str, list[str]] = {}
            own_guidance: dict[str, list[str]] = {}
            for i, e in enumerate(entries):
                spec, at = e.spec, f"{where['solvers']}[{i}]"
                problem = reg.solver_error(spec)
                if problem:
                    raise bad(at, problem)
                for n in eff["nfe"]:
                    problem = reg.solver_error(spec, int(n))
                    if problem:
                        raise bad(where["nfe"], problem)
                key = slug(spec)
                if self.specs.get(key, spec) != spec:
                    raise bad(at, f"{spec!r} and {self.specs[key]!r} share a path name")
                if key in slugs:
                    raise bad(at, f"solver {spec!r} is listed twice")
                for n, s in nfe_specs(spec, e.nfe_options, nfes, f"{at}.nfe_options").items():
                    problem = reg.solver_error(s) or reg.solver_error(s, n)
                    if problem:
                        raise bad(f"{at}.nfe_options", f"at nfe {n}: {problem}")
                    per_nfe.setdefault(key, {})[n] = s
                if e.schedules is not None:
                    for j, sc in enumerate(e.schedules):
                        self._add_schedule(sc, f"{at}.schedules[{j}]", name, eff["nfe"], schedules_known)
                    own_schedules[key] = [slug(sc) for sc in e.schedules]
                if e.guidance is not None:
                    own_guidance[key] = [guidance_key(g) for g in e.guidance]
                self.specs[key] = spec
                slugs.append(key)
                if reg.solver_prepares(spec):
                    self.prepares.add(key)
                code = reg.solver_code(spec)
                if code:
                    self.plugin_code[key] = code
            guidance = [guidance_key(g) for g in eff["guidance"]]
            if name in manifest or name in named_only:  # a checkpoint id: facts from its entry, never loaded here
                conditional: bool | None = (entry_conditional(manifest[name]) if name in manifest
                                            else manifest_conditional(named_only[name]))
                exact = False
            else:
                info = reg.model(name)
                conditional, exact = bool(info["num_classes"]), bool(info["exact"])
            self._has_reference[name] = exact or "reference_solver" in mc
            self.captions[name] = mc.get("captions")
            if any(g != "none" for g in guidance) and conditional is False:
                raise bad(where["guidance"], f"model {name!r} is unconditional; allowed: [none]")
            for i, key in enumerate(slugs):
                if any(g != "none" for g in own_guidance.get(key, [])) and conditional is False:
                    raise bad(f"{where['solvers']}[{i}].guidance", f"model {name!r} is unconditional; allowed: [none]")
            if "reference_solver" in mc:
                rs = mc["reference_solver"]
                problem = reg.solver_error(rs["solver"], int(rs["nfe"]))
                if problem:
                    raise bad(f"models.{name}.reference_solver", problem)
                _check_schedule(str(rs.get("schedule", "logsnr")), f"models.{name}.reference_solver.schedule",
                                schedules_known)
            if "reference_stats" in mc:
                stats = str(mc["reference_stats"])
                names = reference_stats_names()
                if stats not in names and not stats.endswith(".npz"):
                    raise bad(f"models.{name}.reference_stats",
                               f"unknown reference statistics {stats!r}; allowed: {', '.join(names)} or an .npz path")
            if "fid_implementation" in mc:
                impls = fid_implementation_names()
                if mc["fid_implementation"] not in impls:
                    raise bad(f"models.{name}.fid_implementation", f"unknown FID implementation "
                              f"{mc['fid_implementation']!r}; allowed: {', '.join(impls)}")
                if "reference_stats" not in mc:
                    raise bad(f"models.{name}.fid_implementation", "states the published numbers' FID implementation "
                              "but the model names no reference_stats; allowed: with reference_stats")
            self.model_extra[name] = {k: mc[k] for k in ("t_start", "t_end", "reference_solver", "reference_stats",
                                                         "fid_implementation") if k in mc}
            kind = (manifest[name].schedule if name in manifest else named_only[name].get("schedule")
                    if name in named_only else reg.model(name)["schedule"])
            self._check_start(reg, name, mc, eff, where, kind)
            settings = nfe_settings(nfes, eff["nfe_overrides"], {"t_end": self.t_end_of(name)}, where["nfe_overrides"])
            if per_nfe:  # NFEs whose specs differ fall in different NFE groups
                for n in nfes:
                    settings[n]["specs"] = {k: v[n] for k, v in per_nfe.items() if n in v}
            if self._has_reference[name] and any(v["t_end"] != self.t_end_of(name) for v in settings.values()):
                raise bad(where["nfe_overrides"], f"model {name!r} has a reference file (at its t_end "
                          f"{self.t_end_of(name)}): its NFEs cannot have another t_end")
            n = int(mc["num_samples"])
            per = int(eff["samples_per_shard"])
            if -(-n // per) > MAX_SHARDS_PER_CELL:  # would be millions of jobs (and a list that never ends)
                raise bad(where["samples_per_shard"] if "samples_per_shard" in mc or "samples_per_shard" in c
                           else f"models.{name}.num_samples",
                           f"{n} samples in shards of {per} make {-(-n // per)} shards per cell; allowed: at most "
                           f"{MAX_SHARDS_PER_CELL} (raise samples_per_shard)")
            self.models[name] = ModelGrid(
                name=name, num_samples=n, samples_per_shard=per, nfe=nfes, nfe_settings=settings,
                solvers=slugs, schedules=[slug(v) for v in eff["schedules"]], guidance=guidance,
                seeds=[int(s) for s in eff["seeds"]], metrics=list(eff["metrics"]),
                batch_size=None if eff["batch_size"] is None else int(eff["batch_size"]),
                shards=[(lo, min(lo + per, n)) for lo in range(0, n, per)],
                solver_schedules=own_schedules, solver_guidance=own_guidance,
            )
        # the checkpoint models of the grid: their files are pulled and verified before any of their jobs
        oracles = reg.models()
        self.checkpoints: dict[str, Any] = {m: manifest[m] for m in self.models if m in manifest and m not in oracles}
        # ids named by a checkpoints_manifest without a loadable entry (adapter, files): their jobs stop at the pull
        self.unavailable: dict[str, dict[str, Any]] = {m: named_only[m] for m in self.models if m in named_only}

    def _check_start(self, reg: Registry, name: str, mc: dict[str, Any], eff: dict[str, Any], where: dict[str, str],
                     kind: str | None) -> None:
        """A model's ``t_start`` lies above its ``t_end``; where sampling starts at pure noise (a flow model's T = 1,
        no ``t_start`` below it), every solver of the model must be able to start there."""
        t_start = mc.get("t_start")
        if t_start is not None:
            if any(str(s).startswith("searched:") for s in eff["schedules"]):
                raise bad(f"models.{name}.t_start", "searched schedules start at the schedule's T; allowed: no "
                          "t_start for a model with searched schedules")
            if not float(t_start) > self.t_end_of(name):
                raise bad(f"models.{name}.t_start", f"{t_start} is not above the model's t_end {self.t_end_of(name)}")
        if kind != "flow" or (t_start is not None and float(t_start) < 1.0):
            return
        refused = [str(s) for s in eff["solvers"] if not reg.solver_pure_noise(str(s))]
        if refused:
            raise bad(where["solvers"], f"model {name!r} starts at pure noise (flow schedule, t = 1), where "
                      f"{', '.join(refused)} cannot start; allowed: solvers that start there "
                      f"({', '.join(reg.pure_noise_solvers())}), or set models.{name}.t_start below 1 (e.g. 0.999, "
                      "as diffusers' flow DPM-Solver)")

    def _check_searches(self, searches: dict[str, Any], reg: Registry, models_known: list[str]
                        ) -> dict[str, dict[str, Any]]:
        """Validate the ``searches`` section: name -> {search, model, nfe, solver, guidance, seed, set, schedule}."""
        from dpmbench.artifacts import check_name

        known = reg.searches()
        for name, sc in searches.items():
            try:
                check_name(name)
            except DpmbenchError as exc:
                raise bad(f"searches.{name}", str(exc)) from None
            if sc["search"] not in known:
                raise bad(f"searches.{name}.search", f"unknown search {sc['search']!r}; "
                           f"allowed: {', '.join(known)}{hint(sc['search'], known)}")
            if sc["model"] not in models_known:
                raise bad(f"searches.{name}.model", f"unknown model; allowed: "
                           f"{', '.join(models_known)}{hint(sc.get('model'), models_known)}")
            if "solver" in sc:
                for n in sc["nfe"]:
                    problem = reg.solver_error(sc["solver"], int(n))
                    if problem:
                        raise bad(f"searches.{name}.solver", problem)
        return dict(searches)

    def _add_schedule(self, schedule: str, where: str, model: str, nfes: list[Any], known: list[str]) -> None:
        """Check one schedule of a model (a searched one against the config's searches) and record its spec."""
        if schedule.startswith("searched:"):
            self._check_searched(schedule, where, model, nfes)
        else:
            _check_schedule(schedule, where, known, ", or searched:NAME with NAME in searches")
        self.schedule_specs[slug(schedule)] = schedule

    def _check_searched(self, schedule: str, key: str, model: str, nfes: list[int]) -> None:
        name = schedule.split(":", 1)[1]
        if name not in self.searches:
            raise bad(key, f"unknown searched schedule {schedule!r}; allowed: searched:NAME with NAME in "
                       f"searches ({', '.join(self.searches) or 'none defined'})")
        sc = self.searches[name]
        missing = sorted(set(int(n) for n in nfes) - set(int(n) for n in sc["nfe"]))
        if missing:
            raise bad(key, f"search {name!r} has no grid for nfe {missing}; its nfe: {sc['nfe']}")
        if sc["model"] != model:
            raise bad(key, f"search {name!r} was made for model {sc['model']!r}, not {model!r}")

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

    # -- per-job parameters ------------------------------------------------------------------------------
    def num_samples(self, model: str) -> int:
        """Samples per cell of ``model``."""
        return self.models[model].num_samples

    def spec(self, solver_slug: str, model: str | None = None, nfes: list[int] | None = None) -> str:
        """The solver spec behind a slug; with ``model`` and its NFE group ``nfes``, the spec run there (its
        entry's ``nfe_options`` set)."""
        base = self.specs[solver_slug]
        if model is None or not nfes:
            return base
        return str(self.models[model].nfe_settings.get(int(nfes[0]), {}).get("specs", {}).get(solver_slug, base))

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

    def t_start_arg(self, model: str) -> str:
        """CLI flag of the model's ``t_start`` (where its solvers start with x_T), if configured."""
        t = self.model_extra.get(model, {}).get("t_start")
        return "" if t is None else f"--t-start {float(t)!r}"

    def t_end_of(self, model: str, nfes: list[int] | None = None) -> float:
        """The sampling end time of ``model`` (its ``t_end`` override, else the config's ``t_end``), or of its NFE
        group ``nfes`` (``nfe_overrides``)."""
        mg = self.models.get(model)
        if nfes and mg is not None and mg.nfe_settings:
            return float(mg.nfe_settings[int(nfes[0])]["t_end"])
        return float(self.model_extra.get(model, {}).get("t_end", self.t_end))

    def nfe_groups(self, model: str) -> list[list[int]]:
        """The NFE groups of ``model`` (:mod:`dpmbench.grid.overrides`)."""
        return self.models[model].nfe_groups

    def multi_group_models(self) -> list[str]:
        """Models with more than one NFE group (their further groups' prepare steps: the ``prepare_group`` rule)."""
        return [m for m, mg in self.models.items() if len(mg.nfe_groups) > 1]

    def solver_code(self, solver_slug: str) -> Any:
        """The code a solver's results depend on beyond the project's sources: ``module:digest`` of a plugin
        solver's module, so that a change to it re-runs its jobs (a rule parameter). For the project's own
        solvers an object Snakemake does not record as a parameter value (so adding this parameter re-ran no
        existing job)."""
        return self.plugin_code.get(solver_slug) or Unrecorded()

    def reference_args(self, model: str) -> str:
        """CLI flags of the reference job: a high-NFE solver run (``reference_solver``) or none (exact solutions)."""
        rs = self.model_extra.get(model, {}).get("reference_solver")
        if not rs:
            return ""
        return (f"--solver {shlex.quote(str(rs['solver']))} --nfe {int(rs['nfe'])} "
                f"--schedule {shlex.quote(str(rs.get('schedule', 'logsnr')))} --device {self.device}")

    def fid_stats_arg(self, model: str) -> str:
        """CLI flags naming the FID reference statistics of ``model`` (``reference_stats``) and the FID
        implementation of the published numbers it reproduces (``fid_implementation``), if configured."""
        extra = self.model_extra.get(model, {})
        stats, impl = extra.get("reference_stats"), extra.get("fid_implementation")
        return " ".join([*([f"--fid-stats {shlex.quote(str(stats))}"] if stats else []),
                         *([f"--fid-implementation {shlex.quote(str(impl))}"] if impl else [])])

    def resource(self, stage: str, key: str) -> int:
        """A resource of a stage's jobs (``mem_mb``, ``runtime`` minutes, ``threads``, ``gpu``)."""
        if key == "gpu":
            return int(self.resources[stage].get("gpu", 1 if self.device == "cuda" and stage != "report" else 0))
        return int(self.resources[stage][key])

    # -- NFE sets: one sample/metrics rule per distinct NFE group (rule outputs are static patterns) ----------
    def nfe_sets(self) -> list[tuple[str, list[int], list[str]]]:
        """``(rule suffix, nfes, models)`` for every distinct NFE group; the first suffix is empty."""
        sets: dict[tuple[int, ...], list[str]] = {}
        for name, m in self.models.items():
            for group in m.nfe_groups:
                sets.setdefault(tuple(group), []).append(name)
        return [("" if i == 0 else f"_{i}", list(k), v) for i, (k, v) in enumerate(sets.items())]

    def exact_models(self) -> list[str]:
        """Models whose reference file holds exact solutions (the ``reference`` rule)."""
        return [m for m in self.models if self._has_reference[m] and not self.reference_args(m)]

    def solver_reference_models(self) -> list[str]:
        """Models whose reference file is a high-NFE solver run (``reference_solver``; the ``reference_run`` rule)."""
        return [m for m in self.models if self.reference_args(m)]
    def has_reference(self, model: str) -> bool:
        """Whether ``model`` has a reference file: exact solutions (oracle models) or a ``reference_solver`` run."""
        return self._has_reference[model]


class Unrecorded:
    """A rule parameter value that Snakemake does not record (it records builtin types only), so it triggers no
    re-run: the interpreter running the jobs, or the empty code digest of the project's own solvers."""

    def __init__(self, text: str = "") -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Unrecorded({self.text!r})"


def build_grid(config: dict[str, Any], schema: str | os.PathLike[str] | None = None) -> Grid:
    """Validate a config (schema, then solvers/models/metrics/NFE minima) and expand it into a grid.

    Every problem raises a one-line ``DpmbenchError`` naming the config key.
    """
    check_schema(config, DEFAULT_SCHEMA if schema is None else schema)
    return Grid(config)
