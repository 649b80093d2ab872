"""Oracle models: the closed-form denoiser against autograd of the diffused density, moments, guidance,
and the exact probability-flow ODE solution against an independent integrator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from dpmbench import load_model
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Guided, convert_prediction, guided, prior_noise
from dpmbench.models.exact import exact_solution, solve_probability_flow

ORACLES = ["gmm-2d", "gmm-digits", "digits-empirical"]


def _log_density_t(model, x: torch.Tensor, t: float, cls: int | None = None) -> torch.Tensor:
    """log p_t(x) of the diffused mixture, computed directly (independent of the model code)."""
    a, s = model.schedule.alpha(t), model.schedule.sigma(t)
    keep = torch.ones(len(model.means), dtype=torch.bool) if cls is None else model.classes == cls
    mu, logw = model.means[keep], model.log_w[keep]
    d = mu.shape[1]
    if model.covs is None:
        cov = torch.eye(d, dtype=torch.float64).expand(len(mu), d, d) * s**2
    else:
        cov = a**2 * model.covs[keep] + s**2 * torch.eye(d, dtype=torch.float64)
    comp = torch.distributions.MultivariateNormal(a * mu, covariance_matrix=cov)
    lp = comp.log_prob(x.reshape(len(x), 1, d)) + logw
    return torch.logsumexp(lp, dim=1)


@pytest.mark.parametrize("name", ORACLES)
@pytest.mark.parametrize("t", [0.9, 0.3, 0.05])
def test_eps_is_minus_sigma_times_score(name: str, t: float) -> None:
    model = load_model(name)
    x = (model.prior(6, seed=3, dtype=torch.float64) * 0.5).reshape(6, -1).requires_grad_(True)
    if name == "digits-empirical":  # keep only a few hundred points for the autograd reference
        model.means, model.log_w, model.classes = model.means[:300], model.log_w[:300], model.classes[:300]
        model._device_cache.clear()
    score = torch.autograd.grad(_log_density_t(model, x, t).sum(), x)[0]
    eps = model.eps(x.detach().reshape(6, *model.shape), t).reshape(6, -1)
    torch.testing.assert_close(eps, -model.schedule.sigma(t) * score, rtol=1e-7, atol=1e-9)
    # class-conditional: the score of the class's mixture
    cls = 1
    score_c = torch.autograd.grad(_log_density_t(model, x, t, cls).sum(), x)[0]
    eps_c = model.eps(x.detach().reshape(6, *model.shape), t, cond=torch.full((6,), cls)).reshape(6, -1)
    torch.testing.assert_close(eps_c, -model.schedule.sigma(t) * score_c, rtol=1e-7, atol=1e-9)


def test_float32_inputs_keep_their_dtype_and_per_sample_times() -> None:
    model = load_model("gmm-digits")
    x = model.prior(5, seed=0)
    assert model.x0(x, 0.5).dtype == torch.float32
    t = torch.tensor([0.9, 0.5, 0.1, 0.05, 0.01], dtype=torch.float64)
    batched = model.x0(x.double(), t)
    single = torch.cat([model.x0(x[i : i + 1].double(), float(t[i])) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)


def test_data_moments_match_sampling() -> None:
    model = load_model("gmm-2d")
    g = torch.Generator().manual_seed(0)
    w = torch.exp(model.log_w)
    comp = torch.multinomial(w, 200_000, replacement=True, generator=g)
    chol = torch.linalg.cholesky(model.covs)
    z = torch.randn(200_000, 2, dtype=torch.float64, generator=g)
    xs = model.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)
    mu, cov = model.data_moments()
    torch.testing.assert_close(xs.mean(0), mu, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(xs.T), cov, atol=0.01, rtol=0)
    # conditional moments: class 2 only
    mu2, _ = model.data_moments(torch.full((10,), 2))
    keep = model.classes == 2
    wk = w[keep] / w[keep].sum()
    torch.testing.assert_close(mu2, wk @ model.means[keep])


def test_digits_models_are_fitted_to_sklearn_digits() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    emp = load_model("digits-empirical")
    assert emp.shape == (1, 8, 8) and emp.num_classes == 10 and len(emp.means) == 1797
    np.testing.assert_allclose(emp.means.numpy(), d.data / 8.0 - 1.0)
    gmm = load_model("gmm-digits")
    np.testing.assert_allclose(gmm.means[3].numpy(), (d.data[d.target == 3] / 8.0 - 1.0).mean(0), atol=1e-12)


def test_prior_is_shard_invariant_and_seeded() -> None:
    full = prior_noise(3000, (2,), seed=5)
    parts = torch.cat([prior_noise(n, (2,), seed=5, start=s) for s, n in [(0, 7), (7, 1500), (1507, 1493)]])
    assert torch.equal(full, parts)
    assert not torch.equal(full, prior_noise(3000, (2,), seed=6))
    m = load_model("gmm-digits")
    assert torch.equal(m.prior(10, seed=1), prior_noise(10, (1, 8, 8), seed=1).float())


def test_guidance_wrapper() -> None:
    model = load_model("gmm-2d")
    x, t, c = model.prior(8, seed=0, dtype=torch.float64), 0.4, model.labels(8)
    e_u, e_c = model.eps(x, t), model.eps(x, t, c)
    torch.testing.assert_close(guided(model, 7.5).eps(x, t, c), e_u + 7.5 * (e_c - e_u))
    torch.testing.assert_close(guided(model, 1.0).eps(x, t, c), e_c)
    assert isinstance(guided(model, 2.0), Guided) and guided(model, None) is model
    with pytest.raises(DpmbenchError, match="guided sampling needs class labels"):
        guided(model, 2.0).eps(x, t)
    assert model.labels(6, start=9).tolist() == [1, 2, 3, 0, 1, 2]


def test_convert_prediction_roundtrip() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    a, s = 0.6, 0.8
    x = a * x0 + s * eps
    v = a * eps - s * x0
    torch.testing.assert_close(convert_prediction(v, "v", "x0", x, a, s), x0)
    torch.testing.assert_close(convert_prediction(v, "v", "eps", x, a, s), eps)
    torch.testing.assert_close(convert_prediction(eps, "eps", "x0", x, a, s), x0)
    torch.testing.assert_close(convert_prediction(x0, "x0", "eps", x, a, s), eps)
    tf = 0.3  # flow: alpha = 1 - t, sigma = t, velocity u = eps - x0
    xf = (1 - tf) * x0 + tf * eps
    torch.testing.assert_close(convert_prediction(eps - x0, "flow", "x0", xf, 1 - tf, tf), x0)


def _ivp_in_t(model, x_T: torch.Tensor, t0: float, t1: float, cond=None) -> np.ndarray:
    """Independent reference: scipy's DOP853 on dx/dt = f(t) x - g(t)^2/2 score, in the original time t."""
    sch = model.schedule
    b0, b1 = sch.beta_0, sch.beta_1

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        beta = b0 + t * (b1 - b0)
        x = torch.tensor(y).reshape(1, *x_T.shape[1:])
        eps = model.eps(x, t, cond).reshape(-1).numpy()
        return -0.5 * beta * y + 0.5 * beta * eps / sch.sigma(t)

    out = []
    for i in range(len(x_T)):
        r = solve_ivp(rhs, (t0, t1), x_T[i].reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
        out.append(r.y[:, -1])
    return np.stack(out)


@pytest.mark.parametrize("name", ["gmm-2d", "gmm-digits", "digits-empirical"])
def test_exact_solution_against_independent_integrator(name: str) -> None:
    model = load_model(name)
    x_T = model.prior(3, seed=11, dtype=torch.float64)
    ours = exact_solution(model, x_T, t_end=1e-3, cache=False).reshape(3, -1).numpy()
    ref = _ivp_in_t(model, x_T, 1.0, 1e-3)
    assert np.abs(ours - ref).max() < 1e-8


def test_exact_solution_tolerance_batch_and_cache() -> None:
    model = load_model("gmm-digits")
    x_T = model.prior(40, seed=2, dtype=torch.float64)
    a = exact_solution(model, x_T, t_end=1e-3)
    tight = solve_probability_flow(model, x_T, 1.0, 1e-3, rtol=1e-13, atol=1e-13)
    assert (a - tight).abs().max() < 1e-8
    part = solve_probability_flow(model, x_T[:5], 1.0, 1e-3)  # per-sample step control: batch-independent
    assert (a[:5] - part).abs().max() < 1e-12
    again = exact_solution(model, x_T, t_end=1e-3)  # from the disk cache
    assert torch.equal(a, again)


def test_exact_solution_guided_matches_integrator() -> None:
    model = load_model("gmm-2d")
    x_T, c = model.prior(3, seed=4, dtype=torch.float64), torch.tensor([0, 1, 3])
    g = guided(model, 4.0)
    ours = g.exact_solution(x_T, t_end=1e-3, cond=c, cache=False).numpy()
    ref = np.concatenate([_ivp_in_t(g, x_T[i : i + 1], 1.0, 1e-3, c[i : i + 1]) for i in range(3)])
    assert np.abs(ours - ref).max() < 1e-8
    assert not np.allclose(ours, model.exact_solution(x_T, t_end=1e-3, cond=c).numpy(), atol=1e-3)


def test_bad_model_and_cond_errors() -> None:
    with pytest.raises(DpmbenchError, match="invalid model 'cifar'; allowed: gmm-2d, gmm-digits, digits-empirical"):
        load_model("cifar")
    m = load_model("gmm-2d")
    with pytest.raises(DpmbenchError, match="labels must be in 0..3"):
        m.x0(m.prior(2), 0.5, torch.tensor([0, 9]))
    assert math.isclose(float(m.log_w.exp().sum()), 1.0)


def test_exact_solutions_follow_the_diffused_distribution_at_t_end() -> None:
    """Exact ODE solutions ending at t_end are distributed as p_{t_end} (not p_0): their moments match."""
    model = load_model("gmm-2d")
    t_end = 0.3  # large enough that p_{t_end} and p_0 differ clearly
    x_T = model.prior(4000, seed=0, dtype=torch.float64)
    xs = exact_solution(model, x_T, t_end=t_end, rtol=1e-8, atol=1e-8)
    mu_t, cov_t = model.data_moments(t=t_end)
    mu_0, cov_0 = model.data_moments()
    torch.testing.assert_close(xs.mean(0), mu_t, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(xs.T), cov_t, atol=0.03, rtol=0)
    assert float((torch.cov(xs.T) - cov_0).abs().max()) > 0.05
