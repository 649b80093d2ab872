"""The ``sd3`` and ``flux`` checkpoint adapters on tiny RANDOM pipelines built and saved here (nothing downloaded):
CLIP tokenizers as tests/test_adapters.py writes them, a T5 tokenizer built with the ``tokenizers`` library.

Checked against diffusers' own ``StableDiffusion3Pipeline`` / ``FluxPipeline`` on the same components: the velocity
on the pipeline's encoded prompts, classifier-free guidance (SD3) and the guidance embedding (FLUX.1-dev-like),
``flow-euler`` sampling against the pipelines' FlowMatchEuler loop (same initial noise, same grid, same number of
transformer calls) and ``decode`` against their images. One workflow run (one Snakemake start for every checkpoint
model) pulls tiny ``sd3`` and ``flux`` checkpoints and a tiny DDPM UNet from a local server, samples them (the flow
models with prompts from a captions file) and scores them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
import transformers
import yaml
from standins import files_of as _files
from standins import tiny_unet as _tiny_unet
from standins import write_tokenizer as _write_tokenizer
from support import run_snakemake, shared_registry_cache, workflow_pythonpath
from test_checkpoints import _Handler, server  # noqa: F401  (fixture)
from test_workflow import ROOT, _cmd

from dpmbench import sample
from dpmbench.errors import DpmbenchError
from dpmbench.flowgrids import FLOW_CONFIGS
from dpmbench.models.adapters import load_adapter
from dpmbench.models.adapters.flux import pack, unpack
from dpmbench.models.base import guided

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

PROMPTS = ["a cat", "a dog on a mat"]
T5_TOKENS = 8  # max_sequence_length of the tiny pipelines
WORDS = ["a", "cat", "dog", "on", "mat", "photo", "of", "thing"]


def _t5_tokenizer(folder: Path) -> Any:
    """A tiny T5TokenizerFast: a Unigram model (``tokenizers``) over a few words and letters, '</s>' appended as T5's
    post-processor does; saved and loaded back."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{w}", -1.0) for w in WORDS] + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    transformers.T5TokenizerFast(vocab=pieces, extra_ids=0).save_pretrained(folder)
    return transformers.T5TokenizerFast.from_pretrained(folder)


def _t5(vocab: int) -> Any:
    cfg = transformers.T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                relative_attention_num_buckets=8, decoder_start_token_id=0)
    return transformers.T5EncoderModel(cfg).eval()


def _clip(vocab: int, hidden: int, projection: bool) -> Any:
    cfg = transformers.CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=32,
                                      num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=16,
                                      projection_dim=16, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                                      pad_token_id=vocab - 1)
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(cfg).eval()


def _vae() -> Any:
    return diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                                   down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=16,
                                   scaling_factor=1.5035, shift_factor=0.0609).eval()


def _scheduler(model: str) -> Any:
    return diffusers.FlowMatchEulerDiscreteScheduler(**{k: v for k, v in FLOW_CONFIGS[model].items()
                                                        if k != "pipeline"})


def _sd3_pipeline(root: Path, t5: bool = True) -> Any:
    vocab = _write_tokenizer(root / "src" / "tokenizer")
    tok = transformers.CLIPTokenizer.from_pretrained(root / "src" / "tokenizer")
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32, out_channels=4,
        pos_embed_max_size=16).eval()
    parts = {"transformer": transformer, "vae": _vae(), "scheduler": _scheduler("sd3"),
             "text_encoder": _clip(vocab, 16, True), "tokenizer": tok, "text_encoder_2": _clip(vocab, 8, True),
             "tokenizer_2": tok, "text_encoder_3": None, "tokenizer_3": None}
    if t5:
        t5_tok = _t5_tokenizer(root / "src" / "t5")
        parts.update(text_encoder_3=_t5(len(t5_tok)), tokenizer_3=t5_tok)
    return diffusers.StableDiffusion3Pipeline(**parts)


def _flux_pipeline(root: Path, distilled: bool) -> Any:
    vocab = _write_tokenizer(root / "src" / "tokenizer")
    t5_tok = _t5_tokenizer(root / "src" / "t5")
    torch.manual_seed(1)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=[4, 4, 8], guidance_embeds=distilled).eval()
    return diffusers.FluxPipeline(
        scheduler=_scheduler("flux-dev" if distilled else "flux-schnell"), vae=_vae(),
        text_encoder=_clip(vocab, 16, False), tokenizer=transformers.CLIPTokenizer.from_pretrained(
            root / "src" / "tokenizer"), text_encoder_2=_t5(len(t5_tok)), tokenizer_2=t5_tok,
        transformer=transformer)


