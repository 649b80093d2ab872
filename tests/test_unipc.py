"""UniPC (dpmbench/solvers/unipc.py) and UniC on the DPM-Solver family: measured convergence orders, agreement
with diffusers' ``UniPCMultistepScheduler`` and with DPM-Solver++, NFE accounting, bad specs.

Convergence is measured as in tests/test_convergence.py: RMSE to the exact ODE solution of gmm-2d (float64,
500 samples, logSNR-uniform steps, t_end = 1e-3), slope of log(error) vs log(NFE) fitted over NFE 20..160.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
import torch
from support import CountingModel, convergence_errors, gmm2d_convergence_setup, slope

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model
from dpmbench.schedules import VPDiscrete
from dpmbench.solvers import get_solver
from dpmbench.solvers.unipc import phi_terms, unipc_rhos

T_END = 1e-3
NFES = [20, 40, 80, 160]


@pytest.fixture(scope="module")
def setup() -> tuple:
    return gmm2d_convergence_setup()





# -- convergence orders ---------------------------------------------------------------------------------------

# (spec, expected order, NFE range). lower_order_final=false: the method's own order (see
# test_official_lower_order_final for what the official final steps do). Measured slopes (successive doublings):
#   NFE 20..160: unipc:order=1 (UniP-1 + UniC-1) 1.91 [1.93 1.90 1.92]; unipc:order=1,corrector=none 1.02
#                unipc:order=2 (UniP-2 + UniC-2) 2.76 [2.43 2.83 2.98]; unipc:order=2,corrector=none 2.01
#                unipc:order=3 (UniP-3 + UniC-3) 3.79 [3.55 3.76 4.07]; unipc:order=3,corrector=none 2.91
# Some corrected methods leave their pre-asymptotic range later (first doubling 20 -> 40 only ~2.4 for an order-3
# method): over NFE 20..160 unipc:order=2,variant=bh2 and dpm-solver++:order=2,corrector=unic (the same method) give
# 2.69 [2.43 2.71 2.92], dpm-solver:order=2,method=multistep,corrector=unic 2.66 [2.34 2.72 2.92],
# unipc:order=3,variant=bh2,prediction=eps 3.64 [3.13 3.66 4.11]. They are measured over NFE 40..320:
# 2.88 [2.71 2.92 2.98], 2.88 [2.72 2.92 2.99], 3.97 [3.66 4.11 4.09].
LATE = [40, 80, 160, 320]
ORDERS = [
    ("unipc:order=1", 2, NFES),
    ("unipc:order=2,lower_order_final=false", 3, NFES),
    ("unipc:order=3,lower_order_final=false", 4, NFES),
    ("unipc:order=1,corrector=none", 1, NFES),
    ("unipc:order=2,corrector=none,lower_order_final=false", 2, NFES),
    ("unipc:order=3,corrector=none,lower_order_final=false", 3, NFES),
    ("unipc:order=3,variant=bh2,prediction=eps,lower_order_final=false", 4, LATE),
    ("dpm-solver++:order=2,corrector=unic", 3, LATE),
    ("dpm-solver:order=2,method=multistep,corrector=unic", 3, LATE),
]


@pytest.mark.parametrize(("spec", "order", "nfes"), ORDERS, ids=[c[0] for c in ORDERS])
def test_convergence_order(setup: tuple, spec: str, order: int, nfes: list[int]) -> None:
    """UniP-p is order p; UniC-p on top of it (UniPC-p, or DPM-Solver(++)-p multistep) is order p + 1."""
    errs = convergence_errors(setup, spec, nfes)
    fitted = slope(nfes, errs)
    assert abs(fitted - order) < 0.3, f"{spec}: slope {fitted:.2f}, errors {errs}"
    assert all(a > b for a, b in zip(errs[:-1], errs[1:], strict=True)), errs


def test_unic_improves_every_predictor(setup: tuple) -> None:
    """At every NFE of the range the corrected solver beats its bare predictor (same NFE)."""
    for bare, corrected in [("unipc:order=2,corrector=none", "unipc:order=2"),
                            ("unipc:order=3,corrector=none", "unipc:order=3"),
                            ("dpm-solver++:order=2", "dpm-solver++:order=2,corrector=unic")]:
        e_bare, e_corr = convergence_errors(setup, bare, [10, 40]), convergence_errors(setup, corrected, [10, 40])
        assert all(c < b for c, b in zip(e_corr, e_bare, strict=True)), (bare, e_bare, e_corr)


def test_official_lower_order_final() -> None:
    """The official code (``step_order = min(order, steps + 1 - step)``) and diffusers (``min(solver_order,
    len(timesteps) - step_index)``) lower the final orders at *every* number of steps, and the last step is never
    corrected: the last step is a first-order UniP-1 step with local error O(h^2), so the global error of the
    default UniPC-p has an O(h^2) part. Measured for UniPC-3 (500 samples): slope 3.38 over NFE 20..160, 2.19 from
    160 to 320 and 2.05 from 320 to 640, against 3.91 with lower_order_final=false; for UniPC-2 the O(h^2) part is
    not yet dominant at NFE 640 (2.87 from 320 to 640). Asserted here on 100 samples, NFE 160 -> 320 (2.21, 3.76).
    """
    model = load_model("gmm-2d")
    assert get_solver("unipc:order=3").plan(40, model.schedule).orders[-3:] == [3, 2, 1]
    assert get_solver("unipc:order=3,lower_order_final=false").plan(40, model.schedule).orders[-1] == 3
    x_T = model.prior(100, seed=0, dtype=torch.float64)
    small = (model, x_T, model.exact_solution(x_T, t_end=T_END))
    nfes = [160, 320]
    official = convergence_errors(small, "unipc:order=3", nfes)
    full = convergence_errors(small, "unipc:order=3,lower_order_final=false", nfes)
    s_official, s_full = slope(nfes, official), slope(nfes, full)
    assert 1.8 < s_official < 2.5, f"official lower_order_final: slope {s_official:.2f}"
    assert s_full > 3.5, f"lower_order_final=false: slope {s_full:.2f}"
    assert full[1] < official[1] / 5


# -- agreement with DPM-Solver++ (an independent implementation in dpmbench) --------------------------------------


@pytest.mark.parametrize(("ours", "theirs"), [
    # UniP-2 with B2(h) = e^h - 1 and rho = 1/2 is DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2)
    ("unipc:order=2,variant=bh2,corrector=none,lower_order_final=false",
     "dpm-solver++:order=2,lower_order_final=false"),
    # UniP-3 integrates the quadratic interpolant exactly: the Taylor-consistent 3M, not the official 3M
    ("unipc:order=3,variant=bh2,corrector=none,lower_order_final=false",
     "dpm-solver++:order=3,order3_rule=taylor,lower_order_final=false"),
    # UniPC-2 (bh2) = DPM-Solver++(2M) + UniC-2 (bh2), the corrector written once
    ("unipc:order=2,variant=bh2,lower_order_final=false", "dpm-solver++:order=2,corrector=unic,unic_variant=bh2"),
    # noise prediction: UniP-2 (bh2) is multistep DPM-Solver-2 (r-weighted first difference)
    ("unipc:order=2,variant=bh2,prediction=eps,corrector=none,lower_order_final=false",
     "dpm-solver:order=2,method=multistep,lower_order_final=false"),
])
def test_unip_equals_dpm_solver(ours: str, theirs: str) -> None:
    model = load_model("gmm-digits")
    x_T = model.prior(32, seed=1, dtype=torch.float64)
    a, b = sample(model, ours, 12, x_T), sample(model, theirs, 12, x_T)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    if "order=3" in ours:  # the official 3M rule differs
        official = sample(model, theirs.replace("order3_rule=taylor,", ""), 12, x_T)
        assert float((official - a).abs().max()) > 1e-4


def test_order_conditions() -> None:
    """The solved coefficients satisfy Theorem 3.1's system, B(h) rho is independent of B when solved, and the
    official rho = 1/2 simplifications agree with the exact solution to O(h)."""
    rks, hh = [-1.3, -2.1, 1.0], -0.2
    for variant, b in [("bh1", hh), ("bh2", np.expm1(hh))]:
        rho = np.array(unipc_rhos(rks, hh, variant, corrector=True))
        big_r = np.array([[r**i for r in rks] for i in range(3)])
        np.testing.assert_allclose(big_r @ rho * b, phi_terms(hh, 3), rtol=1e-12)
    a = np.array(unipc_rhos(rks, hh, "bh1", True)) * hh
    b2 = np.array(unipc_rhos(rks, hh, "bh2", True)) * np.expm1(hh)
    np.testing.assert_allclose(a, b2, rtol=1e-12)
    # phi terms: g_k = hh phi_{k+1}(hh) k!, phi_2(h) = (e^h - 1 - h)/h^2, phi_3 = (e^h - 1 - h - h^2/2)/h^3
    g = phi_terms(hh, 2)
    assert abs(g[0] - (np.expm1(hh) - hh) / hh) < 1e-14
    assert abs(g[1] - 2 * (np.expm1(hh) - hh - hh**2 / 2) / hh**2) < 1e-13
    for h in [0.1, 0.01]:  # UniC-1 exact coefficient g_1/B -> 1/2 as h -> 0 (bh1: phi_2(h) = 1/2 + h/6 + ...)
        assert abs(phi_terms(-h, 1)[0] / -h - 0.5) < h / 5
    assert unipc_rhos([1.0], hh, "bh1", True) == [0.5] and unipc_rhos([-1.0], hh, "bh2", False) == [0.5]


# -- agreement with diffusers' UniPCMultistepScheduler ---------------------------------------------------------

schedulers = importlib.import_module("diffusers.schedulers")  # a pinned dependency (pyproject.toml)

# diffusers' set_timesteps calls np.array(tensor), which numpy 2 flags (not ours).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

N_TRAIN = 1000
BETA_START, BETA_END = 1e-4, 0.02
TOL = 1e-5
BATCH = 64


def _discrete_model(name: str = "gmm-2d") -> Model:
    return load_model(name, schedule=VPDiscrete(num_train_timesteps=N_TRAIN, beta_start=BETA_START,
                                                 beta_end=BETA_END, beta_schedule="linear"))


def _t_of(timestep: Any) -> float:
    """dpmbench time of diffusers' training step n: (n + 1) / N (VPDiscrete.t_of_index)."""
    return (int(timestep) + 1) / N_TRAIN


