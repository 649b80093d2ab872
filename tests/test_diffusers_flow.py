"""dpmbench solvers inside diffusers' flow-matching pipelines (``FluxPipeline``, ``StableDiffusion3Pipeline``) on tiny
random transformers (the configurations of diffusers' own pipeline tests; text encoders left out, prompt embeddings
passed, so nothing is downloaded), and the scheduler's diffusers conventions: ``from_config``, ``save_pretrained`` /
``from_pretrained`` with its pipeline, for VP and flow configs alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

from dpmbench.diffusers import DpmbenchScheduler, scheduler
from dpmbench.errors import DpmbenchError
from dpmbench.flowgrids import FLOW_CONFIGS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

TOL = 1e-5  # float32 pipelines: relative difference of the images


def _config(model: str) -> dict[str, Any]:
    return {k: v for k, v in FLOW_CONFIGS[model].items() if k != "pipeline"}


def _vae(latent_channels: int) -> Any:
    return diffusers.AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                                   layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1,
                                   use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                                   scaling_factor=1.5035)


@pytest.fixture(scope="module")
def flux() -> Any:
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    sch = diffusers.FlowMatchEulerDiscreteScheduler(**_config("flux-dev"))
    return diffusers.FluxPipeline(scheduler=sch, vae=_vae(1), text_encoder=None, tokenizer=None, text_encoder_2=None,
                                  tokenizer_2=None, transformer=transformer)


@pytest.fixture(scope="module")
def sd3() -> Any:
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(**_config("sd3"))
    return diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=sch, vae=_vae(4), text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)


def _run(pipe: Any, steps: int, sch: Any = None) -> tuple[torch.Tensor, int]:
    """The pipeline's image (float, before any conversion) and its number of transformer calls."""
    if sch is not None:
        before, pipe.scheduler = pipe.scheduler, sch
    calls: list[int] = []
    hook = pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    g = torch.Generator().manual_seed(0)
    emb = torch.Generator().manual_seed(1)
    try:
        if isinstance(pipe, diffusers.FluxPipeline):
            out = pipe(prompt_embeds=torch.randn(1, 8, 32, generator=emb),
                       pooled_prompt_embeds=torch.randn(1, 32, generator=emb), height=16, width=16,
                       num_inference_steps=steps, guidance_scale=3.5, generator=g, output_type="pt")
        else:
            pe, pp = torch.randn(1, 6, 32, generator=emb), torch.randn(1, 64, generator=emb)
            out = pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, negative_prompt_embeds=torch.zeros_like(pe),
                       negative_pooled_prompt_embeds=torch.zeros_like(pp), height=16, width=16,
                       num_inference_steps=steps, guidance_scale=5.0, generator=g, output_type="pt")
    finally:
        hook.remove()
        if sch is not None:
            pipe.scheduler = before
    return out.images, len(calls)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_flow_euler_in_the_pipeline_equals_flow_match_euler(which: str, request: pytest.FixtureRequest) -> None:
    """The scheduler swapped the diffusers way (``from_config``), ``flow-euler`` on the config's own grid (FLUX:
    the pipeline's sigmas and mu; SD3: its doubly shifted grid): diffusers' images, in the same n transformer
    calls."""
    pipe = request.getfixturevalue(which)
    for steps in (2, 4, 9):  # (one step, a jump from noise to the data prediction, is not a dpmbench plan)
        theirs, n_theirs = _run(pipe, steps)
        ours, n_ours = _run(pipe, steps, DpmbenchScheduler.from_config(pipe.scheduler.config, solver="flow-euler"))
        assert n_theirs == n_ours == steps
        assert _rel(ours, theirs) < TOL, (which, steps, _rel(ours, theirs))


