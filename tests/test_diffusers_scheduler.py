"""dpmbench solvers inside diffusers pipelines (``dpmbench.diffusers.scheduler``), and diffusers' timestep
conventions as dpmbench timestep schedules (``diffusers-*``, ``dpmbench.spacing``).

Pipelines: diffusers' own ``DDPMPipeline`` and ``StableDiffusionPipeline`` on the tiny random networks of
test_adapters.py (nothing downloaded). "Equal to ``dpmbench sample``": same network through dpmbench's adapter,
same x_T, relative error ``||pipeline - sample|| / ||sample||`` below ``TOL = 1e-5`` (float32 both sides; measured
0, bit-identical, for every solver on the DDPM pipeline).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
import yaml
from test_adapters import PROMPTS, SD_BETAS, _entry, _tiny_unet, sd_dir  # noqa: F401  (sd_dir: fixture)

from dpmbench import sample
from dpmbench.diffusers import scheduler
from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters import load_adapter
from dpmbench.schedules import VPDiscrete, VPLinear
from dpmbench.solvers.registry import get_solver
from dpmbench.spacing import KINDS
from dpmbench.timesteps import timesteps

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOLVERS = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())["solvers"]
# Cheaper statistics for the solvers whose prepare() evaluates the network (the default EMS of dpm-solver-v3 takes
# ~30 s on the tiny UNet): the solver and the scheduler's mechanics are the same, only the fit is smaller.
CHEAP_PREPARE = {"dpm-solver-v3": "ems_samples=16,ems_steps=16", "dc-solver": "search_iters=4,reference_nfe=20",
                 "iia-ddim": "fit_samples=16", "iia-dpm-solver++": "fit_samples=16"}
REFUSED = {"ts-ddim", "ts-dpm-solver"}  # per-sample evaluation times chosen from the data


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _cheap(spec: str) -> str:
    name = spec.partition(":")[0]
    extra = CHEAP_PREPARE.get(name)
    if not extra:
        return spec
    return f"{spec},{extra}" if ":" in spec else f"{spec}:{extra}"


class _Last:
    """Wraps ``scheduler.step`` to keep what the last call returned (DDPMPipeline clamps its output)."""

    def __init__(self, sch: Any):
        self.x: torch.Tensor | None = None
        self._step = sch.step
        sch.step = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._step(*args, **kwargs)
        self.x = out.prev_sample if hasattr(out, "prev_sample") else out[0]
        return out


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    root = tmp_path_factory.mktemp("ddpm-sched")
    unet = _tiny_unet()
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000)).save_pretrained(root)
    return unet, load_adapter(_entry("diffusers-unet"), root)


def _count_calls(unet: Any) -> tuple[list[int], Any]:
    calls: list[int] = []
    return calls, unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))


@pytest.mark.parametrize("spec", DEFAULT_SOLVERS)
def test_every_solver_of_the_default_config_in_the_ddpm_pipeline(spec: str, ddpm: tuple[Any, Any]) -> None:
    """DDPMPipeline with the dpmbench scheduler equals ``dpmbench sample`` from the same x_T, with exactly the NFE
    budget as UNet calls; solvers without a list of evaluation times are refused in one line."""
    unet, model = ddpm
    config = diffusers.DDPMScheduler(num_train_timesteps=1000).config
    if spec in REFUSED:
        with pytest.raises(DpmbenchError, match="cannot run as a diffusers scheduler: it evaluates each sample at "
                           "its own time") as info:
            scheduler(spec, config, model=model)
        assert "\n" not in str(info.value)
        return
    spec = _cheap(spec)
    nfe = max(get_solver(spec).min_nfe(), 6)
    sch = scheduler(spec, config, model=model)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=sch)
    pipe.set_progress_bar_config(disable=True)
    last = _Last(sch)
    calls, hook = _count_calls(unet)
    try:
        with torch.no_grad():
            images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=nfe,
                          output_type="pt").images
    finally:
        hook.remove()
    assert len(calls) == nfe and len(sch.timesteps) == nfe  # exactly the NFE budget
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))  # what the pipeline drew
    ours = sample(model, spec, nfe, x_T)
    assert last.x is not None and _rel(last.x, ours) < TOL
    assert torch.allclose(images, (ours / 2 + 0.5).clamp(0, 1), atol=1e-6)


def _sd_pipe(root: Path, sd: tuple[Any, ...], sch: Any) -> Any:
    _, unet, text_encoder, tokenizer = sd
    pipe = diffusers.StableDiffusionPipeline(vae=diffusers.AutoencoderKL.from_pretrained(root / "vae"),
                                             text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sch,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sd_latents(pipe: Any, x_T: torch.Tensor, nfe: int, guidance: float = 7.5) -> torch.Tensor:
    with torch.no_grad():
        return pipe(PROMPTS, height=16, width=16, num_inference_steps=nfe, guidance_scale=guidance,
                    latents=x_T.clone(), output_type="latent").images


@pytest.mark.parametrize("spec,nfe", [("dpm-solver++:order=2,method=multistep", 6), ("dpm-solver:order=3", 6),
                                      ("unipc:variant=bh2,order=3", 5), ("heun", 6), ("ddpm", 5)])
def test_guided_stable_diffusion_pipeline_equals_dpmbench_sample(spec: str, nfe: int, sd_dir: Any) -> None:  # noqa: F811
    """StableDiffusionPipeline (classifier-free guidance 7.5 done by the pipeline, one UNet call on the
    [uncond; cond] batch per evaluation) with the dpmbench scheduler equals dpmbench's guided sample: singlestep
    intermediate points, a stochastic solver (noise from dpmbench's seed streams) and multistep ones."""
    root = sd_dir[0]
    model = load_adapter(_entry("stable-diffusion", resolution=16), root)
    sch = scheduler(spec, diffusers.PNDMScheduler.from_pretrained(root / "scheduler").config, seed=3)
    pipe = _sd_pipe(root, sd_dir, sch)
    x_T = model.prior(2, seed=0)
    calls, hook = _count_calls(sd_dir[1])
    try:
        theirs = _sd_latents(pipe, x_T, nfe)
    finally:
        hook.remove()
    assert calls == [4] * nfe
    ours = sample(model, spec, nfe, x_T, guidance=7.5, cond=PROMPTS, seed=3)
    assert _rel(theirs, ours) < TOL
    other = sample(model, "ddim", nfe, x_T, guidance=7.5, cond=PROMPTS)
    assert _rel(theirs, other) > 100 * TOL  # the comparison can fail


def test_v_prediction_config_is_converted(sd_dir: Any, tmp_path: Path) -> None:  # noqa: F811
    """A v-prediction scheduler config: the pipeline's output is read as v and converted for the solver."""
    root = tmp_path / "sd-v"
    shutil.copytree(sd_dir[0], root)
    diffusers.DDIMScheduler(**SD_BETAS, prediction_type="v_prediction").save_pretrained(root / "scheduler")
    model = load_adapter(_entry("stable-diffusion", parameterization="v", resolution=16), root)
    sch = scheduler("dpm-solver++:order=2,method=multistep", diffusers.DDIMScheduler.from_pretrained(
        root / "scheduler").config)
    x_T = model.prior(2, seed=1)
    theirs = _sd_latents(_sd_pipe(root, sd_dir, sch), x_T, 5)
    ours = sample(model, "dpm-solver++:order=2,method=multistep", 5, x_T, guidance=7.5, cond=PROMPTS)
    assert _rel(theirs, ours) < TOL


@pytest.mark.parametrize("case", ["ddim-trailing", "dpm-2m-linspace", "dpm-2m-leading", "dpm-2m-trailing-zero"])
def test_matches_diffusers_own_scheduler_in_the_pipeline(case: str, sd_dir: Any) -> None:  # noqa: F811
    """Where diffusers has the same solver, on the same grid (``diffusers-*`` schedules), the pipeline gives the same
    latents with diffusers' scheduler and with dpmbench's. Tolerance 5e-6 (float32 both sides, and diffusers keeps
    alphas_cumprod and its sigmas in float32; as test_adapters.py's DDIM-pipeline comparison)."""
    root = sd_dir[0]
    nfe = 20 if case.startswith("dpm") else 8  # 20: neither side lowers the last 2M step (below 10 / below 15)
    if case == "ddim-trailing":
        theirs_sch = diffusers.DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False,
                                             timestep_spacing="trailing")
        spec, kind = "ddim", "diffusers-trailing"
    else:  # "zero": diffusers' last step jumps to sigma = 0 (first order: the data prediction), dpmbench's
        # denoise_to_zero on the grid of diffusers' timesteps
        zero = case.endswith("-zero")
        spacing = case.removesuffix("-zero").rpartition("-")[2]
        theirs_sch = diffusers.DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="dpmsolver++", solver_order=2,
                                                           solver_type="midpoint", timestep_spacing=spacing,
                                                           final_sigmas_type="zero" if zero else "sigma_min",
                                                           steps_offset=1)
        spec = "dpm-solver++:order=2,method=multistep,solver_type=dpmsolver" + (",denoise_to_zero=true" * zero)
        kind = f"diffusers-{spacing}" + "-zero" * zero
    x_T = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    theirs = _sd_latents(_sd_pipe(root, sd_dir, theirs_sch), x_T, nfe)
    ours_sch = scheduler(spec, theirs_sch.config, schedule=kind)
    ours = _sd_latents(_sd_pipe(root, sd_dir, ours_sch), x_T, nfe)
    torch.testing.assert_close(ours_sch.timesteps, theirs_sch.timesteps.float())  # the same evaluation points
    assert _rel(ours, theirs) < 5e-6  # measured 5.3e-7 (ddim), 6.6e-7 / 5.6e-7 / 5.3e-7 (2M linspace / leading /
    # trailing-zero)
    ours_logsnr = _sd_latents(_sd_pipe(root, sd_dir, scheduler(spec, theirs_sch.config)), x_T, nfe)
    assert _rel(ours_logsnr, theirs) > 100 * TOL  # another grid is detected


