"""Metrics: Frechet distance in closed form, oracle metrics, paired bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest

from dpmbench.errors import DpmbenchError
from evaluators import evaluate, list_metrics
from evaluators.bootstrap import NONNEGATIVE, bootstrap_ci, bootstrap_indices, percentile_ci
from evaluators.frechet import frechet_distance, frechet_distance_rows, moments


def test_frechet_closed_form_gaussians() -> None:
    rng = np.random.default_rng(0)
    d = 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # commuting (diagonal) covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-6)
    # general: scalar case sqrt((s1 - s2)^2) and 1-D
    assert frechet_distance([1.0], [[4.0]], [0.0], [[9.0]]) == pytest.approx(1 + (2 - 3) ** 2, abs=1e-12)


def test_frechet_symmetric_zero_and_psd_safe() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 6)), rng.normal(size=(300, 6)) * 1.3 + 0.2
    m1, s1 = moments(x)
    m2, s2 = moments(y)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-10)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)
    # near-singular and singular covariances (rank 2 in 50-D): finite, real, non-negative
    low = rng.normal(size=(1000, 2)) @ rng.normal(size=(2, 50))
    ml, sl = moments(low)
    sl_neg = sl - 1e-12 * np.eye(50)  # tiny negative eigenvalues from round-off
    v = frechet_distance(ml, sl_neg, ml + 1e-3, sl)
    assert np.isfinite(v) and isinstance(v, float) and v == pytest.approx(50 * 1e-6, rel=1e-2, abs=1e-6)


def test_bootstrap_is_paired_and_covers() -> None:
    assert np.array_equal(bootstrap_indices(100, 50, 0), bootstrap_indices(100, 50, 0))
    x = np.random.default_rng(2).normal(size=500)
    lo, hi = bootstrap_ci(lambda idx: float(x.mean() if idx is None else x[idx].mean()), 500, 300)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(500), rel=0.25)


def test_evaluate_metrics_and_divergence() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(200, 2))
    x = ref + 0.01 * rng.normal(size=(200, 2))
    meta = {"model": "gmm-2d", "guidance": None}
    values, ci, info = evaluate(["rmse_exact", "fd_true"], x, meta, ref)
    assert values["rmse_exact"] == pytest.approx(0.01, rel=0.15)
    assert ci["rmse_exact"][0] <= values["rmse_exact"] <= ci["rmse_exact"][1]
    assert info["status"] == "ok" and info["fd_target"].startswith("data distribution")
    x[5, 1] = np.nan
    values, _, info = evaluate(["rmse_exact"], x, meta, ref)
    assert info["status"] == "diverged" and values["rmse_exact"] is None
    with pytest.raises(DpmbenchError, match="needs --reference"):
        evaluate(["rmse_exact"], ref, meta, None)
    with pytest.raises(DpmbenchError, match="invalid metric 'fidd'; allowed: rmse_exact, fd_true, mse_ref"):
        evaluate(["fidd"], ref, meta, None)
    assert list_metrics() == ["rmse_exact", "fd_true", "mse_ref", "sw2_true", "loglik_true", "fdd", "kdd",
                              "is_digits", "cond_acc", "precision", "recall", "density", "coverage", "model_error",
                              "fid", "is", "kid", "clip_score", "fd_dinov2", "cmmd"]


def test_a_distance_ci_has_no_negative_bound_and_still_covers() -> None:
    """Samples of the target itself: the true Frechet distance is 0, the plug-in estimate is its small positive bias,
    and the bias-shifted percentile interval reaches below 0 (the data cannot tell the distance from 0); clipped to
    the distance's range it reads [0, hi]. Clipping keeps the interval's coverage (the truth is never below 0): in a
    simulation it covers the truth near 0 and away from it, where the plain percentile interval of the replicates
    (centred on estimate + bias) misses a true 0 every time."""
    from dpmbench import load_model

    mu, cov = (t.numpy() for t in load_model("gmm-2d").data_moments())
    x = np.random.default_rng(5).multivariate_normal(mu, cov, size=300)
    values, ci, info = evaluate(["fd_true"], x, {"model": "gmm-2d", "guidance": None}, bootstraps=200)
    raw = percentile_ci(values["fd_true"], np.array(info["bootstrap_values"]["fd_true"]))
    assert raw[0] < 0 and ci["fd_true"] == [0.0, raw[1]] and values["fd_true"] <= raw[1]
    # the simulation in 1-D, where the Frechet distance to N(0, 1) is m^2 + (s - 1)^2 (all replicates at once)
    rng, n, trials, reps = np.random.default_rng(6), 100, 200, 200
    for shift in (0.0, 0.1, 0.3):
        truth, hits, misses_plain = shift**2, 0, 0
        for _ in range(trials):
            y = rng.standard_normal(n) + shift
            boot = y[rng.integers(0, n, (reps, n))]
            est = y.mean() ** 2 + (y.std(ddof=1) - 1) ** 2
            lo, hi = percentile_ci(est, boot.mean(1) ** 2 + (boot.std(1, ddof=1) - 1) ** 2, bounds=NONNEGATIVE)
            assert 0 <= lo <= est <= hi
            hits += lo <= truth <= hi
            q = np.quantile(boot.mean(1) ** 2 + (boot.std(1, ddof=1) - 1) ** 2, [0.025, 0.975])
            misses_plain += not q[0] <= truth <= q[1]
        assert hits / trials >= 0.9, (shift, hits)
        if shift == 0.0:
            assert misses_plain == trials


def test_fd_true_uses_analytic_target_for_oracles() -> None:
    from dpmbench import load_model

    model = load_model("gmm-2d")
    mu, cov = model.data_moments()
    rng = np.random.default_rng(4)
    x = rng.multivariate_normal(mu.numpy(), cov.numpy(), size=20000)
    values, _, _ = evaluate(["fd_true"], x, {"model": "gmm-2d", "guidance": None}, None, bootstraps=0)
    assert values["fd_true"] < 2e-3  # only the finite-sample error of the moments


def test_is_digits_and_cond_acc_on_real_digits() -> None:
    """On the digits themselves (labels known): the CNN follows the labels and the class probabilities are confident
    and balanced, so is_digits is near its maximum 10; unconditional samples skip cond_acc (no label to follow)."""
    from dpmbench.models.registry import digits_data

    x, y = digits_data()
    x = x.numpy().reshape(-1, 1, 8, 8).astype(np.float32)[:300]
    values, ci, info = evaluate(["is_digits", "cond_acc"], x, {"model": "digits-unet", "labels": y.numpy()[:300]},
                                bootstraps=20)
    assert values["cond_acc"] == 1.0 and 9.5 < values["is_digits"] <= 10.0
    assert ci["is_digits"][0] <= values["is_digits"] <= ci["is_digits"][1]
    shuffled = np.roll(y.numpy()[:300], 1)  # wrong labels: accuracy collapses
    assert evaluate(["cond_acc"], x, {"model": "digits-unet", "labels": shuffled}, bootstraps=0)[0]["cond_acc"] < 0.2
    values, _, info = evaluate(["is_digits", "cond_acc"], x, {"model": "digits-unet", "labels": np.zeros(0)},
                               bootstraps=0)
    assert "cond_acc" not in values and info["not_applicable"] == ["cond_acc"]


def test_model_error_is_the_reference_run_vs_the_exact_oracle_solution() -> None:
    """model_error: RMSE between the reference run and the exact digits-empirical ODE solution from the same x_T
    (recomputed from the seed); with the exact solution itself as the 'reference run' it is 0."""
    import torch

    from dpmbench.models.registry import load_model

    net = load_model("digits-unet")
    oracle = load_model("digits-empirical", schedule=net.schedule)
    x_T = oracle.prior(4, seed=0, dtype=torch.float64)
    exact = oracle.exact_solution(x_T, t_end=1e-3).numpy()
    meta = {"model": "digits-unet", "seed": 0, "t_end": 1e-3, "labels": np.zeros(0), "guidance": None,
            "reference_solver": "dpm-solver++:order=3,method=multistep"}
    values, _, _ = evaluate(["model_error"], exact.astype(np.float32), meta, exact, bootstraps=0)
    assert values["model_error"] < 1e-12
    values, _, _ = evaluate(["model_error"], exact, meta, exact + 0.5, bootstraps=0)
    assert values["model_error"] == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(DpmbenchError, match="holds exact solutions"):
        evaluate(["model_error"], exact, {**meta, "reference_solver": "exact"}, exact, bootstraps=0)


def test_frechet_distance_rows_equals_the_moment_form() -> None:
    """The n x n form of a few rows (bootstrap replicates of fewer samples than dimensions, duplicates included)
    equals the d x d one on the same rows, against a full-rank and a singular target."""
    rng = np.random.default_rng(3)
    b = rng.standard_normal((80, 48))
    full, singular = np.cov(b, rowvar=False), np.cov(b[:6], rowvar=False)
    for n in (2, 5, 60):
        x = 1 + 2 * rng.standard_normal((n, 48))
        for s2 in (full, singular):
            assert frechet_distance_rows(x, b.mean(0), s2) == pytest.approx(
                frechet_distance(*moments(x), b.mean(0), s2), rel=1e-9)
    x = rng.standard_normal((3, 48))[[0, 0, 2]]
    assert frechet_distance_rows(x, b.mean(0), full) == pytest.approx(frechet_distance(*moments(x), b.mean(0), full),
                                                                     rel=1e-9)
