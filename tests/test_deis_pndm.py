"""DEIS, PNDM and iPNDM: convergence orders, agreement with diffusers, NFE accounting.

Convergence: RMSE to the exact ODE solution on gmm-2d (float64, logSNR steps, t_end = 1e-3), slope of log RMSE
vs log NFE. Ranges: NFE 20..160 (the first 200 of the 500 samples of tests/test_convergence.py) where the method
is already in its asymptotic range, otherwise NFE 80..640 (the first 50; per-sample exact solutions do not depend on
the batch). The numbers below were measured with 500 (20..160) and 100 (80..640) samples.

Measured (this file asserts each):
* DEIS (``order`` = number of eps values, the paper's tAB-(order-1)): deis:order=1 1.02 (NFE 20..160, asserted
  there); order=2 1.83 over 20..160 (1.76, 1.84, 1.88), 1.93 over 80..640 (asserted there); order=3 2.47 over 20..160
  (successive doublings 2.28, 2.44, 2.71), 2.86 over 80..640 (2.75, 2.88, 2.94): third order, asserted over 80..640.
  method=rhoab order=3 2.85, method=logrho order=3 2.93 (80..640). order=4 (the default, tAB3): 3.16 over 20..160,
  3.89 over 80..640 (3.77, 3.92, 3.97).
* iPNDM, exact variable-step coefficients (= deis:method=rhoab,order=4): 3.77 over 80..640 (3.59, 3.81, 3.91);
  diff-sampler's ipndm_v weights (weights=diff-sampler): 2.57 (2.28, 2.60, 2.81); tests/test_official_conventions.py.
* iPNDM with the fixed equal-step coefficients (official DEIS ipndm, diff-sampler ipndm), PNDM (PRK warm-up) and
  PLMS (pseudo improved Euler warm-up): 2.01, 2.12, 2.02 over 80..640 -- second order. The fixed Adams-Bashforth
  weights multiply eps by the current step's Delta rho; they are the correct weights only for steps of equal
  length in rho, and on any other grid they leave an O(h^3) local error. On a rho-uniform grid fixed and
  variable-step iPNDM coincide (asserted), so the 4th-order claim holds there only.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pytest
import torch
from support import CountingModel, gmm2d_convergence_setup
from support import measured_order as support_measured_order

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model
from dpmbench.schedules import VPDiscrete, VPLinear
from dpmbench.solvers import get_solver
from dpmbench.solvers.base import Point
from dpmbench.solvers.deis import deis_coefficients
from dpmbench.solvers.pndm import transfer

T_END = 1e-3
EVEN = [20, 40, 80, 160]
HIGH = [80, 160, 320, 640]


# -- convergence orders ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup() -> tuple:
    return gmm2d_convergence_setup()




def measured_order(setup: tuple, spec: str, nfes: list[int]) -> tuple[float, list[float]]:
    model, x_T, ref = setup
    n = 50 if nfes[-1] > 200 else 200  # the first 200 samples (high-NFE ranges: 50), to keep the test fast
    return support_measured_order((model, x_T[:n], ref[:n]), spec, nfes)


ORDER_CASES = [
    ("deis:order=1", 1, EVEN),
    ("deis:order=2", 2, HIGH),
    ("deis:order=3", 3, HIGH),
    ("deis:order=3,method=rhoab", 3, HIGH),
    ("deis:order=3,method=logrho", 3, HIGH),
    # second order, as explained in the module docstring (fixed equal-step coefficients on a non-rho-uniform grid)
    ("ipndm", 2, HIGH),
    ("pndm", 2, HIGH),
    ("pndm:warmup=pie", 2, HIGH),
]


@pytest.mark.parametrize(("spec", "order", "nfes"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_convergence_order(setup: tuple, spec: str, order: int, nfes: list[int]) -> None:
    slope, errs = measured_order(setup, spec, nfes)
    assert abs(slope - order) < 0.3, f"{spec}: slope {slope:.2f}, errors {errs}"
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False))


def test_ipndm_variable_step_is_fourth_order(setup: tuple) -> None:
    """diff-sampler's variable-step iPNDM: slope >= 3.5 over NFE 80..640 (measured 3.77; last doubling 3.91)."""
    slope, errs = measured_order(setup, "ipndm:variable_step=true", HIGH)
    assert slope >= 3.5, f"slope {slope:.2f}, errors {errs}"
    last = math.log(errs[-2] / errs[-1]) / math.log(2)
    assert last > 3.7