def _unipc_scheduler(steps: int, variant: str, order: int, predict_x0: bool = True, lower_order_final: bool = True,
                     disable_corrector: list[int] | None = None) -> Any:
    """diffusers' UniPCMultistepScheduler aligned with dpmbench's ``unipc``; every convention is stated here:

    * ``final_sigmas_type="sigma_min"``: the last step ends at alphas_cumprod[0] (t = 1/N), as the official code
      (t_0 = 1/N for discrete models); diffusers' default "zero" jumps to sigma = 0 instead (not in the paper).
    * ``lower_order_final``: same semantics on both sides (and in the official code): min(order, steps left) at
      every number of steps. (diffusers' docstring says "only valid for < 15 inference steps"; its code has no
      such guard, and neither has the official code.)
    * ``disable_corrector=[]``: the corrector after every step but the last, as the official code;
      ``disable_corrector=range(steps)`` is dpmbench ``corrector=none``. The last step is never corrected on
      either side (diffusers would correct it at the start of a next ``step`` call that never comes).
    * ``solver_p=None``: the UniP predictor (``solver_p`` replaces it by another scheduler: see
      ``test_diffusers_solver_p_data_prediction_discrepancy``).
    * ``solver_type`` = dpmbench ``variant`` (diffusers' default is bh2, the official code's bh1);
      ``predict_x0`` = ``prediction=x0``; ``solver_order`` = ``order``; thresholding, Karras/exponential/beta/flow
      sigmas and dynamic shifting off; "linspace" timestep spacing.
    * float64: the beta/alpha tables and the ``sigmas`` that ``set_timesteps`` stores in float32 are replaced by
      float64 values computed the diffusers way from the same float64 betas as dpmbench's VPDiscrete (checked
      against diffusers' float32 values). Unlike DPMSolverMultistepScheduler, UniPC's ``step`` does not cast the
      sample to float32, so agreement is at float64 round-off.
    """
    kwargs: dict[str, Any] = dict(
        num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        solver_order=order, prediction_type="epsilon", predict_x0=predict_x0, solver_type=variant,
        lower_order_final=lower_order_final, disable_corrector=list(disable_corrector or []), solver_p=None,
        final_sigmas_type="sigma_min", timestep_spacing="linspace", thresholding=False,
    )
    for off in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas",
                "use_dynamic_shifting", "rescale_betas_zero_snr"):
        kwargs[off] = False
    sch = schedulers.UniPCMultistepScheduler(**kwargs)
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(abar.float(), sch.alphas_cumprod, rtol=1e-5, atol=0)
    sch.betas, sch.alphas, sch.alphas_cumprod = betas, 1.0 - betas, abar
    sch.alpha_t, sch.sigma_t = abar.sqrt(), (1.0 - abar).sqrt()
    sch.lambda_t = torch.log(sch.alpha_t) - torch.log(sch.sigma_t)
    sch.set_timesteps(steps)
    assert len(sch.timesteps) == steps
    sig = ((1.0 - abar) / abar) ** 0.5
    sigmas = torch.cat([sig[sch.timesteps], sig[:1]])
    torch.testing.assert_close(sigmas.float(), sch.sigmas, rtol=1e-5, atol=0)
    sch.sigmas = sigmas
    return sch