def test_refusals_and_misuse_are_one_line() -> None:
    config = diffusers.DDPMScheduler().config
    cases = [
        (lambda: scheduler("dpm-solver:method=adaptive,order=2", config), "adaptive"),
        (lambda: scheduler("dpm-solver-v3", config).set_timesteps(6), "pass model="),
        (lambda: scheduler("ddim", {**config, "rescale_betas_zero_snr": True}), "rescale_betas_zero_snr"),
        (lambda: scheduler("ddim", config).step(torch.zeros(1), 0, torch.zeros(1)), "set_timesteps first"),
        (lambda: scheduler("ddim", config, model="gmm-2d"), "noise schedule"),
        (lambda: scheduler("nope", config), "did you mean|allowed"),
    ]
    for fn, word in cases:
        with pytest.raises(DpmbenchError, match=word) as info:
            fn()
        assert "\n" not in str(info.value)
    sch = scheduler("ddim", config)
    sch.set_timesteps(4)
    x = torch.zeros(1, 3, 8, 8)
    sch.step(torch.zeros_like(x), sch.timesteps[0], x)
    with pytest.raises(DpmbenchError, match="changed the latents"):
        sch.step(torch.zeros_like(x), sch.timesteps[1], x + 1)
    sch.set_timesteps(4)  # a new run abandons an unfinished one
    with pytest.raises(DpmbenchError, match="timestep"):
        sch.step(torch.zeros_like(x), sch.timesteps[1], x)