def _entry(adapter: str, **kw: Any) -> dict[str, Any]:
    return {"id": f"tiny-{adapter}", "adapter": adapter, "schedule": "flow", "parameterization": "flow",
            "resolution": 16, "options": {"max_sequence_length": T5_TOKENS, **kw.pop("options", {})}, **kw}


def _saved(root: Path, pipe: Any) -> tuple[Path, Any]:
    """The pipeline saved in diffusers' layout under ``root/pipe``: (folder, pipeline)."""
    pipe.save_pretrained(root / "pipe")
    return root / "pipe", pipe


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("sd3")
    return _saved(root, _sd3_pipeline(root))


@pytest.fixture(scope="module")
def flux_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("flux-dev")
    return _saved(root, _flux_pipeline(root, distilled=True))


@pytest.fixture(scope="module")
def flux_schnell(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("flux-schnell")
    return _saved(root, _flux_pipeline(root, distilled=False))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, ||a - b|| / ||b||)."""
    return float((a - b).abs().max()), float((a - b).norm() / b.norm())


# -- (a) the velocity on the pipelines' own encodings ------------------------------------------------------------
def test_sd3_velocity_and_cfg_on_the_pipelines_encoded_prompts(sd3: tuple[Path, Any]) -> None:
    root, pipe = sd3
    model = load_adapter(_entry("sd3"), root)
    assert model.text_conditional and model.shape == (4, 8, 8) and model.parameterization == "flow"
    assert model.schedule.kind == "flow" and (model.scale_factor, model.shift_factor) == (1.5035, 0.0609)
    with torch.no_grad():
        pe, npe, pp, npp = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=True,
                                              max_sequence_length=T5_TOKENS)
    assert pe.shape == (2, 16 + T5_TOKENS, 32) and pp.shape == (2, 32)  # 77 -> 16 CLIP tokens here
    torch.manual_seed(4)
    x = torch.randn(2, 4, 8, 8)
    t = 0.7
    ts = torch.full((2,), t * 1000)
    with torch.no_grad():
        raw_c = pipe.transformer(hidden_states=x, timestep=ts, encoder_hidden_states=pe, pooled_projections=pp,
                                 return_dict=False)[0]
        raw_u = pipe.transformer(hidden_states=x, timestep=ts, encoder_hidden_states=npe, pooled_projections=npp,
                                 return_dict=False)[0]
    v_c, v_u = model.forward(x, t, PROMPTS), model.forward(x, t, None)
    assert max(_max_diff(v_c, raw_c)[0], _max_diff(v_u, raw_u)[0]) <= 1e-6  # measured: 0 and 0
    assert _max_diff(model.forward(x, t, "a cat")[0], v_c[0])[0] <= 1e-6  # one prompt for the batch
    w = 5.0
    cfg = guided(model, w).predict(x, t, PROMPTS, "flow")
    want = raw_u + w * (raw_c - raw_u)
    assert _max_diff(cfg, want)[0] <= 1e-5, _max_diff(cfg, want)  # one [cond; uncond] call
    torch.testing.assert_close(model.x0(x, t, PROMPTS), x - t * raw_c, rtol=1e-5, atol=1e-5)


def test_sd3_without_t5_uses_zeros_as_the_pipeline(tmp_path: Path) -> None:
    folder, pipe = _saved(tmp_path, _sd3_pipeline(tmp_path, t5=False))
    model = load_adapter(_entry("sd3"), folder)
    assert model.t5 is None
    with torch.no_grad():
        pe, _, pp, _ = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False,
                                          max_sequence_length=T5_TOKENS)
    emb = model.encode_prompts(PROMPTS)
    assert torch.equal(emb["encoder_hidden_states"], pe) and torch.equal(emb["pooled_projections"], pp)
    assert not emb["encoder_hidden_states"][:, 16:].any()


def _flux_raw(pipe: Any, x: torch.Tensor, t: float, guidance: float | None, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        pe, pp, txt = pipe.encode_prompt(prompts, None, max_sequence_length=T5_TOKENS)
        ids = pipe._prepare_latent_image_ids(len(x), x.shape[2] // 2, x.shape[3] // 2, x.device, x.dtype)
        g = None if guidance is None else torch.full((len(x),), guidance)
        out = pipe.transformer(hidden_states=pipe._pack_latents(x, *x.shape), timestep=torch.full((len(x),), t),
                               guidance=g, pooled_projections=pp, encoder_hidden_states=pe, txt_ids=txt, img_ids=ids,
                               return_dict=False)[0]
    return pipe._unpack_latents(out, 16, 16, 2)


def test_flux_velocity_packing_and_guidance_embedding(flux_dev: tuple[Path, Any]) -> None:
    root, pipe = flux_dev
    model = load_adapter(_entry("flux"), root)
    assert model.shape == (4, 8, 8) and model.distilled and model.guidance == 3.5
    torch.manual_seed(5)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(pack(x), pipe._pack_latents(x, *x.shape)) and torch.equal(unpack(pack(x), 8, 8), x)
    t = 0.6
    v = model.forward(x, t, PROMPTS)
    assert _max_diff(v, _flux_raw(pipe, x, t, 3.5, PROMPTS))[0] <= 1e-6  # default guidance 3.5, as the pipeline
    g7 = guided(model, 7.0)
    assert g7 is not model and g7.cache_key() != model.cache_key() and model.guidance == 3.5
    calls: list[int] = []
    hook = model.transformer.register_forward_hook(lambda *a: calls.append(1))
    v7 = g7.predict(x, t, PROMPTS, "flow")
    hook.remove()
    assert calls == [1]  # guidance is an input: one call, no [cond; uncond] batch
    assert _max_diff(v7, _flux_raw(pipe, x, t, 7.0, PROMPTS))[0] <= 1e-6
    assert _max_diff(model.forward(x, t, None), _flux_raw(pipe, x, t, 3.5, ["", ""]))[0] <= 1e-6


# -- (d) one-line refusals ---------------------------------------------------------------------------------------
def test_refusals_are_one_line(flux_schnell: tuple[Path, Any], sd3: tuple[Path, Any]) -> None:
    schnell = load_adapter(_entry("flux"), flux_schnell[0])
    assert not schnell.distilled and schnell.guidance is None
    x = schnell.prior(2, seed=0)
    for w in (1.0, 3.5):
        with pytest.raises(DpmbenchError, match=r"^invalid guidance .* no guidance embedding .*allowed: none$"):
            guided(schnell, w)
    with pytest.raises(DpmbenchError, match="invalid guidance"):
        sample(schnell, "flow-euler", 2, x, guidance=3.5, cond=PROMPTS)
    model = load_adapter(_entry("sd3"), sd3[0])
    bad = {"3 prompts": ["a", "b", "c"], "labels": torch.tensor([1, 2]), "numbers": [1, 2], "number": 3}
    for cond in bad.values():
        with pytest.raises(DpmbenchError) as exc:
            model.forward(x, 0.5, cond)
        assert "\n" not in str(exc.value) and str(exc.value).startswith("invalid cond")
    for entry, match in ((_entry("sd3", options={"max_sequence_length": 0}), "max_sequence_length"),
                         (_entry("sd3", options={"use_t5": "yes"}), "use_t5"),
                         (_entry("sd3", options={"bogus": 1}), "option of adapter 'sd3'"),
                         (_entry("flux"), "transformer 'SD3Transformer2DModel'"),
                         (_entry("sd3", schedule="vp-discrete"), "invalid schedule")):
        with pytest.raises(DpmbenchError, match=match) as exc:
            load_adapter(entry, sd3[0])
        assert "\n" not in str(exc.value)


# -- (b) sampling equals the pipelines ---------------------------------------------------------------------------
def _pipeline_run(pipe: Any, x_T: torch.Tensor, steps: int, **kw: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(latents, images in [0, 1], transformer calls) of the pipeline from x_T."""
    calls: list[int] = []
    hook = pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    flux = isinstance(pipe, diffusers.FluxPipeline)
    latents = pipe._pack_latents(x_T, *x_T.shape) if flux else x_T
    try:
        with torch.no_grad():
            out = pipe(PROMPTS, height=16, width=16, num_inference_steps=steps, latents=latents.clone(),
                       max_sequence_length=T5_TOKENS, output_type="latent", **kw).images
            images = pipe(PROMPTS, height=16, width=16, num_inference_steps=steps, latents=latents.clone(),
                          max_sequence_length=T5_TOKENS, output_type="pt", **kw).images
    finally:
        hook.remove()
    return (pipe._unpack_latents(out, 16, 16, 2) if flux else out), images, len(calls) // 2