def test_fixed_and_variable_ipndm_coincide_on_a_rho_uniform_grid() -> None:
    """The fixed AB weights are the variable-step ones exactly when the steps are equal in rho = sigma/alpha."""
    m = load_model("gmm-2d")
    sch = m.schedule
    rho = torch.linspace(math.exp(-sch.lambda_(1.0)), math.exp(-sch.lambda_(T_END)), 13, dtype=torch.float64)
    times = sch.t_of_lambda(-torch.log(rho))
    times[0], times[-1] = 1.0, T_END
    x_T = m.prior(64, seed=0, dtype=torch.float64)
    fixed = sample(m, "ipndm", 12, x_T, schedule=times)
    variable = sample(m, "ipndm:variable_step=true", 12, x_T, schedule=times)
    torch.testing.assert_close(fixed, variable, rtol=1e-10, atol=1e-10)
    logsnr = sch.t_of_lambda(torch.linspace(sch.lambda_(1.0), sch.lambda_(T_END), 13, dtype=torch.float64))
    logsnr[0], logsnr[-1] = 1.0, T_END
    assert _rel(sample(m, "ipndm", 12, x_T, schedule=logsnr),
                sample(m, "ipndm:variable_step=true", 12, x_T, schedule=logsnr)) > 1e-4


# -- DEIS coefficients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tab", "rhoab", "logrho"])
@pytest.mark.parametrize("schedule", [VPLinear(), VPDiscrete()], ids=["vp-linear", "vp-discrete"])
def test_deis_coefficients_integrate_polynomials_exactly(method: str, schedule: Any) -> None:
    """sum_j C_j p(v_j) = int p(v(tau)) d rho for every polynomial p of degree < order in the method's variable,
    checked against scipy's adaptive quadrature in rho (independent of the Gauss-Legendre/by-parts code)."""
    from scipy.integrate import quad

    hist = [0.52, 0.61, 0.73, 0.86]  # newest first (the sampler runs from t = 1 down)
    t_from, t_to = hist[0], 0.40
    rho = lambda t: math.exp(-schedule.lambda_(t))  # noqa: E731
    t_of_rho = lambda r: float(schedule.t_of_lambda(-math.log(r)))  # noqa: E731
    var = {"tab": lambda t: t, "rhoab": rho, "logrho": lambda t: math.log(rho(t))}[method]
    coef = deis_coefficients(method, schedule, hist, t_from, t_to)
    assert coef.dtype == np.float64 and len(coef) == 4
    for degree in range(4):
        nodes = [var(t) for t in hist]
        got = sum(c * v**degree for c, v in zip(coef, nodes, strict=True))
        points = None
        if isinstance(schedule, VPDiscrete):  # t(rho) has kinks at the knots
            points = [rho(float(k)) for k in schedule.t_array if t_to < k < t_from]
        exact, _ = quad(lambda r, d=degree: var(t_of_rho(r)) ** d, rho(t_from), rho(t_to), epsabs=1e-14, epsrel=1e-13,
                        limit=500, points=points)
        assert abs(got - exact) <= 1e-9 * max(1.0, abs(exact)), (method, degree, got, exact)