# -- diffusers' timestep conventions as schedules --------------------------------------------------------------
BETAS = {"linear": {"beta_schedule": "linear"}, "scaled_linear": SD_BETAS}


@pytest.mark.parametrize("betas", sorted(BETAS))
@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_schedules_equal_diffusers_timesteps(kind: str, betas: str) -> None:
    """The evaluation points of ``diffusers-*`` (times (n + 1) / N -> training steps n) equal the ``timesteps`` of
    diffusers' DPMSolverMultistepScheduler for the same settings, and the grid ends where its sigmas end."""
    spacing = kind.removeprefix("diffusers-").removesuffix("-zero")
    zero = kind.endswith("-zero")
    ours_sched = VPDiscrete(**{k: v for k, v in BETAS[betas].items()})
    for n in (3, 5, 8, 10, 20, 25):
        theirs = diffusers.DPMSolverMultistepScheduler(
            **BETAS[betas], timestep_spacing=spacing if spacing in ("linspace", "leading", "trailing") else "linspace",
            use_karras_sigmas=spacing == "karras", use_lu_lambdas=spacing == "lu", steps_offset=1,
            final_sigmas_type="zero" if zero else "sigma_min")
        theirs.set_timesteps(n)
        ts = theirs.timesteps.tolist()
        steps = n - 1 if zero or spacing in ("karras", "lu") else n  # karras/lu + sigma_min: last step zero-length
        grid = timesteps(kind, steps, ours_sched, t_end=1e-3)
        idx = (grid * 1000 - 1).round().long().tolist()
        assert torch.allclose(grid * 1000 - 1, torch.tensor(idx, dtype=torch.float64), atol=1e-9)
        if zero:
            assert idx == ts, (n, idx, ts)  # the last point is diffusers' last timestep (then: denoise_to_zero)
            assert float(theirs.sigmas[-1]) == 0.0
        else:
            assert idx[:len(ts)] == ts and idx[-1] == 0, (n, idx, ts)  # ends at training step 0 ("sigma_min")
            sig0 = ((1 - theirs.alphas_cumprod[0]) / theirs.alphas_cumprod[0]) ** 0.5
            assert float(theirs.sigmas[-1]) == pytest.approx(float(sig0))


