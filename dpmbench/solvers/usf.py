"""USF: the unified sampling framework of Liu, Ning, Yang & Wang, "A Unified Sampling Framework for Solver
Searching of Diffusion Probabilistic Models" (ICLR 2024, arXiv 2312.07243), Sec. 3-4.

A *solver schedule* fixes, for every step i (from t_i to t_{i+1}, one model evaluation at t_i), the strategy the
paper lets vary per step:

* ``pred``: the prediction type the exponential integral is written in: data (``x0``, DPM-Solver++ form
  ``x_t = (sigma_t/sigma_s) x_s + sigma_t int e^lambda x0 dlambda``) or noise (``eps``, DPM-Solver form
  ``x_t = (alpha_t/alpha_s) x_s - alpha_t int e^-lambda eps dlambda``);
* ``order``: the number of terms of the Taylor expansion of the model output around t_i, i.e. the number of
  model outputs used (t_i and the ``order - 1`` previous points; capped by the points available);
* ``scale``: how the derivatives are estimated from the divided differences D_k = (m_k - m_0)/r_k (the paper's
  "derivative estimation"/scaling choices): ``taylor`` solves the order conditions exactly (UniPC's Theorem 3.1
  system R c = g with g_k = hh phi_{k+1}(hh) k!, B(h) cancels: exact integration of the interpolating
  polynomial), ``bh1``/``bh2`` use UniPC's simplified single-difference coefficient B(h)/2 with B(h) = h or
  e^h - 1 (``bh2`` is DPM-Solver(++)'s 2M coefficient phi_1/2); with two or more differences all three solve
  the system;
* ``corrector``: ``unic`` refines the step's result with the model output the next step evaluates anyway
  (UniC, Zhao et al. 2023, Theorem 3.1, order p + 1 with the step's order p, no extra NFE), or ``none``;
* the time step: the grid ``times`` (t_0 > ... > t_N).

The update of a step with differences D_k at the normalized positions r_k = (lambda_k - lambda_0)/h is
(UniPC's unified form, written for both prediction types, hh = -h for x0 and hh = h for eps):

    x0:  x_t = (sigma_t/sigma_s) x_s - alpha_t (e^hh - 1) m_0 - alpha_t sum_k c_k D_k
    eps: x_t = (alpha_t/alpha_s) x_s - sigma_t (e^hh - 1) m_0 - sigma_t sum_k c_k D_k

So the framework contains DDIM (every order 1), DPM-Solver++(2M)/DPM-Solver-2M (order 2, ``bh2``), the
Taylor-consistent 3M (order 3) and UniPC (``unic``; tests/test_usf.py checks these identities to ~1e-12).
Not included: singlestep (intermediate-point) steps and the paper's "low-order derivative estimation" variant.

The solver ``usf`` runs a given schedule: a named artifact of the ``usf`` search (``schedule_name=NAME``), a
built-in ``strategy`` (``ddim``, ``dpm-solver++``, ``unipc``, ``3m``; on the run's time grid), or, with
``search=true``, the search result for the run's (model, NFE, guidance), computed once in ``prepare``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Context, Option, Plan, Point, Solver, register
from dpmbench.solvers.unipc import b_of_h, phi_terms
from dpmbench.timesteps import timesteps

PREDS = ("x0", "eps")
ORDERS = (1, 2, 3)
SCALES = ("taylor", "bh1", "bh2")
CORRECTORS = ("none", "unic")
PRESETS = ("ddim", "dpm-solver++", "unipc", "3m")
STEP_KEYS = ("pred", "order", "scale", "corrector")


def preset_steps(name: str, steps: int) -> list[dict[str, Any]]:
    """The per-step schedule of a built-in solver written in the framework, for ``steps`` steps.

    ``ddim``: order 1. ``dpm-solver++``: DPM-Solver++(2M) with the official lower_order_final below 10 steps.
    ``unipc``: UniPC-2 (bh1, data prediction, UniC), orders lowered to the steps left at every step count (the
    official code). ``3m``: data prediction, order-3 steps with the Taylor coefficients and order-2 (warm-up,
    final) steps with the 2M coefficient, lower_order_final below 10 steps (= ``dpm-solver++:order=3,
    order3_rule=taylor``).
    """
    def step(order: int, scale: str = "bh2", corrector: str = "none") -> dict[str, Any]:
        return {"pred": "x0", "order": order, "scale": scale, "corrector": corrector}

    if name == "ddim":
        return [step(1) for _ in range(steps)]
    if name == "dpm-solver++":
        low = steps < 10
        return [step(min(2, i + 1, steps - i if low else steps)) for i in range(steps)]
    if name == "unipc":
        return [step(min(2, i + 1, steps - i), "bh1", "unic") for i in range(steps)]
    if name == "3m":
        low = steps < 10
        orders = [min(3, i + 1, steps - i if low else steps) for i in range(steps)]
        return [step(o, "taylor" if o == 3 else "bh2") for o in orders]  # order-2 steps: the 2M coefficient
    raise bad_value("USF strategy", name, PRESETS)


def check_steps(steps: Any, where: str) -> list[dict[str, Any]]:
    """Validate a per-step schedule (list of dicts with ``pred``, ``order``, ``scale``, ``corrector``)."""
    if not isinstance(steps, list) or not steps:
        raise DpmbenchError(f"invalid USF schedule {where}: 'steps' must be a non-empty list")
    allowed = {"pred": PREDS, "order": ORDERS, "scale": SCALES, "corrector": CORRECTORS}
    out = []
    for i, s in enumerate(steps):
        if not isinstance(s, dict) or set(s) != set(STEP_KEYS):
            raise DpmbenchError(f"invalid USF schedule {where}: step {i} must have the keys {', '.join(STEP_KEYS)}")
        for k, choices in allowed.items():
            if s[k] not in choices:
                raise DpmbenchError(f"invalid USF schedule {where}: step {i} {k}={s[k]!r}; allowed: "
                                    f"{', '.join(map(str, choices))}")
        out.append(dict(s))
    return out


def load_schedule(data: Any, nfe: int, where: str) -> dict[str, Any]:
    """The schedule for ``nfe`` in a ``usf`` artifact: one search result (``{"steps": ..., "times": ...}``) or
    several keyed by NFE (what ``dpmbench search usf --nfe 5,10`` saves)."""
    if isinstance(data, dict) and "steps" not in data:
        if str(nfe) not in data:
            raise DpmbenchError(f"invalid USF schedule {where} for nfe {nfe}: it has schedules for nfe "
                                f"{', '.join(sorted(data, key=lambda k: int(k) if k.isdigit() else 0)) or 'none'}")
        data = data[str(nfe)]
    if not isinstance(data, dict) or "steps" not in data:
        raise DpmbenchError(f"invalid USF schedule {where}: expected {{'steps': [...], 'times': [...]}}")
    steps = check_steps(data["steps"], where)
    if len(steps) != nfe:
        raise DpmbenchError(f"invalid USF schedule {where} for nfe {nfe}: it has {len(steps)} steps")
    times = data.get("times")
    if times is not None and len(times) != nfe + 1:
        raise DpmbenchError(f"invalid USF schedule {where}: {len(times)} times for {nfe} steps")
    return {"steps": steps, "times": times}


def _coefficients(rks: list[float], hh: float, scale: str) -> list[float]:
    """c_k = B(hh) rho_k of the differences D_k: the order conditions solved exactly (``taylor``, or two and
    more differences), or UniPC's simplified rho = 1/2 for a single difference (``bh1``/``bh2``)."""
    k = len(rks)
    if k == 0:
        return []
    if k == 1 and scale != "taylor":
        return [b_of_h(scale, hh) * 0.5]
    big_r = np.array([[float(r) ** i for r in rks] for i in range(k)], dtype=np.float64)  # R[i][k] = r_k^i
    return [float(v) for v in np.linalg.solve(big_r, np.array(phi_terms(hh, k), dtype=np.float64))]