def test_deis_coefficients_are_cached_across_solver_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second sample() call (a new solver object) reuses the plan's coefficients: no quadrature, bit-identical
    samples; a schedule with other parameters (even one equal in ``key()``) and another method get their own."""
    from dpmbench.solvers import deis

    monkeypatch.setattr(deis, "_COEFFICIENTS", {})
    calls: list[tuple] = []
    real = deis.deis_coefficients
    monkeypatch.setattr(deis, "deis_coefficients", lambda *a: calls.append(a) or real(*a))
    m = load_model("gmm-2d-ddpm")
    x_T = m.prior(16, seed=0, dtype=torch.float64)
    first = sample(m, "deis:order=3", 8, x_T)
    fresh = len(calls)
    assert fresh == 8  # one quadrature per step
    again = sample(m, "deis:order=3", 8, x_T)
    assert torch.equal(first, again) and len(calls) == fresh  # cached, bit-identical
    monkeypatch.setattr(deis, "_COEFFICIENTS", {})
    assert torch.equal(sample(m, "deis:order=3", 8, x_T), first) and len(calls) == 2 * fresh  # = recomputed
    sample(m, "deis:order=3,method=rhoab", 8, x_T)
    assert len(calls) == 3 * fresh
    # the same kind and key() (N and the rounded sum of log alpha), other values: its own coefficients
    sch = m.schedule
    other = VPDiscrete(alphas_cumprod=sch.alphas_cumprod * (1 - 1e-15))
    assert other.key() == sch.key() and other.fingerprint() != sch.fingerprint()
    assert VPDiscrete().fingerprint() == VPDiscrete().fingerprint()  # equal parameters, one entry
    hist = (0.5, 0.6)
    a = deis.cached_deis_coefficients("tab", sch, hist, 0.5, 0.4)
    n = len(calls)
    b = deis.cached_deis_coefficients("tab", other, hist, 0.5, 0.4)
    assert len(calls) == n + 1  # not served from sch's entry
    assert a == tuple(real("tab", sch, list(hist), 0.5, 0.4).tolist())
    assert b == tuple(real("tab", other, list(hist), 0.5, 0.4).tolist())


def test_deis_logrho_equals_dpm_solver_multistep_taylor() -> None:
    """Lagrange extrapolation in lambda integrated exactly against e^{-lambda} is DPM-Solver's noise-prediction
    multistep rule with Taylor-consistent coefficients (solver_type=taylor; order3_rule=taylor at order 3)."""
    m = load_model("gmm-2d")
    x_T = m.prior(64, seed=0, dtype=torch.float64)
    for order in (2, 3):
        ours = sample(m, f"deis:order={order},method=logrho", 12, x_T)
        dpm = sample(m, f"dpm-solver:order={order},method=multistep,solver_type=taylor,order3_rule=taylor,"
                        "lower_order_final=false", 12, x_T)
        assert _rel(ours, dpm) < 1e-12
    assert _rel(sample(m, "deis:order=3,method=tab", 12, x_T), sample(m, "deis:order=3,method=logrho", 12, x_T)) > 1e-4


def test_ipndm_variable_step_equals_deis_rhoab_order_4() -> None:
    m = load_model("gmm-2d")
    x_T = m.prior(64, seed=0, dtype=torch.float64)
    torch.testing.assert_close(sample(m, "ipndm:variable_step=true", 15, x_T),
                               sample(m, "deis:order=4,method=rhoab", 15, x_T), rtol=1e-12, atol=1e-12)


def test_transfer_is_pndm_eq_9() -> None:
    """The rho form of the transfer part equals PNDM eq. (9) written with alpha-bar (VP schedule)."""
    sch = VPLinear()
    s, t = Point.at(sch, 0.7), Point.at(sch, 0.55)
    x, e = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([0.8, 0.1], dtype=torch.float64)
    a_s, a_t = s.alpha**2, t.alpha**2
    paper = (math.sqrt(a_t) / math.sqrt(a_s)) * x - (a_t - a_s) / (
        math.sqrt(a_s) * (math.sqrt((1 - a_t) * a_s) + math.sqrt((1 - a_s) * a_t))) * e
    torch.testing.assert_close(transfer(x, e, s, t), paper, rtol=1e-14, atol=1e-14)


# -- agreement with diffusers ----------------------------------------------------------------------------------

schedulers = importlib.import_module("diffusers.schedulers")
N_TRAIN, BETA_START, BETA_END, TOL, BATCH = 1000, 1e-4, 0.02, 1e-5, 64
# With float64 tables on both sides the agreement is at round-off (measured 8e-16 .. 4e-14), so besides the
# required TOL the tests assert STRICT; other variants on the same grid differ by > 1e-6 (sensitivity checks).
STRICT = 1e-12
# diffusers' DEIS coefficients call np.log on torch tensors, which numpy 2 flags (not ours).
pytestmark = [pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")]


def _rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(ours - theirs) / torch.linalg.vector_norm(theirs))


def _model() -> Model:
    return load_model("gmm-2d", schedule=VPDiscrete(num_train_timesteps=N_TRAIN, beta_start=BETA_START,
                                                     beta_end=BETA_END, beta_schedule="linear"))


def _t_of(n: Any) -> float:
    """dpmbench time of diffusers' discrete timestep n: (n + 1) / N."""
    return (int(n) + 1) / N_TRAIN


