"""Checkpoint models end to end, on tiny random diffusers models built and saved here (nothing downloaded): the CLI
samples a tiny Stable Diffusion pipeline with prompts from a captions file and classifier-free guidance, with the same
prompts and samples however the samples are sharded. (The workflow run that pulls checkpoint models from a local
Hugging Face-style server, samples them with several solvers and reports mse_ref against the high-NFE reference run
the config names is tests/test_flow_adapters.py's, one Snakemake start for a DDPM UNet, SD3 and FLUX.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from standins import files_of as _files
from support import run_cli
from test_adapters import sd_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


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
