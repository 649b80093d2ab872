"""The ``ays`` search: Align Your Steps time grids (Sabour, Fidler & Kreis, "Align Your Steps: Optimizing Sampling
Schedules in Diffusion Models", ICML 2024), for one model, solver and NFE.

Objectives (option ``objective``):

* ``klub`` (the paper's): the KL-divergence upper bound between the true generative SDE and its discretization
  with the denoiser frozen at the start of each step (the linearized SDE that stochastic DDIM solves exactly),
  from Girsanov's theorem. In the scale-free variables of EDM (sigma~ = sigma/alpha = e^-lambda, x~ = x/alpha,
  denoiser D(x~, sigma~) = x0(alpha x~, t)) the bound of a step from sigma~_s down to sigma~_t is

      KLUB_i = int_{sigma~_t}^{sigma~_s} E || D(x~_u, u) - D(x~_s, sigma~_s) ||^2 / u^3 du
             = int_{lambda_s}^{lambda_t} e^{2 lambda} E || D(x~_lambda, lambda) - D(x~_s, lambda_s) ||^2 dlambda,

  the expectation over the true process: x_0 from the data (here: the model's own samples, i.e. the exact ODE
  solutions from the search's x_T, or for a mixture oracle draws of the mixture), x~_s = x_0 + sigma~_s eps and
  x~_u | (x_0, x~_s) the Brownian bridge of the variance-exploding forward process. The integral is a
  Gauss-Legendre rule in lambda (``quadrature`` nodes per step) with common random numbers, so the objective is
  a deterministic, smooth function of the grid. It does not depend on the solver (the paper optimizes it for the
  stochastic first-order solver and reports that the grids transfer to ODE solvers).
* ``exact``: the RMSE of the given solver's samples to the exact ODE solutions of the search's x_T (oracle
  models): the solver-specific optimum the KLUB stands in for.

Procedure (the paper's iterative optimization, Sec. 3.3): start from the run's schedule (``--schedule``,
default logSNR), or with ``init=best`` (default) from the best of the standard grids under the objective;
optionally optimize a grid of ceil(steps/2) steps first (recursively) and subdivide it (midpoints in lambda
inserted in the widest steps; kept only if that beats the starting grid); then sweep over the interior points
(alternating direction), optimizing each with the others fixed by a coarse-to-fine search (``candidates``
positions spread over its bracket (lambda_{i-1}, lambda_{i+1}), then ``levels - 1`` refinements around the
best), until a sweep improves the objective by less than ``tol`` (early stopping) or after ``iterations``
sweeps. The current position is always a candidate, so the objective never increases (the recorded ``trace``).
Deterministic given the seed.

Checked on Gaussian data N(0, s^2 I) (tests/test_search_ays.py), where the KLUB of a step has the closed form
int e^{2 lambda} d s^4 (sigma_s^2 - sigma^2) / ((s^2 + sigma_s^2)(s^2 + sigma^2)) dlambda and, for many steps, is
minimized by grids uniform in log(sigma^2 / (s^2 + sigma^2)) (per-step cost ~ d s^4 dsigma^2 / (sigma (s^2 +
sigma^2))^2, equalized): the estimator matches the closed form to ~1%, and the search approaches that grid's KLUB.
Coordinate descent converges slowly on this chain-coupled objective (8 steps: 34.2 after 4 sweeps, 21.8 after
16, optimum 21.2): the sweep cap usually stops it while the objective is still decreasing; raise ``iterations``
for a closer optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import FIT_START, prior_noise
from dpmbench.sampling import sample
from dpmbench.search._common import oracle_set, rmse, search_cond, single_thread
from dpmbench.search.base import register_search, run_search
from dpmbench.solvers.base import Context, Option, Solver
from dpmbench.solvers.data import data_samples
from dpmbench.timesteps import TIMESTEP_SCHEDULES, timesteps

OPTIONS = {
    "objective": Option(str, "klub", "klub: the paper's KL upper bound of the discretized SDE (solver-independent); "
                        "exact: RMSE of the solver to the exact ODE solutions (oracle models)",
                        choices=("klub", "exact")),
    "iterations": Option(int, 0, "at most this many sweeps over the interior points per stage; 0: 8 for klub, 4 "
                         "for exact", minimum=0),
    "candidates": Option(int, 6, "candidate positions per point and level of the coarse-to-fine search", minimum=2),
    "levels": Option(int, 2, "coarse-to-fine levels per point (each narrows the bracket around the best)",
                     minimum=1),
    "samples": Option(int, 0, "klub: data samples x_0; exact: x_T (samples 2^32.. of the search seed's stream); "
                      "0: 32 for klub, 128 for exact", minimum=0),
    "init": Option(str, "best", "starting grid: 'best' (the best of logsnr, time-uniform, time-quadratic, karras and "
                   "the run's --schedule under the objective) or 'schedule' (the run's --schedule)",
                   choices=("best", "schedule")),
    "quadrature": Option(int, 3, "klub: Gauss-Legendre nodes per step (in lambda)", minimum=1),
    "tol": Option(float, 2e-3, "early stopping: stop when a sweep lowers the objective by less than this "
                  "fraction", minimum=0.0),
    "subdivide": Option(bool, True, "optimize ceil(steps/2) steps first (recursively, down to 3 steps), then "
                        "insert midpoints and refine (the paper's subdivision)"),
}


def steps_for(solver: Solver | None, nfe: int, sch: Any, t0: float, t1: float) -> int:
    """How many steps (grid points - 1) the solver's plan asks of a time grid for ``nfe``."""
    if solver is None:
        return nfe
    tries = [nfe, len(solver.make_plan(nfe, sch, "time-uniform", t0, t1).points) - 1]
    for steps in dict.fromkeys(tries):
        try:
            solver.make_plan(nfe, sch, torch.linspace(t0, t1, steps + 1, dtype=torch.float64), t0, t1)
            return steps
        except DpmbenchError:
            continue
    raise DpmbenchError(f"invalid solver {solver.spec!r} for search 'ays': it does not take an explicit time grid")


