"""ScoreSDE's statistics file format (per-image pool_3 features) and the FID implementation a reproduction config
states for its published numbers: loaded, validated, recorded in the metrics protocol and shown beside ours."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dpmbench.download import sha256_file
from dpmbench.errors import DpmbenchError
from dpmbench.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parent.parent


def _scoresde_file(path: Path, n: int = 301, dim: int = 24, seed: int = 0) -> np.ndarray:
    """A stand-in of ScoreSDE's cifar10_stats.npz: float32 pool_3 rows (and logits, as its statistics_*.npz files
    hold), written with np.savez_compressed as score_sde_pytorch's run_lib.py:358-361 writes them."""
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) + 3.0).astype(np.float32)
    np.savez_compressed(path, pool_3=pool, logits=rng.standard_normal((n, 10)).astype(np.float32))
    return pool


def _tfgan_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TF-GAN's moments of activations, written from its code (tensorflow/gan@bc369b7:tensorflow_gan/python/eval/
    classifier_metrics.py:697-717): cast to float64, mean, n / (n - 1) times tfp.stats.covariance (the biased one)."""
    a = a.astype(np.float64)
    m = a.mean(axis=0)
    biased = (a - m).T @ (a - m) / len(a)
    return m, len(a) / (len(a) - 1) * biased


def _manifest(tmp_path: Path, entry: str) -> Path:
    p = tmp_path / "manifest.yaml"
    p.write_text("stats:\n" + entry)
    return p


def test_a_features_file_gives_scoresde_moments_in_float64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluators import refstats

    pool = _scoresde_file(tmp_path / "cifar10_stats.npz")
    manifest = _manifest(tmp_path, f"""  - name: toy-scoresde
    dataset: toy
    split: all
    resolution: 32
    inception: scoresde/tfgan
    format: features
    path: cifar10_stats.npz
    sha256: {sha256_file(tmp_path / "cifar10_stats.npz")}