def test_flow_heun_in_the_pipeline_equals_flow_match_heun(sd3: Any) -> None:
    """FlowMatchHeun spends 2n - 1 calls on n steps (the last an Euler step to 0); flow-heun with that budget on the
    same grid gives its images."""
    heun = diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0)
    for steps in (2, 5):
        theirs, n_theirs = _run(sd3, steps, heun)
        ours, n_ours = _run(sd3, 2 * steps - 1, scheduler("flow-heun", sd3.scheduler.config))
        assert n_theirs == n_ours == 2 * steps - 1
        assert _rel(ours, theirs) < TOL, (steps, _rel(ours, theirs))


@pytest.mark.parametrize("spec", ["dpm-solver++:order=2,method=multistep", "unipc:variant=bh2,order=2", "ddim",
                                  "flow-heun", "deis:order=3,method=logrho", "ipndm"])
def test_every_kind_of_solver_drives_the_flux_pipeline_with_exact_nfe(flux: Any, spec: str) -> None:
    """Solvers that cannot start at pure noise run from t_start < 1 (SD3's shift, diffusers' flow DPM-Solver start);
    each spends exactly the budget."""
    start = spec in ("ddim", "flow-heun")
    sch = scheduler(spec, flux.scheduler.config) if start else scheduler(spec, flux.scheduler.config,
                                                                          schedule="flow-shift:3", t_start=0.999)
    images, calls = _run(flux, 6, sch)
    assert calls == 6 and torch.isfinite(images).all()


def test_a_solver_that_cannot_start_at_pure_noise_says_so_in_the_pipeline(flux: Any) -> None:
    with pytest.raises(DpmbenchError, match="it is pure noise"):
        _run(flux, 6, scheduler("dpm-solver++", flux.scheduler.config))


def test_from_config_needs_a_solver_and_keeps_the_config() -> None:
    with pytest.raises(DpmbenchError, match="pass solver=SPEC"):
        DpmbenchScheduler.from_config(diffusers.DDPMScheduler().config)
    sch = DpmbenchScheduler.from_config(diffusers.DDPMScheduler(beta_schedule="scaled_linear").config,
                                        solver="unipc:order=3")
    assert sch.config.solver == "unipc:order=3" and sch.config.beta_schedule == "scaled_linear" and not sch.flow
    flow = DpmbenchScheduler.from_config(diffusers.FlowMatchEulerDiscreteScheduler(**_config("flux-dev")),
                                         solver="flow-euler")
    assert flow.flow and flow.config.use_dynamic_shifting and flow.config.schedule == "pipeline"
    assert flow.solver.spec == "flow-euler:denoise_to_zero=true"  # diffusers' last step to sigma = 0
    again = DpmbenchScheduler.from_config(flow.config, seed=3)  # a saved config comes back, keys overridable
    assert dict(again.config) == {**dict(flow.config), "seed": 3}