class Klub:
    """The KLUB of a lambda grid, per step, with a fixed sample of (x_0, eps, z) (common random numbers)."""

    def __init__(self, ctx: Context, n: int, seed: int, quadrature: int):
        self.model, self.sch = ctx.model, ctx.model.schedule
        self.cond = search_cond(ctx, n)
        self.x0 = data_samples(ctx, n, seed, self.cond).reshape(n, -1)
        shape = tuple(self.x0.shape[1:])
        self.eps = prior_noise(n, shape, seed, FIT_START, stream=101).to(torch.float64)  # the fit's own samples
        self.z = prior_noise(n, shape, seed, FIT_START, stream=102).to(torch.float64)
        nodes, weights = np.polynomial.legendre.leggauss(quadrature)
        self.nodes, self.weights = (nodes + 1.0) / 2.0, weights / 2.0  # on [0, 1]
        self.n = n
        self._frozen: dict[float, torch.Tensor] = {}
        self.evaluations = 0

    def _denoise(self, xt: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
        """D(x~, lambda) for rows with their own lambda, in one batched model call."""
        t = self.sch.t_of_lambda(lams)
        a = self.sch.alpha(t)
        x = (a[:, None] * xt).reshape(xt.shape[0], *self.model.shape)
        cond = None if self.cond is None else self.cond.repeat(xt.shape[0] // self.n)
        self.evaluations += 1
        return self.model.x0(x, t, cond).reshape(xt.shape[0], -1).to(torch.float64)

    def frozen(self, lams: list[float]) -> list[torch.Tensor]:
        """D(x~_s, lambda_s) at x~_s = x_0 + e^{-lambda_s} eps, memoized per lambda."""
        new = [lam for lam in dict.fromkeys(lams) if lam not in self._frozen]
        if new:
            lam_t = torch.tensor(new, dtype=torch.float64)
            xs = self.x0.repeat(len(new), 1) + torch.exp(-lam_t).repeat_interleave(self.n)[:, None] * self.eps.repeat(
                len(new), 1)
            out = self._denoise(xs, lam_t.repeat_interleave(self.n))
            for k, lam in enumerate(new):
                self._frozen[lam] = out[k * self.n:(k + 1) * self.n]
        return [self._frozen[lam] for lam in lams]

    def steps(self, pairs: list[tuple[float, float]]) -> list[float]:
        """KLUB of the steps (lambda_s, lambda_t), lambda_s < lambda_t, in one batched model call."""
        d_s = self.frozen([s for s, _ in pairs])
        q = len(self.nodes)
        lam_u: list[float] = []
        w_all: list[float] = []
        for s, t in pairs:
            for node, w in zip(self.nodes, self.weights, strict=True):
                lam_u.append(s + (t - s) * node)
                w_all.append(w * (t - s))
        lam_u_t = torch.tensor(lam_u, dtype=torch.float64)
        sig_s = torch.exp(-torch.tensor([s for s, _ in pairs], dtype=torch.float64)).repeat_interleave(q)
        sig_u = torch.exp(-lam_u_t)
        r = (sig_u / sig_s) ** 2  # bridge of x~ = x_0 + sigma~ W between x_0 (sigma~ = 0) and x~_s
        rr, su = r.repeat_interleave(self.n)[:, None], sig_u.repeat_interleave(self.n)[:, None]
        x0 = self.x0.repeat(len(lam_u), 1)
        xs_all = x0 + torch.exp(-torch.tensor([s for s, _ in pairs], dtype=torch.float64)).repeat_interleave(
            q * self.n)[:, None] * self.eps.repeat(len(lam_u), 1)
        xu = x0 + rr * (xs_all - x0) + su * torch.sqrt(1.0 - rr) * self.z.repeat(len(lam_u), 1)
        du = self._denoise(xu, lam_u_t.repeat_interleave(self.n))
        out = []
        for k in range(len(pairs)):
            total = 0.0
            for j in range(q):
                m = k * q + j
                blk = du[m * self.n:(m + 1) * self.n]
                diff = float(((blk - d_s[k]) ** 2).sum(1).mean())
                total += w_all[m] * math.exp(2.0 * lam_u[m]) * diff
            out.append(total)
        return out

    def total(self, lam: list[float]) -> float:
        """The KLUB of a whole grid (lambda increasing from noise to data)."""
        return float(sum(self.steps(list(zip(lam[:-1], lam[1:], strict=True)))))


def _coarse_to_fine(f: Callable[[list[float]], list[float]], lo: float, hi: float, cur: float, candidates: int,
                    levels: int) -> tuple[float, float]:
    """Minimize f over (lo, hi) (f maps a list of positions to their values): ``candidates`` interior positions,
    then narrower brackets around the best; the current position is always kept. Returns (best, value)."""
    best, best_v = cur, f([cur])[0]
    a, b = lo, hi
    for _ in range(levels):
        xs = [a + (b - a) * (k + 1) / (candidates + 1) for k in range(candidates)]
        for x, v in zip(xs, f(xs), strict=True):
            if v < best_v:
                best, best_v = x, v
        width = (b - a) / (candidates + 1)
        a, b = max(lo, best - width), min(hi, best + width)
    return best, best_v


@register_search("ays", "Align Your Steps: time grid minimizing the KLUB (or the exact-solution error) by "
                 "iterative coarse-to-fine optimization of each point, with subdivision and early stopping",
                 "Sabour, Fidler & Kreis 2024 (ICML), 'Align Your Steps', Sec. 3.2 (KLUB, Theorem 3.1) and 3.3 "
                 "(iterative optimization); see dpmbench/search/ays.py", produces="timesteps", options=OPTIONS)
def search_ays(ctx: Context, solver: Solver | None, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Optimize the time grid of the solver's step count for ``ctx.nfe``; returns ``{"grids": {steps: times}}``."""
    sch = ctx.model.schedule
    t0, t1 = ctx.start, ctx.end
    steps = steps_for(solver, ctx.nfe, sch, t0, t1)
    init = ctx.kind if isinstance(ctx.kind, str) and ctx.kind in TIMESTEP_SCHEDULES else "logsnr"
    n_samples = opts["samples"] or (32 if opts["objective"] == "klub" else 128)
    sweeps = opts["iterations"] or (8 if opts["objective"] == "klub" else 4)
    with single_thread():
        if opts["objective"] == "klub":
            klub = Klub(ctx, n_samples, seed, opts["quadrature"])

            def local(lam: list[float], i: int) -> Callable[[list[float]], list[float]]:
                def f(xs: list[float]) -> list[float]:
                    vals = klub.steps([p for x in xs for p in ((lam[i - 1], x), (x, lam[i + 1]))])
                    return [vals[2 * k] + vals[2 * k + 1] for k in range(len(xs))]
                return f

            def total(lam: list[float]) -> float:
                return klub.total(lam)
        else:
            if solver is None:
                raise DpmbenchError("invalid --solver None: search 'ays' with objective=exact needs the solver")
            x_T, cond, ref = oracle_set(ctx, n_samples, seed, "search 'ays' with objective=exact")
            grid_nfe = {steps: ctx.nfe}

            def err(lam: list[float]) -> float:
                t = sch.t_of_lambda(torch.tensor(lam, dtype=torch.float64))
                t[0], t[-1] = t0, t1
                x = sample(ctx.model, solver, grid_nfe[len(lam) - 1], x_T, schedule=t, t_end=t1, t_start=t0,
                           cond=cond, searcher=run_search)
                return rmse(x, ref)

            def local(lam: list[float], i: int) -> Callable[[list[float]], list[float]]:
                return lambda xs: [err([*lam[:i], x, *lam[i + 1:]]) for x in xs]

            total = err

        def optimize(lam: list[float], trace: list[float]) -> list[float]:
            value = total(lam)
            trace.append(value)
            for sweep in range(sweeps):
                inner = list(range(1, len(lam) - 1))
                for i in inner if sweep % 2 == 0 else inner[::-1]:  # alternate directions (symmetric sweeps)
                    lam[i], _ = _coarse_to_fine(local(lam, i), lam[i - 1], lam[i + 1], lam[i], opts["candidates"],
                                                opts["levels"])
                new = total(lam)
                trace.append(new)
                if value - new <= opts["tol"] * abs(value):
                    break
                value = new
            return lam

        def lam_grid(kind: str, k: int) -> list[float]:
            return [float(v) for v in sch.values(timesteps(kind, k, sch, t0, t1))[0]]

        kinds = list(dict.fromkeys([init, "logsnr", "time-uniform", "time-quadratic", "karras"]))
        reference = {k: total(lam_grid(k, steps)) for k in kinds}
        if opts["init"] == "best":
            init = min(kinds, key=lambda k: reference[k])
        stages: list[dict[str, Any]] = []

        def coarse_ok(k: int) -> bool:
            """May a grid of k steps be optimized at ceil(k/2) steps first (the exact objective runs the solver
            with NFE = steps, so only for solvers taking one step per NFE)?"""
            c = math.ceil(k / 2)
            if not opts["subdivide"] or k < 4:
                return False
            if opts["objective"] == "exact":
                if solver is None or c < solver.min_nfe() or steps != ctx.nfe or steps_for(solver, c, sch, t0, t1) != c:
                    return False
                grid_nfe[c] = c
            return True

        def solve(k: int, start: list[float], start_value: float) -> list[float]:
            """Optimize a k-step grid: coarse-to-fine in resolution (ceil(k/2) steps first, recursively, then
            midpoints in lambda inserted into the widest steps), then point by point."""
            lam = start
            if coarse_ok(k):
                c = math.ceil(k / 2)
                lc = solve(c, lam_grid(init, c), total(lam_grid(init, c)))
                while len(lc) - 1 < k:  # subdivide: a midpoint (in lambda) into the widest step
                    j = int(np.argmax(np.diff(lc)))
                    lc.insert(j + 1, 0.5 * (lc[j] + lc[j + 1]))
                sub_value = total(list(lc))
                stages[-1]["subdivided"] = sub_value
                lam = lc if sub_value <= start_value else lam  # never start worse than the initial schedule
            trace_k: list[float] = []
            lam = optimize(list(lam), trace_k)
            stages.append({"steps": k, "trace": trace_k})
            return lam

        lam = solve(steps, lam_grid(init, steps), reference[init])
        trace = stages[-1]["trace"]
        t = sch.t_of_lambda(torch.tensor(lam, dtype=torch.float64))
        t[0], t[-1] = t0, t1
        if not bool((t[1:] < t[:-1]).all()):
            raise RuntimeError("ays search produced a non-decreasing grid")
    return {"grids": {str(steps): t.tolist()}, "objective": opts["objective"], "value": trace[-1],
            "initial": {"kind": init, "value": reference[init]}, "samples": n_samples, "sweeps": sweeps,
            "reference": reference, "trace": trace, "stages": stages, "lambdas": lam,
            "solver": solver.spec if solver is not None else None, "steps": steps}