def _run_diffusers(sch: Any, model: Model, x_T: torch.Tensor) -> torch.Tensor:
    x = x_T.clone()
    for n in sch.timesteps:
        x = sch.step(model.eps(x, _t_of(n)), n, x).prev_sample
    return x


def _times(sch: Any) -> list[float]:
    return [_t_of(n) for n in sch.timesteps] + [_t_of(0)]


def _rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(ours - theirs) / torch.linalg.vector_norm(theirs))


@pytest.mark.parametrize("steps", [5, 8, 20])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_diffusers(variant: str, order: int, steps: int) -> None:
    """UniPC-p, data prediction, same discrete grid: relative error < 1e-5 (measured ~1e-15)."""
    model = _discrete_model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _unipc_scheduler(steps, variant, order)
    theirs = _run_diffusers(sch, model, x_T)
    ours = sample(model, f"unipc:variant={variant},order={order}", steps, x_T, schedule=_times(sch))
    assert ours.dtype == theirs.dtype == torch.float64
    assert _rel_err(ours, theirs) < TOL


@pytest.mark.parametrize(("spec", "kwargs"), [
    ("unipc:variant=bh2,order=3,prediction=eps", dict(predict_x0=False)),
    ("unipc:variant=bh1,order=3,lower_order_final=false", dict(lower_order_final=False)),
    ("unipc:variant=bh2,order=2,corrector=none", dict(disable_corrector=list(range(10)))),
    ("unipc:variant=bh1,order=1", dict()),
])
def test_unipc_matches_diffusers_other_options(spec: str, kwargs: dict) -> None:
    """Noise prediction, no lowering of the final orders, no corrector, order 1; 10 steps, 64-D gmm-digits."""
    model = _discrete_model("gmm-digits")
    x_T = model.prior(BATCH, seed=1, dtype=torch.float64)
    sol = get_solver(spec)
    sch = _unipc_scheduler(10, sol.variant, sol.order, **kwargs)
    theirs = _run_diffusers(sch, model, x_T)
    assert _rel_err(sample(model, spec, 10, x_T, schedule=_times(sch)), theirs) < TOL


