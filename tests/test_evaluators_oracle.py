"""Exact oracle metrics: sliced W2 and log-likelihood against p_{t_end}, MSE vs a reference run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from dpmbench import load_model
from dpmbench.errors import DpmbenchError
from evaluators import evaluate
from evaluators.oracle import mixture_at, mixture_logpdf, mixture_sample, mse_ref, sliced_w2


def test_sliced_w2_closed_form_for_shifted_gaussians() -> None:
    # W2 between N(0, I) and N(m, I) along unit direction u is |u.m|; E(u.m)^2 = |m|^2 / d
    rng = np.random.default_rng(0)
    d, m = 4, np.array([0.5, -0.3, 0.2, 0.1])
    x = rng.standard_normal((20000, d))
    y = rng.standard_normal((40000, d)) + m
    expected = np.linalg.norm(m) / np.sqrt(d)
    assert sliced_w2(x, y, projections=512) == pytest.approx(expected, rel=0.05)
    assert sliced_w2(y[:20000], y[20000:], projections=64) < 0.03  # same distribution: sampling error only


def test_mixture_logpdf_and_sample_match_p_t() -> None:
    model = load_model("gmm-2d")
    t = 0.3
    mix = mixture_at(model, None, t)
    a, s = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    x = np.random.default_rng(1).standard_normal((50, 2))
    w = np.exp(model.log_w.numpy())
    dens = sum(w[k] * multivariate_normal(a * model.means[k].numpy(),
                                          a**2 * model.covs[k].numpy() + s**2 * np.eye(2)).pdf(x) for k in range(8))
    np.testing.assert_allclose(mixture_logpdf(mix, x), np.log(dens), rtol=1e-10)
    y = mixture_sample(mix, 200000, seed=0)
    mu, cov = model.data_moments(t=t)
    np.testing.assert_allclose(y.mean(0), mu.numpy(), atol=0.01)
    np.testing.assert_allclose(np.cov(y.T), cov.numpy(), atol=0.01)
    labels = np.arange(100) % 4  # class-conditional: only the components of the classes present
    mix_c = mixture_at(model, np.zeros(10, int), t)
    assert mix_c["w"][model.classes.numpy() != 0].sum() == 0 and mixture_at(model, labels, t)["w"].sum() == 1


def test_point_mass_mixture_logpdf() -> None:
    model = load_model("digits-empirical")
    t = 1e-2
    mix = mixture_at(model, None, t)
    a, s = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    x = a * model.means[:3].numpy() + 0.5 * s
    from scipy.special import logsumexp

    d2 = ((x[:, None] - a * model.means.numpy()[None]) ** 2).sum(-1)
    ref = logsumexp(-d2 / (2 * s**2), axis=1) - np.log(len(model.means)) - 32 * np.log(2 * np.pi * s**2)
    np.testing.assert_allclose(mixture_logpdf(mix, x), ref, rtol=1e-10)


def test_oracle_metrics_rank_exact_above_perturbed() -> None:
    model = load_model("gmm-2d")
    t_end = 1e-3
    x_T = model.prior(2000, seed=0)
    exact = model.exact_solution(x_T.double(), t_end=t_end).numpy()
    meta = {"model": "gmm-2d", "guidance": None, "t_end": t_end}
    good = evaluate(["sw2_true", "loglik_true"], exact, meta, bootstraps=50)
    bad = evaluate(["sw2_true", "loglik_true"], exact * 1.1 + 0.05, meta, bootstraps=50)
    assert good[0]["sw2_true"] < 0.04 < bad[0]["sw2_true"]
    assert good[0]["loglik_true"] > bad[0]["loglik_true"]
    lo, hi = good[1]["loglik_true"]
    assert lo < good[0]["loglik_true"] < hi
    with pytest.raises(DpmbenchError, match="'t_end' is missing"):
        evaluate(["loglik_true"], exact, {"model": "gmm-2d"}, bootstraps=0)
    with pytest.raises(DpmbenchError, match="needs --reference"):
        evaluate(["sw2_true"], exact, dict(meta, guidance=7.5), bootstraps=0)


def test_mse_ref_and_reference_kind() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((100, 1, 8, 8))
    x = ref + 0.1 * rng.standard_normal(ref.shape)
    assert mse_ref(x, ref) == pytest.approx(((x - ref) ** 2).mean())
    meta = {"model": "digits-empirical", "reference_solver": "dpm-solver++", "reference_nfe": 500}
    v, ci, _ = evaluate(["mse_ref"], x, meta, ref, bootstraps=100)
    assert v["mse_ref"] == pytest.approx(0.01, rel=0.1) and ci["mse_ref"][0] < 0.01 < ci["mse_ref"][1]
    with pytest.raises(DpmbenchError, match="holds a 'dpm-solver\\+\\+' run, not exact solutions"):
        evaluate(["rmse_exact"], x, meta, ref, bootstraps=0)
