"""Improved integration approximation (IIA; Zhang, Niwa & Kleijn 2024, 'On Accelerating Diffusion-Based Sampling
Processes via Improved Integration Approximation', ICLR 2024, Sec. 4 "IIA for DDIM and DPM-Solver").

IIA keeps a solver's update and adds, per step i, a few extra terms built from model outputs the solver already
has (no extra NFE at sampling time), with coefficients gamma_i fitted once per (model, NFE, grid, guidance) by
least squares (minimum MSE, the paper's MMSE) against a fine-grained integration of the same step by the original
solver (least squares with a tiny relative ridge, see ``ridge_lstsq``):

    x_{i+1} = update_i(x_i) + sum_k gamma_{i,k} f_{i,k},
    gamma_i = argmin_gamma || x^fine_{i+1} - update_i(x_i) - sum_k gamma_k f_{i,k} ||^2   over a fit batch,

where x^fine_{i+1} integrates from the same x_i with M sub-steps (``fine_steps``). The fit runs step by step along
the IIA trajectory of ``fit_samples`` prior samples of their own seed (``fit_seed``; balanced labels when guided),
so the coefficients do not depend on the batch being sampled. They are cached as an artifact
(``dpmbench.artifacts.cached``) keyed by the model, NFE, grid, guidance and these options; computing them costs
(M + 1) x NFE evaluations of the fit batch, outside the sampling budget (``prepare``), as in the paper.

Here, in the data-prediction form of DDIM / DPM-Solver++ (h = lambda_t - lambda_s, phi = e^{-h} - 1):

* ``iia-ddim``: update = DDIM = DPM-Solver++-1, ``x_t = (sigma_t/sigma_s) x - alpha_t phi x0_i``; extra terms
  ``-alpha_t phi (x0_i - x0_{i-1})`` and ``-sigma_t phi (eps_i - eps_{i-1})`` (differences of the last two data and
  noise predictions); fine integration: DDIM with M sub-steps uniform in lambda.
* ``iia-dpm-solver++``: update = DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2); extra terms
  ``-alpha_t phi (x0_i - x0_{i-1})`` and ``-alpha_t phi (x0_{i-1} - x0_{i-2})``; fine integration: 2M with M
  sub-steps uniform in lambda whose history starts from the coarse previous output.

With no history (the first step) there is no extra term. Deviation, stated plainly: this is written from the
paper's description (per-step MMSE coefficients on extra model-output terms against a fine-grained run of the
original solver); the exact choice of extra terms, the fine-grained solver and the fit batch of the official
code were not available to check, so they are this module's choices (documented above), not a transcription.
"""

from __future__ import annotations

from typing import Any

import torch

from dpmbench.artifacts import cached
from dpmbench.models.base import Model, fit_prior, fit_stream
from dpmbench.solvers.base import Context, MultistepSolver, Option, Plan, Point, expm1, register

RIDGE = 1e-4  # relative Tikhonov weight of the fit (see ridge_lstsq)
NEGLIGIBLE = 1e-6  # a term smaller than this times the target is not fitted (see ridge_lstsq)


