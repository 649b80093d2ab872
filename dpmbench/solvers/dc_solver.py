"""DC-Solver: UniPC with dynamic compensation, of Zhao, Wang, Zhou & Lu, "DC-Solver: Improving Predictor-Corrector
Diffusion Sampler via Dynamic Compensation" (ECCV 2024), following the official code (github.com/wl-zhao/DC-Solver:
``stable-diffusion/ldm/models/diffusion/dc_solver/dc_solver.py`` and the diffusers scheduler
``scheduling_dcsolver_multistep.py``).

Why: in a predictor-corrector sampler such as UniPC the model output at t_i is evaluated at the *predicted* state
x~_{t_i}, while the corrector then moves the state to x^c_{t_i}; the next predictor step and the next corrector use
that misaligned output. DC-Solver replaces it by a compensated output (the paper's dynamic-compensation section):

* **Dynamic compensation.** With the last ``K + 1`` (``dc_order`` K = 2) model outputs m_{i-k} at times t_{i-k},
  the newest output m_i is replaced by their Lagrange interpolant evaluated at the time
  ``tau_i = rho_i t_i + (1 - rho_i) t_{i-1}``::

      m~_i = sum_{k=0}^{K} [ prod_{l != k} (tau_i - t_{i-l}) / (t_{i-k} - t_{i-l}) ] m_{i-k}

  (official ``dynamic_compensation``: interpolation in the model's time t, not in lambda). The compensated output
  stays in the history: the UniP step to t_{i+1}, the UniC correction of t_{i+1} and the later steps all use it.
  ``rho_i = 1`` gives tau_i = t_i exactly, the Lagrange weights (1, 0, ..., 0) exactly, and plain UniPC bit for
  bit (the official code also skips the compensation when ``rho_i == 1``). Steps with fewer than K + 1 outputs in
  the history (warm-up) are not compensated (ratio 1), as in the official code.
* **Ratio search** (official ``search_dc`` / ``find_optim_ratio``; the search ``dc-ratios``,
  search/dc_ratios.py). Greedily, step by step along the solver's own
  trajectory from the search data, rho_i is optimized by AdamW (lr 0.1, 40 iterations, from rho = 1) on the MSE
  between the state at t_{i+1} that this ratio gives (UniP step, then the model evaluated at the predicted state
  and the UniC correction, except on the last step which is not corrected) and the ground-truth trajectory at
  t_{i+1}; the trajectory then continues with the found ratio. The official code uses 10 samples (the diffusers
  script's batch of 10 prompts) and a 200-step DDIM trajectory as ground truth; here the ground truth is the exact
  ODE solution at the grid times for oracle models, else a chained high-NFE DPM-Solver++ trajectory.
* **Cascade polynomial regression** (CPR; official ``cascade_polynomial_regression``; the fit ``dc-cpr``,
  search/dc_cpr.py). The ratio of step i
  (1-based index j = i + 1 of ``steps`` N, guidance G) is a polynomial in x = j / N whose coefficients are
  quadratics in G / 12 whose coefficients are quadratics in N / 50::

      rho(G, N, x) = sum_k c_k(G, N) x^k,  c_k(G, N) = sum_a (sum_b C[k, a, b] (N/50)^(2-b)) (G/12)^(2-a)

  which is linear in the coefficients C: they are fitted by least squares (numpy ``lstsq``, minimum norm) to the
  ratios searched on a grid of (NFE, guidance) cells, then predict the ratios of unseen cells (the official code
  ships coefficients fitted offline; its fitting code is not published). Steps without compensation get 1.

Equation numbers: the paper's text was not available offline; the formulas above are those of the official code,
re-implemented and checked numerically (tests/test_dc_solver.py: the compensation against scipy's Lagrange
interpolation, rho = 1 against ``unipc`` bit for bit, the scalar AdamW against torch.optim.AdamW).

The solver holds the compensation; its ``prepare`` gets the ratios from the searches through the Context's search
runner (``Context.search``: ``dc-ratios`` for ``ratios=search``, ``dc-cpr`` for ``ratios=cpr``).

Settings and deviations: the official optimizer settings are kept unscaled (AdamW lr 0.1, 40 iterations, 10
samples: 1-12 s per cell on the oracle models on 2 CPU cores); the search runs in float64 whatever the sampling
dtype; the ground truth at t_{i+1} is the exact state there (the official code takes the DDIM state at the nearest
reference time >= t_{i+1}); defaults bh1 / order 2 (the official DCSolver class and LDM sampler use bh1 with order 3,
the diffusers script bh2 with order 2 and ``disable_corrector=[0]``, which dpmbench's UniPC does not expose). A run
with class labels but no guidance scale is searched unconditionally (the prepare context carries no labels).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from dpmbench.artifacts import artifact_key
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Context, History, Option, Plan, register
from dpmbench.solvers.unipc import UniPC

RATIO_MODES = ("search", "cpr", "fixed")
# Options that change the sampling trajectory for given ratios (and therefore the searched ratios).
TRAJECTORY_OPTIONS = ("variant", "order", "prediction", "corrector", "lower_order_final", "dc_order", "thresholding",
                      "thresholding_ratio", "sample_max_value", "denoise_to_zero")
SEARCH_OPTIONS = ("search_size", "search_iters", "search_lr", "reference_nfe")


def lagrange_weights(times: list[float], tau: Any) -> list[Any]:
    """Weights w_k of the Lagrange interpolant through ``times`` (newest first) at ``tau`` (float or tensor):
    ``prod_{l != k} (tau - t_l) / (t_k - t_l)``."""
    out = []
    for k, tk in enumerate(times):
        w: Any = 1.0
        for j, tj in enumerate(times):
            if j != k:
                w = w * ((tau - tj) / (tk - tj))
        out.append(w)
    return out


def compensated_output(hist: History, rho: Any, dc_order: int) -> torch.Tensor:
    """DC-Solver's compensated model output: the Lagrange interpolant of the newest ``dc_order + 1`` outputs at
    ``tau = rho t_i + (1 - rho) t_{i-1}`` (official ``dynamic_compensation``). ``rho`` may be a tensor (search)."""
    times = [hist[-(k + 1)].point.t for k in range(dc_order + 1)]
    tau = rho * times[0] + (1 - rho) * times[1]  # rho = 1: tau = t_i exactly
    weights = lagrange_weights(times, tau)
    out = weights[0] * hist[-1].out
    for k in range(1, dc_order + 1):
        out = out + weights[k] * hist[-(k + 1)].out
    return out


def grid_values(text: str) -> list[float]:
    """The numbers of a '/'- (or ',')-separated list."""
    return [float(v) for v in text.replace(",", "/").split("/") if v.strip()]


@register
class DCSolver(UniPC):
    """UniPC-p with dynamic compensation of the newest model output before every step (no extra NFE)."""

    name = "dc-solver"
    summary = "DC-Solver: UniPC + dynamic compensation (searched or CPR-predicted ratios), no extra NFE"
    source = ("Zhao, Wang, Zhou & Lu 2024, 'DC-Solver' (ECCV): dynamic compensation (Lagrange interpolation of the "
              "last dc_order+1 outputs at tau = rho t_i + (1-rho) t_{i-1}), greedy ratio search (AdamW) and cascade "
              "polynomial regression; official code dc_solver.py dynamic_compensation / find_optim_ratio / "
              "cascade_polynomial_regression (equation numbers not verified: paper text unavailable offline); base "
              "UniPC (Zhao et al. 2023)")
    needs_prepare: ClassVar[bool] = True
    dc_order: int
    ratios: str
    ratio: float
    search_seed: int
    search_size: int
    search_iters: int
    search_lr: float
    reference_nfe: int
    cpr_nfes: str
    cpr_guidances: str
    cpr_degree: int
    options = {
        **UniPC.options,
        "dc_order": Option(int, 2, "K: the compensation interpolates the last K + 1 model outputs (official "
                           "dc_order=2; the diffusers scheduler caps K + 1 at 4)", choices=(1, 2, 3)),
        "ratios": Option(str, "search", "where the ratios rho_i come from: search (optimized on search data "
                         "against the ground-truth trajectory, cached), cpr (cascade polynomial regression fitted "
                         "to searches on the cpr_nfes x cpr_guidances grid, cached), fixed (every step uses "
                         "'ratio'; ratio=1 is UniPC)", choices=RATIO_MODES),
        "ratio": Option(float, 1.0, "the ratio of every step with ratios=fixed (1.0: no compensation)"),
        "search_seed": Option(int, 0, "seed of the search data x_T (samples 2^32.. of its stream: never evaluated)",
                              minimum=0),
        "search_size": Option(int, 10, "number of search samples (official: a batch of 10)", minimum=1),
        "search_iters": Option(int, 40, "AdamW iterations per step (official LDM code: 40; its diffusers "
                               "scheduler: num_iters=20)", minimum=1),
        "search_lr": Option(float, 0.1, "AdamW learning rate (official: 0.1, other AdamW settings torch "
                            "defaults)", minimum=0.0),
        "reference_nfe": Option(int, 200, "ground truth for non-oracle models: a DPM-Solver++(3M) trajectory of "
                                "about this many NFE chained through the grid (official: 200-step DDIM); oracle "
                                "models use the exact solution", minimum=10),
        "cpr_nfes": Option(str, "5/6/8/10", "NFE grid of the CPR training searches ('/'-separated). Measured on "
                           "gmm-digits, guidance 7.5: NFE 5..20 x guidance 1.5..10 (35 searches) predicts NFE 7/9 "
                           "badly (RMSE 3.8/8.3 vs 0.19/0.14 searched), this grid well (0.26/0.20)"),
        "cpr_guidances": Option(str, "5/7.5/10", "guidance grid of the CPR training searches for guided runs "
                                "('/'-separated; unguided runs fit on the NFE grid alone)"),
        "cpr_degree": Option(int, 3, "degree of the CPR polynomial in x = step / steps (its coefficients are "
                             "quadratic in G and N, as in the official code)", choices=(1, 2, 3, 4)),
    }

    def validate(self) -> None:
        super().validate()
        for key in ("cpr_nfes", "cpr_guidances"):
            try:
                vals = grid_values(self.opts[key])
            except ValueError:
                vals = []
            need = self.min_nfe() + int(self.denoise_to_zero) if key == "cpr_nfes" else 0
            if not vals or any(v <= 0 or (need and (v != int(v) or v < need)) for v in vals):
                kind = f"integers >= {need}" if need else "positive numbers"
                raise DpmbenchError(f"invalid option {key!r} of solver {self.name!r} {self.opts[key]!r}; allowed: "
                                    f"'/'-separated {kind}")
        self._active: list[float] | None = None
        self._memo: dict[str, list[float]] = {}

    def history_size(self) -> int:
        return max(self.full_order(), self.dc_order + 1)

    # -- preparation: where the ratios come from --------------------------------------------------------------
    def search_solver(self) -> DCSolver:
        """The solver whose trajectory the ratios are searched on: these options with ``ratios=search`` (its spec
        is the canonical cache key, shared by ``ratios=search`` and the CPR training searches)."""
        return DCSolver(**{k: self.opts[k] for k in TRAJECTORY_OPTIONS})

    def search_options(self) -> dict[str, Any]:
        """The options of the ``dc-ratios`` search."""
        return {"size": self.search_size, "iters": self.search_iters, "lr": self.search_lr,
                "reference_nfe": self.reference_nfe}

    def prepare(self, ctx: Context) -> dict[str, Any]:
        steps = ctx.nfe - int(self.denoise_to_zero)
        if self.ratios == "fixed":
            self._active = [self.ratio] * steps
            return {"ratios": self._active, "mode": "fixed"}
        ctx = dataclasses.replace(ctx, dtype=torch.float64)  # the search runs in float64 whatever the sampling dtype
        memo = artifact_key("dc-solver-memo", *ctx.key(), self.spec)
        if memo not in self._memo:
            if self.ratios == "search":  # the ratios of this cell, searched (search/dc_ratios.py)
                data = ctx.search("dc-ratios", self.search_solver(), self.search_seed, self.search_options(),
                                  by=self.name)
            else:  # predicted by the CPR fitted on the cpr grid (search/dc_cpr.py)
                data = ctx.search("dc-cpr", self, self.search_seed, {}, by=self.name)
            self._memo[memo] = [float(r) for r in data["ratios"]]
        self._active = self._memo[memo]
        return {"ratios": self._active, "mode": self.ratios}

    # -- sampling ---------------------------------------------------------------------------------------------
    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        p = super().plan(nfe, schedule, kind, t_start, t_end)
        steps = len(p.orders)
        ratios = [self.ratio] * steps if self.ratios == "fixed" else self._active
        # None until prepared (a plan may be made to validate a run before its preparation)
        p.extra["dc_ratios"] = list(ratios) if ratios is not None and len(ratios) == steps else None
        return p

    def solve(self, model: NFECounter, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        if plan.extra["dc_ratios"] is None:
            raise DpmbenchError(f"invalid use of solver {self.spec!r}: its ratios for {len(plan.orders)} steps are "
                                "not prepared (run prepare(ctx) first; dpmbench.sample does)")
        return super().solve(model, x, plan)

    def refine(self, hist: History, step: int) -> None:
        rho = hist.plan.extra["dc_ratios"][step]  # rho_i of this run's plan
        if rho != 1.0 and len(hist) > self.dc_order:  # warm-up steps are never compensated (official code)
            hist[-1].out = compensated_output(hist, rho, self.dc_order)  # m~_i replaces m_i in the history
