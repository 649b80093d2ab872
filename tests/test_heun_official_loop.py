"""``heun:odd_nfe=to-zero`` on the ``karras`` grid is the EDM Heun baseline of DPM-Solver-v3's Table 1, checked against
an independent float64 reimplementation of that loop written here from its two sources:

* Karras et al. 2022 (EDM), eq. 5 (the rho = 7 noise levels) and Alg. 1 (Euler step, then the trapezoidal
  correction with d' at the next level);
* thu-ml/DPM-Solver-v3@ba16871:codebases/edm/samplers/heun.py:77-101 (the official script's budget): NFE // 2 Heun
  steps on the rho = 7 grid of NFE // 2 + 1 levels from sigma_max to sigma_min, and at odd NFE one more Euler step
  from sigma_min to sigma = 0; at even NFE the result is the one at sigma_min.

The loop below works on the EDM ODE dx/dsigma = eps(x, sigma) of a model with alpha = 1, sigma = t (the oracle
``gmm-2d`` on the ``edm`` schedule), using only the model's noise prediction; the grid is computed here from eq. 5.
"""

from __future__ import annotations

import math

import pytest
import torch

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.solvers.registry import get_solver

SIGMA_MAX, SIGMA_MIN, RHO = 80.0, 0.002, 7.0  # thu-ml/DPM-Solver-v3@ba16871:codebases/edm/sample.py:78-79


def official_heun(eps, x: torch.Tensor, nfe: int) -> torch.Tensor:
    """The official loop (heun.py:77-101) in float64: eps(x, sigma) is the noise prediction, d = eps."""
    steps = nfe // 2
    ramp = [i / steps for i in range(steps + 1)]
    sigmas = [(SIGMA_MAX ** (1 / RHO) + r * (SIGMA_MIN ** (1 / RHO) - SIGMA_MAX ** (1 / RHO))) ** RHO for r in ramp]
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d_cur = eps(x, s_cur)
        x_euler = x + (s_next - s_cur) * d_cur  # Alg. 1 line 5
        d_prime = eps(x_euler, s_next)  # line 7
        x = x + (s_next - s_cur) * (0.5 * d_cur + 0.5 * d_prime)  # line 8
    if nfe % 2:
        x = x + (0.0 - sigmas[-1]) * eps(x, sigmas[-1])  # the Euler step to sigma = 0 (heun.py:95-101)
    return x


@pytest.mark.parametrize("nfe", [5, 6, 7, 8])
def test_heun_to_zero_on_karras_is_the_official_loop(nfe: int) -> None:
    model = load_model("gmm-2d", schedule="edm")
    x_T = SIGMA_MAX * torch.randn(256, 2, generator=torch.Generator().manual_seed(nfe), dtype=torch.float64)
    calls = []

    def eps(x: torch.Tensor, sigma: float) -> torch.Tensor:
        calls.append(sigma)
        return model.eps(x, torch.full((len(x),), sigma, dtype=torch.float64))

    ref = official_heun(eps, x_T.clone(), nfe)
    assert len(calls) == nfe
    ours = sample(model, "heun:odd_nfe=to-zero", nfe, x_T, schedule="karras", t_start=SIGMA_MAX, t_end=SIGMA_MIN)
    scale = float(ref.abs().max())
    assert float((ours - ref).abs().max()) < 1e-10 * max(scale, 1.0), nfe
    if nfe % 2:  # the default (the grid's last step is Euler) is another method at odd NFE
        other = sample(model, "heun", nfe, x_T, schedule="karras", t_start=SIGMA_MAX, t_end=SIGMA_MIN)
        assert float((other - ref).abs().max()) > 1e-3


def test_to_zero_at_even_nfe_is_the_default_and_refuses_denoise_to_zero() -> None:
    model = load_model("gmm-2d")
    x_T = model.prior(64, seed=1, dtype=torch.float64)
    a = sample(model, "heun:odd_nfe=to-zero", 8, x_T, schedule="karras", t_end=1e-3)
    b = sample(model, "heun", 8, x_T, schedule="karras", t_end=1e-3)
    assert torch.equal(a, b)
    with pytest.raises(DpmbenchError, match="odd_nfe=to-zero already ends at sigma = 0"):
        get_solver("heun:odd_nfe=to-zero,denoise_to_zero=true")
    plan = get_solver("heun:odd_nfe=to-zero").make_plan(7, model.schedule, "karras", None, 1e-3)
    assert plan.orders == [2, 2, 2] and len(plan.points) == 4 and plan.extra["to_zero"]
    assert math.isclose(plan.points[-1].t, 1e-3)
