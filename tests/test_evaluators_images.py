"""FID/IS/KID plumbing: torch-fidelity vs clean-fid vs our Frechet distance on the same features (offline,
with the shipped digits extractor), quantization, Inception weights handling."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from standins import random_inception as _random_inception

from dpmbench.errors import DpmbenchError
from evaluators import evaluate
from evaluators.frechet import frechet_distance
from evaluators.images import (
    digits_features,
    digits_reference_features,
    digits_uint8,
    feature_moments,
    fidelity_features,
    to_uint8,
)


def _noisy_digits(n: int = 300, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    from dpmbench.models.registry import digits_data

    x = digits_data()[0][:n].numpy().reshape(n, 1, 8, 8)
    return (x + noise * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


def test_quantization_is_edm_convention() -> None:
    x = np.array([-1.0, -0.999, 0.0, 0.5, 1.0, 2.0, -3.0], np.float32).reshape(1, 1, 1, 7)
    u = to_uint8(x).numpy().ravel()
    assert u.dtype == np.uint8
    assert list(u) == [0, 0, 128, 191, 255, 255, 0]  # floor(x*127.5+128) clipped
    with pytest.raises(DpmbenchError, match="allowed: \\(n, C, H, W\\)"):
        to_uint8(np.zeros((3, 64), np.float32))


def test_fid_torch_fidelity_clean_fid_and_ours_agree_on_digits_features() -> None:
    import cleanfid.fid as cf
    import torch_fidelity
    from torch.utils.data import TensorDataset  # noqa: F401  (torch-fidelity needs tensors per item)

    from evaluators.digits_cnn import EXTRACTOR_NAME, register
    from evaluators.images import _Images

    register()
    samples = to_uint8(_noisy_digits())
    ref = digits_uint8()
    # 1) torch-fidelity end to end (its calculate_metrics, our registered extractor)
    tf = torch_fidelity.calculate_metrics(input1=_Images(samples), input2=_Images(ref), fid=True, cuda=False,
                                          feature_extractor=EXTRACTOR_NAME, verbose=False, save_cpu_ram=True,
                                          cache=False)["frechet_inception_distance"]
    # 2) features through torch-fidelity and through clean-fid's generator path: identical features
    f_tf, f_cf = digits_features(samples, "torch-fidelity"), digits_features(samples, "clean-fid")
    np.testing.assert_array_equal(f_tf, f_cf)
    r_tf = digits_reference_features("torch-fidelity")
    m1, s1 = feature_moments(f_tf)
    m2, s2 = feature_moments(r_tf)
    ours = frechet_distance(m1, s1, m2, s2)
    with np.errstate(all="ignore"):
        clean = float(cf.frechet_distance(m1, s1, m2, s2))
    # torch-fidelity's own end-to-end statistics use float32 means (np.mean of float32 features): ~1e-6 relative
    tf_on_ours = float(torch_fidelity.metric_fid.fid_statistics_to_metric(
        {"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)["frechet_inception_distance"])
    print(f"\nFDD agreement: torch-fidelity end-to-end {tf:.10f}, torch-fidelity formula {tf_on_ours:.10f}, "
          f"clean-fid {clean:.10f}, ours {ours:.10f}")
    assert ours > 1.0  # noisy digits are measurably off
    assert tf == pytest.approx(ours, rel=1e-5)
    assert tf_on_ours == pytest.approx(ours, rel=1e-9)
    assert clean == pytest.approx(ours, rel=1e-6)
    # 3) the `fdd` metric (both backends) reports the same number, with a CI
    meta = {"model": "digits-empirical"}
    for backend in ("torch-fidelity", "clean-fid"):
        v, ci, info = evaluate(["fdd"], _noisy_digits(), meta, bootstraps=20, options={"fid_backend": backend})
        assert v["fdd"] == pytest.approx(ours, rel=1e-6) and ci["fdd"][0] < v["fdd"] < ci["fdd"][1]
        assert info["quantization"].startswith("edm") and info["fid_backend"].startswith(backend)


def test_fdd_is_zero_for_the_data_and_ranks_noise() -> None:
    from dpmbench.models.registry import digits_data

    x = digits_data()[0].numpy().reshape(-1, 1, 8, 8).astype(np.float32)
    meta = {"model": "digits-empirical"}
    v0 = evaluate(["fdd"], x, meta, bootstraps=0)[0]["fdd"]
    assert abs(v0) < 1e-6
    v1 = evaluate(["fdd"], _noisy_digits(noise=0.1), meta, bootstraps=0)[0]["fdd"]
    v2 = evaluate(["fdd"], _noisy_digits(noise=0.4), meta, bootstraps=0)[0]["fdd"]
    assert 0 < v1 < v2
    with pytest.raises(DpmbenchError, match="needs 8x8 digits samples"):
        evaluate(["fdd"], np.zeros((10, 2), np.float32), {"model": "gmm-2d"}, bootstraps=0)


def test_reference_features_are_cached(tmp_path, monkeypatch) -> None:
    import evaluators.images as im

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))
    a = im.digits_reference_features()
    with mock.patch.object(im, "digits_features", side_effect=AssertionError("recomputed")):
        b = im.digits_reference_features()
    np.testing.assert_array_equal(a, b)
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1


def _low_rank_fd(f: np.ndarray, mu2: np.ndarray, rows2: np.ndarray) -> float:
    """The Frechet distance of N(mean(f), cov(f)) to N(mu2, cov(rows2)) when both covariances come from a few rows:
    with S1 = A A^T and S2 = B B^T (centred rows / sqrt(n - 1)), tr((S1^1/2 S2 S1^1/2)^1/2) is the sum of the singular
    values of A^T B: a k x k problem instead of two 2048-d eigenproblems, and a formula independent of ours."""
    f, rows2 = np.asarray(f, np.float64), np.asarray(rows2, np.float64)
    a = (f - f.mean(0)).T / np.sqrt(len(f) - 1)
    b = (rows2 - rows2.mean(0)).T / np.sqrt(len(rows2) - 1)
    d = f.mean(0) - mu2
    return float(d @ d + (a * a).sum() + (b * b).sum() - 2 * np.linalg.svd(a.T @ b, compute_uv=False).sum())


def test_the_low_rank_identity_equals_our_frechet_distance() -> None:
    """The few-row identity used as the reference below, checked against ``frechet_distance`` in 64-d (float64)."""
    rng = np.random.default_rng(1)
    f, g = rng.standard_normal((5, 64)), 2 + 3 * rng.standard_normal((4, 64))
    m1, s1 = feature_moments(f)
    assert _low_rank_fd(f, g.mean(0) + 0.5, g) == pytest.approx(
        frechet_distance(m1, s1, g.mean(0) + 0.5, np.cov(g, rowvar=False)), rel=1e-10)


def test_fid_through_inception_with_local_weights_matches_ours(tmp_path) -> None:
    weights = _random_inception(tmp_path / "inception-random.pth")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(4, 1, 16, 16)).astype(np.float32)  # grey: repeated to RGB
    f = fidelity_features(to_uint8(x), features=("2048", "logits_unbiased"), batch_size=3, weights=weights)
    assert f["2048"].shape == (4, 2048) and f["logits_unbiased"].shape == (4, 1008)
    assert np.isfinite(f["2048"]).all() and f["2048"].std() > 0
    mu, sigma = f["2048"][:2].mean(0) + 0.01, np.cov(f["2048"][1:], rowvar=False)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    v, _, info = evaluate(["fid"], x, {"model": "images"}, bootstraps=0,
                          options={"fid_stats": str(tmp_path / "stats.npz"), "inception_weights": weights})
    assert v["fid"] == pytest.approx(_low_rank_fd(f["2048"], mu, f["2048"][1:]), rel=1e-5)
    assert info["fid_reference"].startswith("file")
    # reference images: features computed once (cached on disk), then FID and KID against them
    y = rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "refimg.npz", x=y)
    fy = fidelity_features(to_uint8(y), batch_size=4, weights=weights)["2048"]
    opts = {"reference_images": str(tmp_path / "refimg.npz"), "inception_weights": weights}
    import evaluators.images as im

    with mock.patch.object(im, "fidelity_features", wraps=im.fidelity_features) as spy:
        v, _, _ = evaluate(["fid", "kid"], x, {"model": "images"}, bootstraps=0, options=opts)
        assert spy.call_count == 2  # samples + reference
        evaluate(["kid"], x, {"model": "images"}, bootstraps=0, options=opts)  # KID: no 2048-d eigenproblem
        assert spy.call_count == 3  # reference features came from the cache
    assert v["fid"] == pytest.approx(_low_rank_fd(f["2048"], fy.mean(0), fy), rel=1e-5)
    assert np.isfinite(v["kid"])
    # the k-NN metrics on Inception features against a reference feature file (option prdc_reference): 7 samples
    # (density's minimum at k = 5), their features captured on the way, the libraries' values on them
    from evaluators.knn import density_coverage, precision_recall

    x7 = rng.uniform(-1, 1, size=(7, 3, 16, 16)).astype(np.float32)
    ref = np.concatenate([f["2048"] + 0.01 * rng.standard_normal(f["2048"].shape) for _ in range(2)])
    np.savez(tmp_path / "feats.npz", feats=ref)
    seen: list[dict[str, np.ndarray]] = []
    real_features = im.fidelity_features
    knn = ["precision", "recall", "density", "coverage"]
    with mock.patch.object(im, "fidelity_features", lambda *a, **k: seen.append(real_features(*a, **k)) or seen[-1]):
        v, _, info = evaluate(knn, x7, {"model": "images"}, bootstraps=0,
                              options={"prdc_reference": str(tmp_path / "feats.npz"), "inception_weights": weights})
    assert len(seen) == 1 and info["protocol"]["extractor"].startswith("inception-v3")
    assert info["protocol"]["reference_stats"] == f"features {tmp_path / 'feats.npz'}"
    f7 = seen[0]["2048"]
    assert [v[m] for m in knn] == pytest.approx([*precision_recall(f7, ref), *density_coverage(f7, ref)])


def test_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch) -> None:
    from evaluators.images import cleanfid_inception_dir, torch_fidelity_inception_weights

    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DPMBENCH_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(DpmbenchError, match=r"place it at .*torch/hub/checkpoints/weights-inception-2015-12-05"):
        torch_fidelity_inception_weights()
    with pytest.raises(DpmbenchError, match="config/CLI.*no such file"):
        torch_fidelity_inception_weights(str(tmp_path / "missing.pth"))
    monkeypatch.setenv("DPMBENCH_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(DpmbenchError, match="from DPMBENCH_INCEPTION_WEIGHTS.*no such file"):
        torch_fidelity_inception_weights()
    monkeypatch.setenv("DPMBENCH_CLEANFID_INCEPTION", str(tmp_path / "nope" / "inception-2015-12-05.pt"))
    with pytest.raises(DpmbenchError, match="no such file"):
        cleanfid_inception_dir()
    bad = tmp_path / "evil.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(DpmbenchError, match="not a plain state dict"):
        torch_fidelity_inception_weights(str(bad))


def test_fdd_and_is_digits_replicates_equal_the_library_formulas_per_index() -> None:
    """The bootstrap replicates of `fdd` (reference square root computed once) and `is_digits` (probabilities
    computed once) equal the plain formulas on the same resampled rows: our Frechet distance of the rows' moments
    against the data's, and torch-fidelity's one-split Inception score of the rows' logits (float64 paths: only
    the order of sums differs)."""
    from evaluators.bootstrap import bootstrap_indices
    from evaluators.context import Context
    from evaluators.images import ScoreBlocks, digits_logits, inception_score
    from evaluators.metrics_images import fdd, is_digits

    x = _noisy_digits(n=64, noise=0.2)
    ctx = Context(x, {"model": "digits-unet"}, None, {})
    f, ref = digits_features(to_uint8(x), "torch-fidelity"), digits_reference_features("torch-fidelity")
    mu2, s2 = ref.mean(0), np.cov(ref, rowvar=False)
    blocks = ScoreBlocks(digits_logits(to_uint8(x)))
    for idx in bootstrap_indices(len(x), 5, seed=3):
        plain = frechet_distance(f[idx].mean(0), np.cov(f[idx], rowvar=False), mu2, s2)
        assert fdd(ctx, idx) == pytest.approx(plain, rel=1e-9)
        lib = inception_score(digits_logits(to_uint8(x)), idx, splits=1)
        assert blocks.score(idx) == pytest.approx(lib, rel=1e-12)
        assert is_digits(ctx, idx) == pytest.approx(lib, rel=1e-12)
