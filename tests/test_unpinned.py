"""The per-run opt-in to files without a pinned sha256 (``--trust-unpinned``), end to end against a local HTTP server:
refused without it (one line saying how to pin or opt in), downloaded with it, the sha256 seen recorded in the lock
file and the provenance, and every cell computed from such a file marked unpinned in results.csv, the leaderboards
and the site; likewise for reference statistics and metric weights."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import FileHandler, local_http_server, run_cli

import dpmbench.download as dl
from dpmbench.errors import DpmbenchError
from dpmbench.models import manifest as ck
from dpmbench.models import store

ROOT = Path(__file__).parents[1]
UNET = ROOT / "trained" / "digits-unet"
FILES = ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json")


class _Files(FileHandler):
    """The files this module's tests serve (URL path -> bytes) and the paths asked for."""


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _Files.files, _Files.requests = {}, []
    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path / "cache"))
    for var in ("DPMBENCH_OFFLINE", dl.TRUST_ENV, "DPMBENCH_MANIFESTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dl, "_UNPINNED", {})  # what this test's "process" used, nothing from other tests
    store._WARNED.clear()
    with local_http_server(_Files) as url:
        monkeypatch.setenv("DPMBENCH_HF_ENDPOINT", url)
        yield url


def test_checkpoint_opt_in_end_to_end(server: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """An HF checkpoint whose files are all unpinned (the shipped digits-unet network, served by the local server):
    refused without the opt-in; pulled, sampled and evaluated with it; its cells marked, a pinned model's not."""
    from dpmbench.report import results_table
    from dpmbench.report.leaderboard import leaderboard_html, leaderboard_markdown
    from dpmbench.report.site import metric_table
    from dpmbench.report.tables import collect, groups, with_protocol

    for name in FILES:
        _Files.files[f"/org/unet/resolve/rev1/{name}"] = (UNET / name).read_bytes()
    raw = yaml.safe_load((ROOT / "config" / "checkpoints.yaml").read_text())["checkpoints"]["digits-unet"]
    entry = {**raw, "source": {"hf": "org/unet", "revision": "rev1"},
             "files": [{"path": n, "sha256": None, "size": None} for n in FILES]}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"checkpoints": {"toy-unet": entry}}))
    monkeypatch.setenv("DPMBENCH_MANIFESTS", str(manifest))

    code, _, err = run_cli(capsys, "pull", "toy-unet", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and _Files.requests == []
    assert ("refusing checkpoint 'toy-unet' file 'config.json': no sha256 pinned; pin its sha256 in the manifest "
            f"({manifest}) at checkpoints.toy-unet.files[0].sha256, or opt in for this run with --trust-unpinned"
            ) in err

    code, out, err = run_cli(capsys, "pull", "toy-unet", "--no-progress", "--trust-unpinned")
    assert code == 0 and "toy-unet: 3 file(s) verified" in out
    assert "dpmbench: warning: checkpoint 'toy-unet': 3 file(s) have no sha256 in the manifest" in err
    seen = {n: hashlib.sha256((UNET / n).read_bytes()).hexdigest() for n in FILES}
    lock = json.loads((tmp_path / "cache" / "checkpoints" / "toy-unet" / store.LOCK_FILE).read_text())
    assert lock["files"] == seen and sorted(_Files.requests) == sorted(f"/org/unet/resolve/rev1/{n}" for n in FILES)

    results = tmp_path / "results"
    args = ["--solver", "ddim", "--nfe", "2", "--num-samples", "8", "--seed", "0", "--batch-size", "8"]
    code, _, err = run_cli(capsys, "sample", "--model", "toy-unet", *args, "--out", str(results / "u.npz"))
    assert code == 2 and "opt in for this run with --trust-unpinned" in err  # the opt-in is per run
    for model, trust in (("toy-unet", ["--trust-unpinned"]), ("digits-unet", [])):
        samples, metrics = results / f"{model}.npz", results / f"{model}.json"
        assert run_cli(capsys, "sample", "--model", model, *args, "--out", str(samples), *trust)[0] == 0
        assert run_cli(capsys, "evaluate", "--samples", str(samples), "--metrics", "is_digits", "--bootstraps", "0",
                       "--out", str(metrics), *trust)[0] == 0
    toy = json.loads((results / "toy-unet.json").read_text())
    pinned = json.loads((results / "digits-unet.json").read_text())
    assert toy["unpinned"] is True and pinned["unpinned"] is False
    assert toy["provenance"]["unpinned_files"] == {f"checkpoint:toy-unet/{n}": h for n, h in seen.items()}
    assert pinned["provenance"]["unpinned_files"] == {}
    with np.load(results / "toy-unet.npz") as f:
        assert json.loads(str(f["unpinned"])) == toy["provenance"]["unpinned_files"]

    df = collect(results)
    table = results_table(df)
    assert list(table.columns)[-1] == "unpinned"
    assert dict(zip(table["model"], table["unpinned"], strict=True)) == {"digits-unet": False, "toy-unet": True}
    md = leaderboard_markdown(df)
    assert "‡ unpinned: computed from a file" in md and "--trust-unpinned" in md
    sections = {s.split("\n", 1)[0]: s for s in md.split("\n## ")[1:]}  # per model
    assert "| ddim | " in sections["toy-unet"] and "| ddim | " in sections["digits-unet"]
    assert any(line.startswith("| ddim | ") and "‡" in line for line in sections["toy-unet"].splitlines())
    assert "‡" not in sections["digits-unet"]
    assert "‡ unpinned" in leaderboard_html(df, {}, {})
    html = {key[0]: metric_table(g) for key, g in groups(with_protocol(df))}
    assert "‡" in html["toy-unet"] and "‡" not in html["digits-unet"]


def test_unpinned_pickle_is_pulled_only_with_the_opt_in_and_warned_about(server: str) -> None:
    body = b"not really a pickle"
    _Files.files["/files/net.pkl"] = body
    e = ck.parse_entry("toy-pkl", {"adapter": "edm-pickle", "source": {"url": f"{server}/files/net.pkl"},
                                   "files": [{"path": "net.pkl", "sha256": None}], "license": "test-only",
                                   "schedule": "edm", "parameterization": "x0", "resolution": 8}, "m.yaml")
    with pytest.raises(DpmbenchError, match=r"it is a pickle \(unpickled when loaded\) and has no sha256 pinned; "
                                            r"pin its sha256 .* or opt in for this run with --trust-unpinned"):
        store.pull(e, progress=False)
    assert _Files.requests == []
    with dl.trusting(), pytest.warns(store.UnpinnedChecksumWarning,
                                     match=r"are pickles: loading them runs whatever code they contain"):
        store.pull(e, progress=False)
    sha = hashlib.sha256(body).hexdigest()
    assert store.seen_hashes(e) == {"net.pkl": sha}  # what the adapter's unpickling gate then checks
    assert dl.unpinned_used("checkpoint:") == {"checkpoint:toy-pkl/net.pkl": sha}


def test_unpinned_guided_diffusion_pair_from_a_folder_url(server: str, tmp_path: Path, monkeypatch) -> None:
    """The shipped ADM entry's form (two unpinned .pt files under one folder URL): refused without the opt-in; with
    it both files pulled, their hashes recorded, and the model loaded through the adapter's sha256 gate and guided."""
    import torch
    from standins import GD_TINY_CLASSIFIER_FLAGS, GD_TINY_FLAGS, guided_diffusion_pair

    from dpmbench.models.base import guided
    from dpmbench.models.registry import load_model

    built = tmp_path / "built"
    guided_diffusion_pair(built)
    for name in ("unet.pt", "classifier.pt"):
        _Files.files[f"/diffusion/jul-2021/{name}"] = (built / name).read_bytes()
    real = yaml.safe_load((ROOT / "config" / "checkpoints.yaml").read_text())["checkpoints"][
        "adm-imagenet256-classifier-guided"]
    entry = {**real, "source": {"url": f"{server}/diffusion/jul-2021/"}, "resolution": 64,
             "files": [{"path": n, "sha256": None, "size": None} for n in ("unet.pt", "classifier.pt")],
             "options": {**real["options"], "model_file": "unet.pt", "classifier_file": "classifier.pt",
                         "model_flags": GD_TINY_FLAGS, "classifier_flags": GD_TINY_CLASSIFIER_FLAGS}}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"checkpoints": {"toy-adm": entry}}))
    monkeypatch.setenv("DPMBENCH_MANIFESTS", str(manifest))
    e = ck.load_manifest(manifest)["toy-adm"]
    with pytest.raises(DpmbenchError, match=r"pin its sha256 .* or opt in for this run with --trust-unpinned"):
        store.pull(e, progress=False)
    assert _Files.requests == []
    with dl.trusting(), pytest.warns(store.UnpinnedChecksumWarning):
        store.pull(e, progress=False)
        model = load_model("toy-adm")
    seen = {n: hashlib.sha256((built / n).read_bytes()).hexdigest() for n in ("unet.pt", "classifier.pt")}
    assert store.seen_hashes(e) == seen
    assert sorted(_Files.requests) == ["/diffusion/jul-2021/classifier.pt", "/diffusion/jul-2021/unet.pt"]
    out = guided(model, 2.0).eps(torch.zeros(2, 3, 64, 64), 0.5, torch.tensor([3, 4]))
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