@pytest.mark.parametrize("which", ["sd3", "flux_dev", "flux_schnell"])
def test_flow_euler_equals_the_pipeline(which: str, request: pytest.FixtureRequest) -> None:
    root, pipe = request.getfixturevalue(which)
    model = load_adapter(_entry("sd3" if which == "sd3" else "flux"), root)
    calls: list[int] = []
    model.transformer.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    x_T = model.prior(2, seed=0)
    grid = {"sd3": "diffusers-flow-sd3", "flux_dev": "diffusers-flow-flux-dev:16",  # 16 tokens: 8 x 8 latent packed
            "flux_schnell": "diffusers-flow-flux-schnell"}[which]
    guidance, kw = {"sd3": (5.0, {"guidance_scale": 5.0}), "flux_dev": (4.0, {"guidance_scale": 4.0}),
                    "flux_schnell": (None, {"guidance_scale": 0.0})}[which]
    for steps in (2, 4):
        theirs, images, n_theirs = _pipeline_run(pipe, x_T, steps, **kw)
        calls.clear()
        ours = sample(model, "flow-euler:denoise_to_zero=true", steps, x_T, schedule=grid, guidance=guidance,
                      cond=PROMPTS)
        # one call per NFE: SD3 on the [cond; uncond] batch of 2 x 2, FLUX on 2 rows (guidance is an input), padded
        # to the micro-batch of 4
        assert n_theirs == steps and calls == [4] * steps, calls
        worst, rel = _max_diff(ours, theirs)
        assert rel < 1e-5, (which, steps, worst, rel)  # measured: see docs/flow.md
        assert torch.equal(model.decode(theirs), (images * 255).round().to(torch.uint8))


