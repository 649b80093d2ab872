"""D-ODE solvers (Kim, Tang & Yu 2024, 'Distilling ODE Solvers of Diffusion Models into Smaller Steps', CVPR 2024;
official code github.com/kim-sanghwan/D-ODE-Solvers).

D-ODE keeps a solver's update and replaces, at every step i after the first, the model output it uses by

    D~_i = D_i + lambda_i (D_i - D_{i-1})                                    (D-ODE eq. 5: one scalar per step)

(``D`` the solver's own output, data prediction for DPM-Solver++, noise prediction for DPM-Solver; the history of
later steps keeps the raw outputs, as the official samplers keep ``denoised_list``). lambda = 0 is the base solver.
The first step has no D_{i-1} and is the base step (as in the official EDM-side samplers; the official
noise-prediction DPM-Solver sampler adjusts it with D - x instead).
The lambdas are *distilled* from a teacher with more steps: along the student's own trajectory of a fit batch
(``fit_samples`` prior samples of their own seed ``fit_seed``; balanced labels when guided), step by step, lambda_i
minimizes || x^teacher(t_{i+1}) - x^student_{i+1}(lambda) ||^2 over the batch (D-ODE eq. 7); the update is linear
in D~, so this is a one-dimensional least-squares problem with a closed form (the official code solves the same
problem with ``torch.linalg.lstsq``, ``solve_ditillation_objective``). As in IIA's fit, a step whose direction
D_i - D_{i-1} is negligible next to the residual (below 1e-6 of it: near t_end the empirical denoiser's consecutive
outputs coincide to round-off) keeps lambda = 0; fitted, it took lambdas of ~1e13 on digits-empirical at NFE 20 and
the samples overflowed. The teacher runs from the same x_T with
``scale`` steps per student step (official ``scale=10``; teacher: DDIM, official ``d_ddim_sampler`` /
``d_edm_sampler`` in edm/distilled_sampler.py). Deviation, stated: the official teacher runs its own grid of
``scale * N`` steps and takes every ``scale``-th point, which is not exactly a student time; here the teacher's
sub-steps are uniform in lambda inside each student interval, so its targets lie exactly at the student times.

The lambdas are computed once per (model, NFE, grid, guidance, options) in ``prepare`` (outside the sampling budget,
as in the paper: (scale + 1) x NFE evaluations of the fit batch) and cached as an artifact, so every later batch and
shard reuses them (the paper: "optimized over a batch of samples, then reused").

Bases (``base=``, with ``order=``): DPM-Solver++ and DPM-Solver, run multistep (``ddim`` is DPM-Solver++ of order 1,
DDIM in data form); iPNDM (``ipndm``: fixed 4th-order Adams-Bashforth weights with lower-order warm-up, as the
official ``get_sampler_distilled_ipndm``) and DEIS (``deis``: tAB with 4 eps values, the official ``t_ab``,
``ab_order=3``), both on the noise prediction. Over these two the default (``ab_adjust=combined``) is the official
form (kim-sanghwan/D-ODE-Solvers @ 6dc5a1c, dpm_solver/th_deis/sampler.py: ``distilled_ab_step`` lines 39-50, applied
in lines 241-244 for DEIS and 476-479 for iPNDM): the base update runs unchanged and the step's *combined*
Adams-Bashforth noise estimate drives the adjustment,

    x_{i+1} = update_i(x_i) + lambda_i (e~_i - e~_{i-1}),    e~_i = sum_j C_ij eps_j / (rho_{i+1} - rho_i)

(e~_i: the eps that DDIM would need to take the same step, the official ``epsilon``; rho = sigma / alpha), with
e~_{-1} = x_T, the starting point, at the first step (official ``eps_new - x``), so the first step is adjusted too;
the history keeps the raw eps. ``ab_adjust=newest`` is eq. 5 on the newest raw eps inside the update, the first step
the base step (the form of the other bases here, kept for comparison). The official iPNDM / DEIS students distil
from the same sampler at ``scale`` x the steps (dpm_solver/runners/diffusion.py lines 682-699 and 925-940), not from
DDIM; here the default teacher stays DDIM for every base, and ``teacher=ipndm`` / ``teacher=deis`` run that teacher,
its multistep history restarted at every student step (deviation, stated). Measured on gmm-2d, the teacher barely
moves the result (tests/test_dode.py).

EDM's Heun (``base=heun``; EDM Alg. 1, an odd NFE ends with an Euler step) follows the official ``d_edm_sampler``
(edm/distilled_sampler.py): one lambda per *evaluation* k (predictor and corrector), added in EDM's variables
x~ = x / alpha after that evaluation's update, x~ += lambda_k (D_k - D_{k-1}) with D the data prediction (the first
evaluation has no D_{k-1}: lambda_0 = 0). Both fits of a step target the teacher at the step's end (the official
predictor's target is the teacher point halfway through the step's share of the teacher grid; deviation, stated),
and the teacher takes ``scale`` sub-steps per evaluation, ``scale`` x NFE in all as in the official sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dpmbench.artifacts import cached
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model, NFECounter, fit_prior, fit_stream
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Context, History, MultistepSolver, Option, Plan, Point, Solver, make_solver, register
from dpmbench.solvers.edm import scale_free_sigma
from dpmbench.solvers.iia import NEGLIGIBLE

BASES = ("ddim", "dpm-solver++", "dpm-solver", "ipndm", "deis", "heun")
ORDERED = ("dpm-solver++", "dpm-solver")  # the bases whose order is the ``order`` option
TEACHERS = ("ddim", "euler", "dpm-solver++", "ipndm", "deis")
AB_BASES = ("ipndm", "deis")  # Adams-Bashforth bases: x_t = alpha_t (x_s / alpha_s + sum_j C_j eps_j)
AB_ADJUST = ("combined", "newest")


def _spec(name: str, order: int) -> str:
    """A student / teacher spec: ddim is DPM-Solver++ of order 1 (DDIM in data form), multistep throughout; iPNDM and
    DEIS at their official orders (their own defaults)."""
    if name == "ddim":
        return "dpm-solver++:order=1,method=multistep"
    return f"{name}:order={order},method=multistep" if name in ORDERED else name


def _fit_lambda(base: torch.Tensor, direction: torch.Tensor, target: torch.Tensor) -> float:
    """argmin_lam || target - base - lam direction ||^2 over the batch (D-ODE eq. 7 in closed form); 0 for a
    negligible direction (below NEGLIGIBLE of the residual, as IIA's fit)."""
    r = target - base
    gg = float((direction * direction).sum())
    if gg > (NEGLIGIBLE * float(r.norm())) ** 2:
        return float((r * direction).sum()) / gg
    return 0.0


def _adjusted(hist: History, lam: float) -> History:
    """A copy of the history whose newest output is D~ = D + lam (D - D_prev) (D-ODE eq. 5)."""
    newest = hist[-1].out
    if len(hist) >= 2 and lam != 0.0:
        newest = newest + lam * (newest - hist[-2].out)
    return hist.with_newest(newest)


@register
class DODE(Solver):
    """A multistep DPM-Solver(++) with one distilled scalar per step on its model output."""

    name = "d-ode"
    summary = ("D-ODE: per-step (heun: per-evaluation) scalar on the model output (ipndm / deis: on the combined "
               "Adams-Bashforth eps), distilled from a 10x-step teacher (fit cached)")
    source = ("Kim, Tang & Yu 2024, 'Distilling ODE Solvers of Diffusion Models into Smaller Steps' (CVPR), eq. 5, 7; "
              "defaults scale=10, DDIM teacher from the official edm/distilled_sampler.py; the ipndm / deis form from "
              "the official dpm_solver/th_deis/sampler.py (kim-sanghwan/D-ODE-Solvers @ 6dc5a1c)")
    needs_prepare = True
    base: str
    order: int
    teacher: str
    scale: int
    fit_samples: int
    fit_seed: int
    fit: bool
    ab_adjust: str
    options = {
        "base": Option(str, "ddim", "student solver (multistep; ddim = DPM-Solver++ of order 1; ipndm, deis at their "
                       "official orders)", choices=BASES),
        "order": Option(int, 2, "order of a dpm-solver++ / dpm-solver student (other bases: leave 2)",
                        choices=(1, 2, 3)),
        "teacher": Option(str, "ddim", "teacher run with `scale` sub-steps per student step (official: DDIM; "
                          "dpm-solver++: its 2M; ipndm / deis: the official th_deis students' own teacher, "
                          "restarted at every student step)", choices=TEACHERS),
        "scale": Option(int, 10, "teacher steps per student step (official scale=10)", minimum=1),
        "fit_samples": Option(int, 256, "prior samples of the distillation batch", minimum=2),
        "fit_seed": Option(int, 1234, "seed of the distillation batch (its own stream, not the sampled x_T)",
                           minimum=0),
        "fit": Option(bool, True, "distil the lambdas; false: all lambdas 0, i.e. the base solver"),
        "ab_adjust": Option(str, "combined", "ipndm / deis bases: 'combined' (official: x_{i+1} += lambda_i (e~_i - "
                            "e~_{i-1}), e~ the step's combined Adams-Bashforth eps; D-ODE-Solvers "
                            "dpm_solver/th_deis/sampler.py lines 39-50, 241-244, 476-479) or 'newest' (eq. 5 on the "
                            "newest raw eps inside the update)", choices=AB_ADJUST),
    }

    def validate(self) -> None:
        if self.base not in ORDERED and self.order != 2:
            raise DpmbenchError(f"invalid option 'order' of solver 'd-ode' {self.order} with base={self.base}: "
                                "order applies to dpm-solver++ / dpm-solver; leave 2")
        if self.base not in AB_BASES and self.ab_adjust != "combined":
            raise DpmbenchError(f"invalid option 'ab_adjust' of solver 'd-ode' {self.ab_adjust!r} with "
                                f"base={self.base}: it applies to ipndm / deis; leave combined")
        self.student = make_solver(_spec(self.base, self.order))
        self.combined = self.base in AB_BASES and self.ab_adjust == "combined"
        self.heun = self.base == "heun"
        self.teacher_solver = make_solver(_spec(self.teacher, 2))

    @property
    def stepper(self) -> MultistepSolver:
        """The student as the multistep method every base but heun is."""
        assert isinstance(self.student, MultistepSolver)
        return self.student

    def min_nfe(self) -> int:
        return self.student.min_nfe()

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        return self.student.plan(nfe, schedule, kind, t_start, t_end)

    # -- distillation (prepare) -----------------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> dict[str, Any]:
        plan = self.make_plan(ctx.nfe, ctx.model.schedule, ctx.kind, ctx.t_start, ctx.t_end)
        if not self.fit:
            self.lambdas = [0.0] * self._count(plan)
            return {"d_ode_steps": len(self.lambdas), "fitted": False}
        opts = (self.student.spec, self.teacher_solver.spec, self.scale, self.fit_samples, self.fit_seed,
                *((self.ab_adjust,) if self.base in AB_BASES else ()))

        def compute() -> list[float]:
            return self.distil(ctx.model, ctx.cond(self.fit_samples), plan)

        self.lambdas = cached("d-ode-lambdas", (*ctx.key(), *opts), compute,
                              meta={"solver": self.spec, "nfe": ctx.nfe,
                                    "stream": fit_stream(self.fit_seed, self.fit_samples)})
        return {"d_ode_steps": len(self.lambdas), "fitted": True}

    def _count(self, plan: Plan) -> int:
        """How many lambdas the plan takes: one per step, for Heun one per evaluation."""
        return sum(plan.orders) if self.heun else len(plan.orders)

    def _teacher(self, model: Model, cond: Any, x: torch.Tensor, s: Point, t: Point, evals: int = 1) -> torch.Tensor:
        """The teacher from s to t with ``scale`` x ``evals`` sub-steps uniform in lambda (float64)."""
        sub = self.scale * evals
        lams = torch.linspace(s.lam, t.lam, sub + 1, dtype=torch.float64)
        ts = [s.t] + [Point.at_lambda(model.schedule, float(v)).t for v in lams[1:-1]] + [t.t]
        tp = self.teacher_solver.make_plan(sub, model.schedule, torch.tensor(ts, dtype=torch.float64))
        return self.teacher_solver.run(NFECounter(model, cond), x, tp)

    def distil(self, model: Model, cond: Any, plan: Plan) -> list[float]:
        """The per-step lambdas along the student trajectory of the fit batch (D-ODE eq. 7, closed form)."""
        x = fit_prior(model, self.fit_samples, self.fit_seed)  # never an evaluated x_T (FIT_START ..)
        target = x
        counter = NFECounter(model, cond)
        if self.heun:
            def teach(s: Point, t: Point, order: int) -> torch.Tensor:
                nonlocal target
                target = self._teacher(model, cond, target, s, t, order)
                return target

            return self._heun(counter, x, plan, teach)[1]
        hist = self.stepper.new_history(counter, plan, max(self.stepper.history_size(), 2))  # D_{i-1} too
        lambdas: list[float] = []
        prev = x  # combined form: e~_{-1} = x_T
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            hist.step = i
            target = self._teacher(model, cond, target, s, t)
            hist.push(s, self.predict(counter, x, s, self.stepper.prediction))
            base = self.stepper.update(x, hist, t, order)
            if self.combined:  # official th_deis form: fit lambda_i along e~_i - e~_{i-1}, then add it to x_{i+1}
                e = self._combined_eps(hist, t, order)
                lam = _fit_lambda(base, e - prev, target)
                x = base if lam == 0.0 else base + lam * (e - prev)
                lambdas.append(lam)
                prev = e
                continue
            lam = 0.0
            if len(hist) >= 2:  # eq. 7 along d x_{i+1} / d lambda
                lam = _fit_lambda(base, self.stepper.update(x, _adjusted(hist, 1.0), t, order) - base, target)
            lambdas.append(lam)
            x = base if lam == 0.0 else self.stepper.update(x, _adjusted(hist, lam), t, order)
        return lambdas

    # -- sampling ---------------------------------------------------------------------------------------------------
    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        lambdas = getattr(self, "lambdas", None)
        if lambdas is None or len(lambdas) != self._count(plan):
            raise RuntimeError(f"solver {self.spec} was not prepared for this plan (run it through dpmbench.sample)")
        if self.heun:
            return self._heun(model, x, plan, lambdas)[0]
        hist = self.stepper.new_history(model, plan, max(self.stepper.history_size(), 2))  # D_{i-1} too
        prev = x  # combined form: e~_{-1} = x_T (official ``eps_new - x`` at the first step)
        for i, (s, t, order, lam) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, lambdas,
                                                   strict=True)):
            hist.step = i
            hist.push(s, self.predict(model, x, s, self.stepper.prediction))
            if self.combined:
                e = self._combined_eps(hist, t, order)
                x_next = self.stepper.update(x, hist, t, order)  # the base update, unchanged
                x = x_next if lam == 0.0 else x_next + lam * (e - prev)  # x_{i+1} += lambda_i (e~_i - e~_{i-1})
                prev = e
                continue
            x = self.stepper.update(x, _adjusted(hist, lam), t, order)  # the base update with D~ (eq. 5)
        return x

    def _combined_eps(self, hist: History, t: Point, order: int) -> torch.Tensor:
        """The step's combined Adams-Bashforth noise estimate e~ = sum_j C_j eps_j / (rho_t - rho_s): the eps with
        which DDIM takes the same step (official ``distilled_ab_step``'s ``epsilon``). The iPNDM / DEIS update is
        x_t = alpha_t (x_s / alpha_s + sum_j C_j eps_j), so from x_s = 0 it returns alpha_t sum_j C_j eps_j."""
        s = hist[-1].point
        ab = self.stepper.update(torch.zeros_like(hist[-1].out), hist, t, order)
        return ab / (t.alpha * (t.sigma / t.alpha - s.sigma / s.alpha))

    def _heun(self, model: NFECounter, x: torch.Tensor, plan: Plan,
              lambdas: list[float] | Callable[[Point, Point, int], torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
        """EDM's Heun (Alg. 1, as the ``heun`` solver) with x~ += lambda_k (D_k - D_{k-1}) after evaluation k
        (official d_edm_sampler). ``lambdas``: the distilled ones, or a teacher (s, t, evaluations) -> x at t, against
        which each lambda is fitted in turn. Returns x and the lambdas used."""
        fit = callable(lambdas)
        used: list[float] = []
        prev: torch.Tensor | None = None  # D of the previous evaluation

        def adjust(y: torch.Tensor, d_new: torch.Tensor, target: torch.Tensor | None, t: Point) -> torch.Tensor:
            lam = 0.0
            if prev is not None:
                lam = _fit_lambda(y, d_new - prev, target / t.alpha) if fit else lambdas[len(used)]  # type: ignore
            used.append(lam)
            return y if lam == 0.0 else y + lam * (d_new - prev)

        for s, t, order in zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True):
            target = lambdas(s, t, order) if fit else None  # type: ignore[operator]
            xs, dsig = x / s.alpha, scale_free_sigma(t) - scale_free_sigma(s)
            d = self.predict(model, x, s, "eps")
            d0 = (x - s.sigma * d) / s.alpha  # D(x~, sigma~) from the same evaluation
            x_euler = adjust(xs + dsig * d, d0, target, t)  # Alg. 1 line 5
            prev = d0
            if order == 1:
                x = t.alpha * x_euler
                continue
            x_t = t.alpha * x_euler
            d_prime = self.predict(model, x_t, t, "eps")  # line 7
            d1 = (x_t - t.sigma * d_prime) / t.alpha
            x = t.alpha * adjust(xs + dsig * 0.5 * (d + d_prime), d1, target, t)  # line 8
            prev = d1
        return x, used