def _float64_tables(sch: Any) -> torch.Tensor:
    """Swap diffusers' float32 beta tables for float64 ones (computed the diffusers way; checked against theirs)."""
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(abar.float(), sch.alphas_cumprod, rtol=1e-5, atol=0)
    sch.betas, sch.alphas, sch.alphas_cumprod = betas, 1.0 - betas, abar
    return abar


def _run(sch: Any, model: Model, x_T: torch.Tensor) -> torch.Tensor:
    x = x_T.clone()
    for n in sch.timesteps:
        x = sch.step(model.eps(x, _t_of(n)), n, x).prev_sample
    return x


def _deis_scheduler(steps: int, order: int, lower_order_final: bool, spacing: str = "linspace") -> Any:
    """DEISMultistepScheduler (logrho); its float32 sigmas are recomputed in float64 and checked."""
    sch = schedulers.DEISMultistepScheduler(
        num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        solver_order=order, prediction_type="epsilon", algorithm_type="deis", solver_type="logrho",
        lower_order_final=lower_order_final, timestep_spacing=spacing, thresholding=False)
    abar = _float64_tables(sch)
    sch.set_timesteps(steps)
    sig = ((1.0 - abar) / abar) ** 0.5
    sigmas = torch.cat([sig[sch.timesteps], sig[:1]])  # the last step ends at alphas_cumprod[0]
    torch.testing.assert_close(sigmas.float(), sch.sigmas, rtol=1e-5, atol=0)
    sch.sigmas = sigmas
    return sch


# (steps, order, lower_order_final on both sides): diffusers and dpmbench's deis lower the final steps below 15.
DEIS_CASES = [(5, 1, True), (10, 2, True), (10, 3, True), (10, 3, False), (20, 2, True), (20, 3, True)]


@pytest.mark.parametrize("steps,order,lof", DEIS_CASES)
def test_deis_logrho_matches_diffusers(steps: int, order: int, lof: bool) -> None:
    model = _model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _deis_scheduler(steps, order, lof)
    times = [_t_of(n) for n in sch.timesteps] + [_t_of(0)]
    theirs = _run(sch, model, x_T)
    ours = sample(model, f"deis:order={order},method=logrho,lower_order_final={str(lof).lower()}", steps, x_T,
                  schedule=times)
    assert ours.dtype == theirs.dtype == torch.float64
    assert _rel(ours, theirs) < TOL and _rel(ours, theirs) < STRICT


def test_deis_diffusers_comparison_is_sensitive() -> None:
    """diffusers' logrho is not tAB or rhoAB: those disagree with it on the same grid (and so does order 2 vs 3)."""
    model = _model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _deis_scheduler(20, 3, True)
    times = [_t_of(n) for n in sch.timesteps] + [_t_of(0)]
    theirs = _run(sch, model, x_T)
    for spec in ("deis:order=3,method=tab", "deis:order=3,method=rhoab", "deis:order=2,method=logrho"):
        assert _rel(sample(model, spec, 20, x_T, schedule=times), theirs) > 1e-2, spec  # measured 0.25, 0.25, 0.03


def _pndm_scheduler(steps: int, skip_prk: bool) -> Any:
    """PNDMScheduler, "leading" spacing with steps_offset=1 (with 0 its last step, from index 0 to
    alphas_cumprod[0], has zero length), set_alpha_to_one=False: the last step ends at alphas_cumprod[0]."""
    sch = schedulers.PNDMScheduler(
        num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        skip_prk_steps=skip_prk, set_alpha_to_one=False, prediction_type="epsilon", timestep_spacing="leading",
        steps_offset=1)
    sch.final_alpha_cumprod = _float64_tables(sch)[0]
    sch.set_timesteps(steps)
    return sch


def _pndm_times(sch: Any) -> list[float]:
    """The step grid: diffusers' _timesteps (ascending), reversed, then alphas_cumprod[0] (t = 1/N)."""
    return [_t_of(n) for n in sch._timesteps[::-1]] + [_t_of(0)]


