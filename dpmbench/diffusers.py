"""A dpmbench solver as a diffusers scheduler: ``pipe.scheduler = scheduler(spec, pipe.scheduler.config)``, or the
diffusers way, ``DpmbenchScheduler.from_config(pipe.scheduler.config, solver=spec)``; it is saved and loaded with its
pipeline (``save_pretrained`` / ``from_pretrained``: the spec and the other dpmbench keys in its config).

Flow-matching configs (``FlowMatchEulerDiscreteScheduler``'s, as SD3 and FLUX ship) give the ``flow`` schedule and a
velocity-predicting network; ``timesteps`` are then sigma * N, diffusers' flow convention, and the default grid is the
config's own FlowMatchEuler grid for the pipeline's call (``schedule="pipeline"``, see ``DpmbenchScheduler``).

The scheduler runs the dpmbench solver itself, unchanged, as a coroutine driven by the pipeline: every model
evaluation the solver asks for becomes one entry of ``scheduler.timesteps`` and one ``scheduler.step`` call.

* ``set_timesteps(n)`` plans the solver for an NFE budget of ``n`` (``prepare`` first, for solvers with cached
  statistics or searches), then runs it once on a stand-in model to record where it will evaluate: the
  evaluation times (grid points and, for singlestep / Runge-Kutta solvers, the intermediate points) are known
  before sampling for every fixed-step solver. ``timesteps`` holds them as the UNet's timestep input ``N t - 1``
  (dpmbench's discrete-time convention, ``dpmbench.models.adapters.diffusers_unet``; fractional between training
  steps), so ``len(timesteps) == n`` and ``order == 1``.
* ``step(model_output, timestep, sample)`` hands the pipeline's model output (guidance already applied by the
  pipeline) to the solver, converted from the config's ``prediction_type`` to what the solver asked for at that
  point, and returns the next point the solver wants evaluated; the last call returns the solver's result.
  The solver runs in a worker thread that waits at each model evaluation (a plain hand-off: one side runs at a
  time, so results are deterministic). Stochastic solvers draw their noise from dpmbench's per-sample streams of
  ``seed`` (not from the pipeline's ``generator``), so the output equals ``dpmbench sample --seed`` from the same
  x_T.

Of the pipeline's scheduler config only the betas (``num_train_timesteps``, ``beta_*``, ``trained_betas``) and
``prediction_type`` are read; the solver spec and ``schedule`` say what runs (diffusers' ``timestep_spacing``,
``use_karras_sigmas``, ... are the ``diffusers-*`` timestep schedules, ``dpmbench.spacing``; thresholding and the
like are solver options).

Refused, with one line saying why: adaptive solvers (``method=adaptive``: the step count and the times depend on
error estimates of the samples) and solvers that pick per-sample times from the data (``ts-ddim``,
``ts-dpm-solver``): neither has a list of evaluation times before sampling. Solvers whose ``prepare`` evaluates
the model (``dc-solver``, ``dpm-solver-v3``, ``iia-*``, ``usf``) need ``model=``, the dpmbench model of the
pipeline's network (e.g. ``load_adapter``), unless their artifacts are already cached for the same key.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dpmbench.errors import DpmbenchError
from dpmbench.flowgrids import pipeline_sigmas
from dpmbench.models.adapters.diffusers_unet import (
    DIFFUSERS_DEFAULTS,
    is_flow_config,
    parameterization_of,
    schedule_from_config,
    timestep_offset,
)
from dpmbench.models.base import Model, NoiseSource, convert_prediction, guided
from dpmbench.schedules import Flow, NoiseSchedule
from dpmbench.solvers.base import Context, Plan, Solver, parse_spec
from dpmbench.solvers.registry import get_solver

OWN_KEYS = ("solver", "schedule", "t_start", "t_end", "seed")  # the dpmbench part of the scheduler's config
PIPELINE = "pipeline"  # flow configs' default grid: where the config's FlowMatchEuler scheduler would evaluate


def scheduler(
    spec: str,
    config: Any,
    *,
    schedule: Any = None,
    t_start: float | None = None,
    t_end: float | None = None,
    model: Model | str | None = None,
    guidance: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> DpmbenchScheduler:
    """A diffusers-compatible scheduler running the dpmbench solver ``spec`` (``NAME[:key=value,...]``).

    ``config``: the pipeline's scheduler config (``pipe.scheduler.config``, a mapping or a scheduler): its betas
    give the ``vp-discrete`` noise schedule and its ``prediction_type`` the network's parameterization; a
    flow-matching config (``FlowMatchEulerDiscreteScheduler``'s, as SD3 and FLUX ship) gives the ``flow`` schedule and
    a velocity-predicting network. ``schedule``, ``t_start``, ``t_end``: the timestep schedule as in
    ``dpmbench.sample`` (default ``logsnr``; for a flow config ``"pipeline"``: the config's own FlowMatchEuler grid
    for the pipeline's call, ``mu`` and FLUX's sigmas included, ended by the jump to sigma = 0 of
    ``denoise_to_zero=true``, which the scheduler sets there). ``model``: the dpmbench
    model of the same network (object or id), needed by solvers that compute statistics in ``prepare``;
    ``guidance``: the pipeline's guidance scale, for those statistics; ``dtype``: the sample dtype they are
    prepared for (``dpmbench sample``'s default float32). ``seed``: the noise stream of stochastic solvers.
    """
    sch = DpmbenchScheduler.from_config(config, solver=spec, schedule=schedule, t_start=t_start, t_end=t_end,
                                        seed=seed)
    sch.attach(model=model, guidance=guidance, dtype=dtype)
    return sch


def refusal(sol: Solver) -> str | None:
    """Why ``sol`` cannot run as a diffusers scheduler (None when it can)."""
    if sol.adaptive:
        return (f"solver {sol.spec!r} cannot run as a diffusers scheduler: it is adaptive (its step count and "
                "evaluation times depend on error estimates of the samples), so scheduler.timesteps cannot be "
                "listed before sampling")
    if not sol.times_known:
        return (f"solver {sol.spec!r} cannot run as a diffusers scheduler: it evaluates each sample at its own "
                "time chosen from the sample, so scheduler.timesteps cannot be listed before sampling")
    return None


class _Cancelled(BaseException):
    """Raised inside the worker to abandon a run (a new ``set_timesteps``, or the scheduler is closed)."""


_CANCEL = object()


class _Recorder:
    """A stand-in NFE counter: records where the solver evaluates and answers zeros (used to list the times)."""

    def __init__(self, schedule: NoiseSchedule):
        self.schedule, self.count, self.times = schedule, 0, []
        self.noise = lambda step: torch.zeros_like(self._like)
        self._like = torch.zeros(0)

    def predict(self, x: torch.Tensor, t: Any, kind: str) -> torch.Tensor:
        self.count += 1
        self.times.append(t)
        return torch.zeros_like(x)


class _Worker:
    """The solver run as a coroutine: ``predict`` (called by the solver, in the worker thread) hands the point to
    evaluate to the pipeline's thread and waits for the model output."""

    def __init__(self, sol: Solver, plan: Plan, x_T: torch.Tensor, schedule: NoiseSchedule, noise: NoiseSource | None,
                 inference_mode: bool):
        self.sol, self.plan, self.x_T, self.schedule, self.noise = sol, plan, x_T, schedule, noise
        self.count = 0
        self._inference = inference_mode
        self._to_worker: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._to_caller: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._main, name="dpmbench-scheduler", daemon=True)

    def _main(self) -> None:
        try:
            with torch.no_grad(), torch.inference_mode(self._inference):
                x = self.sol.run(self, self.x_T, self.plan)
            self._to_caller.put(("done", x))
        except _Cancelled:
            pass
        except BaseException as e:  # handed to the pipeline's thread, raised there
            self._to_caller.put(("error", e))

    def predict(self, x: torch.Tensor, t: Any, kind: str) -> torch.Tensor:
        """One model evaluation (1 NFE): ask the pipeline for it."""
        self.count += 1
        self._to_caller.put(("eval", x, t, kind))
        out = self._to_worker.get()
        if out is _CANCEL:
            raise _Cancelled
        return out

    def start(self) -> tuple[Any, ...]:
        """Run the solver up to its first model evaluation."""
        self._thread.start()
        return self._to_caller.get()

    def send(self, out: torch.Tensor) -> tuple[Any, ...]:
        """Hand the model output of the pending evaluation; run to the next one (or to the end)."""
        self._to_worker.put(out)
        return self._to_caller.get()

    def cancel(self) -> None:
        """Abandon the run: the worker unwinds and ends."""
        if self._thread.is_alive():
            self._to_worker.put(_CANCEL)
            self._thread.join(timeout=10)


@dataclass(frozen=True)
class PipelineGrid:
    """The ``pipeline`` grid of a flow config: for ``steps`` steps, the ``steps + 1`` nonzero sigmas the config's
    FlowMatchEuler scheduler gives ``steps + 1`` inference steps in the pipeline's call (``mu``; FLUX's passed
    sigmas ``linspace(1, 1/n, n)`` when ``flux_sigmas``), ``dpmbench.flowgrids.pipeline_sigmas``. A value with a
    stable repr, so that a prepared solver's cache key does not depend on the object."""

    config: tuple[tuple[str, Any], ...]
    mu: float | None
    flux_sigmas: bool

    def __call__(self, steps: int) -> torch.Tensor:
        m = steps + 1
        passed = np.linspace(1.0, 1 / m, m) if self.flux_sigmas else None
        return torch.from_numpy(pipeline_sigmas(dict(self.config), m, sigmas=passed, mu=self.mu))


class DpmbenchScheduler(SchedulerMixin, ConfigMixin):
    """See the module docstring. Attributes a pipeline uses: ``config``, ``timesteps``, ``order``,
    ``init_noise_sigma``, ``num_inference_steps``, ``set_timesteps``, ``scale_model_input``, ``step``,
    ``add_noise`` (``scale_noise`` on flow configs), ``set_begin_index``.

    As a diffusers scheduler it is built from another scheduler's config, ``DpmbenchScheduler.from_config(
    pipe.scheduler.config, solver=SPEC)``, and saved with its pipeline: ``save_pretrained`` writes the solver spec,
    the timestep schedule, ``t_start``, ``t_end``, ``seed`` and the noise schedule's config keys to
    ``scheduler_config.json``, and ``from_pretrained`` (or the pipeline's) reads them back. The dpmbench model for
    solvers with a ``prepare`` step, the guidance scale and the dtype are not part of the config (``attach``)."""

    config_name = "scheduler_config.json"
    order = 1

    def __init__(self, solver: str, schedule: Any = None, t_start: float | None = None, t_end: float | None = None,
                 seed: int = 0, **base: Any):
        base = {k: v for k, v in base.items() if not k.startswith("_")}
        self.flow = is_flow_config(base)
        if not self.flow:
            base = {**DIFFUSERS_DEFAULTS, **{k: v for k, v in base.items() if v is not None}}
        if schedule is None:
            schedule = PIPELINE if self.flow else "logsnr"
        elif schedule == PIPELINE and not self.flow:
            raise DpmbenchError(f"invalid schedule {PIPELINE!r} for a scheduler config without flow matching: "
                                "allowed: a dpmbench timestep schedule (dpmbench list schedules)")
        self.register_to_config(solver=str(solver), schedule=schedule, t_start=t_start, t_end=t_end, seed=int(seed),
                                **base)
        self.schedule: NoiseSchedule
        if self.flow:
            if base.get("prediction_type") not in (None, "flow_prediction"):
                raise DpmbenchError(f"invalid prediction_type {base['prediction_type']!r} for a flow-matching "
                                    "scheduler config: allowed: flow_prediction")
            self.schedule, self.parameterization = Flow(), "flow"
        else:
            self.schedule = schedule_from_config(base)
            self.parameterization = parameterization_of(base["prediction_type"])
        self.solver = get_solver(str(solver))
        if self.flow and schedule == PIPELINE and not self.solver.denoise_to_zero:
            name, opts = parse_spec(str(solver))
            self.solver = get_solver(name, **{k: v for k, v in opts.items() if k != "denoise_to_zero"},
                                     denoise_to_zero=True)  # diffusers' final step to sigma = 0
        why = refusal(self.solver)
        if why:
            raise DpmbenchError(why)
        self.kind, self.t_start, self.t_end, self.seed = schedule, t_start, t_end, int(seed)
        self.model: Model | None = None
        self.guidance: float | None = None
        self.dtype = torch.float32
        self.init_noise_sigma = float(self.schedule.prior_std)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0)
        self.eval_times: list[float] = []
        self._plan: Plan | None = None
        self._worker: _Worker | None = None
        self._pending: tuple[Any, ...] | None = None
        self._index = 0

    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """A scheduler from another scheduler's config (``pipe.scheduler.config``, or the scheduler itself) with the
        dpmbench keys given here (``solver=SPEC`` is required unless the config is a saved DpmbenchScheduler's), or
        from a saved config as it was; keyword arguments override the config's keys."""
        if config is None:
            raise DpmbenchError("invalid config None for DpmbenchScheduler.from_config: pass the scheduler config to "
                                "run on (pipe.scheduler.config)")
        cfg = dict(getattr(config, "config", config))
        own = {k: kwargs.pop(k) for k in OWN_KEYS if k in kwargs}
        known = {k: kwargs.pop(k) for k in list(kwargs) if k in cfg}
        cfg = {**{k: v for k, v in cfg.items() if not k.startswith("_")}, **known, **own}
        if not cfg.get("solver"):
            raise DpmbenchError("invalid solver None for DpmbenchScheduler.from_config: pass solver=SPEC (a dpmbench "
                                "solver spec, e.g. 'dpm-solver++:order=2'; dpmbench list solvers)")
        sch = cls(**cfg)
        return (sch, kwargs) if return_unused_kwargs else sch

    def attach(self, model: Model | str | None = None, guidance: float | None = None,
               dtype: torch.dtype = torch.float32) -> DpmbenchScheduler:
        """Set what is not part of the config: the dpmbench model of the pipeline's network (object or id) for
        solvers whose ``prepare`` evaluates it, the guidance scale for those statistics, and the sample dtype they
        are prepared for."""
        if isinstance(model, str):
            from dpmbench.models.registry import load_model

            model = load_model(model)
        if model is not None and model.schedule.key() != self.schedule.key():
            raise DpmbenchError(f"invalid model {model.name!r} for this scheduler config: its noise schedule "
                                f"{model.schedule.key()} differs from the config's {self.schedule.key()}")
        self.model, self.guidance, self.dtype = model, guidance, dtype
        return self

    def __len__(self) -> int:
        return int(self.config["num_train_timesteps"])

    def set_begin_index(self, begin_index: int = 0) -> None:
        """diffusers' img2img hook (where the run starts in ``timesteps``); only 0, the full run, is supported."""
        if begin_index != 0:
            raise DpmbenchError(f"invalid begin_index {begin_index} for the dpmbench scheduler: allowed: 0 (a "
                                "dpmbench solver runs its whole plan)")

    # -- planning ---------------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: Any = None, mu: float | None = None, timesteps: Any = None) -> None:
        """Plan the solver for an NFE budget of ``num_inference_steps`` and list its evaluation times.

        On a flow config, as ``FlowMatchEulerDiscreteScheduler``: ``mu`` is the pipeline's dynamic shift (FLUX, or
        SD3 with ``use_dynamic_shifting``); ``sigmas`` may be FLUX's ``linspace(1, 1/n, n)`` (the budget is then
        ``n``), which the ``pipeline`` grid follows at the solver's own step count. Other custom sigmas or
        timesteps are refused: a dpmbench solver chooses its evaluations from its budget (``schedule="custom"``
        lists times)."""
        self.close()
        if timesteps is not None:
            raise DpmbenchError("invalid timesteps for the dpmbench scheduler: a solver chooses its own evaluation "
                                "times from its budget; pass num_inference_steps (custom times: schedule=[...])")
        flux_sigmas = False
        if sigmas is not None:
            n = len(sigmas)
            flux_sigmas = self.flow and np.allclose(np.asarray(sigmas, np.float64), np.linspace(1.0, 1 / n, n),
                                                    rtol=0, atol=1e-7)
            if not flux_sigmas:
                raise DpmbenchError("invalid sigmas for the dpmbench scheduler: only FLUX's linspace(1, 1/n, n) on a "
                                    "flow config (custom times: schedule=[...])")
            num_inference_steps = num_inference_steps or n
        if num_inference_steps is None:
            raise DpmbenchError("invalid num_inference_steps None: the NFE budget is needed")
        nfe = num_inference_steps
        sol = self.solver
        sol.check_nfe(nfe)
        kind = self._grid(mu, flux_sigmas) if self.kind == PIPELINE else self.kind
        if sol.needs_prepare:
            if self.model is None:
                raise DpmbenchError(f"invalid model None for solver {sol.spec!r}: its prepare step computes "
                                    "statistics from the network; pass model= (the dpmbench model of the pipeline's "
                                    "network)")
            from dpmbench.search import run_search

            net = guided(self.model, self.guidance)
            with torch.no_grad():
                sol.prepare(Context(net, nfe, kind, self.t_start, self.t_end, self.guidance, self.dtype,
                                    device or "cpu", run_search))
        self._plan = sol.make_plan(nfe, self.schedule, kind, self.t_start, self.t_end)
        self.eval_times = self._record_times(nfe)
        big_n, offset = int(self.config["num_train_timesteps"]), timestep_offset(self.flow)  # the network's input
        self.timesteps = torch.tensor([t * big_n + offset for t in self.eval_times], dtype=torch.float32,
                                      device=device)
        self.num_inference_steps = nfe
        self._index = 0

    def _grid(self, mu: float | None, flux_sigmas: bool) -> PipelineGrid:
        """The ``pipeline`` grid of a flow config for this call."""
        base = tuple(sorted((k, v) for k, v in self.config.items() if k not in OWN_KEYS and not k.startswith("_")))
        return PipelineGrid(base, mu, flux_sigmas)

    def _record_times(self, nfe: int) -> list[float]:
        """Where the solver evaluates, from a run on a stand-in model (a shallow copy of the prepared solver)."""
        assert self._plan is not None
        shape = (1, *self.model.shape) if self.model is not None else (1, 1)
        rec = _Recorder(self.schedule)
        rec._like = torch.zeros(shape, dtype=torch.float64)
        dry = copy.copy(self.solver)  # the run sets attributes (step index, its model): keep them off the original
        dry.__dict__.pop("model", None)
        with torch.no_grad():
            dry.run(rec, torch.zeros(shape, dtype=torch.float64), self._plan)
        if any(isinstance(t, torch.Tensor) and t.numel() > 1 for t in rec.times):
            raise DpmbenchError(f"solver {self.solver.spec!r} cannot run as a diffusers scheduler: it evaluates "
                                "samples at per-sample times")
        if rec.count != nfe:
            raise DpmbenchError(f"solver {self.solver.spec!r} cannot run as a diffusers scheduler: it used "
                                f"{rec.count} evaluations for a budget of {nfe}")
        return [float(t) for t in rec.times]

    # -- the pipeline's loop ------------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The UNet's input is the sample itself (VP schedule: no input scaling)."""
        return sample

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any = None,
             return_dict: bool = True, **kwargs: Any) -> Any:
        """Give the solver the model output at ``sample`` (evaluated at ``timestep``); return the next point to
        evaluate, or, after the last evaluation, the solver's result. ``generator`` is ignored (see the module
        docstring); other keyword arguments of diffusers' schedulers (``eta``, ...) are refused."""
        from diffusers.schedulers.scheduling_utils import SchedulerOutput

        if kwargs:
            raise DpmbenchError(f"invalid step argument {sorted(kwargs)[0]!r} for the dpmbench scheduler: set solver "
                                "options in its spec instead; allowed: generator, return_dict")
        if self._plan is None or self._index >= len(self.eval_times):
            raise DpmbenchError("invalid scheduler.step call: call set_timesteps first (each step is one model "
                                f"evaluation; {len(self.eval_times)} were planned)")
        expect = self.timesteps[self._index]
        if abs(float(timestep) - float(expect)) > 1e-3 * max(1.0, abs(float(expect))):
            raise DpmbenchError(f"invalid timestep {float(timestep)} at step {self._index}: the solver evaluates at "
                                f"scheduler.timesteps[{self._index}] = {float(expect)}")
        if self._index == 0:
            noise = NoiseSource(self.seed, 0, sample) if self.solver.stochastic else None
            self._worker = _Worker(self.solver, self._plan, sample, self.schedule, noise,
                                   torch.is_inference_mode_enabled())
            self._pending = self._worker.start()
        assert self._worker is not None and self._pending is not None
        msg = self._pending
        if msg[0] == "error":
            raise msg[1]
        _, x, t, kind = msg
        if x is not sample and not (x.shape == sample.shape and torch.equal(x, sample)):
            self.close()
            raise DpmbenchError("invalid sample passed to scheduler.step: it is not the point the solver asked to "
                                "evaluate (the pipeline changed the latents between steps, which a dpmbench solver "
                                "cannot follow)")
        out = model_output.to(x.dtype)
        if kind != self.parameterization:
            alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
            out = convert_prediction(out, self.parameterization, kind, x, alpha, sigma)
        self._index += 1
        msg = self._pending = self._worker.send(out)
        if msg[0] == "error":
            raise msg[1]
        nxt = msg[1]
        if msg[0] == "done":
            self._worker = self._pending = None
        return SchedulerOutput(prev_sample=nxt) if return_dict else (nxt,)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = alpha(t) x_0 + sigma(t) eps at the continuous times of the network's timesteps ((timestep + 1) / N;
        on a flow config timestep / N = sigma)."""
        t = torch.as_tensor(timesteps, device=original_samples.device).to(torch.float64).reshape(-1)
        t = (t - timestep_offset(self.flow)) / int(self.config["num_train_timesteps"])
        shape = (-1, *([1] * (original_samples.ndim - 1)))
        a = self.schedule.alpha(t).to(original_samples.dtype).reshape(shape)
        s = self.schedule.sigma(t).to(original_samples.dtype).reshape(shape)
        return a * original_samples + s * noise

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """FlowMatchEuler's name of ``add_noise`` (flow configs): (1 - sigma) x0 + sigma noise."""
        return self.add_noise(sample, noise, torch.as_tensor(timestep))

    def close(self) -> None:
        """Abandon an unfinished run (its worker thread ends)."""
        if self._worker is not None:
            self._worker.cancel()
        self._worker = self._pending = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"DpmbenchScheduler({self.solver.spec!r}, schedule={self.kind!r}, nfe={self.num_inference_steps})"
