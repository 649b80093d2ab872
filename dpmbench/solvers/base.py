"""The solver core, written once: option parsing, the registry, time grids, the step loops and the
multistep history. Solver families only write their update rules.

A solver spec is ``NAME[:key=value,...]``, e.g. ``dpm-solver++:order=3,method=multistep``.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.base import Model, NFECounter
from dpmbench.optvalues import fmt_value, parse_bool, split_spec
from dpmbench.schedules import NoiseSchedule
from dpmbench.timesteps import timesteps


@dataclass(frozen=True)
class Option:
    """A solver option: its type, default, allowed values and a one-line description (with source)."""

    type: type
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None

    def parse(self, solver: str, key: str, raw: Any, owner: str = "solver") -> Any:
        """Convert and validate a value given as text or a Python object."""
        allowed = self.describe()
        try:
            if self.type is bool:
                if isinstance(raw, str):
                    value: Any = parse_bool(raw)
                else:
                    value = bool(raw)
            elif self.type is int and isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            else:
                value = self.type(raw)
        except (TypeError, ValueError):
            raise bad_value(f"option {key!r} of {owner} {solver!r}", raw, allowed) from None
        if self.choices is not None and value not in self.choices:
            raise bad_value(f"option {key!r} of {owner} {solver!r}", raw, [fmt_value(c) for c in self.choices])
        if self.minimum is not None and value < self.minimum:
            raise bad_value(f"option {key!r} of {owner} {solver!r}", raw, allowed)
        return value

    def describe(self) -> str:
        """Allowed values, as text."""
        if self.choices is not None:
            return ", ".join(fmt_value(c) for c in self.choices)
        if self.type is bool:
            return "true, false"
        if self.minimum is not None:
            return f"{self.type.__name__} >= {self.minimum}"
        return self.type.__name__


@dataclass(frozen=True)
class Point:
    """A time point with its schedule values, computed once in float64."""

    t: float
    lam: float
    alpha: float
    sigma: float

    @classmethod
    def at(cls, schedule: NoiseSchedule, t: float) -> Point:
        """The point at time ``t``."""
        return cls(float(t), schedule.lambda_(t), schedule.alpha(t), schedule.sigma(t))

    @classmethod
    def at_lambda(cls, schedule: NoiseSchedule, lam: float) -> Point:
        """The point at half log-SNR ``lam``."""
        return cls.at(schedule, schedule.t_of_lambda(lam))

    @classmethod
    def grid(cls, schedule: NoiseSchedule, ts: torch.Tensor) -> list[Point]:
        """The points of a time grid, computed in one vectorized pass."""
        lam, alpha, sigma = schedule.values(ts)
        return [cls(float(t), *v) for t, *v in zip(ts.tolist(), lam, alpha, sigma, strict=True)]


@dataclass
class Plan:
    """What a solver will do for one NFE budget: its time grid and the order of every step."""

    points: list[Point]
    orders: list[int]
    nfe: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def times(self) -> torch.Tensor:
        """The grid times as a float64 tensor."""
        return torch.tensor([p.t for p in self.points], dtype=torch.float64)


@dataclass
class Context:
    """What a solver's ``prepare`` may use: the (guided) model, uncounted, and the run's settings.

    ``prepare`` runs before the NFE counter starts: searches and model statistics (DC-Solver's ratios,
    DPM-Solver-v3's statistics, searched solver schedules) evaluate the model here, outside the sampling budget,
    and cache their results as artifacts (``dpmbench.artifacts.cached``) keyed by ``key()`` and the solver's
    options. Artifacts must not depend on the batch being sampled (so results do not depend on batching): a
    search that needs samples draws its own, e.g. ``fit_prior(model, n, seed)`` (samples no evaluation run draws:
    ``dpmbench.models.base.FIT_START``) and ``model.labels(n)`` when guided.

    Solvers never import the searches (they sit above them): whoever builds the Context (``dpmbench.sample``, the
    CLI, ``dpmbench.diffusers``) gives it ``searcher``, a search runner with the signature of the search package's
    ``run_search`` ``(kind, ctx, solver, seed, options)``, and ``prepare`` calls it through ``search``.
    """

    model: Model
    nfe: int
    kind: Any = "logsnr"
    t_start: float | None = None
    t_end: float | None = None
    guidance: float | None = None
    dtype: torch.dtype = torch.float32
    device: str | torch.device = "cpu"
    searcher: Callable[..., Any] | None = None
    prompts: Callable[[int], list[str]] | None = None  # text-conditional models: the prompts of n fit samples
    prompts_id: str = ""  # what ``prompts`` depends on (the captions file's sha256), for artifact keys

    def search(self, kind: str, solver: Solver | None = None, seed: int = 0, options: dict[str, Any] | None = None,
               *, by: str = "") -> Any:
        """Run (or load from the cache) the search ``kind`` for this context through ``searcher``; a one-line error
        naming the solver ``by`` when the Context has none."""
        if self.searcher is None:
            who = by or (solver.name if solver is not None else kind)
            raise DpmbenchError(f"solver {who!r} needs searches: sample through dpmbench.sample, the dpmbench CLI or "
                                "pass searcher=dpmbench.search.run_search")
        return self.searcher(kind, self, solver, seed, options or {})

    def key(self) -> tuple[Any, ...]:
        """Everything a prepared artifact of this run depends on (besides the solver's own options)."""
        kind = self.kind if isinstance(self.kind, str) else torch.as_tensor(self.kind, dtype=torch.float64)
        key = (self.model.cache_key(), self.nfe, kind, self.start, self.end, self.guidance, str(self.dtype))
        return (*key, self.prompts_id) if self.prompts_id else key

    def cond(self, n: int) -> Any:
        """Conditioning for ``n`` search samples when guided: the prompts of a text-conditional model (``prompts``,
        from the run's captions file), else balanced class labels (as the sample jobs use); None unguided."""
        if self.guidance is None:
            return None
        base = getattr(self.model, "base", self.model)  # a guided wrapper's network
        if getattr(self.model, "text_conditional", False) or getattr(base, "text_conditional", False):
            if self.prompts is None:
                raise DpmbenchError(f"invalid --captions None: model {self.model.name!r} is text-conditional and its "
                                    "prepare step evaluates it guided; give the captions file (--captions)")
            return self.prompts(n)
        return self.model.labels(n)

    @property
    def start(self) -> float:
        """t_start, defaulted to the schedule's T."""
        return float(self.model.schedule.T if self.t_start is None else self.t_start)

    @property
    def end(self) -> float:
        """t_end, defaulted to the schedule's default."""
        return float(self.model.schedule.t_end_default if self.t_end is None else self.t_end)


@dataclass
class Record:
    """One entry of the multistep history: a point and the model output there."""

    point: Point
    out: torch.Tensor


class History:
    """What one run of a multistep solver remembers: its last ``size`` model outputs, newest last (``hist[-1]``), and
    the run they belong to: the counted model (``model``: stochastic updates draw their noise from it), the plan
    and ``step``, the index of the step being taken (s -> t; ``correct`` refines the end point of step ``step - 1``).
    ``solve`` creates it for one run (``MultistepSolver.new_history``) and passes it to the update rules: per-run
    state lives here, never on the solver. A history made from outputs alone (``History(size)``) has no run."""

    def __init__(self, size: int, model: NFECounter | None = None, plan: Plan | None = None):
        self._items: deque[Record] = deque(maxlen=max(size, 1))
        self._model, self._plan = model, plan
        self.step = 0

    @property
    def model(self) -> NFECounter:
        """The run's counted model."""
        if self._model is None:
            raise RuntimeError("this history belongs to no run: it has no model (MultistepSolver.new_history)")
        return self._model

    @property
    def plan(self) -> Plan:
        """The run's plan."""
        if self._plan is None:
            raise RuntimeError("this history belongs to no run: it has no plan (MultistepSolver.new_history)")
        return self._plan

    def push(self, point: Point, out: torch.Tensor) -> None:
        """Append the newest output."""
        self._items.append(Record(point, out))

    def with_newest(self, out: torch.Tensor) -> History:
        """A copy of this history (same run, same class) whose newest output is ``out``."""
        new = copy.copy(self)
        new._items = deque(self._items, maxlen=self._items.maxlen)
        new._items[-1] = Record(self._items[-1].point, out)
        return new

    def __getitem__(self, i: int) -> Record:
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)


SOLVERS: dict[str, type[Solver]] = {}

# Options every solver accepts (shared mechanics, written once in Solver.predict and Solver.run).
COMMON_OPTIONS: dict[str, Option] = {
    "thresholding": Option(bool, False, "dynamic thresholding of the data prediction (Imagen, Saharia et al. "
                           "2022, Sec. 2.3; official DPM-Solver code)"),
    "thresholding_ratio": Option(float, 0.995, "quantile p of |x0| per sample: s = clamp(quantile_p, 1, "
                                 "sample_max_value), x0 <- clip(x0, -s, s) / s", minimum=0.0),
    "sample_max_value": Option(float, math.inf, "cap of the dynamic threshold s (inf: Imagen; diffusers' "
                               "schedulers use a finite cap)", minimum=1.0),
    "denoise_to_zero": Option(bool, False, "spend the last NFE on the denoised output x0(x_{t_end}, t_end) "
                              "(official DPM-Solver option)"),
}


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding: s = clamp(quantile_ratio(|x0|), 1, max_value) per sample; clip(x0, -s, s) / s."""
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat, ratio, dim=1)
    s = s.clamp(min=1.0, max=max_value).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator: register a solver under ``cls.name``."""
    SOLVERS[cls.name] = cls
    return cls


class Solver:
    """Base of all solvers. Subclasses set ``name``, ``source``, ``options`` and implement ``plan``/``solve``.

    Every option is an instance attribute of the same name (``self.order``), set from the parsed spec; a family
    declares its options' types in its class body (``order: int``) so that a type checker sees them. ``opts`` is
    the dict of all of them."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    stochastic: ClassVar[bool] = False  # draws noise (needs NFECounter.noise)
    adaptive: ClassVar[bool] = False  # data-dependent step count: the NFE budget is a cap (see sampling.sample)
    needs_prepare: ClassVar[bool] = False  # prepare() computes cached artifacts (the workflow runs it once per cell)
    # Where the model is evaluated follows from the plan alone, not from the samples (one time per evaluation for the
    # whole batch): False for solvers that pick per-sample times from the data (time-shift). dpmbench.diffusers can
    # list the evaluation times in advance (scheduler.timesteps) only for solvers with this flag and not adaptive.
    times_known: ClassVar[bool] = True
    parallel: ClassVar[bool] = False  # batched parallel rounds (picard): NFE counter counts rounds (sampling.sample)
    # May start at pure noise (alpha = 0, log-SNR -inf: a flow model at t = 1), where only a step written with the
    # model's data prediction is defined (a noise prediction there is x / sigma and says nothing of x0; a step size
    # in log-SNR is infinite). Families that are set it; the rest refuse such a start in one line (make_plan).
    pure_noise_start: ClassVar[bool] = False

    # the options every solver accepts (COMMON_OPTIONS)
    thresholding: bool
    thresholding_ratio: float
    sample_max_value: float
    denoise_to_zero: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.options = {**cls.options, **{k: v for k, v in COMMON_OPTIONS.items() if k not in cls.options}}
        clash = [k for k in cls.options if callable(getattr(cls, k, None)) or k in vars(Solver)]
        if clash:  # the option's instance attribute would hide a method or the class's description
            raise TypeError(f"solver {cls.__name__}: option {clash[0]!r} has the name of a solver method or attribute")

    def __init__(self, **opts: Any):
        unknown = set(opts) - set(self.options)
        if unknown:
            key = sorted(unknown)[0]
            raise bad_value(f"option of solver {self.name!r}", key, sorted(self.options) or "none")
        for k, o in self.options.items():
            setattr(self, k, o.parse(self.name, k, opts[k]) if k in opts else o.default)
        self.validate()

    @property
    def opts(self) -> dict[str, Any]:
        """Every option's value, by key."""
        return {k: getattr(self, k) for k in self.options}

    def validate(self) -> None:
        """Check option combinations (after parsing)."""

    @property
    def spec(self) -> str:
        """Canonical spec string: the name and every option that differs from its default."""
        diff = [f"{k}={fmt_value(v)}" for k, v in self.opts.items() if v != self.options[k].default]
        return self.name + (":" + ",".join(diff) if diff else "")

    def min_nfe(self) -> int:
        """The smallest NFE budget the solver's steps need (``denoise_to_zero`` adds one)."""
        return 1

    def prepare(self, ctx: Context) -> dict[str, Any]:
        """Compute or load what the solver needs before sampling (searches, model statistics), outside the NFE
        budget; return a JSON-able summary of what was prepared (artifact keys, settings). Default: nothing."""
        return {}

    def check_nfe(self, nfe: int) -> None:
        """Raise a one-line error if ``nfe`` is too small for this solver."""
        need = self.min_nfe() + int(self.denoise_to_zero)
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < need:
            raise DpmbenchError(f"invalid nfe {nfe!r} for solver {self.spec!r}: needs an integer >= {need}")

    def make_plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
                  t_start: float | None = None, t_end: float | None = None) -> Plan:
        """Check the budget and plan the steps (one NFE is kept back for ``denoise_to_zero``)."""
        self.check_nfe(nfe)
        plan = self.plan(nfe - int(self.denoise_to_zero), schedule, kind, t_start, t_end)
        plan.nfe = nfe
        if plan.points:
            self.check_start(plan.points[0])
        return plan

    def check_start(self, start: Point) -> None:
        """Refuse, in one line, a start at pure noise (alpha = 0) unless the family can start there
        (``pure_noise_start``); ``prepare`` steps that build on the start call it first."""
        if start.alpha == 0.0 and not self.pure_noise_start:
            raise DpmbenchError(
                f"invalid t_start {start.t} for solver {self.spec!r}: it is pure noise (alpha = 0, log-SNR "
                f"-inf; a flow model at t = 1), where its update is undefined; start below it (t_start, e.g. 0.999 "
                f"as diffusers' flow DPM-Solver does) or use a solver that starts there: "
                f"{', '.join(n for n, c in SOLVERS.items() if c.pure_noise_start)}")

    def predict(self, model: NFECounter, x: torch.Tensor, p: Point, kind: str) -> torch.Tensor:
        """One model evaluation (1 NFE) of type ``kind`` at point ``p``, with dynamic thresholding if enabled
        (applied to the data prediction; an eps prediction is recomputed from the thresholded x0)."""
        if not self.thresholding:
            return model.predict(x, p.t, kind)
        x0 = dynamic_threshold(model.predict(x, p.t, "x0"), self.thresholding_ratio, self.sample_max_value)
        if kind == "x0":
            return x0
        eps = (x - p.alpha * x0) / p.sigma
        return eps if kind == "eps" else eps - x0

    def noise(self, model: NFECounter, step: int) -> torch.Tensor:
        """The standard normal noise of step ``step`` (0-based), per sample seeded (``model.noise``); only
        stochastic solvers may draw noise, and only through here."""
        if not self.stochastic or model.noise is None:
            raise RuntimeError(f"solver {self.spec} draws noise but is not run as a stochastic solver")
        return model.noise(step)

    def run(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Solve along the plan, then denoise to zero if asked."""
        x = self.solve(model, x, plan)
        if self.denoise_to_zero:
            x = self.predict(model, x, plan.points[-1], "x0")
        return x

    def plan(
        self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
        t_start: float | None = None, t_end: float | None = None,
    ) -> Plan:
        """Default plan: ``nfe`` steps of order 1 on the requested time grid."""
        return self.uniform_plan(nfe, nfe, 1, schedule, kind, t_start, t_end)

    def uniform_plan(
        self, nfe: int, steps: int, order: int, schedule: NoiseSchedule, kind: Any,
        t_start: float | None, t_end: float | None,
    ) -> Plan:
        """``steps`` steps of order ``order`` on the ``kind`` grid."""
        ts = timesteps(kind, steps, schedule, t_start, t_end)
        return Plan(Point.grid(schedule, ts), [order] * steps, nfe)

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Integrate from ``plan.points[0]`` to ``plan.points[-1]``."""
        raise NotImplementedError


class SinglestepSolver(Solver):
    """A one-step method: each step from s to t may evaluate the model several times."""

    def step(self, model: NFECounter, x: torch.Tensor, s: Point, t: Point, order: int) -> torch.Tensor:
        """Advance x from point s to point t with a step of the given order."""
        raise NotImplementedError

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        for s, t, order in zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True):
            x = self.step(model, x, s, t, order)
        return x