# -- (c) through the workflow ------------------------------------------------------------------------------------
@pytest.mark.timeout(600)
def test_workflow_pulls_samples_and_scores_checkpoint_models(server: str, sd3: tuple[Path, Any],  # noqa: F811
                                                             flux_dev: tuple[Path, Any], tmp_path: Path) -> None:
    """One Snakemake run, three checkpoint models served by the local server: a DDPM UNet (ddim and DPM-Solver++(2M)
    against the 40-NFE reference run the config names), SD3 (classifier-free guidance 4) and a guidance-distilled FLUX
    (guidance 4 as the transformer's input), each file pulled once before any job of its model; a second start has
    nothing to do."""
    ddpm = tmp_path / "ddpm"
    diffusers.DDPMPipeline(unet=_tiny_unet(), scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000)
                           ).save_pretrained(ddpm)
    pulled = {}
    for name, root in (("tiny-ddpm", ddpm), ("tiny-sd3", sd3[0]), ("tiny-flux", flux_dev[0])):
        pulled[name] = _files(root)
        for f in pulled[name]:
            _Handler.files[f"/org/{name}/resolve/rev1/{f['path']}"] = (root / f["path"]).read_bytes()
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(f"a photo of {w} {w}" for w in WORDS) + "\n")
    flow = {"num_samples": 4, "captions": str(captions), "guidance": [4.0],
            "reference_solver": {"solver": "flow-heun", "nfe": 15, "schedule": "time-uniform"}}
    config = {
        "metrics": ["mse_ref"], "nfe": [2, 4], "solvers": ["flow-euler", "flow-heun"], "samples_per_shard": 4,
        "seed": 0, "schedules": ["flow-shift:3"],  # one shard per cell: fewer jobs (each a process start)
        "models": {"tiny-sd3": dict(flow), "tiny-flux": dict(flow),
                   "tiny-ddpm": {"num_samples": 4, "nfe": [3, 6], "schedules": ["logsnr"],
                                 "solvers": ["ddim", "dpm-solver++:order=2,method=multistep"],
                                 "reference_solver": {"solver": "dpm-solver++", "nfe": 40}}},
        "checkpoints": {name: {
            "adapter": name.removeprefix("tiny-"), "source": {"hf": f"org/{name}", "revision": "rev1"},
            "files": files, "license": "test-only", "schedule": "flow", "parameterization": "flow", "resolution": 16,
            "conditioning": "text", "options": {"max_sequence_length": T5_TOKENS}} for name, files in pulled.items()},
    }
    config["checkpoints"]["tiny-ddpm"] = {
        "adapter": "diffusers-unet", "source": {"hf": "org/tiny-ddpm", "revision": "rev1"},
        "files": pulled["tiny-ddpm"], "license": "test-only", "schedule": "vp-discrete", "parameterization": "eps",
        "resolution": 8}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "DPMBENCH_CACHE": shared_registry_cache(tmp_path / "cache"),
           "PYTHONPATH": workflow_pythonpath(ROOT), "DPMBENCH_HF_ENDPOINT": server, "OMP_NUM_THREADS": "1"}
    env.pop("DPMBENCH_OFFLINE", None)
    proc = run_snakemake(_cmd(tmp_path)[1:], env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(_Handler.requests) == sum(map(len, pulled.values()))  # every file pulled once
    rows = list(csv.DictReader((tmp_path / "reports" / "results.csv").open()))
    mse = {(r["solver"], int(r["nfe"])): float(r["value"]) for r in rows
           if r["metric"] == "mse_ref" and r["model"] == "tiny-ddpm"}
    assert len(mse) == 4 and all(np.isfinite(v) and v > 0 for v in mse.values())
    # more steps land closer to the 40-NFE reference run of the same x_T
    assert mse[("dpm-solver++:order=2,method=multistep", 6)] < mse[("dpm-solver++:order=2,method=multistep", 3)]
    assert mse[("ddim", 6)] < mse[("ddim", 3)]
    for name, channels in (("tiny-sd3", 4), ("tiny-flux", 4)):
        mse = {(r["solver"], int(r["nfe"])): float(r["value"]) for r in rows
               if r["metric"] == "mse_ref" and r["model"] == name}
        assert sorted(mse) == [("flow-euler", 2), ("flow-euler", 4), ("flow-heun", 2), ("flow-heun", 4)], rows
        assert all(np.isfinite(v) and v > 0 for v in mse.values())
        assert mse[("flow-euler", 4)] < mse[("flow-euler", 2)]  # more steps land closer to the 15-NFE reference
        shard = np.load(next((tmp_path / "results" / name).rglob("flow-heun/nfe4/*.npz")))
        assert shard["x"].shape == (4, channels, 8, 8) and shard["images"].shape == (4, 3, 16, 16)
        assert shard["images"].dtype == np.uint8 and len(set(shard["prompts"].tolist())) == 4
        assert set(shard["prompts"].tolist()) <= set(captions.read_text().splitlines())
    again = run_snakemake(_cmd(tmp_path, "-n")[1:], env, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr


# -- config/flow.yaml --------------------------------------------------------------------------------------------
def test_flow_config_validates_and_expands_to_its_cells() -> None:
    """The cluster config builds (schema, registries, manifest, pure-noise starts) into the cells it states; nothing
    runs."""
    from dpmbench.grid import build_grid
    from dpmbench.yamlfile import read_yaml

    g = build_grid(read_yaml(ROOT / "config" / "flow.yaml"))
    cells = list(g.cells())
    by_model: dict[str, set[tuple[Any, ...]]] = {}
    for c in cells:
        by_model.setdefault(c["model"], set()).add((c["guidance"], g.schedule(c["schedule"]), g.spec(c["solver"]),
                                                    c["nfe"]))
    solvers = {"flow-euler:denoise_to_zero=true", "flow-heun:denoise_to_zero=true"}
    nfe = {4, 8, 14, 20, 28, 50}
    grids = {"sd3-medium": {"diffusers-flow-sd3", "flow-shift:3", "time-uniform"},
             "sd35-large": {"diffusers-flow-sd3", "flow-shift:3", "time-uniform"},
             "flux-dev": {"diffusers-flow-flux-dev:4096", "flux-shift:4096", "time-uniform"}}
    for model, schedules in grids.items():
        assert by_model[model] == {(w, s, v, n) for w in ("1.0", "3.5", "7.0") for s in schedules for v in solvers
                                   for n in nfe}, model
    assert by_model["flux-schnell"] == {("none", s, v, n) for s in ("diffusers-flow-flux-schnell", "flow-shift:3")
                                        for v in solvers for n in (3, 4, 6, 8)}
    assert len(cells) == 340 and set(g.checkpoints) == set(by_model)
    for model in by_model:
        assert g.num_samples(model) == 500 and g.metrics(model) == ["mse_ref", "clip_score"]
        assert g.captions_arg(model) == "--captions data/coco/captions_val2014.json" and g.has_reference(model)
        assert g.reference_args(model).startswith("--solver flow-heun:denoise_to_zero=true --nfe 199 ")