# PRK's midpoint: diffusers evaluates at timestep - (N // steps) // 2, which is the midpoint in t only when
# N // steps is even (steps 7, 10, 15, 20, 25: 142, 100, 66, 50, 40); dpmbench takes the midpoint in t.
@pytest.mark.parametrize("steps", [7, 10, 15, 20, 25])
def test_pndm_prk_matches_diffusers(steps: int) -> None:
    model = _model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _pndm_scheduler(steps, skip_prk=False)
    assert len(sch.timesteps) == steps + 9  # 3 PRK steps x 4 + (steps - 3) PLMS calls
    theirs = _run(sch, model, x_T)
    ours = sample(model, "pndm", steps + 9, x_T, schedule=_pndm_times(sch))
    assert _rel(ours, theirs) < TOL and _rel(ours, theirs) < STRICT
    assert _rel(sample(model, "ipndm", steps, x_T, schedule=_pndm_times(sch)), theirs) > 1e-6  # other warm-up


def test_pndm_prk_midpoint_convention() -> None:
    """With N // steps odd (9 steps: 111), diffusers' PRK evaluates its "midpoint" at timestep - 55, dpmbench at the
    midpoint in t (timestep - 55.5): a convention difference, measured 1.0e-4 relative; 7 and 15 steps (142, 66)
    agree to round-off."""
    model = _model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _pndm_scheduler(9, skip_prk=False)
    err = _rel(sample(model, "pndm", 18, x_T, schedule=_pndm_times(sch)), _run(sch, model, x_T))
    assert 1e-6 < err < 1e-3


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_pndm_pie_matches_diffusers_skip_prk(steps: int) -> None:
    """diffusers' skip_prk_steps=True (latent diffusion's PLMS): pseudo improved Euler first step (2 NFE), then
    AB2, AB3, AB4 -- dpmbench ``pndm:warmup=pie``."""
    model = _model()
    x_T = model.prior(BATCH, seed=0, dtype=torch.float64)
    sch = _pndm_scheduler(steps, skip_prk=True)
    assert len(sch.timesteps) == steps + 1
    theirs = _run(sch, model, x_T)
    ours = sample(model, "pndm:warmup=pie", steps + 1, x_T, schedule=_pndm_times(sch))
    assert _rel(ours, theirs) < TOL and _rel(ours, theirs) < STRICT
    assert _rel(sample(model, "ipndm", steps, x_T, schedule=_pndm_times(sch)), theirs) > 1e-6  # other warm-up


# -- NFE accounting -----------------------------------------------------------------------------------------




SPECS = ["deis", "deis:order=1", "deis:order=2,method=rhoab", "deis:order=3,method=logrho,lower_order_final=true",
         "ipndm", "ipndm:variable_step=true,max_order=3", "pndm", "pndm:warmup=pie"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("nfe", [1, 2, 5, 12, 13, 20])
def test_nfe_accounting(spec: str, nfe: int) -> None:
    base = load_model("gmm-2d")
    x_T = base.prior(4, seed=0)
    solver = get_solver(spec)
    if nfe < solver.min_nfe():
        with pytest.raises(DpmbenchError, match=f"invalid nfe {nfe} for solver"):
            sample(base, spec, nfe, x_T)
        return
    model = CountingModel(base)
    out = sample(model, spec, nfe, x_T)
    assert model.calls == nfe and bool(torch.isfinite(out).all())
    model = CountingModel(base)
    sample(model, spec, nfe, x_T, guidance=7.5, cond=base.labels(4))
    assert model.calls == 2 * nfe


def test_budget_to_steps() -> None:
    sch = VPLinear()
    assert len(get_solver("pndm").plan(12, sch).orders) == 3  # PRK steps only
    assert len(get_solver("pndm").plan(20, sch).orders) == 11  # 3 PRK (12 NFE) + 8 PLMS
    assert get_solver("pndm").min_nfe() == 12 and get_solver("pndm:warmup=pie").min_nfe() == 2
    assert len(get_solver("pndm:warmup=pie").plan(20, sch).orders) == 19
    assert get_solver("ipndm").plan(6, sch).orders == [1, 2, 3, 4, 4, 4]
    assert get_solver("deis:order=3").plan(6, sch).orders == [1, 2, 3, 3, 3, 3]  # official: no lower-order final
    assert get_solver("deis:order=3,lower_order_final=true").plan(6, sch).orders == [1, 2, 3, 3, 2, 1]
    assert get_solver("deis:order=3,lower_order_final=true").plan(15, sch).orders[-1] == 3  # diffusers: below 15
    with pytest.raises(DpmbenchError, match="allowed: tab, rhoab, logrho"):
        get_solver("deis:method=tAB")