class MultistepSolver(Solver):
    """A linear multistep method: one model evaluation per step, earlier outputs kept in a history.

    Warm-up uses lower orders (step i has order <= i + 1); ``lower_order_final`` lowers the order of the
    last steps (order <= steps left) when there are fewer than ``lower_order_final_below`` steps, as in
    the official DPM-Solver code.
    """

    prediction: str = "x0"  # the model-output type the loop evaluates (an option of some families, e.g. UniPC)
    lower_order_final_below: ClassVar[int] = 10

    def full_order(self) -> int:
        """The order the method runs at once warmed up (its ``order`` option, if it has one)."""
        return int(getattr(self, "order", 1))

    def min_nfe(self) -> int:
        return self.full_order()

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        p = self.uniform_plan(nfe, nfe, self.full_order(), schedule, kind, t_start, t_end)
        steps = len(p.orders)
        low_final = getattr(self, "lower_order_final", False) and steps < self.lower_order_final_below
        p.orders = [min(self.full_order(), i + 1, steps - i if low_final else steps) for i in range(steps)]
        return p

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        """The multistep update from the newest history point to t."""
        raise NotImplementedError

    def correct(self, x_prev: torch.Tensor, x: torch.Tensor, hist: History, s: Point, out: torch.Tensor,
                order: int) -> torch.Tensor:
        """Corrector hook: refine x (just predicted from x_prev with a step of ``order``) with the model output
        ``out`` evaluated at x, at no extra NFE (UniC). ``hist`` does not hold ``out`` yet. Default: none."""
        return x

    def history_size(self) -> int:
        """How many past model outputs the update and the corrector need."""
        return self.full_order()

    def new_history(self, model: NFECounter, plan: Plan, size: int | None = None) -> History:
        """The per-run state of one run: a ``History`` of ``size`` (default ``history_size()``) outputs with the
        counted model and the plan. Families with more per-run state (momentum's velocity) return a subclass that
        holds it."""
        return History(self.history_size() if size is None else size, model, plan)

    def refine(self, hist: History, step: int) -> None:
        """Hook run once the model output of step ``step`` is pushed: it may replace ``hist[-1].out`` before the
        predictor of this step and the corrector of the next one use it (DC-Solver's dynamic compensation).
        Default: none."""

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        hist = self.new_history(model, plan)
        x_prev: torch.Tensor | None = None
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            hist.step = i  # the step being taken (s -> t); correct() refines the end point of step i - 1
            out = self.predict(model, x, s, self.prediction)
            if x_prev is not None:
                x = self.correct(x_prev, x, hist, s, out, plan.orders[i - 1])
            hist.push(s, out)
            self.refine(hist, i)
            x_prev = x
            x = self.update(x, hist, t, order)
        return x


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME[:key=value,...]`` into the name and the raw options."""
    if not isinstance(spec, str) or not spec.strip():
        raise bad_value("solver", spec, list(SOLVERS))
    return split_spec(spec)


def make_solver(spec: str | Solver, **overrides: Any) -> Solver:
    """Build a solver of the families registered so far from a spec string (``NAME[:key=value,...]``), or return
    it unchanged. Families that wrap another solver (Picard, D-ODE, ...) build it with this; everyone else uses
    ``dpmbench.solvers.registry.get_solver``, which first registers the built-in families and the plugins."""
    if isinstance(spec, Solver):
        return spec
    name, opts = parse_spec(spec)
    if name not in SOLVERS:
        raise bad_value("solver", name, list(SOLVERS))
    return SOLVERS[name](**opts, **overrides)


def expm1(x: float) -> float:
    """math.expm1, named for the update rules."""
    return math.expm1(x)