def _stats_manifest(tmp_path: Path, server: str) -> tuple[Path, bytes]:
    buf = tmp_path / "s.npz"
    np.savez(buf, mu=np.zeros(3), sigma=np.eye(3))
    _Files.files["/stats/s.npz"] = buf.read_bytes()
    _Files.files["/w/config.json"] = b"{}"
    m = tmp_path / "stats.yaml"
    m.write_text(yaml.safe_dump({
        "stats": [{"name": "toy-stats", "dataset": "toy", "split": "all", "resolution": 8, "inception": "none",
                   "url": f"{server}/stats/s.npz", "sha256": None}],
        "weights": [{"name": "toy-weights", "source": "url", "files": [
            {"name": "config.json", "url": f"{server}/w/config.json", "sha256": None}]}]}))
    return m, buf.read_bytes()


def test_reference_stats_and_weights_need_the_opt_in_and_mark_the_metrics(server: str, tmp_path: Path) -> None:
    from dpmbench.io import save_npz
    from evaluators.job import evaluate_files
    from evaluators.refstats import stats_file
    from evaluators.weights import weights_files

    m, body = _stats_manifest(tmp_path, server)
    with pytest.raises(DpmbenchError, match=r"reference stats 'toy-stats' have no sha256 pinned .* or opt in for "
                                            r"this run with --trust-unpinned") as err:
        stats_file("toy-stats", m)
    assert "\n" not in str(err.value)
    with pytest.raises(DpmbenchError, match=r"weights 'toy-weights' have no sha256 pinned .* or opt in for this run "
                                            r"with --trust-unpinned"):
        weights_files("toy-weights", "--toy-weights DIR", m)
    assert _Files.requests == []
    samples = tmp_path / "gmm.npz"
    save_npz(samples, x=np.zeros((4, 2), np.float32), model="gmm-2d", seed=0, nfe=2, solver="ddim",
             schedule="logsnr", guidance=np.nan, t_end=1e-3)
    evaluate_files([str(samples)], [str(tmp_path / "before.json")], "sw2_true", options=None)
    assert json.loads((tmp_path / "before.json").read_text())["unpinned"] is False
    with dl.trusting():
        path, _ = stats_file("toy-stats", m)
        folder = weights_files("toy-weights", "--toy-weights DIR", m)
    assert path.read_bytes() == body and (folder / "config.json").read_bytes() == b"{}"
    assert dl.unpinned_used() == {"reference_stats:toy-stats": hashlib.sha256(body).hexdigest(),
                                  "weights:toy-weights/config.json": hashlib.sha256(b"{}").hexdigest()}
    evaluate_files([str(samples)], [str(tmp_path / "after.json")], "sw2_true", options=None)
    rec = json.loads((tmp_path / "after.json").read_text())
    assert rec["unpinned"] is True and rec["provenance"]["unpinned_files"] == dl.unpinned_used()


def test_trust_unpinned_config_key_is_validated() -> None:
    from dpmbench.grid import build_grid

    base = {"metrics": ["sw2_true"], "nfe": [3], "solvers": ["ddim"], "models": {"gmm-2d": {"num_samples": 4}}}
    assert not build_grid(base).trust_unpinned
    assert build_grid({**base, "trust_unpinned": True}).trust_unpinned
    assert build_grid({**base, "trust_unpinned": "true"}).trust_unpinned  # --config trust_unpinned=true
    with pytest.raises(DpmbenchError, match=r"invalid config key 'trust_unpinned'"):
        build_grid({**base, "trust_unpinned": "maybe"})