def test_unipc_diffusers_comparison_is_sensitive() -> None:
    """The comparison can fail: the other B(h), no corrector, or another order disagree with diffusers bh1/order 2."""
    model = _discrete_model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _unipc_scheduler(8, "bh1", 2)
    theirs, times = _run_diffusers(sch, model, x_T), _times(sch)
    assert _rel_err(sample(model, "unipc:variant=bh1,order=2", 8, x_T, schedule=times), theirs) < TOL
    for other in ["unipc:variant=bh2,order=2", "unipc:variant=bh1,order=2,corrector=none",
                  "unipc:variant=bh1,order=3", "unipc:variant=bh1,order=2,lower_order_final=false"]:
        assert _rel_err(sample(model, other, 8, x_T, schedule=times), theirs) > 10 * TOL, other


def _dpm_solver_p(steps: int, algorithm_type: str) -> Any:
    """diffusers' DPMSolverMultistepScheduler (order 2, "midpoint" = dpmbench solver_type=dpmsolver, last step to
    alphas_cumprod[0], lower_order_final below 15 steps) with the same float64 tables, as UniPC's ``solver_p``."""
    sch = schedulers.DPMSolverMultistepScheduler(
        num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        solver_order=2, prediction_type="epsilon", algorithm_type=algorithm_type, solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="sigma_min", thresholding=False, euler_at_final=False,
        use_lu_lambdas=False, use_karras_sigmas=False)
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    sch.betas, sch.alphas, sch.alphas_cumprod = betas, 1.0 - betas, abar
    sch.alpha_t, sch.sigma_t = abar.sqrt(), (1.0 - abar).sqrt()
    sch.lambda_t = torch.log(sch.alpha_t) - torch.log(sch.sigma_t)
    sch.set_timesteps(steps)
    sig = ((1.0 - abar) / abar) ** 0.5
    sch.sigmas = torch.cat([sig[sch.timesteps], sig[:1]])
    return sch


