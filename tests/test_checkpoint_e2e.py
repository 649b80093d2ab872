"""Checkpoint models end to end, on tiny random diffusers models built and saved here (nothing downloaded):

- the workflow pulls a DDPM pipeline from a local Hugging Face-style server, samples it with several solvers,
  runs the high-NFE reference the config names, and reports mse_ref against it;
- the CLI samples a tiny Stable Diffusion pipeline with prompts from a captions file and classifier-free
  guidance, with the same prompts and samples however the samples are sharded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import yaml
from support import run_cli, shared_registry_cache, workflow_pythonpath
from test_adapters import _tiny_unet, sd_dir  # noqa: F401  (fixture)
from test_checkpoints import _Handler, server  # noqa: F401  (fixture)
from test_workflow import ROOT, _cmd

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _files(root: Path) -> list[dict[str, Any]]:
    """The manifest's file list of a saved folder: every file with its sha256 and size."""
    return [{"path": str(p.relative_to(root)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
             "size": p.stat().st_size} for p in sorted(root.rglob("*")) if p.is_file()]


@pytest.mark.timeout(600)
def test_workflow_pulls_samples_and_scores_a_checkpoint_model(server: str, tmp_path: Path) -> None:  # noqa: F811
    saved = tmp_path / "saved"
    diffusers.DDPMPipeline(unet=_tiny_unet(), scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000)
                           ).save_pretrained(saved)
    files = _files(saved)
    for f in files:
        _Handler.files[f"/org/tiny-ddpm/resolve/rev1/{f['path']}"] = (saved / f["path"]).read_bytes()
    config = {
        "metrics": ["mse_ref"], "nfe": [3, 6], "solvers": ["ddim", "dpm-solver++:order=2,method=multistep"],
        "samples_per_shard": 4, "seed": 0,  # one shard per cell: fewer jobs (each a process start)
        "models": {"tiny-ddpm": {"num_samples": 4, "reference_solver": {"solver": "dpm-solver++", "nfe": 40}}},
        "checkpoints": {"tiny-ddpm": {
            "adapter": "diffusers-unet", "source": {"hf": "org/tiny-ddpm", "revision": "rev1"}, "files": files,
            "license": "test-only", "schedule": "vp-discrete", "parameterization": "eps", "resolution": 8}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "DPMBENCH_CACHE": shared_registry_cache(tmp_path / "cache"),
           "PYTHONPATH": workflow_pythonpath(ROOT),
           "DPMBENCH_HF_ENDPOINT": server, "OMP_NUM_THREADS": "1"}
    env.pop("DPMBENCH_OFFLINE", None)
    proc = subprocess.run(_cmd(tmp_path), capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(_Handler.requests) == len(files)  # every file pulled once, before any job of the model
    rows = list(csv.DictReader((tmp_path / "reports" / "results.csv").open()))
    mse = {(r["solver"], int(r["nfe"])): float(r["value"]) for r in rows if r["metric"] == "mse_ref"}
    assert len(mse) == 4 and all(np.isfinite(v) and v > 0 for v in mse.values())
    # more steps land closer to the 40-NFE reference run of the same x_T
    assert mse[("dpm-solver++:order=2,method=multistep", 6)] < mse[("dpm-solver++:order=2,method=multistep", 3)]
    assert mse[("ddim", 6)] < mse[("ddim", 3)]
    again = subprocess.run(_cmd(tmp_path, "-n"), capture_output=True, text=True, env=env, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_cli_samples_stable_diffusion_with_captions_and_guidance(sd_dir: Any, tmp_path: Path,  # noqa: F811
                                                                 capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root = sd_dir[0]
    cache = tmp_path / "cache"
    shutil.copytree(root, cache / "checkpoints" / "tiny-sd")
    manifest = {"checkpoints": {"tiny-sd": {
        "adapter": "stable-diffusion", "source": {"hf": "org/tiny-sd", "revision": "rev1"}, "files": _files(root),
        "license": "test-only", "schedule": "vp-discrete", "parameterization": "eps", "resolution": 16,
        "conditioning": "text"}}}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    monkeypatch.setenv("DPMBENCH_CACHE", str(cache))
    monkeypatch.setenv("DPMBENCH_MANIFESTS", str(tmp_path / "manifest.yaml"))
    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")  # everything is in place: nothing may be fetched
    captions = tmp_path / "captions_val2014.json"
    captions.write_text(json.dumps({"annotations": [{"id": i, "image_id": i, "caption": f"a photo of thing {i}"}
                                                    for i in range(20)]}))
    base = ["sample", "--model", "tiny-sd", "--solver", "dpm-solver++", "--nfe", "4", "--seed", "3",
            "--guidance", "7.5", "--captions", str(captions)]
    code, _, err = run_cli(capsys, *base, "--num-samples", "4", "--out", str(tmp_path / "all.npz"))
    assert code == 0, err
    parts = []
    for lo in (0, 2):
        code, _, err = run_cli(capsys, *base, "--num-samples", "2", "--start", str(lo), "--batch-size", "1",
                               "--out", str(tmp_path / f"part{lo}.npz"))
        assert code == 0, err
        parts.append(np.load(tmp_path / f"part{lo}.npz"))
    whole = np.load(tmp_path / "all.npz")
    assert whole["x"].shape == (4, 4, 8, 8) and whole["images"].shape == (4, 3, 16, 16)
    assert whole["images"].dtype == np.uint8 and len(set(whole["prompts"].tolist())) == 4
    assert np.array_equal(np.concatenate([p["prompts"] for p in parts]), whole["prompts"])
    assert np.array_equal(np.concatenate([p["x"] for p in parts]), whole["x"])  # shards and batches agree
    code, _, err = run_cli(capsys, "sample", "--model", "tiny-sd", "--solver", "ddim", "--nfe", "4", "--seed", "0",
                           "--num-samples", "2", "--out", str(tmp_path / "no.npz"))
    assert code == 2 and "invalid --captions None: model 'tiny-sd' is text-conditional" in err
    assert not (tmp_path / "no.npz").exists()
