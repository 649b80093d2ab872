"""Checkpoint adapters on tiny RANDOM models built here and saved in their ecosystem's format (nothing downloaded).

Every model is saved (``save_pretrained`` / ``pickle`` / ``torch.save``) into a temp dir and loaded back through
``load_adapter``; the adapter's predictions are compared with direct calls of the original network objects.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from standins import (
    SD_BETAS,
    build_ldm_dir,
    build_sd_dir,
    edm_nets,
    forget_edm_module,
    forget_score_sde_modules,
    write_edm_code,
    write_edm_pickle,
    write_score_sde_checkpoint,
    write_score_sde_code,
)
from standins import seeded as _seeded
from standins import tiny_unet as _tiny_unet
from support import run_cli

import dpmbench
from dpmbench import sample
from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters import ADAPTERS, load_adapter, prompts_from_captions
from dpmbench.models.base import Guided, guided
from dpmbench.solvers.registry import get_solver

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

STEPS = [0, 1, 7, 500, 998, 999]  # discrete training steps checked


def _timesteps(n: int, batch: int) -> torch.Tensor:
    return torch.full((batch,), n, dtype=torch.long)


# -- diffusers-unet -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    root = tmp_path_factory.mktemp("ddpm")
    unet, sched = _tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=1000)
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(root)
    return root, unet, sched


def _entry(adapter: str, **kw: Any) -> dict[str, Any]:
    """A manifest entry; diffusers adapters get ``micro_batch: 0`` (one network call per batch) so that outputs can
    be compared bit for bit with direct calls of the network on the same batch."""
    opts = {"micro_batch": 0} if adapter in ("diffusers-unet", "latent-diffusion", "stable-diffusion") else {}
    return {"id": f"tiny-{adapter}", "adapter": adapter, **kw, "options": {**opts, **kw.get("options", {})}}


def test_diffusers_unet_eps_is_raw_unet_output_and_schedule_matches(ddpm_dir: tuple[Path, Any, Any]) -> None:
    root, unet, sched = ddpm_dir
    model = load_adapter(_entry("diffusers-unet", parameterization="eps", schedule="vp-discrete"), root)
    assert (model.parameterization, model.shape, model.schedule.kind) == ("eps", (3, 8, 8), "vp-discrete")
    _seeded(1)
    x = torch.randn(2, 3, 8, 8)
    for n in STEPS:
        t = model.schedule.t_of_index(n)
        with torch.no_grad():
            raw = unet(x, _timesteps(n, 2)).sample
        assert torch.equal(model.eps(x, t), raw), n  # exact: same network, same input, same timestep
        # per-sample tensor times take the same path
        assert torch.equal(model.eps(x, torch.full((2,), t, dtype=torch.float64)), raw)
        ours = model.schedule.alpha(t) ** 2
        assert ours == pytest.approx(float(sched.alphas_cumprod[n]), rel=2e-6), n


@pytest.mark.parametrize("config", [
    {"beta_schedule": "linear"},
    SD_BETAS,
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "linear", "num_train_timesteps": 500, "beta_start": 2e-4, "beta_end": 0.04},
])
def test_schedule_from_scheduler_config_equals_diffusers_alphas_cumprod(config: dict[str, Any]) -> None:
    from dpmbench.models.adapters.diffusers_unet import schedule_from_config

    sched = diffusers.DDIMScheduler(**config)
    ours = schedule_from_config(dict(sched.config))
    n = sched.config.num_train_timesteps
    idx = torch.arange(n)
    a2 = ours.alpha(ours.t_of_index(idx)) ** 2
    rel = ((a2 - sched.alphas_cumprod.double()) / sched.alphas_cumprod.double()).abs().max()
    # diffusers builds its table in float32, ours is float64: ~6e-7 for linear; for the cosine schedule the capped
    # last beta (0.999) stored in float32 moves 1 - beta, hence alphas_cumprod[999], by 1.3e-5 relative
    assert rel < (2e-5 if config["beta_schedule"] == "squaredcos_cap_v2" else 2e-6)


def test_v_and_x0_prediction_from_scheduler_config(tmp_path: Path, ddpm_dir: tuple[Path, Any, Any]) -> None:
    _, unet, _ = ddpm_dir
    unet.save_pretrained(tmp_path / "unet")
    x = torch.randn(2, 3, 8, 8)
    for ptype, param in (("v_prediction", "v"), ("sample", "x0")):
        diffusers.DDIMScheduler(prediction_type=ptype).save_pretrained(tmp_path / "scheduler")
        model = load_adapter(_entry("diffusers-unet"), tmp_path)
        assert model.parameterization == param
        t = model.schedule.t_of_index(300)
        a, s = model.schedule.alpha(t), model.schedule.sigma(t)
        with torch.no_grad():
            raw = unet(x, _timesteps(300, 2)).sample
        want = s * x + a * raw if param == "v" else (x - a * raw) / s  # v = alpha eps - sigma x0 (Salimans & Ho)
        torch.testing.assert_close(model.eps(x, t), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(DpmbenchError, match="parameterization"):
        load_adapter(_entry("diffusers-unet", parameterization="eps"), tmp_path)  # manifest disagrees: sample


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_ddim_through_the_adapter_matches_diffusers_ddim_on_the_same_unet(ptype: str, tmp_path: Path,
                                                                         ddpm_dir: tuple[Path, Any, Any]) -> None:
    """End-to-end check of the time convention against an independent implementation: diffusers' DDIMScheduler
    driving the raw UNet (as DDIMPipeline does: ``unet(x, timestep)``, ``scheduler.step``) and dpmbench's ``ddim``
    through the adapter on the times ``(timestep + 1) / N`` agree (float32 both; SD's "leading" spacing with
    steps_offset=1, set_alpha_to_one=False so the last step lands at alphas_cumprod[0] = t 1/N)."""
    _, unet, _ = ddpm_dir
    unet.save_pretrained(tmp_path / "unet")
    sch = diffusers.DDIMScheduler(**SD_BETAS, prediction_type=ptype, clip_sample=False, set_alpha_to_one=False,
                                  steps_offset=1, timestep_spacing="leading")
    sch.save_pretrained(tmp_path / "scheduler")
    model = load_adapter(_entry("diffusers-unet"), tmp_path)
    steps = 8
    sch.set_timesteps(steps)
    ts = [int(n) for n in sch.timesteps]
    times = [(n + 1) / 1000 for n in ts] + [1 / 1000]  # lands at timestep - 1000 // steps each step (>= 0 here)
    assert [n - 1000 // steps for n in ts[:-1]] == ts[1:] and ts[-1] - 1000 // steps < 0
    x_T = model.prior(4, seed=0)
    theirs = x_T.clone()
    with torch.no_grad():
        for n in sch.timesteps:
            theirs = sch.step(unet(theirs, n).sample, n, theirs, eta=0.0).prev_sample
    ours = sample(model, "ddim", steps, x_T, schedule=times)
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel < 5e-6, rel  # float32 both sides (measured ~3e-7; diffusers' alphas_cumprod is float32, ours float64)
    # sensitivity: feeding the UNet N t (one step late) instead of N t - 1 is detected
    shifted = model.timestep
    model.timestep = lambda t, x: shifted(t, x) + 1.0
    off = sample(model, "ddim", steps, x_T, schedule=times)
    assert float((off - theirs).norm() / theirs.norm()) > 100 * 5e-6  # measured ~5e-3


def test_flat_repository_like_google_ddpm_cifar10(tmp_path: Path, ddpm_dir: tuple[Path, Any, Any]) -> None:
    """google/ddpm-cifar10-32's layout: config.json, weights and scheduler_config.json at the root (manifest option
    ``subfolder: ""``); the scheduler config there is found and used (v-prediction here, to see it was read)."""
    _, unet, _ = ddpm_dir
    unet.save_pretrained(tmp_path)
    diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(tmp_path)
    for opts in ({"subfolder": ""}, {}):
        model = load_adapter(_entry("diffusers-unet", parameterization="v", options=opts), tmp_path)
        assert model.parameterization == "v" and model.schedule.beta_schedule == "squaredcos_cap_v2"
    with pytest.raises(DpmbenchError, match="option unet"):
        load_adapter(_entry("diffusers-unet", options={"unet": "nope"}), tmp_path)


def test_bare_unet_folder_and_learned_variance(tmp_path: Path) -> None:
    unet = _tiny_unet(out_channels=6)  # learned variance: eps is the first half
    unet.save_pretrained(tmp_path)
    model = load_adapter(_entry("diffusers-unet", parameterization="eps",
                                options={"beta_schedule": "squaredcos_cap_v2"}), tmp_path)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        raw = unet(x, _timesteps(10, 2)).sample
    assert torch.equal(model.eps(x, model.schedule.t_of_index(10)), raw[:, :3])
    ref = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod[10]
    assert model.schedule.alpha(model.schedule.t_of_index(10)) ** 2 == pytest.approx(float(ref), rel=1e-6)


def test_class_conditional_unet_guidance_with_null_class(tmp_path: Path) -> None:
    unet = _tiny_unet(num_class_embeds=5)  # 4 classes + the null class 4 (unconditional branch)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(tmp_path)
    model = load_adapter(_entry("diffusers-unet", options={"num_classes": 4, "null_class": 4}), tmp_path)
    assert model.num_classes == 4
    x, labels = torch.randn(3, 3, 8, 8), torch.tensor([0, 3, 1])
    t = model.schedule.t_of_index(250)
    with torch.no_grad():
        raw_c = unet(x, _timesteps(250, 3), class_labels=labels).sample
        raw_u = unet(x, _timesteps(250, 3), class_labels=torch.full((3,), 4)).sample
    assert torch.equal(model.eps(x, t, labels), raw_c) and torch.equal(model.eps(x, t), raw_u)
    torch.testing.assert_close(guided(model, 3.0).eps(x, t, labels), raw_u + 3.0 * (raw_c - raw_u))
    no_null = load_adapter(_entry("diffusers-unet", options={"num_classes": 4}), tmp_path)
    with pytest.raises(DpmbenchError, match="null_class"):
        no_null.eps(x, t)


# Fits of ``prepare`` on a small batch here (the defaults' are sized for real networks: 45 s of the test's 52 s of CPU
# on the 2-core VM); the sampling they prepare spends the same budget.
SMALL_FITS = {"dpm-solver-v3": "ems_samples=16", "ta-ddim": "fit_samples=16", "d-ode": "fit_samples=16",
              "dc-solver": "search_iters=10"}


def test_every_solver_samples_the_tiny_unet_with_its_exact_nfe(ddpm_dir: tuple[Path, Any, Any]) -> None:
    root, _, _ = ddpm_dir
    model = load_adapter(_entry("diffusers-unet"), root)
    calls = []
    model.unet.register_forward_hook(lambda *a: calls.append(1))
    x_T = model.prior(2, seed=0)
    for name in dpmbench.list_solvers():
        nfe = max(get_solver(name).min_nfe(), 6)
        spec = f"{name}:{SMALL_FITS[name]}" if name in SMALL_FITS else name
        if get_solver(name).needs_prepare:  # its fit (outside the budget) runs once and is cached: count a rerun
            sample(model, spec, nfe, x_T)
        calls.clear()
        stats: dict[str, Any] = {}
        out = sample(model, spec, nfe, x_T, stats=stats)  # sample() asserts the NFE budget is spent exactly
        assert out.shape == x_T.shape and torch.isfinite(out).all(), name
        # and the network really ran once per NFE (a parallel solver: once per batched round)
        assert len(calls) == (stats["parallel_rounds"] if get_solver(name).parallel else nfe), name


def test_bad_entries_give_one_line_errors(ddpm_dir: tuple[Path, Any, Any], tmp_path: Path) -> None:
    root, _, _ = ddpm_dir
    cases = [
        (_entry("nope"), root, "adapter"),
        (_entry("diffusers-unet", options={"bogus": 1}), root, "bogus"),
        (_entry("diffusers-unet", options={"dtype": "int8"}), root, "dtype"),
        (_entry("diffusers-unet", schedule="edm"), root, "schedule"),
        (_entry("diffusers-unet"), tmp_path / "missing", "root"),
        (_entry("diffusers-unet"), tmp_path, "neither unet"),
    ]
    for entry, where, word in cases:
        with pytest.raises(DpmbenchError, match=word) as info:
            load_adapter(entry, where)
        assert "\n" not in str(info.value)
    assert set(ADAPTERS) == {"diffusers-unet", "latent-diffusion", "stable-diffusion", "sd3", "flux", "edm-pickle",
                             "score-sde", "guided-diffusion"}


# -- latent-diffusion ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ldm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ldm_dir(tmp_path_factory.mktemp("ldm"))


def test_latent_diffusion_decode_and_cli_images(ldm_dir: Path, tmp_path: Path, capsys: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_adapter(_entry("latent-diffusion", resolution=16, options={"unet": "unet", "vqvae": "vqvae"}),
                         ldm_dir)  # the manifest's ldm-celebahq options
    assert model.shape == (4, 8, 8) and model.scale_factor == 0.5
    z = model.prior(3, seed=0)
    img = model.decode(z)
    assert img.dtype == torch.uint8 and img.shape == (3, 3, 16, 16)
    with torch.no_grad():  # diffusers' LDM pipeline: vqvae.decode(latents / scaling_factor), [-1, 1] -> uint8
        ref = model.vae.decode(z / 0.5).sample
    assert torch.equal(img, ((ref / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8))

    import dpmbench.models.registry as registry

    monkeypatch.setattr(registry, "load_model", lambda name, **kw: model)
    out = tmp_path / "s.npz"
    code, _, err = run_cli(capsys, "sample", "--model", "tiny-ldm", "--solver", "ddim", "--nfe", "3",
                           "--num-samples", "3", "--seed", "0", "--batch-size", "2", "--out", str(out))
    assert code == 0, err
    with np.load(out) as f:
        assert f["x"].shape == (3, 4, 8, 8) and f["images"].dtype == np.uint8 and f["images"].shape == (3, 3, 16, 16)
        np.testing.assert_array_equal(f["images"], model.decode(torch.from_numpy(f["x"])).numpy())


# -- stable-diffusion -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any, Any]:
    root = tmp_path_factory.mktemp("sd")
    unet, text_encoder, tokenizer = build_sd_dir(root)
    return root, unet, text_encoder, tokenizer


def _embed(tokenizer: Any, text_encoder: Any, prompts: list[str]) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


PROMPTS = ["a cat", "a dog on a mat"]


def test_stable_diffusion_text_eps_and_cfg(sd_dir: tuple[Path, Any, Any, Any]) -> None:
    root, unet, text_encoder, tokenizer = sd_dir
    model = load_adapter(_entry("stable-diffusion", resolution=16, schedule="vp-discrete"), root)
    assert model.text_conditional and model.shape == (4, 8, 8) and model.parameterization == "eps"
    _seeded(4)
    x = torch.randn(2, 4, 8, 8)
    emb_c, emb_u = _embed(tokenizer, text_encoder, PROMPTS), _embed(tokenizer, text_encoder, ["", ""])
    assert not torch.allclose(emb_c, emb_u)
    n = 600
    t = model.schedule.t_of_index(n)
    with torch.no_grad():
        raw_c = unet(x, _timesteps(n, 2), encoder_hidden_states=emb_c).sample
        raw_u = unet(x, _timesteps(n, 2), encoder_hidden_states=emb_u).sample
    assert torch.equal(model.eps(x, t, PROMPTS), raw_c)  # text-conditional eps = raw UNet output
    assert torch.equal(model.eps(x, t, emb_c), raw_c)  # precomputed embeddings
    assert torch.equal(model.eps(x, t, None), raw_u)  # unconditional = empty prompt
    cfg = guided(model, 7.5)
    want = raw_u + 7.5 * (raw_c - raw_u)  # Ho & Salimans 2022, eq. 6
    torch.testing.assert_close(cfg.eps(x, t, PROMPTS), want, rtol=1e-5, atol=1e-5)  # batched [cond; uncond]
    per_sample_t = torch.full((2,), t, dtype=torch.float64)
    torch.testing.assert_close(cfg.eps(x, per_sample_t, PROMPTS), want, rtol=1e-5, atol=1e-5)

    class TwoCalls(Guided):  # Guided without the batched hook: two separate evaluations
        pass

    plain = TwoCalls(model, 7.5)
    plain.base = type("NoPair", (), {"eps": model.eps})()
    torch.testing.assert_close(plain.forward(x, t, PROMPTS), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(DpmbenchError, match="prompts"):
        model.eps(x, t, ["only one"])


def test_stable_diffusion_guided_sampling_one_unet_call_per_nfe(sd_dir: tuple[Path, Any, Any, Any]) -> None:
    root = sd_dir[0]
    model = load_adapter(_entry("stable-diffusion", resolution=16), root)
    calls: list[int] = []
    model.unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    x_T = model.prior(2, seed=0)
    out = sample(model, "dpm-solver++", 6, x_T, guidance=7.5, cond=PROMPTS)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    assert calls == [4] * 6  # 6 NFE, each one UNet call on the [cond; uncond] batch of 2 x 2
    img = model.decode(out)
    assert img.dtype == torch.uint8 and img.shape == (2, 3, 16, 16)


def test_guided_ddim_matches_diffusers_stable_diffusion_pipeline(sd_dir: tuple[Path, Any, Any, Any],
                                                                  tmp_path: Path) -> None:
    """Text encoding, empty-prompt unconditional branch, CFG and time convention against diffusers' own
    StableDiffusionPipeline (same tiny components, DDIM eta 0, guidance 7.5, same initial latents), and
    ``decode`` against the pipeline's decoded images."""
    import shutil

    root = tmp_path / "sd-ddim"
    shutil.copytree(sd_dir[0], root)
    sch = diffusers.DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                  timestep_spacing="leading")
    sch.save_pretrained(root / "scheduler")
    _, unet, text_encoder, tokenizer = sd_dir
    pipe = diffusers.StableDiffusionPipeline(vae=diffusers.AutoencoderKL.from_pretrained(root / "vae"),
                                             text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sch,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    model = load_adapter(_entry("stable-diffusion", resolution=16), root)
    steps = 6
    x_T = model.prior(2, seed=0)
    with torch.no_grad():
        theirs = pipe(PROMPTS, height=16, width=16, num_inference_steps=steps, guidance_scale=7.5, eta=0.0,
                      latents=x_T.clone(), output_type="latent").images
        images = pipe(PROMPTS, height=16, width=16, num_inference_steps=steps, guidance_scale=7.5, eta=0.0,
                      latents=x_T.clone(), output_type="pt").images  # float in [0, 1]
    ts = [int(n) for n in pipe.scheduler.timesteps]
    times = [(n + 1) / 1000 for n in ts] + [1 / 1000]
    ours = sample(model, "ddim", steps, x_T, schedule=times, guidance=7.5, cond=PROMPTS)
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel < 5e-6, rel  # measured 4.7e-7 (float32 both sides)
    assert torch.equal(model.decode(theirs), (images * 255).round().to(torch.uint8))  # same decode and quantization


def test_stable_diffusion_v_prediction(sd_dir: tuple[Path, Any, Any, Any], tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "sd-v"
    shutil.copytree(sd_dir[0], root)
    diffusers.DDIMScheduler(**SD_BETAS, prediction_type="v_prediction").save_pretrained(root / "scheduler")
    model = load_adapter(_entry("stable-diffusion", parameterization="v"), root)
    assert model.parameterization == "v"
    out = sample(model, "unipc", 4, model.prior(2, seed=0), guidance=7.5, cond=PROMPTS)
    assert torch.isfinite(out).all()


def test_micro_batches_make_samples_independent_of_the_batch(ddpm_dir: tuple[Path, Any, Any]) -> None:
    """Network calls on fixed-size chunks: a sample's output does not depend on the batch it is evaluated in (a
    direct call at another batch size differs in the last bits, which is what the chunking removes)."""
    root, unet, _ = ddpm_dir
    model = load_adapter({**_entry("diffusers-unet"), "options": {}}, root)
    assert model.micro_batch is None  # default: DEFAULT_MICRO_BATCH of the device (8 on CPU)
    x_T = model.prior(11, seed=0)
    whole = sample(model, "dpm-solver++", 5, x_T)
    parts = torch.cat([sample(model, "dpm-solver++", 5, x_T[i:i + 3]) for i in range(0, 11, 3)])
    assert torch.equal(whole, parts)
    t = model.schedule.t_of_index(500)
    with torch.no_grad():
        raw = unet(x_T, _timesteps(500, 11)).sample
    torch.testing.assert_close(model.eps(x_T, t), raw, rtol=1e-5, atol=1e-5)
    with pytest.raises(DpmbenchError, match="micro_batch"):
        load_adapter(_entry("diffusers-unet", options={"micro_batch": -1}), root)


def test_fixed_batch_evaluates_a_batch_in_one_call(ddpm_dir: tuple[Path, Any, Any]) -> None:
    """Inside ``fixed_batch()`` (a search's own fixed-size set) the network is called once per batch, not in padded
    chunks; outside, and after an error inside, the chunks are back; a guided model passes it to its base."""
    root, _, _ = ddpm_dir
    model = load_adapter({**_entry("diffusers-unet"), "options": {"micro_batch": 4}}, root)
    rows: list[int] = []
    call = model._call
    model._call = lambda x, ts, kw: rows.append(x.shape[0]) or call(x, ts, kw)  # type: ignore[method-assign]
    x = model.prior(6, seed=0)
    t = model.schedule.t_of_index(500)
    chunked = model.eps(x, t)
    assert rows == [4, 4]
    with Guided(model, 1.0).fixed_batch():
        assert model.micro_batch == 0
        whole = model.eps(x, t)
    assert rows == [4, 4, 6] and model.micro_batch == 4
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="boom"), model.fixed_batch():
        raise RuntimeError("boom")
    assert model.micro_batch == 4


def test_prompts_from_captions(tmp_path: Path) -> None:
    coco = {"annotations": [{"id": 10 - i, "image_id": i // 2, "caption": f" caption  {i}\n"} for i in range(10)]}
    (tmp_path / "captions_val2014.json").write_text(json.dumps(coco))
    (tmp_path / "prompts.txt").write_text("\n".join(f"prompt {i}" for i in range(10)) + "\n\n")
    a = prompts_from_captions(tmp_path / "captions_val2014.json", 4, seed=0)
    assert a == prompts_from_captions(tmp_path / "captions_val2014.json", 4, seed=0)  # deterministic
    assert len(set(a)) == 4 and all(c.startswith("caption ") and "  " not in c for c in a)
    assert prompts_from_captions(tmp_path / "captions_val2014.json", 7, seed=0)[:4] == a  # prefix-stable
    assert sorted(prompts_from_captions(tmp_path / "captions_val2014.json", 10, seed=1)) == sorted(
        f"caption {i}" for i in range(10))
    assert prompts_from_captions(tmp_path / "captions_val2014.json", 10, seed=1) != prompts_from_captions(
        tmp_path / "captions_val2014.json", 10, seed=0)
    txt = prompts_from_captions(tmp_path / "prompts.txt", 3, seed=5)
    assert len(txt) == 3 and all(p.startswith("prompt ") for p in txt)
    with pytest.raises(DpmbenchError, match="number of prompts"):
        prompts_from_captions(tmp_path / "prompts.txt", 11)
    with pytest.raises(DpmbenchError, match="no such file"):
        prompts_from_captions(tmp_path / "nope.json", 1)


# -- edm-pickle -----------------------------------------------------------------------------------------------
@pytest.fixture()
def edm_files(tmp_path: Path) -> Any:
    code = write_edm_code(tmp_path / "edm")
    net, vp_net = edm_nets(code, {"label_dim": 4, "sigma_min": 0.0, "sigma_max": float("inf")},
                           {"beta_d": 19.9, "beta_min": 0.1})
    data = tmp_path / "ckpt"
    write_edm_pickle(data / "edm-tiny.pkl", net, loss_fn=None)
    write_edm_pickle(data / "edm-tiny-vp.pkl", vp_net)
    forget_edm_module()
    sha = hashlib.sha256((data / "edm-tiny.pkl").read_bytes()).hexdigest()
    sha_vp = hashlib.sha256((data / "edm-tiny-vp.pkl").read_bytes()).hexdigest()
    yield code, data, net, sha, vp_net, sha_vp
    forget_edm_module()
    if str(code) in sys.path:
        sys.path.remove(str(code))


def _edm_entry(code: Path, **kw: Any) -> dict[str, Any]:
    return _entry("edm-pickle", parameterization="x0", schedule="edm",
                  options={"file": "edm-tiny.pkl", "code_path": str(code)}, **kw)


def test_edm_pickle_refuses_unverified_files(edm_files: Any) -> None:
    code, data, _, sha, *_ = edm_files
    for bad in ({"sha256": "0" * 64}, {}, {"files": {"edm-tiny.pkl": "f" * 64}}):
        with pytest.raises(DpmbenchError, match="refusing to unpickle") as info:
            load_adapter(_edm_entry(code, **bad), data)
        assert "\n" not in str(info.value)
        assert "dpmbench_tiny_edm_net" not in sys.modules  # nothing was unpickled (it would import the class)
        assert str(code) not in sys.path


def test_edm_pickle_loads_verified_file_and_predicts(edm_files: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    code, data, net, sha, *_ = edm_files
    model = load_adapter(_edm_entry(code, sha256=sha), data)
    assert "dpmbench_tiny_edm_net" in sys.modules
    # the manifest's form (CheckpointEntry.as_dict): files with sha256, no options; the EDM checkout from the env
    monkeypatch.setenv("DPMBENCH_EDM_CODE", str(code))
    model = load_adapter(_entry("edm-pickle", parameterization="x0", schedule="edm",
                                files=[{"path": "edm-tiny.pkl", "sha256": sha, "size": None}]), data)
    assert (model.parameterization, model.schedule.kind, model.shape, model.num_classes) == ("x0", "edm",
                                                                                            (3, 8, 8), 4)
    assert (model.schedule.T, model.schedule.t_end_default) == (80.0, 0.002)  # EDM generate.py's sigma range
    _seeded(6)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64) * 2.0
    labels = torch.tensor([0, 3, 1])
    with torch.no_grad():
        want = net(x, torch.full((3,), 2.0, dtype=torch.float64), torch.nn.functional.one_hot(labels, 4))
        want_u = net(x, torch.full((3,), 2.0, dtype=torch.float64), None)
    torch.testing.assert_close(model.x0(x, 2.0, labels), want.double(), rtol=0, atol=0)
    torch.testing.assert_close(model.x0(x, 2.0), want_u.double(), rtol=0, atol=0)
    torch.testing.assert_close(model.eps(x, 2.0, labels), (x - want.double()) / 2.0)  # x = x0 + sigma eps
    x_T = model.prior(2, seed=0)
    assert x_T.std() > 20  # prior std = sigma_max
    for spec in ("heun", "dpm-solver++", "euler"):
        out = sample(model, spec, 8, x_T, schedule="karras", cond=labels[:2])
        assert torch.isfinite(out).all()


def test_edm_pickle_vp_variant_on_vp_linear(edm_files: Any) -> None:
    """VP-EDM nets on the manifest's vp-linear schedule: D(x / alpha; sigma_edm) with EDM's VP
    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) (Karras et al. 2022, Table 1), written out here."""
    import math

    code, data, _, _, vp_net, sha_vp = edm_files
    model = load_adapter(_entry("edm-pickle", parameterization="x0", schedule="vp-linear", options={
        "code_path": str(code)}, files=[{"path": "edm-tiny-vp.pkl", "sha256": sha_vp, "size": None}]), data)
    assert model.schedule.key() == "vp-linear(b0=0.1,b1=20.0,T=1.0)" and model.schedule.t_end_default == 1e-3
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for t in (1e-3, 0.3, 1.0):
        sigma = math.sqrt(math.exp(0.5 * 19.9 * t**2 + 0.1 * t) - 1)
        scale = 1 / math.sqrt(1 + sigma**2)  # EDM's VP s(t)
        with torch.no_grad():
            want = vp_net(x / scale, torch.full((2,), sigma, dtype=torch.float64))
        torch.testing.assert_close(model.x0(x, t), want.double(), rtol=1e-6, atol=1e-6)
    out = sample(model, "dpm-solver++", 6, model.prior(2, seed=0))
    assert torch.isfinite(out).all()


# -- score-sde ------------------------------------------------------------------------------------------------
@pytest.fixture()
def score_sde_files(tmp_path: Path) -> Any:
    code = write_score_sde_code(tmp_path / "score_sde_pytorch")
    data = tmp_path / "ckpt"
    net, shadow = write_score_sde_checkpoint(code, data / "checkpoint_8.pth")
    sha = hashlib.sha256((data / "checkpoint_8.pth").read_bytes()).hexdigest()
    yield code, data, net, shadow, sha
    forget_score_sde_modules()
    if str(code) in sys.path:
        sys.path.remove(str(code))


def test_score_sde_checkpoint(score_sde_files: Any) -> None:
    code, data, net, shadow, sha = score_sde_files
    entry = _entry("score-sde", parameterization="eps", schedule="vp-linear",
                   options={"code_path": str(code), "config": "tiny_vp"})  # as the manifest: vp/cifar10_...
    with pytest.raises(DpmbenchError, match="refusing to unpickle"):
        load_adapter({**entry, "files": [{"path": "checkpoint_8.pth", "sha256": "1" * 64}]}, data)
    assert "models" not in sys.modules
    model = load_adapter({**entry, "files": [{"path": "checkpoint_8.pth", "sha256": sha, "size": None}]}, data)
    assert (model.parameterization, model.schedule.kind, model.shape) == ("eps", "vp-linear", (3, 8, 8))
    assert model.schedule.key() == "vp-linear(b0=0.1,b1=20.0,T=1.0)"
    with torch.no_grad():
        for p, s in zip(net.parameters(), shadow, strict=True):
            p.copy_(s)  # the EMA weights are the ones evaluated
        x = torch.randn(2, 3, 8, 8)
        want = net(x, torch.full((2,), 0.3 * 999))  # score_sde: labels = 999 t, output = eps
    torch.testing.assert_close(model.eps(x, 0.3), want, rtol=0, atol=0)
    out = sample(model, "dpm-solver:order=3", 6, model.prior(2, seed=0))
    assert torch.isfinite(out).all()
    # a checkpoint whose tensors have other shapes than the config's network: one line, not load_state_dict's traceback
    state = torch.load(data / "checkpoint_8.pth", weights_only=True)
    state["model"]["module.conv.weight"] = torch.zeros(3, 3, 5, 5)
    torch.save(state, data / "checkpoint_8.pth")
    sha2 = hashlib.sha256((data / "checkpoint_8.pth").read_bytes()).hexdigest()
    with pytest.raises(DpmbenchError, match=r"does not fit config 'tiny_vp' \(missing 0, unexpected 0, other shape 1 "
                                            r"keys\)") as info:
        load_adapter({**entry, "files": [{"path": "checkpoint_8.pth", "sha256": sha2, "size": None}]}, data)
    assert "\n" not in str(info.value)
