"""``digits-unet``: the project's own trained network, shipped in diffusers' layout and loaded like a downloaded
checkpoint (same ``diffusers-unet`` adapter, same sha256 verification), its training command, and its quality floor.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from support import run_cli

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.models.manifest import get_entry
from dpmbench.models.store import checkpoint_dir, verify

schedulers = importlib.import_module("diffusers.schedulers")

ID = "digits-unet"


@pytest.fixture(scope="module")
def net():  # noqa: ANN201 - a DiffusersUNet
    return load_model(ID)


def _manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cid: str, entry: dict) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"checkpoints": {cid: entry}}))
    monkeypatch.setenv("DPMBENCH_MANIFESTS", str(path))


def test_shipped_entry_is_a_pinned_local_diffusers_checkpoint(net) -> None:  # noqa: ANN001
    from dpmbench.models.adapters.diffusers_unet import DiffusersUNet

    entry = get_entry(ID)
    assert entry.adapter == "diffusers-unet" and entry.kind == "local"
    assert all(f.sha256 and f.size for f in entry.files)
    assert verify(entry) == checkpoint_dir(entry) == Path(__file__).resolve().parents[1] / "trained" / ID
    assert isinstance(net, DiffusersUNet)
    assert (net.shape, net.parameterization, net.num_classes, net.null_class) == ((1, 8, 8), "eps", 10, 10)
    size = sum(f.size for f in entry.files)
    assert size < 5_000_000  # a few MB at most


def test_schedule_equals_diffusers_alphas_cumprod(net) -> None:  # noqa: ANN001
    """The adapter's schedule is the shipped scheduler config's: diffusers' own float32 table to float32 rounding,
    and the same betas' float64 cumulative product to round-off."""
    ddpm = schedulers.DDPMScheduler.from_pretrained(checkpoint_dir(get_entry(ID)))
    assert (ddpm.config.beta_start, ddpm.config.beta_end, ddpm.config.num_train_timesteps) == (1e-4, 0.02, 1000)
    assert ddpm.config.beta_schedule == "linear" and ddpm.config.prediction_type == "epsilon"
    ours = net.schedule.alphas_cumprod
    torch.testing.assert_close(ours.float(), ddpm.alphas_cumprod, rtol=2e-6, atol=0)
    betas64 = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(ours, torch.cumprod(1 - betas64, 0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_ddim_through_the_adapter_matches_diffusers_ddimscheduler(net, guidance: float | None) -> None:  # noqa: ANN001
    """dpmbench's ``ddim`` on the adapter vs diffusers' ``DDIMScheduler`` driven like a pipeline (the UNet called
    directly with integer timesteps, classifier-free guidance on the null class): < 1e-5 relative. The scheduler's
    tables are float64 (its float32 tables alone differ by ~1e-6, see test_diffusers_agreement)."""
    steps, n = 10, 16
    sch = schedulers.DDIMScheduler.from_pretrained(checkpoint_dir(get_entry(ID)), clip_sample=False,
                                                   set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    abar = net.schedule.alphas_cumprod
    sch.alphas_cumprod, sch.final_alpha_cumprod = abar, abar[0]
    sch.set_timesteps(steps)
    x_T = net.prior(n, seed=3, dtype=torch.float64)
    labels = net.labels(n)
    unet = net.unet

    def eps(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        ts = torch.full((n,), int(step))
        e_u = unet(x.float(), ts, class_labels=torch.full((n,), 10)).sample.double()
        if guidance is None:
            return e_u
        e_c = unet(x.float(), ts, class_labels=labels).sample.double()
        return e_u + guidance * (e_c - e_u)

    x = x_T.clone()
    for step in sch.timesteps:
        x = sch.step(eps(x, step), step, x, eta=0.0).prev_sample
    ts = [int(s) for s in sch.timesteps]
    times = [(s + 1) / 1000 for s in [*ts, max(ts[-1] - 1000 // steps, 0)]]  # final_alpha_cumprod: index 0
    assert times[-1] == 1 / 1000
    ours = sample(net, "ddim", steps, x_T, schedule=times, guidance=guidance,
                  cond=None if guidance is None else labels)
    rel = float(torch.linalg.vector_norm(ours - x) / torch.linalg.vector_norm(x))
    assert rel < 1e-5


def test_corrupted_weight_file_is_refused_by_its_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    entry = get_entry(ID).as_dict()
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint_dir(get_entry(ID)), copy)
    weights = copy / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the tensor data: the size is unchanged
    weights.write_bytes(bytes(data))
    entry = {k: v for k, v in entry.items() if k != "id"} | {"source": {"local": str(copy)}}
    _manifest(tmp_path, monkeypatch, "digits-copy", entry)
    with pytest.raises(DpmbenchError) as err:
        load_model("digits-copy")
    msg = str(err.value)
    assert "\n" not in msg and "checksum mismatch" in msg and "diffusion_pytorch_model.safetensors" in msg
    assert "git checkout" in msg
    code, _, stderr = run_cli(capsys, "pull", "digits-copy")
    assert code == 2 and stderr.count("\n") == 1 and "checksum mismatch" in stderr


def test_a_local_source_needs_pinned_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = get_entry(ID).as_dict()
    files = [dict(f, sha256=None) for f in entry["files"]]
    entry = {k: v for k, v in entry.items() if k != "id"} | {"files": files}
    _manifest(tmp_path, monkeypatch, "digits-unpinned", entry)
    with pytest.raises(DpmbenchError, match="needs its sha256 pinned"):
        load_model("digits-unpinned")


def test_train_cli_short_run_loads_through_the_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """``dpmbench train digits-unet --steps 200 --batch-size 16``: a complete diffusers folder whose EMA network
    loads through the same adapter and samples; the loss has dropped from its start (~1, the variance of eps)."""
    from dpmbench.train import manifest_entry

    out = tmp_path / "digits"
    code, stdout, _ = run_cli(capsys, "train", ID, "--steps", "200", "--batch-size", "16", "--out", str(out),
                              "--no-progress")
    assert code == 0 and "200 steps" in stdout
    log = json.loads((out / "training.json").read_text())
    assert log["config"]["steps"] == 200 and log["config"]["batch_size"] == 16 and log["train_images"] == 1438
    assert log["loss_every_100"][-1] < 0.5 * log["loss_every_100"][0]
    assert not (tmp_path / "digits.tmp").exists()
    _manifest(tmp_path, monkeypatch, "digits-short", manifest_entry(out))
    model = load_model("digits-short")
    x = sample(model, "ddim", 5, model.prior(4, seed=0), guidance=2.0, cond=model.labels(4))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_train_cli_bad_steps_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, _, stderr = run_cli(capsys, "train", ID, "--steps", "0", "--out", str(tmp_path / "x"))
    assert code == 2 and stderr.count("\n") == 1 and "--steps" in stderr
    assert not (tmp_path / "x").exists()


def test_held_out_split_is_fixed_and_disjoint() -> None:
    from dpmbench.train import digits_split, split_indices

    tr, ho = split_indices(1797)
    assert len(tr) == 1438 and len(ho) == 359 and not set(tr.tolist()) & set(ho.tolist())
    assert ho[:3].tolist() == [4, 9, 14]
    assert digits_split("held-out")[0].shape == (359, 64)
    with pytest.raises(DpmbenchError, match="split"):
        digits_split("test")


def test_quality_floor_on_a_small_sample(net) -> None:  # noqa: ANN001
    """The shipped network's quality floor (DPM-Solver++ 2M, NFE 50) on a small sample: digits-CNN accuracy of
    class-conditional samples >= 90% at guidance 1 and >= 97% at guidance 3; unguided FDD to the held-out split
    within 3x of the training split's (same n). docs/models.md gives the full-size numbers. Sizes in whole network
    calls of 64 rows: 64 conditional samples (128 rows guided), 192 unconditional."""
    from dpmbench.train import quality_floor

    with net.fixed_batch():  # one network call per batch, not 8-row calls: a statistical floor, not batch invariance
        q = quality_floor(net, num_conditional=64, num_unconditional=192)
    assert q["cond_acc@1"] >= 0.90 and q["cond_acc@3"] >= 0.97
    assert q["fdd_samples_vs_held_out"] <= 3 * q["fdd_train_vs_held_out"]


def test_the_mse_ref_reference_has_converged() -> None:
    """The default grid's reference (DPM-Solver++(3M), NFE 200, float64 x_T) is within 1% of the smallest mse_ref of
    a 20-NFE solver of the grid from its 2x finer version (measured with 64 samples: 0.18% unguided, 0.31% at 7.5;
    0.15% on the 8 samples here). Network calls of 16 rows, one per guided evaluation (option ``micro_batch``; the
    shipped 64 would pad each 16-row call to 64): the convergence of the reference does not depend on it, the
    rounding (~1e-7 relative) is far below the 1% asserted."""
    net = load_model(ID)
    net.micro_batch = 16
    spec, n, g = "dpm-solver++:order=3,method=multistep", 8, 7.5
    x_T, labels = net.prior(n, seed=0, dtype=torch.float64), net.labels(n)
    ref = sample(net, spec, 200, x_T, guidance=g, cond=labels)
    finer = float(((sample(net, spec, 400, x_T, guidance=g, cond=labels) - ref) ** 2).mean())
    best = float(((sample(net, "unipc:variant=bh2,order=3", 20, x_T, guidance=g, cond=labels) - ref) ** 2).mean())
    assert finer <= 0.01 * best


def test_samples_are_bit_identical_whatever_the_batch(net) -> None:  # noqa: ANN001
    """Fixed 64-row network calls (option micro_batch): a sample does not depend on the batch it is drawn in."""
    x_T, labels = net.prior(70, seed=0), net.labels(70)
    whole = sample(net, "unipc:variant=bh1,order=2", 5, x_T, guidance=7.5, cond=labels)
    parts = [sample(net, "unipc:variant=bh1,order=2", 5, x_T[s], guidance=7.5, cond=labels[s])
             for s in (slice(0, 40), slice(40, 70))]
    assert torch.equal(whole, torch.cat(parts))
