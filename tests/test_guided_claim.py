"""DPM-Solver++'s motivating claim under large classifier-free guidance, measured on the oracle track.

Lu et al. 2022b (DPM-Solver++, Sec. 3 and Fig. 1/2) argue that with a large guidance scale, high-order
solvers built on the noise prediction become unstable, and propose data prediction (DPM-Solver++).
Measured here on gmm-digits, guidance scale 8, RMSE to the exact guided ODE solution from the same x_T
(500 samples, t_end = 1e-3, logSNR steps):

* singlestep: the noise-prediction DPM-Solver-2 diverges on part of the samples (RMSE 1.9 .. 38 at NFE 10-20;
  how far depends on which x_T are drawn: with the first 300 samples it is 0.14 at NFE 20) while the
  data-prediction DPM-Solver++(2S) stays accurate (0.03 .. 0.08) — the claim holds;
* multistep: on this Gaussian-per-class oracle the noise-prediction 2M is NOT worse than DPM-Solver++(2M)
  (0.087 / 0.040 / 0.023 vs 0.19 / 0.078 / 0.041 at NFE 10 / 15 / 20): the claim as stated for multistep
  solvers does not hold here; on gmm-2d it holds at NFE 10 and 15 (0.78 / 0.36 vs 0.65 / 0.15) and ties at 20.

The assertions below state exactly these measured facts, so a change in either solver shows up here.
"""

from __future__ import annotations

import pytest

from dpmbench import load_model, sample
from dpmbench.models.base import guided

SCALE = 8.0
NFES = [10, 15, 20]


def _errors(name: str, spec: str, n: int = 500) -> list[float]:
    model = load_model(name)
    x_T, cond = model.prior(n, seed=0), model.labels(n)
    ref = guided(model, SCALE).exact_solution(x_T.double(), t_end=1e-3, cond=cond)
    return [float(((sample(model, spec, nfe, x_T, guidance=SCALE, cond=cond).double() - ref) ** 2).mean().sqrt())
            for nfe in NFES]


@pytest.fixture(scope="module")
def digits() -> dict[str, list[float]]:
    specs = ["dpm-solver:order=2", "dpm-solver++:order=2,method=singlestep",
             "dpm-solver:order=2,method=multistep", "dpm-solver++:order=2,method=multistep"]
    return {s: _errors("gmm-digits", s) for s in specs}


def test_noise_prediction_singlestep_is_unstable_under_large_guidance(digits: dict[str, list[float]]) -> None:
    noise, data = digits["dpm-solver:order=2"], digits["dpm-solver++:order=2,method=singlestep"]
    assert all(e_noise > 10 * e_data for e_noise, e_data in zip(noise, data, strict=True)), (noise, data)
    assert max(data) < 0.15


def test_multistep_comparison_as_measured(digits: dict[str, list[float]]) -> None:
    noise_2m = digits["dpm-solver:order=2,method=multistep"]
    data_2m = digits["dpm-solver++:order=2,method=multistep"]
    # Measured: on gmm-digits the noise-prediction 2M is more accurate than DPM-Solver++(2M) at every NFE.
    assert all(n < d for n, d in zip(noise_2m, data_2m, strict=True)), (noise_2m, data_2m)
    gmm2d_noise = _errors("gmm-2d", "dpm-solver:order=2,method=multistep")
    gmm2d_data = _errors("gmm-2d", "dpm-solver++:order=2,method=multistep")
    # On gmm-2d the claim holds at NFE 10 and 15.
    assert gmm2d_data[0] < gmm2d_noise[0] and gmm2d_data[1] < gmm2d_noise[1], (gmm2d_noise, gmm2d_data)