def ridge_lstsq(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """argmin_g |a g - b|^2 + mu |g|^2 with mu = RIDGE * max diag(a^T a): the MMSE fit, kept well-posed when
    the extra terms are nearly collinear (at high noise the data- and noise-prediction differences of IIA-DDIM
    are: plain least squares then returns coefficients of opposite sign and size ~1e8 whose cancellation float32
    sampling cannot reproduce).
    A term whose norm is negligible next to the target (below ``NEGLIGIBLE`` times it: near t_end the empirical
    denoiser's consecutive outputs coincide to 1e-27) gets coefficient 0: fitted to round-off it would take a
    coefficient of ~1e78 that turns float32 round-off of the same term into overflow at sampling time."""
    g = torch.zeros(a.shape[1], dtype=a.dtype)
    keep = a.norm(dim=0) > NEGLIGIBLE * float(b.norm())
    if not bool(keep.any()):
        return g.tolist()
    k = a[:, keep]
    ata = k.T @ k
    mu = RIDGE * float(ata.diagonal().max())
    g[keep] = torch.linalg.solve(ata + mu * torch.eye(len(ata), dtype=ata.dtype), k.T @ b)
    return g.tolist()


def _options() -> dict[str, Option]:
    return {
        "fine_steps": Option(int, 4, "M: sub-steps of the fine-grained integration each coefficient is fitted "
                             "against", minimum=2),
        "fit_samples": Option(int, 256, "prior samples of the coefficient fit (the paper fits on a batch)",
                              minimum=8),
        "fit_seed": Option(int, 1234, "seed of the fit batch (its own stream, not the sampled x_T)", minimum=0),
    }


class _IIA(MultistepSolver):
    """Data-prediction multistep update plus per-step least-squares-fitted extra terms."""

    prediction = "x0"
    needs_prepare = True
    base_order = 1
    fine_steps: int
    fit_samples: int
    fit_seed: int

    def full_order(self) -> int:
        return self.base_order

    def min_nfe(self) -> int:
        return self.base_order

    # -- the update, written once for sampling and for the fit -------------------------------------------------
    def base_update(self, x: torch.Tensor, pts: list[Point], x0s: list[torch.Tensor], t: Point,
                    order: int) -> torch.Tensor:
        """DPM-Solver++ of ``order`` (1: DDIM) from pts[-1] to t; pts/x0s newest last."""
        s, m0 = pts[-1], x0s[-1]
        h = t.lam - s.lam
        phi = expm1(-h)
        x_t = (t.sigma / s.sigma) * x - t.alpha * phi * m0  # DPM-Solver++ first-order update (= DDIM)
        if order == 2:  # Alg. 2: D = x0_{i-1} + (x0_{i-1} - x0_{i-2}) / (2 r)
            r0 = (s.lam - pts[-2].lam) / h
            x_t = x_t - 0.5 * t.alpha * phi * (m0 - x0s[-2]) / r0
        return x_t

    def features(self, xs: list[torch.Tensor], pts: list[Point], x0s: list[torch.Tensor],
                 t: Point) -> list[torch.Tensor]:
        """The extra terms f_{i,k} of the step from pts[-1] to t (empty without history)."""
        raise NotImplementedError

    def fine(self, model: Model, cond: Any, x: torch.Tensor, pts: list[Point], x0s: list[torch.Tensor],
             t: Point) -> torch.Tensor:
        """The fine-grained integration of the original solver from pts[-1] to t (M sub-steps in lambda)."""
        s = pts[-1]
        sch = model.schedule
        lams = torch.linspace(s.lam, t.lam, self.fine_steps + 1, dtype=torch.float64).tolist()
        sub = [s] + [Point.at_lambda(sch, lam) for lam in lams[1:-1]] + [t]
        hp, hx = list(pts[-2:]), list(x0s[-2:])
        for j, (a, b) in enumerate(zip(sub[:-1], sub[1:], strict=True)):
            if j > 0:
                hp.append(a)
                hx.append(model.x0(x, a.t, cond))
            order = min(self.base_order, len(hp))
            x = self.base_update(x, hp, hx, b, order)
        return x

    # -- fit (prepare) ------------------------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> dict[str, Any]:
        plan = self.make_plan(ctx.nfe, ctx.model.schedule, ctx.kind, ctx.t_start, ctx.t_end)
        opts = (self.name, self.fine_steps, self.fit_samples, self.fit_seed)

        def compute() -> list[list[float]]:
            return self.fit(ctx.model, ctx.cond(self.fit_samples), plan)

        self.gammas = cached("iia-coefficients", (*ctx.key(), *opts), compute,
                             meta={"solver": self.spec, "nfe": ctx.nfe,
                                   "stream": fit_stream(self.fit_seed, self.fit_samples)})
        return {"iia_steps": len(self.gammas)}

    def fit(self, model: Model, cond: Any, plan: Plan) -> list[list[float]]:
        """Per-step least-squares coefficients along the IIA trajectory of the fit batch (float64)."""
        x = fit_prior(model, self.fit_samples, self.fit_seed)  # never an evaluated x_T (FIT_START ..)
        pts: list[Point] = []
        x0s: list[torch.Tensor] = []
        xs: list[torch.Tensor] = []
        gammas: list[list[float]] = []
        for s, t, order in zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True):
            pts.append(s)
            x0s.append(model.x0(x, s.t, cond))
            xs.append(x)
            base = self.base_update(x, pts, x0s, t, order)
            feats = self.features(xs, pts, x0s, t)
            if feats:
                target = self.fine(model, cond, x, pts, x0s, t) - base
                g = ridge_lstsq(torch.stack([f.reshape(-1) for f in feats], dim=1), target.reshape(-1))  # MMSE
            else:
                g = []
            gammas.append(g)
            x = base + sum(c * f for c, f in zip(g, feats, strict=True))
            del pts[:-3], x0s[:-3], xs[:-3]
        return gammas

    # -- sampling -------------------------------------------------------------------------------------------------
    def solve(self, model: Any, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        gammas = getattr(self, "gammas", None)
        if gammas is None or len(gammas) != len(plan.orders):
            raise RuntimeError(f"solver {self.spec} was not prepared for this plan (run it through dpmbench.sample)")
        pts: list[Point] = []
        x0s: list[torch.Tensor] = []
        xs: list[torch.Tensor] = []
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            pts.append(s)
            x0s.append(self.predict(model, x, s, "x0"))
            xs.append(x)
            feats = self.features(xs, pts, x0s, t)
            x = self.base_update(x, pts, x0s, t, order) + sum(
                c * f for c, f in zip(gammas[i], feats, strict=True))
            del pts[:-3], x0s[:-3], xs[:-3]
        return x


@register
class IIADDIM(_IIA):
    """DDIM plus two fitted terms along the last differences of the data and noise predictions."""

    name = "iia-ddim"
    summary = "IIA-DDIM: DDIM + per-step least-squares-fitted correction terms (fit cached; no extra sampling NFE)"
    source = ("Zhang, Niwa & Kleijn 2024, 'On Accelerating Diffusion-Based Sampling Processes via Improved "
              "Integration Approximation' (ICLR), Sec. 4 (IIA-DDIM, MMSE per step); see module docstring")
    options = _options()
    base_order = 1

    def features(self, xs, pts, x0s, t):  # type: ignore[no-untyped-def]
        if len(pts) < 2:
            return []
        s, r = pts[-1], pts[-2]
        phi = expm1(-(t.lam - s.lam))
        eps = [(xs[-1] - s.alpha * x0s[-1]) / s.sigma, (xs[-2] - r.alpha * x0s[-2]) / r.sigma]
        return [-t.alpha * phi * (x0s[-1] - x0s[-2]), -t.sigma * phi * (eps[0] - eps[1])]


@register
class IIADPMSolverPP(_IIA):
    """DPM-Solver++(2M) plus two fitted terms along the last two differences of the data predictions."""

    name = "iia-dpm-solver++"
    summary = "IIA-DPM-Solver++(2M): 2M + per-step least-squares-fitted correction terms (fit cached)"
    source = ("Zhang, Niwa & Kleijn 2024, 'On Accelerating Diffusion-Based Sampling Processes via Improved "
              "Integration Approximation' (ICLR), Sec. 4 (IIA-DPM-Solver); update Lu et al. 2022b Alg. 2")
    lower_order_final: bool
    options = {"lower_order_final": Option(bool, True, "lower the order of the final steps below 10 steps "
                                           "(official DPM-Solver)"), **_options()}
    base_order = 2

    def features(self, xs, pts, x0s, t):  # type: ignore[no-untyped-def]
        if len(pts) < 2:
            return []
        phi = expm1(-(t.lam - pts[-1].lam))
        out = [-t.alpha * phi * (x0s[-1] - x0s[-2])]
        if len(pts) >= 3:
            out.append(-t.alpha * phi * (x0s[-2] - x0s[-3]))
        return out