@pytest.mark.parametrize("cls", ["UniPCMultistepScheduler", "DEISMultistepScheduler"])
def test_other_multistep_schedulers_share_the_spacing(cls: str) -> None:
    sch = VPDiscrete(**SD_BETAS)
    for spacing in ("linspace", "leading", "trailing"):
        theirs = getattr(diffusers, cls)(**SD_BETAS, timestep_spacing=spacing, steps_offset=1)
        theirs.set_timesteps(10)
        grid = timesteps(f"diffusers-{spacing}", 10, sch)
        assert (grid[:-1] * 1000 - 1).round().long().tolist() == theirs.timesteps.tolist()


def test_cosine_betas_and_bad_uses() -> None:
    """squaredcos_cap_v2: the spacings are exact; Karras' first timestep can sit one step lower in diffusers (its
    float32 table puts sigma_max at 998.99, truncated), and repeated timesteps are refused; continuous-time
    schedules and a t_end other than 1/N are refused in one line."""
    cos = VPDiscrete(beta_schedule="squaredcos_cap_v2")
    for spacing in ("linspace", "leading", "trailing"):
        theirs = diffusers.DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing=spacing,
                                                       steps_offset=1, final_sigmas_type="sigma_min")
        theirs.set_timesteps(10)
        assert (timesteps(f"diffusers-{spacing}", 10, cos)[:-1] * 1000 - 1).round().long().tolist() == \
            theirs.timesteps.tolist()
    theirs = diffusers.DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True)
    theirs.set_timesteps(3)
    ours = (timesteps("diffusers-karras", 2, cos) * 1000 - 1).round().long().tolist()
    assert np.abs(np.array(ours) - theirs.timesteps.numpy()).max() == 1 and ours[0] == 999
    for fn, word in [(lambda: timesteps("diffusers-karras", 12, cos), "repeat"),
                     (lambda: timesteps("diffusers-trailing", 5, VPLinear()), "vp-discrete"),
                     (lambda: timesteps("diffusers-trailing", 5, VPDiscrete(), t_end=0.01), "t_end"),
                     (lambda: timesteps("diffusers-sideways", 5, VPDiscrete()), "allowed")]:
        with pytest.raises(DpmbenchError, match=word) as info:
            fn()
        assert "\n" not in str(info.value)


def test_add_noise_and_worker_threads(ddpm: tuple[Any, Any]) -> None:
    """``add_noise`` is diffusers' q(x_t | x_0) at the same training steps; an abandoned run's worker thread ends."""
    import threading

    config = diffusers.DDPMScheduler().config
    sch = scheduler("dpm-solver++", config)
    x0, noise = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    steps = torch.tensor([0, 500, 999])
    torch.testing.assert_close(sch.add_noise(x0, noise, steps), diffusers.DDPMScheduler().add_noise(x0, noise, steps),
                               rtol=1e-5, atol=1e-5)  # float32 table (diffusers) against float64 (ours)
    before = threading.active_count()
    sch.set_timesteps(5)
    x = torch.zeros(1, 3, 8, 8)
    sch.step(torch.zeros_like(x), sch.timesteps[0], x)
    assert threading.active_count() == before + 1
    sch.set_timesteps(5)  # abandons the unfinished run
    assert threading.active_count() == before
    for i in range(5):  # a complete run leaves no thread either
        x = sch.step(torch.zeros_like(x), sch.timesteps[i], x).prev_sample
    assert threading.active_count() == before


def test_discrete_oracle_variants() -> None:
    from dpmbench import load_model

    m = load_model("gmm-digits-ddpm")
    assert m.name == "gmm-digits-ddpm" and isinstance(m.schedule, VPDiscrete) and m.schedule.N == 1000
    assert m.schedule.key() == VPDiscrete().key() and m.cache_key() != load_model("gmm-digits").cache_key()