def usf_update(x: torch.Tensor, hist: list[tuple[Point, dict[str, torch.Tensor]]], t: Point, order: int,
               pred: str, scale: str, new_out: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the framework from the newest history point s0 to ``t`` (``new_out`` None), or the UniC
    correction of ``t`` from the same start (``new_out``: the model output at the predicted x_t, r = 1).

    ``hist`` holds (point, {"x0": ..., "eps": ...}) newest last; the step uses its newest ``order`` entries.
    """
    s0, m0 = hist[-1][0], hist[-1][1][pred]
    h = t.lam - s0.lam
    rks: list[float] = []
    diffs: list[torch.Tensor] = []
    for k in range(1, order):  # earlier points: r_k = (lambda_k - lambda_0)/h, D_k = (m_k - m_0)/r_k
        p_k, m_k = hist[-(k + 1)][0], hist[-(k + 1)][1][pred]
        rk = (p_k.lam - s0.lam) / h
        rks.append(rk)
        diffs.append((m_k - m0) / rk)
    if new_out is not None:  # UniC: the new point itself
        rks.append(1.0)
        diffs.append(new_out - m0)
    hh = -h if pred == "x0" else h
    coefs = _coefficients(rks, hh, scale)
    res = sum((c * d for c, d in zip(coefs, diffs, strict=True)), torch.zeros_like(x))
    if pred == "x0":  # data prediction (DPM-Solver++ / UniPC data form)
        return (t.sigma / s0.sigma) * x - t.alpha * math.expm1(hh) * m0 - t.alpha * res
    return (t.alpha / s0.alpha) * x - t.sigma * math.expm1(hh) * m0 - t.sigma * res  # noise prediction


@register
class USF(Solver):
    """Executes a per-step solver schedule of the unified sampling framework (one NFE per step)."""

    name = "usf"
    summary = "USF: per-step solver schedule (prediction type, order, derivative scaling, UniC, time steps)"
    source = ("Liu et al. 2024 (ICLR), 'A Unified Sampling Framework for Solver Searching of Diffusion Probabilistic "
              "Models', Sec. 3 (framework), Sec. 4 (S^3 search); updates in UniPC's unified form (Zhao et al. 2023)")
    strategy: str
    schedule_name: str
    search: bool
    search_seed: int
    options = {
        "strategy": Option(str, "dpm-solver++", "built-in schedule on the run's time grid: ddim, dpm-solver++ (2M), "
                           "unipc (UniPC-2 bh1), 3m (Taylor 3M); used when neither schedule_name nor search is set",
                           choices=PRESETS),
        "schedule_name": Option(str, "", "a named artifact saved by `dpmbench search usf --name NAME` (its time "
                                "steps replace the run's schedule)"),
        "search": Option(bool, False, "run (or load from the cache) the usf search for this model, NFE and "
                         "guidance in prepare() (dpmbench/search/usf.py defaults)"),
        "search_seed": Option(int, 0, "seed of the search's x_T (search=true)", minimum=0),
    }

    needs_prepare = True  # the class says "may need prepare"; an instance without search=true does not

    def validate(self) -> None:
        if self.schedule_name and self.search:
            raise DpmbenchError("invalid option 'search' of solver 'usf' with schedule_name: use one of them")
        if self.schedule_name:
            from dpmbench.artifacts import check_name

            check_name(self.schedule_name)
        self.needs_prepare = bool(self.search)
        self._prepared: dict[Any, dict[str, Any]] = {}

    def prepare(self, ctx: Context) -> dict[str, Any]:
        """search=true: run or load the usf search for (model, NFE, guidance, t range)."""
        if not self.search:
            return {}
        if self.denoise_to_zero:  # the last NFE denoises: the schedule has one step less
            ctx = dataclasses.replace(ctx, nfe=ctx.nfe - 1)
        key = ctx.key()
        if key not in self._prepared:
            data = ctx.search("usf", None, self.search_seed, {}, by=self.name)  # the usf search (search/usf.py)
            self._prepared[key] = load_schedule(data, ctx.nfe, "search=true")
            self._prepared[(ctx.nfe, ctx.start, ctx.end)] = self._prepared[key]
        sched = self._prepared[key]
        return {"search": "usf", "steps": sched["steps"], "times": sched["times"]}

    def _schedule(self, nfe: int, t0: float, t1: float) -> dict[str, Any] | None:
        if self.schedule_name:
            from dpmbench.artifacts import load_named

            return load_schedule(load_named(self.schedule_name, "usf"), nfe, self.schedule_name)
        if self.search:
            return self._prepared.get((nfe, t0, t1))
        return {"steps": preset_steps(self.strategy, nfe), "times": None}

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        t0 = float(schedule.T if t_start is None else t_start)
        t1 = float(schedule.t_end_default if t_end is None else t_end)
        sched = self._schedule(nfe, t0, t1)
        provisional = sched is None  # search=true before prepare(): a plan for validation only
        if sched is None:
            sched = {"steps": preset_steps("dpm-solver++", nfe), "times": None}
        if sched["times"] is None:
            ts = timesteps(kind, nfe, schedule, t_start, t_end)
        else:
            ts = torch.tensor(sched["times"], dtype=torch.float64)
            if not (math.isclose(float(ts[0]), t0, rel_tol=1e-9) and math.isclose(float(ts[-1]), t1, rel_tol=1e-9)):
                raise DpmbenchError(f"invalid USF schedule for t in [{t1}, {t0}]: it spans t {float(ts[-1])}.."
                                    f"{float(ts[0])} (search it with the same t_start/t_end)")
            if not bool((ts[1:] < ts[:-1]).all()):
                raise DpmbenchError("invalid USF schedule: times must be strictly decreasing")
        steps = sched["steps"]
        orders = [min(s["order"], i + 1) for i, s in enumerate(steps)]
        return Plan(Point.grid(schedule, ts), orders, nfe, {"usf": steps, "provisional": provisional})

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        if plan.extra.get("provisional"):
            raise RuntimeError("solver usf:search=true was planned before prepare() ran its search")
        steps = plan.extra["usf"]
        hist: list[tuple[Point, dict[str, torch.Tensor]]] = []
        x_prev: torch.Tensor | None = None
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            pred = steps[i]["pred"]
            out = self.predict(model, x, s, pred)  # the step's model evaluation (1 NFE)
            other = (x - s.alpha * out) / s.sigma if pred == "x0" else (x - s.sigma * out) / s.alpha
            outs = {pred: out, "eps" if pred == "x0" else "x0": other}
            if x_prev is not None and steps[i - 1]["corrector"] == "unic":  # UniC on the previous step's result
                prev = steps[i - 1]
                x = usf_update(x_prev, hist, s, plan.orders[i - 1], prev["pred"], prev["scale"],
                               new_out=outs[prev["pred"]])
            hist.append((s, outs))
            del hist[:-3]  # order <= 3
            x_prev = x
            x = usf_update(x, hist, t, order, pred, steps[i]["scale"])
        return x