@pytest.mark.filterwarnings("ignore:`algorithm_types dpmsolver:FutureWarning")
def test_unic_on_dpm_solver_matches_diffusers_solver_p() -> None:
    """UniC on multistep DPM-Solver-2 (noise prediction) = diffusers' UniPC with ``solver_p`` = DPM-Solver-2M and
    ``predict_x0=False``, ``solver_type="bh2"`` (UniC-1 on the warm-up step uses B2), 20 steps (neither side lowers
    the last step). Agreement is limited by DPMSolverMultistepScheduler.step's float32 cast (measured 2.7e-7)."""
    model = _discrete_model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _unipc_scheduler(20, "bh2", 2, predict_x0=False)
    sch.solver_p = _dpm_solver_p(20, "dpmsolver")
    theirs = _run_diffusers(sch, model, x_T)
    spec = "dpm-solver:order=2,method=multistep,corrector=unic,unic_variant=bh2"
    assert _rel_err(sample(model, spec, 20, x_T, schedule=_times(sch)), theirs) < TOL
    bare = sample(model, "dpm-solver:order=2,method=multistep", 20, x_T, schedule=_times(sch))
    assert _rel_err(bare, theirs) > 100 * TOL


def test_diffusers_solver_p_data_prediction_discrepancy() -> None:
    """A documented discrepancy: with a data-prediction ``solver_p`` (dpmsolver++), diffusers hands ``solver_p`` the
    raw eps evaluated at the *predicted* x_t together with the *corrected* sample, so solver_p's history holds
    x0' = (x_t^c - sigma eps(x_t)) / alpha = x0(x_t) + (x_t^c - x_t) / alpha, a value the model never returned
    (the UniC history keeps x0(x_t)). The paper and the official code only ever use model outputs at evaluated
    points, and dpmbench follows them, so ``dpm-solver++:...,corrector=unic`` differs from diffusers (measured
    relative difference 0.11 at 20 steps). Emulating diffusers' x0' in the predictor's history reproduces diffusers
    to float32 round-off (measured 3.1e-7), which shows that this is the only difference."""
    from dpmbench.solvers.base import History

    model = _discrete_model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _unipc_scheduler(20, "bh2", 2, predict_x0=True)
    sch.solver_p = _dpm_solver_p(20, "dpmsolver++")
    theirs = _run_diffusers(sch, model, x_T)
    spec = "dpm-solver++:order=2,corrector=unic,unic_variant=bh2"
    ours = sample(model, spec, 20, x_T, schedule=_times(sch))
    assert _rel_err(ours, theirs) > 1e-2

    solver = get_solver(spec)

    def diffusers_like(counter: Any, x: torch.Tensor, plan: Any) -> torch.Tensor:
        hist_c, hist_p = History(2), History(2)  # UniC's history, solver_p's history
        x_prev = None
        for i, (s, t, order) in enumerate(zip(plan.points[:-1], plan.points[1:], plan.orders, strict=True)):
            out = solver.predict(counter, x, s, "x0")
            out_p = out
            if x_prev is not None:
                x_c = solver.correct(x_prev, x, hist_c, s, out, plan.orders[i - 1])
                out_p, x = out + (x_c - x) / s.alpha, x_c
            hist_c.push(s, out)
            hist_p.push(s, out_p)
            x_prev = x
            x = solver.update(x, hist_p, t, order)
        return x

    solver.solve = diffusers_like  # type: ignore[method-assign]
    emulated = sample(model, solver, 20, x_T, schedule=_times(sch))
    assert _rel_err(emulated, theirs) < TOL


