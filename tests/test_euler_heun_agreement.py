"""``euler`` and ``heun`` agree with diffusers' EulerDiscreteScheduler and HeunDiscreteScheduler, which are
ports of k-diffusion's ``sample_euler`` / ``sample_heun`` (k-diffusion itself does not install beside this
project's pins: its dependency torchsde requires numpy < 2).

Conventions aligned:

* **Variables.** These schedulers integrate the scale-free ODE in ``x~ = x / alpha`` over
  ``sigma~ = sigma / alpha = ((1 - alphas_cumprod) / alphas_cumprod)^(1/2)`` and feed the network
  ``x~ / sqrt(sigma~^2 + 1) = x``; dpmbench's ``euler``/``heun`` work in the same variables. diffusers starts from
  ``x~_T = x_T / alpha_T``; results are compared in x (``x = alpha x~``).
* **Grid.** ``timestep_spacing="trailing"`` gives integer training steps n, where diffusers' interpolated sigma
  is exactly the training one; dpmbench uses ``t = (n + 1) / 1000``. diffusers' float32 sigma table is replaced by
  float64 values of the same schedule (checked against diffusers' own first). EulerDiscreteScheduler.step still
  upcasts the sample to float32, so Euler agrees to ~1e-7 (Heun to ~1e-15).
* **Last step.** diffusers appends sigma = 0 and takes its last step there (Euler, the denoised x0); dpmbench
  ends at t_end > 0. The comparison is made after all steps but that last one: K diffusers steps against K - 1
  dpmbench steps on the same K times. Heun's K - 1 second-order steps cost 2 (K - 1) NFE on both sides.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler

from dpmbench import load_model, sample
from dpmbench.schedules import VPDiscrete

# diffusers' set_timesteps calls np.array(tensor), which numpy 2 flags (not ours).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

SCH = VPDiscrete(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
TOL = 1e-5


def _setup(scheduler, steps: int) -> tuple[list[float], torch.Tensor]:
    scheduler.set_timesteps(steps)
    n = torch.unique_consecutive(scheduler.timesteps.to(torch.float64)).round().long()
    times = [(int(k) + 1) / 1000 for k in n]
    sig64 = torch.tensor([SCH.sigma(t) / SCH.alpha(t) for t in times], dtype=torch.float64)
    return times, sig64


def _run_diffusers(name: str, steps: int, x_T: torch.Tensor, model) -> tuple[torch.Tensor, list[float]]:
    if name == "euler":
        sched = EulerDiscreteScheduler(timestep_spacing="trailing")
        times, sig64 = _setup(sched, steps)
        torch.testing.assert_close(sched.sigmas[:-1].double(), sig64, rtol=1e-5, atol=0)
        sched.sigmas = torch.cat([sig64, torch.zeros(1, dtype=torch.float64)])
        calls = len(times) - 1
    else:
        sched = HeunDiscreteScheduler(timestep_spacing="trailing", beta_start=1e-4, beta_end=0.02)  # not its defaults
        times, sig64 = _setup(sched, steps)
        inter = torch.cat([sig64[:1], sig64[1:].repeat_interleave(2), torch.zeros(1, dtype=torch.float64)])
        torch.testing.assert_close(sched.sigmas[:-1].double(), inter[:-1], rtol=1e-5, atol=0)
        sched.sigmas = inter
        calls = 2 * (len(times) - 1)
    xt = x_T / SCH.alpha(times[0])
    for timestep in sched.timesteps[:calls]:
        x_in = sched.scale_model_input(xt, timestep)
        eps = model.eps(x_in, (float(timestep) + 1) / 1000)
        xt = sched.step(eps, timestep, xt).prev_sample
    return xt * SCH.alpha(times[-1]), times


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("steps", [5, 10, 20])
@pytest.mark.parametrize("name", ["gmm-2d", "gmm-digits"])
def test_matches_diffusers_k_diffusion_ports(solver: str, steps: int, name: str) -> None:
    model = load_model(name, schedule=SCH)
    x_T = model.prior(32, seed=0, dtype=torch.float64)
    theirs, times = _run_diffusers(solver, steps, x_T, model)
    k = len(times) - 1  # steps before diffusers' final jump to sigma = 0
    nfe = k if solver == "euler" else 2 * k
    ours = sample(model, solver, nfe, x_T, schedule=times)
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel < TOL, rel
    # sensitivity: one step fewer on our side does not match
    if k > 2:
        fewer = sample(model, solver, nfe - (1 if solver == "euler" else 2), x_T, schedule=times[:-1])
        assert float((fewer - theirs).norm() / theirs.norm()) > 1e-3
