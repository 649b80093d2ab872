"""Stochastic solvers (ddpm, SDE-DPM-Solver++ 2M, SA-Solver) and the adaptive DPM-Solver.

* Noise is drawn only through ``model.noise(step)``: results are bit-identical for the same seed and whatever the
  batching (Python API and CLI ``--batch-size``).
* SA-Solver with tau = 0 is a deterministic multistep method: its measured convergence order, and agreement with
  diffusers' ``SASolverScheduler`` (also with tau = 1 and the same noise fed in).
* SDE solvers sample the right distribution: Frechet distance to the true gmm-2d moments, decreasing with NFE;
  SDE-DPM-Solver++ 2M agrees with diffusers' ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")``
  given the same noise (``variance_noise``).
* Adaptive DPM-Solver-12/23: accuracy vs the exact ODE solution, and the NFE-cap contract.

The diffusers comparisons align conventions exactly as tests/test_diffusers_agreement.py does (float64 tables,
t = (n + 1) / 1000, last step to alphas_cumprod[0]).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import gmm2d_convergence_setup, measured_order

from dpmbench import load_model, sample
from dpmbench.cli import main
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NoiseSource
from dpmbench.schedules import VPDiscrete
from dpmbench.solvers.registry import get_solver
from evaluators.frechet import frechet_distance, moments

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

T_END = 1e-3
SA_CONST = "sa-solver:tau=1,tau_t_min=0,tau_t_max=1"  # constant tau = 1 (the SDE) on the whole interval
STOCHASTIC = ["ddpm", "dpm-solver++:sde=true", "dpm-solver++:sde=true,solver_type=taylor", "sa-solver", SA_CONST,
              "sa-solver:predictor_order=3,corrector_order=3"]


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt())


# -- determinism -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", STOCHASTIC)
def test_same_seed_same_samples_whatever_the_batching(spec: str) -> None:
    model = load_model("gmm-2d")
    assert get_solver(spec).stochastic
    n = 30
    x_T = model.prior(n, seed=0, dtype=torch.float64)
    full = sample(model, spec, 8, x_T, t_end=T_END, seed=3)
    assert torch.equal(full, sample(model, spec, 8, x_T, t_end=T_END, seed=3))
    parts = [sample(model, spec, 8, x_T[lo:lo + 7], t_end=T_END, seed=3, start=lo) for lo in range(0, n, 7)]
    assert torch.equal(full, torch.cat(parts))
    other = sample(model, spec, 8, x_T, t_end=T_END, seed=4)  # the noise is really used
    assert _rmse(other, full) > 1e-3


def run_cli(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize("spec", ["ddpm", "sa-solver"])
def test_cli_batch_size_does_not_change_stochastic_samples(tmp_path: Path, spec: str) -> None:
    args = ["sample", "--model", "gmm-digits", "--solver", spec, "--nfe", "6", "--num-samples", "40", "--seed", "1"]
    assert run_cli(*args, "--out", str(tmp_path / "a.npz")) == 0
    assert run_cli(*args, "--batch-size", "7", "--out", str(tmp_path / "b.npz")) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["x"], b["x"])
    assert int(a["nfe_used"]) == 6


def test_noise_only_for_stochastic_solvers() -> None:
    assert not get_solver("sa-solver:tau=0").stochastic
    assert not get_solver("dpm-solver++").stochastic
    with pytest.raises(DpmbenchError, match="sde=true allows method=multistep, order 1, 2"):
        get_solver("dpm-solver++:sde=true,order=3")
    with pytest.raises(DpmbenchError, match="sde=true allows method=multistep, order 1, 2"):
        get_solver("dpm-solver++:sde=true,method=singlestep")


def test_ddpm_posterior_equals_sde_dpm_solver_pp_1_and_sa_solver_1() -> None:
    """Three independently written first-order stochastic updates are the same map: the DDPM posterior
    q(x_t | x_s, x0) (ddpm), SDE-DPM-Solver++1 and SA-Solver with orders 1/none and tau = 1."""
    model = load_model("gmm-2d")
    x_T = model.prior(200, seed=0, dtype=torch.float64)
    ddpm = sample(model, "ddpm", 12, x_T, t_end=T_END, seed=5)
    sde1 = sample(model, "dpm-solver++:sde=true,order=1", 12, x_T, t_end=T_END, seed=5)
    sa1 = sample(model, SA_CONST + ",predictor_order=1,corrector_order=0", 12, x_T, t_end=T_END, seed=5)
    assert _rmse(ddpm, sde1) < 1e-12 and _rmse(sa1, sde1) < 1e-12


# -- SA-Solver with tau = 0: a deterministic multistep method --------------------------------------------


@pytest.fixture(scope="module")
def exact() -> tuple:
    return gmm2d_convergence_setup(300)


NFES = [20, 40, 80, 160]


def test_sa_solver_tau0_is_deterministic_and_second_order(exact: tuple) -> None:
    """The default (predictor 2, corrector 2) at tau = 0: slope ~2 over NFE 20..160."""
    model, x_T, _ = exact
    spec = "sa-solver:tau=0"
    assert torch.equal(sample(model, spec, 10, x_T, t_end=T_END, seed=0),
                       sample(model, spec, 10, x_T, t_end=T_END, seed=1))
    slope, errs = measured_order(exact, spec, NFES)
    assert abs(slope - 2) < 0.3, f"slope {slope:.2f}, errors {errs}"
    # the corrector helps: the predictor alone is worse at every NFE
    _, alone = measured_order(exact, spec + ",corrector_order=0", NFES)
    assert all(e < a for e, a in zip(errs, alone, strict=True))


def test_sa_solver_tau0_third_order(exact: tuple) -> None:
    """Predictor order 3 is third order without lower_order_final (whose final order-1 step, always taken by
    diffusers' scheduler, leaves an O(h^2) local error: with it, p = c = 3 measures local slopes 3.6 -> 2.3 from
    NFE 20 to 320); the corrector of order 3 lowers the error further."""
    spec = "sa-solver:tau=0,predictor_order=3,corrector_order=0,lower_order_final=false"
    slope, errs = measured_order(exact, spec, NFES)
    assert abs(slope - 3) < 0.3, f"slope {slope:.2f}, errors {errs}"
    slope_pc, errs_pc = measured_order(exact, spec.replace("corrector_order=0", "corrector_order=3"), NFES)
    assert slope_pc > 2.7 and all(e < a for e, a in zip(errs_pc, errs, strict=True)), (slope_pc, errs_pc)


# -- diffusers agreement ------------------------------------------------------------------------------------

N_TRAIN, BETA_START, BETA_END, TOL = 1000, 1e-4, 0.02, 1e-5


def _t_of(n: Any) -> float:
    return (int(n) + 1) / N_TRAIN


def _disc_model() -> Any:
    return load_model("gmm-2d", schedule=VPDiscrete(num_train_timesteps=N_TRAIN, beta_start=BETA_START,
                                                    beta_end=BETA_END, beta_schedule="linear"))


def _float64(sch: Any, steps: int) -> None:
    """float64 alpha tables (checked against diffusers' float32 ones), set_timesteps, float64 sigmas ending at
    alphas_cumprod[0] (diffusers' last sigma)."""
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(abar.float(), sch.alphas_cumprod, rtol=1e-5, atol=0)
    sch.betas, sch.alphas, sch.alphas_cumprod = betas, 1.0 - betas, abar
    sch.set_timesteps(steps)
    sig = ((1.0 - abar) / abar) ** 0.5
    sigmas = torch.cat([sig[sch.timesteps], sig[:1]])
    torch.testing.assert_close(sigmas.float(), sch.sigmas, rtol=1e-5, atol=0)
    sch.sigmas = sigmas


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("steps,tau,orders", [(10, 0.0, (2, 2)), (20, 0.0, (3, 3)), (7, 0.0, (1, 1)),
                                              (12, 1.0, (2, 2)), (15, 1.0, (3, 2))])
def test_sa_solver_matches_diffusers(monkeypatch: pytest.MonkeyPatch, steps: int, tau: float,
                                     orders: tuple[int, int]) -> None:
    """SASolverScheduler (data prediction) vs sa-solver on the same timesteps; with tau = 1 diffusers' noise
    draws (``randn_tensor``) are replaced by dpmbench's noise of the same step."""
    sasolver = importlib.import_module("diffusers.schedulers.scheduling_sasolver")
    model = _disc_model()
    x_T = model.prior(64, seed=0, dtype=torch.float64)
    p, c = orders
    sch = sasolver.SASolverScheduler(num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END,
                                     beta_schedule="linear", predictor_order=p, corrector_order=c,
                                     tau_func=lambda t: tau, algorithm_type="data_prediction",
                                     lower_order_final=True, prediction_type="epsilon")
    _float64(sch, steps)
    noise = NoiseSource(0, 0, x_T)
    draws = iter(range(steps))
    monkeypatch.setattr(sasolver, "randn_tensor", lambda *a, **k: noise(next(draws)))
    x = x_T.clone()
    for n in sch.timesteps:
        x = sch.step(model.eps(x, _t_of(n)), n, x).prev_sample
    times = [_t_of(n) for n in sch.timesteps] + [_t_of(0)]
    spec = f"sa-solver:tau={tau},tau_t_min=0,tau_t_max=1,predictor_order={p},corrector_order={c}"
    ours = sample(model, spec, steps, x_T, schedule=times, seed=0)
    assert _rel(ours, x) < TOL
    other = f"sa-solver:tau={tau},tau_t_min=0,tau_t_max=1,predictor_order={p},corrector_order={max(c - 1, 0)}"
    assert _rel(sample(model, other, steps, x_T, schedule=times, seed=0), x) > 100 * TOL  # sensitive


@pytest.mark.parametrize("steps,solver_type", [(10, "midpoint"), (20, "midpoint"), (20, "heun")])
def test_sde_dpm_solver_pp_2m_matches_diffusers(steps: int, solver_type: str) -> None:
    schedulers = importlib.import_module("diffusers.schedulers")
    model = _disc_model()
    x_T = model.prior(64, seed=0, dtype=torch.float64)
    sch = schedulers.DPMSolverMultistepScheduler(
        num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        solver_order=2, prediction_type="epsilon", algorithm_type="sde-dpmsolver++", solver_type=solver_type,
        lower_order_final=False, final_sigmas_type="sigma_min", euler_at_final=False, use_karras_sigmas=False,
        use_lu_lambdas=False, thresholding=False)
    _float64(sch, steps)
    noise = NoiseSource(0, 0, x_T)
    x = x_T.clone()
    for k, n in enumerate(sch.timesteps):
        x = sch.step(model.eps(x, _t_of(n)), n, x, variance_noise=noise(k)).prev_sample
    times = [_t_of(n) for n in sch.timesteps] + [_t_of(0)]
    ours_type = {"midpoint": "dpmsolver", "heun": "taylor"}[solver_type]
    spec = f"dpm-solver++:sde=true,solver_type={ours_type},lower_order_final=false"
    ours = sample(model, spec, steps, x_T, schedule=times, seed=0)
    assert _rel(ours, x) < TOL
    assert _rel(sample(model, spec, steps, x_T, schedule=times, seed=1), x) > 100 * TOL  # noise matters


def test_ddpm_matches_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDPMScheduler (variance_type="fixed_small", i.e. the posterior variance, clip_sample off) on custom
    timesteps 999, 899, ..., 99 with dpmbench's noise of step k fed to its step k; diffusers' last step (to
    alpha = 1, no noise) is left out: 9 steps from t(999) to t(99) on both sides."""
    ddpm = importlib.import_module("diffusers.schedulers.scheduling_ddpm")
    model = _disc_model()
    x_T = model.prior(64, seed=0, dtype=torch.float64)
    sch = ddpm.DDPMScheduler(num_train_timesteps=N_TRAIN, beta_start=BETA_START, beta_end=BETA_END,
                             beta_schedule="linear", variance_type="fixed_small", clip_sample=False,
                             prediction_type="epsilon")
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(abar.float(), sch.alphas_cumprod, rtol=1e-5, atol=0)
    sch.betas, sch.alphas, sch.alphas_cumprod = betas, 1.0 - betas, abar
    sch.one = torch.tensor(1.0, dtype=torch.float64)
    sch.set_timesteps(timesteps=list(range(999, 0, -100)))
    noise = NoiseSource(0, 0, x_T)
    draws = iter(range(10))
    monkeypatch.setattr(ddpm, "randn_tensor", lambda *a, **k: noise(next(draws)))
    x = x_T.clone()
    for n in sch.timesteps[:-1]:
        x = sch.step(model.eps(x, _t_of(n)), n, x).prev_sample
    times = [_t_of(n) for n in sch.timesteps]
    ours = sample(model, "ddpm", 9, x_T, schedule=times, seed=0)
    assert _rel(ours, x) < TOL
    assert _rel(sample(model, "ddpm", 9, x_T, schedule=times, seed=1), x) > 100 * TOL


def test_rmse_exact_is_not_computed_for_stochastic_samples() -> None:
    from evaluators.registry import evaluate

    x = np.random.default_rng(0).normal(size=(50, 2))
    values, _, info = evaluate(["rmse_exact", "fd_true"], x, {"model": "gmm-2d", "stochastic": True}, x,
                               bootstraps=10)
    assert list(values) == ["fd_true"] and info["not_applicable"] == ["rmse_exact"]
    values, _, _ = evaluate(["rmse_exact", "fd_true"], x, {"model": "gmm-2d", "stochastic": False}, x,
                            bootstraps=10)
    assert values["rmse_exact"] == 0.0


# -- distributional correctness -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many() -> tuple:
    model = load_model("gmm-2d")
    mu, cov = model.data_moments()
    return model, model.prior(10000, seed=0, dtype=torch.float64), mu.numpy(), cov.numpy()


@pytest.mark.parametrize("spec,low,high", [("ddpm", 20, 160), ("dpm-solver++:sde=true", 10, 40),
                                           ("sa-solver", 10, 40), (SA_CONST, 10, 40)])
def test_sde_samples_have_the_data_distribution(many: tuple, spec: str, low: int, high: int) -> None:
    """Frechet distance of 10k samples to the true moments: decreasing with NFE, and small at high NFE
    (the Monte-Carlo floor with 10k samples is ~1e-4)."""
    model, x_T, mu, cov = many
    fds = [frechet_distance(*moments(sample(model, spec, n, x_T, t_end=T_END, seed=0).numpy()), mu, cov)
           for n in (low, high)]
    assert fds[1] < fds[0], fds
    assert fds[1] < 5e-4, fds


# -- adaptive DPM-Solver ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["dpm-solver:method=adaptive", "dpm-solver++:method=adaptive",
                                  "dpm-solver++:method=adaptive,order=3"])
def test_adaptive_reaches_tolerance_and_reports_nfe(exact: tuple, spec: str) -> None:
    model, x_T, ref = exact
    stats: dict[str, Any] = {}
    x = sample(model, spec, 1000, x_T, t_end=T_END, stats=stats)
    err = _rmse(x, ref)
    assert err < 0.0078, (err, stats)  # atol (data of scale ~1: rtol * |x| is of the same size)
    assert 0 < stats["nfe_used"] < 1000 and not stats["budget_exhausted"]
    order = get_solver(spec).order
    assert stats["nfe_used"] == order * (stats["steps_accepted"] + stats["steps_rejected"])
    tight: dict[str, Any] = {}
    x_tight = sample(model, spec + ",rtol=0.005,atol=0.0005", 1000, x_T, t_end=T_END, stats=tight)
    assert _rmse(x_tight, ref) < err and tight["nfe_used"] > stats["nfe_used"]


def test_adaptive_nfe_is_a_cap(exact: tuple) -> None:
    """The budget is a cap: with a cap below what the tolerance needs the solver still ends at t_end, uses at
    most the cap and says the budget was exhausted; the fixed-step contract (exact NFE) is unchanged."""
    model, x_T, ref = exact
    free: dict[str, Any] = {}
    sample(model, "dpm-solver++:method=adaptive", 1000, x_T, t_end=T_END, stats=free)
    capped: dict[str, Any] = {}
    x = sample(model, "dpm-solver++:method=adaptive", 20, x_T, t_end=T_END, stats=capped)
    assert free["nfe_used"] > 20 >= capped["nfe_used"] > 20 - 2 * 2 and capped["budget_exhausted"]
    assert torch.isfinite(x).all() and _rmse(x, ref) < 1.0
    with pytest.raises(DpmbenchError, match="needs an integer >= 3"):
        sample(model, "dpm-solver:method=adaptive", 2, x_T)
    with pytest.raises(DpmbenchError, match="allowed: 2, 3"):
        get_solver("dpm-solver:method=adaptive,order=1")
    fixed: dict[str, Any] = {}
    sample(model, "ddpm", 7, x_T, stats=fixed)
    assert fixed["nfe_used"] == 7


def test_sa_solver_weights_are_memoized_bit_identically() -> None:
    """The Adams weights of a plan are computed once per process (across steps, calls and solver objects): a run
    served from the memo equals, bit for bit, a run that computes every weight afresh."""
    from dpmbench.solvers.sa_solver import adams_weights

    m = load_model("gmm-2d-ddpm")
    x_T = m.prior(16, seed=0)
    adams_weights.cache_clear()
    fresh = sample(m, "sa-solver:predictor_order=3,corrector_order=3", 9, x_T, seed=4)
    computed = adams_weights.cache_info().misses
    assert computed > 0
    again = sample(m, "sa-solver:predictor_order=3,corrector_order=3", 9, x_T, seed=4)
    info = adams_weights.cache_info()
    assert info.misses == computed and info.hits >= computed  # nothing recomputed
    assert torch.equal(fresh, again)
