"""Parallel sampling by Picard iterations (Shih, Belkhale, Ermon, Sadigh & Anari 2023, 'Parallel Sampling of
Diffusion Models' (ParaDiGMS), NeurIPS 2023, Alg. 1; official code github.com/AndyShih12/paradigms).

A base solver with one model evaluation per step maps grid point j to j + 1: ``x_{j+1} = Phi_j(x_j)``. Its N
sequential steps are the fixed point of the Picard iteration

    x_{j+1}^{k+1} = x_b^k + sum_{m=b}^{j} (Phi_m(x_m^k) - x_m^k),      j in [b, b + p)            (Alg. 1, line 9)

over a sliding window of ``p`` points starting at b. All p model evaluations of one iteration are independent and
are made in ONE batched model call (the window's rows stacked along the batch, each with its own time): on a parallel
device a round costs about one sequential evaluation. After each round, the window slides past the points that
have converged,

    || x_{j}^{k+1} - x_{j}^k ||^2 / D <= tolerance^2 * var_j                                        (Alg. 1, line 11)

(D the dimension, var_j the DDPM posterior variance of the step leaving point j, 0 at the last point, which
therefore must repeat exactly), by ``min(1 + first unconverged index, p)`` points, and its new points start from the
window's last value (official ``stablediffusion_paradigms.py``: ``parallel=10``, ``tolerance=0.1``, the
error ratio and the slide rule). The first point of a window is always exact, so at most N rounds are needed, and
the result converges to the base solver's sequential result as the tolerance goes to 0 (window 1: the sequential
solver itself, N rounds of one evaluation).

Stochastic bases (``ddpm``) use the same per-step noise as their sequential run (drawn per (seed, sample, step)),
held fixed across iterations, as the official code pre-samples it. Multistep bases (``base=dpm-solver++`` /
``base=dpm-solver``, run with ``method=multistep`` at ``order``) take their history from the latest outputs at the
earlier points (those before the window from the round that last evaluated them); the official multistep scheduler
instead restarts each window at first order, which does not converge to the sequential solver; here the fixed point
is the sequential multistep solver.

Deviation, deliberate: the official pipeline slides one window for the whole batch (the first point where *any*
sample has not converged). Here every sample has its own window (all of them still evaluated in one model call per
round), so a sample's result does not depend on the other samples of its batch (dpmbench's determinism contract).

Two counters (``stats`` of ``dpmbench.sample``): ``parallel_rounds``, the number of batched model calls (sequential
latency; the NFE counter counts these, at most ``nfe``), and ``nfe_total``, the evaluations per sample summed over
rounds (the most any sample of the batch used; ``nfe_total_mean`` their mean): total compute, at least ``nfe`` once
converged. ``nfe`` is the base solver's number of sequential evaluations.
"""

from __future__ import annotations

from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter, convert_prediction
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import (
    History,
    MultistepSolver,
    Option,
    Plan,
    Point,
    SinglestepSolver,
    Solver,
    make_solver,
    register,
)
from dpmbench.solvers.ddpm import DDPM

BASES = ("ddim", "euler", "ddpm", "dpm-solver++", "dpm-solver")
MULTISTEP = ("dpm-solver++", "dpm-solver")


def base_spec(base: str, order: int) -> str:
    """The base solver's spec: ``dpm-solver(++)`` runs multistep at ``order`` (the other bases are first order)."""
    return f"{base}:order={order},method=multistep" if base in MULTISTEP else base