# -- NFE accounting, specs ------------------------------------------------------------------------------------




@pytest.mark.parametrize("spec", ["unipc", "unipc:order=1", "unipc:variant=bh2,order=3", "unipc:order=3,prediction=eps",
                                  "unipc:corrector=none", "unipc:denoise_to_zero=true,order=3",
                                  "dpm-solver++:order=2,corrector=unic", "dpm-solver++:order=3,corrector=unic",
                                  "dpm-solver:order=3,method=multistep,corrector=unic"])
@pytest.mark.parametrize("nfe", [4, 5, 7, 10])
def test_unic_adds_no_nfe(spec: str, nfe: int) -> None:
    """UniC reuses the model output at the predicted point: every solver spends exactly its NFE (1 per step,
    + 1 for denoise_to_zero), unguided and guided (a guided evaluation = 1 NFE = 2 network calls)."""
    base = load_model("gmm-2d")
    x_T = base.prior(4, seed=0)
    model = CountingModel(base)
    out = sample(model, spec, nfe, x_T)
    assert model.calls == nfe and out.shape == x_T.shape and bool(torch.isfinite(out).all())
    model = CountingModel(base)
    sample(model, spec, nfe, x_T, guidance=7.5, cond=base.labels(4))
    assert model.calls == 2 * nfe


def test_corrector_changes_the_result_at_no_cost() -> None:
    """With and without UniC: the same NFE, different samples (the corrector is really applied)."""
    m = load_model("gmm-2d")
    x_T = m.prior(16, seed=0, dtype=torch.float64)
    for a, b in [("unipc", "unipc:corrector=none"), ("dpm-solver++", "dpm-solver++:corrector=unic")]:
        assert float((sample(m, a, 6, x_T) - sample(m, b, 6, x_T)).abs().max()) > 1e-4


@pytest.mark.parametrize(("spec", "message"), [
    ("dpm-solver++:order=2,method=singlestep,corrector=unic",
     "invalid option 'corrector' of solver 'dpm-solver++' 'unic' with method=singlestep"),
    ("dpm-solver:corrector=unic", "invalid option 'corrector' of solver 'dpm-solver' 'unic' with method=singlestep"),
    ("dpm-solver++:corrector=unipc",
     "invalid option 'corrector' of solver 'dpm-solver++' 'unipc'; allowed: none, unic"),
    ("unipc:variant=bh3", "invalid option 'variant' of solver 'unipc' 'bh3'; allowed: bh1, bh2"),
    ("unipc:order=4", "invalid option 'order' of solver 'unipc' '4'; allowed: 1, 2, 3"),
    ("unipc:prediction=v", "allowed: x0, eps"),
    ("unipc:corrector=yes", "allowed: unic, none"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(DpmbenchError) as err:
        get_solver(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_spec_defaults() -> None:
    s = get_solver("unipc")
    assert (s.variant, s.order, s.prediction, s.corrector, s.lower_order_final) == ("bh1", 2, "x0", "unic", True)
    assert get_solver("unipc:variant=bh1,order=2").spec == "unipc"
    assert get_solver("unipc:prediction=eps").prediction == "eps"
    assert get_solver("dpm-solver++").corrector == "none"
