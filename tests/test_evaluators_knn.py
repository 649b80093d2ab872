"""The k-NN manifold metrics (precision, recall, density, coverage): the libraries (torch-fidelity's prc, the prdc
package) against a brute-force computation of the papers' definitions and against each other, the expectations the
density/coverage paper derives for identical distributions, the bootstrap replicates, and the digits path."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from dpmbench.errors import DpmbenchError
from evaluators import evaluate
from evaluators.knn import DC_K, PRC_K, ManifoldTerms, density_coverage, precision_recall


def _brute_force(fake: np.ndarray, real: np.ndarray, k: int, strict: bool) -> dict[str, float]:
    """The four metrics from their definitions, with explicit loops over sorted distances (no library):
    Kynkäänniemi et al. 2019 (precision, recall) and Naeem et al. 2020 (density, coverage); ``strict``: a point on
    a ball's boundary is outside (prdc) rather than inside (torch-fidelity)."""
    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x: np.ndarray) -> np.ndarray:  # k-th nearest other point: sorted row, index 0 is the point itself
        return np.array([sorted(row)[k] for row in dist(x, x)])

    def inside(d: float, r: float) -> bool:
        return d < r if strict else d <= r

    r_real, r_fake, d = radii(real), radii(fake), dist(fake, real)
    m, n = d.shape
    prec = sum(any(inside(d[j, i], r_real[i]) for i in range(n)) for j in range(m)) / m
    rec = sum(any(inside(d[j, i], r_fake[j]) for j in range(m)) for i in range(n)) / n
    dens = sum(inside(d[j, i], r_real[i]) for j in range(m) for i in range(n)) / (k * m)
    cov = sum(inside(min(d[:, i]), r_real[i]) for i in range(n)) / n
    return {"precision": prec, "recall": rec, "density": dens, "coverage": cov}


def _features(seed: int = 0, m: int = 90, n: int = 110, shift: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, 5)) * 0.8 + shift, rng.standard_normal((n, 5))


def test_the_libraries_equal_a_brute_force_computation_and_each_other() -> None:
    fake, real = _features()
    p, r = precision_recall(fake, real)
    d, c = density_coverage(fake, real)
    pr, dc = _brute_force(fake, real, PRC_K, strict=False), _brute_force(fake, real, DC_K, strict=True)
    assert (p, r) == pytest.approx((pr["precision"], pr["recall"]), abs=1e-6)  # torch-fidelity: float32 mean
    assert (d, c) == (pytest.approx(dc["density"], abs=1e-12), pytest.approx(dc["coverage"], abs=1e-12))
    assert 0.2 < p < 0.95 and 0.2 < r < 0.95 and 0.2 < c < 0.95  # the case separates the sets, not trivially
    # the two libraries on precision/recall, at the same k (prdc computes them too): equal on continuous features
    from prdc import compute_prdc

    lib = compute_prdc(real_features=real, fake_features=fake, nearest_k=PRC_K)
    assert (p, r) == pytest.approx((lib["precision"], lib["recall"]), abs=1e-6)
    # the per-sample terms of the bootstrap replicates: all rows give the libraries' values; a resample with
    # duplicates gives the definition on the resampled rows (the real balls do not depend on the samples)
    terms = ManifoldTerms(fake, real)
    assert terms.precision() == pytest.approx(p, abs=1e-6) and terms.density() == pytest.approx(d, abs=1e-12)
    idx = np.random.default_rng(1).integers(0, len(fake), len(fake))
    assert terms.precision(idx) == pytest.approx(_brute_force(fake[idx], real, PRC_K, False)["precision"], abs=1e-12)
    assert terms.density(idx) == pytest.approx(_brute_force(fake[idx], real, DC_K, True)["density"], abs=1e-12)


def test_identical_distributions_give_the_papers_expectations() -> None:
    """Naeem et al. 2020: for samples and reference of one distribution, E[density] = 1 and E[coverage] =
    1 - C(N-1, k) / C(N+M-1, k) (no sample among a real point's k nearest of its N-1+M neighbours); a mismatch of the
    ball convention or of the k-th neighbour (self included or not) moves both."""
    m, n, draws = 150, 200, 6
    dens, cov = [], []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        d, c = density_coverage(rng.standard_normal((m, 4)), rng.standard_normal((n, 4)))
        dens.append(d)
        cov.append(c)
    expected = 1 - comb(n - 1, DC_K) / comb(n + m - 1, DC_K)
    assert np.mean(dens) == pytest.approx(1.0, abs=0.06)
    assert np.mean(cov) == pytest.approx(expected, abs=0.02)
    assert 0.9 < expected < 0.95  # 150 samples vs 200 reference points, k = 5: 0.941


def test_digits_samples_use_the_digits_cnn_and_set_level_metrics_have_no_bootstrap() -> None:
    from dpmbench.models.registry import digits_data

    x = digits_data()[0].numpy().reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(0)
    clean = x[rng.choice(len(x), 64, replace=False)]
    noisy = clean + 0.5 * rng.standard_normal(clean.shape)
    names = ["precision", "recall", "density", "coverage"]
    v, ci, info = evaluate(names, clean.astype(np.float32), {"model": "digits-unet"}, bootstraps=50)
    w, ci_w, _ = evaluate(names, noisy.astype(np.float32), {"model": "digits-unet"}, bootstraps=50)
    assert info["protocol"]["extractor"].startswith("dpmbench/digits-cnn")
    assert info["bootstraps"] == {"precision": 50, "recall": 0, "density": 50, "coverage": 0}
    assert v["precision"] == 1.0 and w["precision"] < 0.9 and w["density"] < v["density"]  # noise leaves the digits
    for name in ("precision", "density"):
        assert 0 <= ci_w[name][0] <= w[name] <= ci_w[name][1] and ci_w[name][0] < ci_w[name][1]
    assert all(np.isnan(ci[name]).all() for name in ("recall", "coverage"))
    assert all(ci_w["precision"][i] <= 1 for i in (0, 1))
    # 64 samples against the 1,797 digits: coverage is bounded by what 64 samples can cover (its expectation for
    # identical distributions is 1 - C(1796, 5) / C(1860, 5) = 0.161)
    assert v["coverage"] == pytest.approx(1 - comb(1796, 5) / comb(1860, 5), abs=0.06)


def test_too_few_samples_or_no_reference_is_one_line(tmp_path) -> None:
    fake, real = _features(m=6)
    with pytest.raises(DpmbenchError, match=r"density/coverage \(k = 5\) needs at least 7 samples .* not 6 and 110"):
        density_coverage(fake, real)
    with pytest.raises(DpmbenchError, match=r"'precision' needs reference features \(option prdc_reference"):
        evaluate(["precision"], np.zeros((8, 3, 16, 16), np.float32), {"model": "images"}, bootstraps=0)
    np.savez(tmp_path / "ref.npz", x=real)
    with pytest.raises(DpmbenchError, match=r"invalid prdc reference .*ref.npz': need npz key 'feats' or 'features'"):
        evaluate(["coverage"], np.zeros((8, 3, 16, 16), np.float32), {"model": "images"}, bootstraps=0,
                 options={"prdc_reference": str(tmp_path / "ref.npz")})