""")
    monkeypatch.setattr(refstats, "CHUNK", 64)  # 301 rows: four full chunks and a partial one
    mu, sigma, what = refstats.reference_stats("toy-scoresde", manifest)
    want_mu, want_sigma = _tfgan_moments(pool)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (24, 24)
    np.testing.assert_allclose(mu, want_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-10, atol=1e-12)
    # float32 moments would not be these: the float64 path is what is tested
    assert np.abs(np.cov(pool.astype(np.float32), rowvar=False).astype(np.float32) - want_sigma).max() > 0
    assert "scoresde/tfgan" in what
    # the same file passed as a path is read by its pool_3 key
    mu2, sigma2, what2 = refstats.reference_stats(str(tmp_path / "cifar10_stats.npz"), manifest)
    np.testing.assert_allclose(mu2, mu, rtol=1e-14)
    np.testing.assert_allclose(sigma2, sigma, rtol=1e-12, atol=1e-14)
    assert "pool_3 features" in what2


def test_bad_features_and_formats_are_one_line_errors(tmp_path: Path) -> None:
    from evaluators.refstats import load_manifest, load_stats

    np.savez(tmp_path / "flat.npz", pool_3=np.ones(5, np.float32))
    with pytest.raises(DpmbenchError, match=r"pool_3 \(5,\) float32; allowed: float feature rows"):
        load_stats(tmp_path / "flat.npz", ("pool_3",), "features")
    np.savez(tmp_path / "nan.npz", pool_3=np.full((4, 3), np.nan, np.float32))
    with pytest.raises(DpmbenchError, match="non-finite"):
        load_stats(tmp_path / "nan.npz", ("pool_3",), "features")
    np.savez(tmp_path / "moments.npz", mu=np.ones(3), sigma=np.eye(3))
    with pytest.raises(DpmbenchError, match=r"need npz keys \['pool_3'\]"):
        load_stats(tmp_path / "moments.npz", ("pool_3",), "features")
    with pytest.raises(DpmbenchError, match="format.*allowed: mu-sigma, features"):
        load_stats(tmp_path / "flat.npz", ("pool_3",), "pickle")
    entry = "  - {name: x, dataset: d, split: s, resolution: 8, inception: i, path: f.npz, sha256: null, format: %s}\n"
    with pytest.raises(DpmbenchError, match="format.*'moments'.*allowed: mu-sigma, features"):
        load_manifest(_manifest(tmp_path, entry % "moments"))
    with pytest.raises(DpmbenchError, match="keys.*one key .*for format features"):
        load_manifest(_manifest(tmp_path, entry % "features, keys: [mu, sigma]"))


def test_the_manifest_lists_scoresde_statistics_unpinned_and_the_implementations() -> None:
    from evaluators.refstats import fid_implementations, load_manifest, reference_stats

    e = load_manifest()["cifar10-train-32-scoresde"]
    assert (e.format, e.keys, e.sha256) == ("features", ("pool_3",), None)
    assert e.url and "14UB27-Spi8VjZYKST3ZcT8YVhAluiFWI" in e.url  # score_sde_pytorch README.md:82
    with pytest.raises(DpmbenchError, match="no sha256 pinned"):  # never used unverified
        reference_stats("cifar10-train-32-scoresde")
    impls = fid_implementations()
    assert {"scoresde-tfgan", "edm-fid", "pytorch-fid"} <= set(impls)
    assert all("@" in i.source for i in impls.values())  # each cites owner/repo@commit


def test_every_paper_fid_cell_states_its_statistics_and_implementation() -> None:
    from evaluators.refstats import fid_implementations, load_manifest

    impls, stats = set(fid_implementations()), set(load_manifest())
    seen = set()
    for path in sorted((ROOT / "config" / "reproductions").glob("*.yaml")):
        c = read_yaml(path)
        for name, m in c["models"].items():
            if "fid" in m.get("metrics", c.get("metrics", [])):
                assert m.get("reference_stats") in stats, (path.name, name)
                assert m.get("fid_implementation") in impls, (path.name, name)
                seen.add((path.stem, name, m["fid_implementation"], m["reference_stats"]))
    # the ScoreSDE-statistics papers (DPM-Solver-v3 App. D.1, D.2; the DPM-Solver and UniPC examples)
    for config, model in [("dpm-solver", "scoresde-cifar10-ddpmpp-deep-continuous"),
                          ("unipc", "scoresde-cifar10-ddpmpp-deep-continuous"),
                          ("dpm-solver-v3", "scoresde-cifar10-ddpmpp-deep-continuous"),
                          ("dpm-solver-v3", "edm-cifar10-uncond-vp")]:
        assert (config, model, "scoresde-tfgan", "cifar10-train-32-scoresde") in seen


def test_a_config_names_a_known_implementation_with_its_statistics() -> None:
    from dpmbench.grid import build_grid

    base = {"metrics": ["fid"], "nfe": [10], "solvers": ["ddim"], "t_end": 0.001, "samples_per_shard": 4}
    model = {"num_samples": 4, "reference_stats": "cifar10-train-32-scoresde"}
    g = build_grid({**base, "models": {"edm-cifar10-uncond-vp": {**model, "fid_implementation": "scoresde-tfgan"}}})
    assert g.fid_stats_arg("edm-cifar10-uncond-vp") == ("--fid-stats cifar10-train-32-scoresde "
                                                        "--fid-implementation scoresde-tfgan")
    with pytest.raises(DpmbenchError, match=r"'models.edm-cifar10-uncond-vp.fid_implementation': unknown FID "
                                            r"implementation 'tfgan'; allowed: scoresde-tfgan, edm-fid, pytorch-fid"):
        build_grid({**base, "models": {"edm-cifar10-uncond-vp": {**model, "fid_implementation": "tfgan"}}})
    with pytest.raises(DpmbenchError, match="fid_implementation.*allowed: with reference_stats"):
        build_grid({**base, "models": {"edm-cifar10-uncond-vp": {"num_samples": 4,
                                                                 "fid_implementation": "edm-fid"}}})


def test_the_metrics_protocol_records_the_implementation_and_the_comparison_shows_it(tmp_path: Path) -> None:
    from dpmbench.report.papers import fid_protocol, paper_comparison_markdown
    from evaluators.context import Context
    from evaluators.job import EvalOptions
    from evaluators.registry import protocol

    with pytest.raises(DpmbenchError, match="fid implementation.*'tf'.*allowed: scoresde-tfgan"):
        EvalOptions(fid_implementation="tf")
    _scoresde_file(tmp_path / "stats.npz")
    opts = EvalOptions(fid_stats=str(tmp_path / "stats.npz"), fid_implementation="scoresde-tfgan").metric_options()
    ctx = Context(x=np.zeros((2, 3, 4, 4), np.float32), meta={}, options=opts)
    proto = protocol(["fid"], ctx)
    assert proto["fid_implementation"] == "scoresde-tfgan"
    assert proto["reference_stats_sha256"] == sha256_file(tmp_path / "stats.npz")
    assert "fid_implementation" not in protocol(["kid"], ctx)  # a statement about FID numbers only

    row = {"model": "m", "solver": "ddim", "nfe": 10, "schedule": "logsnr", "guidance": "none", "metric": "fid",
           "value": 4.0, "ci_low": 3.5, "ci_high": 4.5, "reference_stats": "cifar10-train-32-scoresde",
           "extractor": "inception-v3 via torch-fidelity", "fid_implementation": "scoresde-tfgan"}
    Row = namedtuple("Row", row)
    assert fid_protocol(Row(**row)) == (" [stats cifar10-train-32-scoresde; ours via inception-v3 via torch-fidelity; "
                                        "published with scoresde-tfgan]")
    assert fid_protocol(Row(**{**row, "metric": "mse_ref"})) == ""
    entry = {"paper": "P", "table": 1, "model": "m", "metric": "fid", "solver": "ddim", "nfe": 10, "value": 4.2}
    md = paper_comparison_markdown(pd.DataFrame([row]), [entry])
    assert "published with scoresde-tfgan]" in md and "| -0.2 |" in md


def test_the_commands_refuse_an_unknown_implementation_in_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dpmbench.cli import main

    out = str(tmp_path / "m.json")
    for argv in (["evaluate", "--samples", str(tmp_path / "none.npz"), "--metrics", "fid", "--out", out],
                 ["metrics-job", "--cells", str(tmp_path / "none.npz"), "--out", out, "--metrics", "fid"]):
        assert main([*argv, "--fid-implementation", "tfgan"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'tfgan'" in err and "scoresde-tfgan, edm-fid, pytorch-fid" in err
    assert not Path(out).exists()
