"""diffusers' timestep conventions as timestep schedules of discrete-time (``vp-discrete``) models.

``diffusers-SPACING`` is where diffusers' ``DPMSolverMultistepScheduler`` (0.42; UniPC and DEIS share the code)
evaluates the model for ``n`` inference steps, and where its last step ends:

* ``SPACING`` = ``linspace`` / ``leading`` / ``trailing``: ``timestep_spacing`` (Lin et al. 2024, "Common
  diffusion noise schedules and sample steps are flawed", Table 2), with ``lambda_min_clipped = -inf``;
  ``leading`` uses ``steps_offset = 1`` (the scheduler config of Stable Diffusion 1.x/2.x, where users meet it;
  diffusers' class default 0 moves every timestep down by one);
* ``karras``: ``use_karras_sigmas`` (Karras et al. 2022, eq. 5, rho = 7, between the training table's smallest and
  largest sigma), ``lu``: ``use_lu_lambdas`` (uniform in log-SNR, Lu et al. 2022): the noise levels are mapped to
  training timesteps by log-sigma interpolation and rounded, as diffusers does (truncated for
  ``squaredcos_cap_v2``, where diffusers skips the rounding and its int64 timesteps drop the fraction; there the
  first timesteps repeat, which a grid cannot, so those step counts are refused; and diffusers' float32 table
  can put the first one a training step lower). The timestep spacing does not matter for these two (diffusers
  ignores it).

``final_sigmas_type``: by default the grid ends as ``"sigma_min"``: at training step 0 (``alphas_cumprod[0]``,
t = 1/N, dpmbench's ``t_end`` of a discrete model). With karras/lu the last timestep is already step 0, so
diffusers' last step of n is a zero-length step that still spends an evaluation; the grid here drops it and is
diffusers' timesteps for ``steps + 1`` inference steps. Suffix ``-zero`` (``final_sigmas_type="zero"``): diffusers
jumps from its last timestep to sigma = 0, i.e. returns the data prediction there; here the grid is diffusers'
``steps + 1`` timesteps and ends at the last one, to be run with the solver option ``denoise_to_zero=true`` (the
jump, one more evaluation): ``N`` evaluations then equal diffusers' ``N`` inference steps.

A training step n sits at continuous time ``(n + 1) / N`` (``VPDiscrete.t_of_index``). These grids set their own
start (diffusers' first timestep: 999 of 1000, or 901 for ``leading`` at 10 steps), not the run's ``t_start``.
Formulas re-implemented from diffusers' ``set_timesteps``, ``_convert_to_karras``, ``_convert_to_lu`` and
``_sigma_to_t`` (scheduling_dpmsolver_multistep.py, diffusers 0.42.1), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.flowgrids import karras_sigmas
from dpmbench.schedules import NoiseSchedule, VPDiscrete

PREFIX = "diffusers-"
SPACINGS = ("linspace", "leading", "trailing", "karras", "lu")
KINDS = [f"{PREFIX}{s}{z}" for z in ("", "-zero") for s in SPACINGS]
LEADING_STEPS_OFFSET = 1  # Stable Diffusion 1.x/2.x scheduler_config.json


def diffusers_timesteps(spacing: str, n: int, schedule: VPDiscrete) -> np.ndarray:
    """diffusers' ``timesteps`` (training-step indices, decreasing, float64) for ``n`` inference steps."""
    big_n = schedule.N
    if spacing == "linspace":
        return np.linspace(0, big_n - 1, n + 1).round()[::-1][:-1].copy()
    if spacing == "leading":
        ratio = big_n // (n + 1)
        return (np.arange(0, n + 1) * ratio).round()[::-1][:-1].copy() + LEADING_STEPS_OFFSET
    if spacing == "trailing":
        return np.arange(big_n, 0, -big_n / n).round() - 1
    abar = schedule.alphas_cumprod.numpy()
    log_sigmas = np.log(((1 - abar) / abar) ** 0.5)  # increasing with the index
    if spacing == "karras":
        log_s = np.log(karras_sigmas(math.exp(log_sigmas[0]), math.exp(log_sigmas[-1]), n))
    elif spacing == "lu":
        log_s = log_sigmas[-1] + np.linspace(0, 1, n) * (log_sigmas[0] - log_sigmas[-1])
    else:
        raise bad_value("diffusers timestep spacing", spacing, SPACINGS)
    idx = np.interp(log_s, log_sigmas, np.arange(big_n, dtype=np.float64))  # diffusers' _sigma_to_t
    # diffusers rounds, except for squaredcos_cap_v2, where its int64 timesteps truncate the fraction
    return np.floor(idx) if schedule.beta_schedule == "squaredcos_cap_v2" else idx.round()


def diffusers_grid(kind: str, steps: int, schedule: NoiseSchedule, t_end: float) -> torch.Tensor:
    """The ``steps + 1`` decreasing times of schedule ``kind`` (``diffusers-SPACING[-zero]``, see the module)."""
    name = kind[len(PREFIX):]
    zero = name.endswith("-zero")
    spacing = name[: -len("-zero")] if zero else name
    if spacing not in SPACINGS:
        raise bad_value("schedule", kind, KINDS)
    if not isinstance(schedule, VPDiscrete):
        raise DpmbenchError(f"invalid schedule {kind!r} for noise schedule {schedule.kind!r}: diffusers' timesteps "
                            "are training steps of a discrete-time model; allowed: vp-discrete")
    if steps < 1:
        raise DpmbenchError(f"invalid steps {steps}: must be >= 1")
    if zero or spacing in ("karras", "lu"):
        idx = diffusers_timesteps(spacing, steps + 1, schedule)
    else:
        idx = np.concatenate([diffusers_timesteps(spacing, steps, schedule), [0.0]])
    if not zero and not math.isclose(t_end, 1.0 / schedule.N, rel_tol=1e-9):
        raise DpmbenchError(f"invalid t_end {t_end} for schedule {kind!r}: it ends at training step 0, t = 1/N = "
                            f"{1.0 / schedule.N}; allowed: that value")
    t = (torch.from_numpy(idx.astype(np.float64)) + 1.0) / schedule.N
    if not bool((t[1:] < t[:-1]).all()):
        raise DpmbenchError(f"invalid steps {steps} for schedule {kind!r}: diffusers' timesteps "
                            f"{idx.astype(int).tolist()} repeat (too many steps for N = {schedule.N})")
    return t