class _Replay:
    """Stands in for the NFE counter inside the base solver's step: returns the rows of the round's batched model
    output (converted as ``Model.predict`` converts) and the per-step noise of those samples; counts nothing."""

    def __init__(self, model: Any, native: torch.Tensor, samples: torch.Tensor, noise: Any):
        self.model, self.native, self.samples, self._noise = model, native, samples, noise
        self.schedule = model.schedule

    def predict(self, x: torch.Tensor, t: float, kind: str) -> torch.Tensor:
        if self.model.parameterization == kind:
            return self.native
        return convert_prediction(self.native, self.model.parameterization, kind, x, self.schedule.alpha(t),
                                  self.schedule.sigma(t))

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.predict(x, t, "eps")

    def x0(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.predict(x, t, "x0")

    @property
    def noise(self) -> Any:
        return None if self._noise is None else (lambda k: self._noise(k)[self.samples])


def step_variance(s: Point, t: Point) -> float:
    """The DDPM posterior variance of a step from s to t: sigma_{s|t}^2 sigma_t^2 / sigma_s^2 (official
    ``_get_variance``)."""
    a = s.alpha / t.alpha
    return max(s.sigma**2 - a**2 * t.sigma**2, 0.0) * t.sigma**2 / s.sigma**2


@register
class Picard(Solver):
    """ParaDiGMS: a base solver's steps refined in parallel by Picard iterations over a sliding window."""

    name = "picard"
    summary = "ParaDiGMS parallel sampling: Picard iterations of a base solver over a sliding window (rounds vs total)"
    source = ("Shih et al. 2023, 'Parallel Sampling of Diffusion Models' (NeurIPS), Alg. 1; defaults parallel=10, "
              "tolerance=0.1 from the official paradigms/stablediffusion_paradigms.py (paradigms_forward)")
    parallel = True
    times_known = False  # each round evaluates every sample's own window of times (not one list for the batch)
    base: str
    order: int
    window: int
    tolerance: float
    options = {
        "base": Option(str, "ddim", "base solver (one evaluation per step); dpm-solver++ / dpm-solver run multistep",
                       choices=BASES),
        "order": Option(int, 2, "order of a multistep dpm-solver++ / dpm-solver base (first-order bases: leave 2)",
                        choices=(1, 2, 3)),
        "window": Option(int, 10, "p: points refined in parallel per round (official parallel=10)", minimum=1),
        "tolerance": Option(float, 0.1, "tau: a point has converged when its update's mean squared size is below "
                            "tau^2 times the step's DDPM variance (official tolerance=0.1)", minimum=0.0),
    }

    def validate(self) -> None:
        for key in ("thresholding", "denoise_to_zero"):
            if self.opts[key]:
                raise DpmbenchError(f"invalid option {key!r} of solver 'picard': give it to the base solver "
                                    "(base=...;thresholding=true); allowed here: false")
        if self.base not in MULTISTEP and self.order != 2:
            raise DpmbenchError(f"invalid option 'order' of solver 'picard' {self.order} with base={self.base}: it is "
                                "first order (order applies to dpm-solver++ / dpm-solver; leave 2)")
        base = make_solver(base_spec(self.base, self.order))
        kind = {"ddpm": "ddpm", "ddim": "single", "euler": "single"}.get(self.base, "multi")
        self.base_solver, self.base_kind = base, kind
        self.stochastic = base.stochastic

    def min_nfe(self) -> int:
        return self.base_solver.min_nfe()

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        return self.base_solver.plan(nfe, schedule, kind, t_start, t_end)

    def _step(self, j: int, plan: Plan, x: torch.Tensor, replay: _Replay, outs: list[torch.Tensor | None],
              samples: torch.Tensor) -> torch.Tensor:
        """Phi_j of the base solver for the rows ``x`` (samples ``samples``), from the round's model output."""
        base, s, t, order = self.base_solver, plan.points[j], plan.points[j + 1], plan.orders[j]
        if self.base_kind == "single":
            assert isinstance(base, SinglestepSolver)
            return base.step(replay, x, s, t, order)  # type: ignore[arg-type]  # replay: the counter's stand-in
        if self.base_kind == "ddpm":
            assert isinstance(base, DDPM)
            return base.ancestral_step(replay, x, s, t, j)  # type: ignore[arg-type]
        assert isinstance(base, MultistepSolver)
        hist = History(base.history_size())
        for m in range(j - order + 1, j + 1):
            out = outs[m]
            assert out is not None
            hist.push(plan.points[m], out[samples])
        return base.update(x, hist, t, order)

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        net, n, steps, p = model.model, x.shape[0], len(plan.orders), self.window
        dim = x[0].numel()
        times = torch.tensor([q.t for q in plan.points], dtype=torch.float64)
        var = torch.tensor([step_variance(a, b) for a, b in zip(plan.points[:-1], plan.points[1:], strict=True)]
                           + [0.0], dtype=torch.float64)
        buf = x.unsqueeze(0).repeat(steps + 1, *([1] * x.ndim))  # buf[j]: the current iterate at point j
        outs: list[torch.Tensor | None] = [None] * steps  # latest base-kind outputs per point (multistep history)
        noise_cache: dict[int, torch.Tensor] = {}

        def noise(k: int) -> torch.Tensor:
            if k not in noise_cache:
                noise_cache[k] = model.noise(k)  # type: ignore[misc]
            return noise_cache[k]

        begin = torch.zeros(n, dtype=torch.long)
        total = torch.zeros(n, dtype=torch.long)
        offsets = torch.arange(p)
        rounds = 0
        cond = model.cond
        while bool((begin < steps).any()):
            js = begin[:, None] + offsets[None, :]  # (n, p) the point each window slot holds
            valid = js < steps
            rows_i, rows_k = valid.nonzero(as_tuple=True)
            rows_j = js[rows_i, rows_k]
            xr = buf[rows_j, rows_i]
            c = cond[rows_i] if isinstance(cond, torch.Tensor) else cond
            native = net.forward(xr, times[rows_j], c)  # ONE batched call for every window of the batch
            rounds += 1
            model.count += 1
            total += valid.sum(dim=1)
            new = torch.empty_like(xr)
            groups = [(int(j), (rows_j == j).nonzero(as_tuple=True)[0]) for j in rows_j.unique()]
            if self.base_kind == "multi":  # outputs first: a step's history may hold this round's earlier points
                assert isinstance(self.base_solver, MultistepSolver)
                for j, r in groups:
                    rep = _Replay(net, native[r], rows_i[r], None)
                    full = outs[j] if outs[j] is not None else torch.empty_like(x)
                    full[rows_i[r]] = self.base_solver.predict(rep, xr[r], plan.points[j],  # type: ignore[arg-type]
                                                               self.base_solver.prediction)
                    outs[j] = full
            for j, r in groups:
                rep = _Replay(net, native[r], rows_i[r], noise if self.stochastic else None)
                new[r] = self._step(j, plan, xr[r], rep, outs, rows_i[r])
            drift = torch.zeros((n, p, *x.shape[1:]), dtype=x.dtype, device=x.device)
            drift[rows_i, rows_k] = new - xr
            cand = buf[begin.clamp(max=steps), torch.arange(n)].unsqueeze(1) + drift.cumsum(dim=1)  # Alg. 1 line 9
            tgt = (js + 1).clamp(max=steps)
            old = buf[tgt, torch.arange(n)[:, None]]
            err = (cand - old).reshape(n, p, -1).to(torch.float64).pow(2).sum(-1) / dim
            bad = (err > self.tolerance**2 * var[tgt]) | ~valid  # Alg. 1 line 11
            first_bad = torch.where(bad.any(dim=1), bad.int().argmax(dim=1), torch.full((n,), p))
            buf[tgt[rows_i, rows_k], rows_i] = cand[rows_i, rows_k]
            end = (begin + p).clamp(max=steps)
            new_begin = torch.minimum(begin + torch.clamp(first_bad + 1, max=p), torch.full_like(begin, steps))
            new_end = (new_begin + p).clamp(max=steps)
            for i in (new_end > end).nonzero(as_tuple=True)[0].tolist():  # new points start from the window's end
                buf[int(end[i]) + 1 : int(new_end[i]) + 1, i] = buf[int(end[i]), i]
            begin = torch.where(begin < steps, new_begin, begin)
        plan.extra["report"] = {"parallel_rounds": rounds, "nfe_total": int(total.max()),
                                "nfe_total_mean": float(total.double().mean())}
        return buf[steps]