def test_a_pipeline_with_a_dpmbench_scheduler_saves_and_reloads(tmp_path: Path, sd3: Any) -> None:
    """``save_pretrained`` writes the scheduler (solver spec and options, schedule, the base config's keys) and the
    reloaded pipeline gives the same images; for a DDPM pipeline (VP) too."""
    sch = DpmbenchScheduler.from_config(sd3.scheduler.config, solver="dpm-solver++:order=2", schedule="flow-shift:3",
                                        t_start=0.999)
    images, _ = _run(sd3, 6, sch)
    before, sd3.scheduler = sd3.scheduler, sch
    try:
        sd3.save_pretrained(tmp_path / "sd3")
    finally:
        sd3.scheduler = before
    assert (tmp_path / "sd3" / "scheduler" / "scheduler_config.json").is_file()
    absent = dict.fromkeys(("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
                            "tokenizer_3", "image_encoder", "feature_extractor"))  # not built in this test
    loaded = diffusers.StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", **absent)
    assert isinstance(loaded.scheduler, DpmbenchScheduler)
    assert loaded.scheduler.solver.spec == "dpm-solver++" and loaded.scheduler.config.t_start == 0.999
    again, _ = _run(loaded, 6)
    assert torch.equal(again, images)

    from test_adapters import _tiny_unet

    ddpm = diffusers.DDPMPipeline(unet=_tiny_unet(), scheduler=diffusers.DDPMScheduler())
    ddpm.scheduler = scheduler("unipc:variant=bh2,order=3", ddpm.scheduler.config, seed=5)
    first = ddpm(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                 output_type="np").images
    ddpm.save_pretrained(tmp_path / "ddpm")
    reloaded = diffusers.DDPMPipeline.from_pretrained(tmp_path / "ddpm")
    assert isinstance(reloaded.scheduler, DpmbenchScheduler) and reloaded.scheduler.config.seed == 5
    second = reloaded(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
    assert (first == second).all()


def _unrounded(sch: Any) -> Any:
    """The diffusers scheduler with its network timesteps at sigma * 1000 instead of the int64 it truncates to."""
    orig = sch.set_timesteps

    def set_timesteps(*args: Any, **kwargs: Any) -> None:
        orig(*args, **kwargs)
        sch.timesteps = (sch.sigmas[: len(sch.timesteps)] * 1000).to(torch.float32)

    sch.set_timesteps = set_timesteps
    return sch


FLOW_KW = {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}


@pytest.mark.parametrize(("cls", "spec"), [
    ("DPMSolverMultistepScheduler", "dpm-solver++:order=2,method=multistep"),
    ("UniPCMultistepScheduler", "unipc:variant=bh2,order=2"),
])
def test_diffusers_flow_multistep_schedulers_differ_by_their_integer_timesteps(cls: str, spec: str, sd3: Any) -> None:
    """DPM-Solver++(2M) and UniPC with ``use_flow_sigmas`` in the SD3 pipeline, 10 steps, against the dpmbench solver
    on the same sigmas (their final step to 0, first order, is dpmbench's ``denoise_to_zero``; the steps before keep
    their order: ``lower_order_final=false``). diffusers evaluates the network at int64(sigma * 1000) while its
    update uses sigma: measured 8.3e-4 (DPM) and 1.3e-3 (UniPC) apart. With the timesteps left at sigma * 1000 the two
    agree to float32 round-off (1.4e-7 both): the truncation is the whole difference, and dpmbench's evaluation at
    the sigma its update uses is the consistent one (SD3 and FLUX take fractional timesteps)."""
    theirs_sch = getattr(diffusers, cls)(**FLOW_KW)
    theirs, calls = _run(sd3, 10, theirs_sch)
    sigmas = theirs_sch.sigmas.double().tolist()
    assert sigmas[-1] == 0 and theirs_sch.timesteps.dtype == torch.int64
    ours_sch = scheduler(f"{spec},lower_order_final=false,denoise_to_zero=true", sd3.scheduler.config,
                         schedule=sigmas[:-1])
    ours, ours_calls = _run(sd3, 10, ours_sch)
    assert calls == ours_calls == 10
    assert 3e-4 < _rel(ours, theirs) < 3e-3
    fixed, _ = _run(sd3, 10, _unrounded(getattr(diffusers, cls)(**FLOW_KW)))
    assert _rel(ours, fixed) < TOL


@pytest.mark.parametrize("cls", ["DEISMultistepScheduler", "SASolverScheduler"])
def test_diffusers_flow_deis_and_sa_solver_end_before_sigma_zero(cls: str) -> None:
    """With ``use_flow_sigmas`` diffusers' DEIS and SA-Solver repeat their last sigma instead of ending at 0: the last
    step has zero length and the output keeps the noise of that level (sigma 0.25 at 10 steps, 0.50 at 4). dpmbench's
    flow grids end with the jump to 0 (denoise_to_zero)."""
    sch = getattr(diffusers, cls)(**FLOW_KW)
    for steps, level in ((10, 0.2498), (4, 0.4997)):
        sch.set_timesteps(steps)
        s = sch.sigmas.double()
        assert float(s[-1]) == float(s[-2]) == pytest.approx(level, abs=1e-4)
