"""The trained flow-matching network ``digits-flow``: the digits-unet architecture trained with the rectified-flow
loss (``dpmbench train digits-flow``), shipped in diffusers' layout with a FlowMatchEulerDiscreteScheduler config,
pinned by sha256 and loaded through the same ``diffusers-unet`` adapter as a downloaded checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dpmbench import load_model, sample
from dpmbench.models.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
ID = "digits-flow"


@pytest.fixture(scope="module")
def net():  # noqa: ANN201
    return load_model(ID)


def test_shipped_entry_is_a_pinned_local_flow_checkpoint(net) -> None:  # noqa: ANN001
    entry = load_manifest()[ID]
    assert entry.adapter == "diffusers-unet" and entry.schedule == "flow" and entry.parameterization == "flow"
    assert all(len(f.sha256) == 64 and f.size for f in entry.files)
    cfg = json.loads((ROOT / "trained" / ID / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == "FlowMatchEulerDiscreteScheduler" and cfg["shift"] == 1.0
    log = json.loads((ROOT / "trained" / ID / "training.json").read_text())
    assert log["model"] == ID and log["config"]["steps"] == 5000 and log["train_images"] == 1438
    assert net.schedule.kind == "flow" and net.parameterization == "flow" and net.num_classes == 10
    x = net.prior(4, seed=0)
    assert torch.equal(net.timestep(0.25, x), torch.full((4,), 250.0))  # diffusers' flow timestep: sigma * N


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_flow_euler_through_the_adapter_matches_diffusers_flow_match_euler(net, guidance: float | None) -> None:  # noqa: ANN001
    """The shipped FlowMatchEuler scheduler driving the UNet by hand (velocity, CFG on velocities as SD3's pipeline
    does) and ``flow-euler`` through the adapter on the same sigmas (time-uniform 1 .. 1/1000, then the jump to 0):
    the same samples (float32; relative difference below 1e-5)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sch = FlowMatchEulerDiscreteScheduler.from_pretrained(ROOT / "trained" / ID)
    n = 8
    sch.set_timesteps(n)
    x_T = net.prior(16, seed=0)
    labels = net.labels(16)
    x = x_T.clone()
    with torch.no_grad():
        for t in sch.timesteps:
            ts = t.expand(16)
            if guidance is None:
                v = net.unet(x, ts, class_labels=torch.full((16,), 10)).sample
            else:
                v_c = net.unet(x, ts, class_labels=labels).sample
                v_u = net.unet(x, ts, class_labels=torch.full((16,), 10)).sample
                v = v_u + guidance * (v_c - v_u)
            x = sch.step(v, t, x).prev_sample
    ours = sample(net, "flow-euler:denoise_to_zero=true", n, x_T, schedule="time-uniform", t_end=1e-3,
                  guidance=guidance, cond=None if guidance is None else labels)
    assert float((ours - x).norm() / x.norm()) < 1e-5


def test_quality_floor_on_a_small_sample(net) -> None:  # noqa: ANN001
    """As digits-unet's (tests/test_digits_unet.py): digits-CNN accuracy of class-conditional samples >= 90% at
    guidance 1 and >= 97% at guidance 3, unguided FDD to the held-out split within 3x of the training split's, with
    DPM-Solver++(2M) at NFE 50 from t = 0.999 (dpmbench.train.quality_floor); 64 conditional, 192 unconditional
    samples. The full-size numbers are in docs/flow.md."""
    from dpmbench.train import quality_floor

    with net.fixed_batch():  # one network call per batch, not 8-row calls: a statistical floor, not batch invariance
        q = quality_floor(net, num_conditional=64, num_unconditional=192)
    assert q["t_start"] == 0.999
    assert q["cond_acc@1"] >= 0.90 and q["cond_acc@3"] >= 0.97
    assert q["fdd_samples_vs_held_out"] <= 3 * q["fdd_train_vs_held_out"]


def test_a_short_flow_training_run_loads_through_the_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train_digits_unet(model="digits-flow")`` for 20 steps: a FlowMatchEuler folder whose manifest entry is a flow
    model, loaded through the adapter, sampling from pure noise."""
    import yaml

    from dpmbench.train import TrainConfig, manifest_entry, train_digits_unet

    out = tmp_path / "flow"
    log = train_digits_unet(out, TrainConfig(steps=20, batch_size=8), progress=False, model=ID)
    assert log["model"] == ID and len(log["loss_every_100"]) == 1
    entry = manifest_entry(out)
    assert entry["schedule"] == "flow" and entry["parameterization"] == "flow"
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"checkpoints": {"flow-short": entry}}))
    monkeypatch.setenv("DPMBENCH_MANIFESTS", str(manifest))
    model = load_model("flow-short")
    x = sample(model, "flow-heun", 6, model.prior(4, seed=0), schedule="time-uniform", guidance=2.0,
               cond=model.labels(4))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_straight_paths_need_fewer_steps(net) -> None:  # noqa: ANN001
    """docs/flow.md "Straight paths": unguided FDD to the held-out split (359 samples, x_T = prior(359, seed 0)):
    first-order Euler on digits-flow at NFE 5 beats DDIM on digits-unet at NFE 10 (logSNR and time-uniform grids).
    Float32 networks: 1e-2 relative on FDD (as tests/test_claims_digits_unet.py)."""
    from dpmbench.train import digits_fdd, digits_split

    held = digits_split("held-out")[0]
    unet = load_model("digits-unet")
    flow = [digits_fdd(sample(net, "flow-euler", n, net.prior(len(held), seed=0), schedule="time-uniform"), held)
            for n in (5, 10)]
    ddim = [digits_fdd(sample(unet, "ddim", 10, unet.prior(len(held), seed=0), schedule=k), held)
            for k in ("logsnr", "time-uniform")]
    assert flow == pytest.approx([52.95, 43.46], rel=1e-2) and ddim == pytest.approx([69.24, 58.17], rel=1e-2)
    assert flow[0] < min(ddim)
