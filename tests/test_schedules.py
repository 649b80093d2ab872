"""Noise schedules and timestep schedules."""

from __future__ import annotations

import math

import pytest
import torch

from dpmbench.errors import DpmbenchError
from dpmbench.schedules import NOISE_SCHEDULES, VPDiscrete, VPLinear, make_schedule
from dpmbench.timesteps import KARRAS_RHO, timesteps

KINDS = ["vp-linear", "vp-cosine", "vp-discrete", "edm", "ve", "flow"]


@pytest.mark.parametrize("kind", KINDS)
def test_lambda_inverse_roundtrip(kind: str) -> None:
    sch = make_schedule(kind)
    t = torch.linspace(sch.t_end_default, sch.T * (1 - 1e-6), 200, dtype=torch.float64)
    lam = sch.lambda_(t)
    assert bool((lam[1:] < lam[:-1]).all()), "lambda must decrease in t"
    torch.testing.assert_close(sch.t_of_lambda(lam), t, rtol=1e-9, atol=1e-12)
    # alpha, sigma and lambda are consistent
    torch.testing.assert_close(torch.log(sch.alpha(t) / sch.sigma(t)), lam, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["vp-linear", "vp-cosine", "vp-discrete"])
def test_variance_preserving(kind: str) -> None:
    sch = make_schedule(kind)
    t = torch.linspace(sch.t_end_default, sch.T, 50, dtype=torch.float64)
    torch.testing.assert_close(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones_like(t))


def test_vp_linear_closed_form() -> None:
    sch = VPLinear()
    t = 0.37
    # log alpha = -(b1 - b0) t^2 / 4 - b0 t / 2 (Song et al. 2021)
    assert sch.log_alpha(t) == pytest.approx(-(19.9) * t * t / 4 - 0.1 * t / 2, rel=1e-14)
    assert isinstance(sch.alpha(t), float)


def test_vp_discrete_matches_alphas_cumprod_on_grid() -> None:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    sch = VPDiscrete(betas=betas)
    n = torch.tensor([0, 1, 10, 500, 999])
    torch.testing.assert_close(sch.alpha(sch.t_of_index(n).double()) ** 2, ac[n], rtol=1e-12, atol=0)
    torch.testing.assert_close(sch.alphas_cumprod, ac)
    assert sch.t_end_default == pytest.approx(1e-3)


def test_edm_prior_and_lambda() -> None:
    sch = make_schedule("edm")
    assert sch.prior_std == 80.0 and sch.alpha(3.0) == 1.0 and sch.sigma(3.0) == 3.0
    assert sch.lambda_(2.0) == pytest.approx(-math.log(2.0))


def test_unknown_schedule_error() -> None:
    with pytest.raises(DpmbenchError, match="noise schedule 'vp-quartic'; allowed: vp-linear"):
        make_schedule("vp-quartic")
    assert set(KINDS) == set(NOISE_SCHEDULES)


@pytest.mark.parametrize("kind", ["time-uniform", "logsnr", "time-quadratic", "karras"])
def test_timesteps_shape_and_endpoints(kind: str) -> None:
    sch = VPLinear()
    t = timesteps(kind, 7, sch, 1.0, 1e-3)
    assert t.shape == (8,) and t.dtype == torch.float64
    assert t[0] == 1.0 and t[-1] == 1e-3
    assert bool((t[1:] < t[:-1]).all())


def test_timestep_kinds_follow_their_definitions() -> None:
    sch = VPLinear()
    lam = sch.lambda_(timesteps("logsnr", 10, sch, 1.0, 1e-3))
    torch.testing.assert_close(lam.diff(), torch.full((10,), float(lam[1] - lam[0]), dtype=torch.float64))
    tq = timesteps("time-quadratic", 10, sch, 1.0, 1e-3)
    torch.testing.assert_close(tq.sqrt().diff(), torch.full((10,), float(tq.sqrt()[1] - 1.0), dtype=torch.float64))
    tk = timesteps("karras", 10, sch, 1.0, 1e-3)
    sig = torch.exp(-sch.lambda_(tk)) ** (1 / KARRAS_RHO)  # uniform in sigma^(1/rho)
    torch.testing.assert_close(sig.diff(), torch.full((10,), float(sig[1] - sig[0]), dtype=torch.float64))
    torch.testing.assert_close(timesteps("time-uniform", 4, sch, 1.0, 0.2),
                               torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2], dtype=torch.float64))


def test_timesteps_errors() -> None:
    sch = VPLinear()
    with pytest.raises(DpmbenchError, match="invalid schedule 'linear'; allowed: time-uniform, logsnr"):
        timesteps("linear", 5, sch)
    with pytest.raises(DpmbenchError, match="need 6 times"):
        timesteps([1.0, 0.5], 5, sch)
    with pytest.raises(DpmbenchError, match="strictly decreasing"):
        timesteps([0.5, 1.0], 1, sch)
    with pytest.raises(DpmbenchError, match="invalid t_end"):
        timesteps("logsnr", 5, sch, 0.5, 0.7)


def test_ays_published_tables() -> None:
    from dpmbench.schedules import VPDiscrete
    from dpmbench.timesteps import AYS_SIGMAS, ays_sigmas

    sd = VPDiscrete(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    sig = lambda t: torch.exp(-sd.lambda_(t))  # noqa: E731
    t0 = float(sd.t_of_lambda(-torch.log(torch.tensor(14.615, dtype=torch.float64))))
    t1 = float(sd.t_of_lambda(-torch.log(torch.tensor(0.029, dtype=torch.float64))))
    t = timesteps("ays-sd15", 10, sd, t0, t1)
    torch.testing.assert_close(sig(t), torch.tensor(AYS_SIGMAS["sd15"], dtype=torch.float64), rtol=1e-9, atol=0)
    # other step counts: log-linear interpolation, end points kept
    s20 = ays_sigmas("sdxl", 20)
    assert len(s20) == 21 and s20[0] == 14.615 and abs(float(s20[-1]) - 0.029) < 1e-12
    assert bool((s20[1:] < s20[:-1]).all())
    torch.testing.assert_close(s20[::2], torch.tensor(AYS_SIGMAS["sdxl"], dtype=torch.float64), rtol=1e-12, atol=0)
    # on an oracle model (VP-linear, sigma range 151..0.0105) the interior levels are the table's
    lin = timesteps("ays-sd15", 10, VPLinear(), 1.0, 1e-3)
    torch.testing.assert_close(torch.exp(-VPLinear().lambda_(lin[1:-1])),
                               torch.tensor(AYS_SIGMAS["sd15"][1:-1], dtype=torch.float64), rtol=1e-9, atol=0)
    with pytest.raises(DpmbenchError, match="invalid schedule 'ays-svd'"):
        timesteps("ays-svd", 10, VPLinear(), 0.5, 1e-3)  # sigma(0.5) = 3.4 < SVD's 54.5
