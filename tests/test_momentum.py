"""Momentum samplers (plms-hb, ghvb, dpm-solver++-hb; Wizadwongsa et al. 2024, ICLR) on the oracle track.

Claim (paper Sec. 1, 5): at large guidance and low NFE, high-order solvers diverge (artifacts); heavy-ball (HB)
momentum and its generalization GHVB enlarge the stability region and mitigate the divergence; beta = 1 is the
base solver; HB lowers the order to 1, GHVB of order k keeps order k.

Measured on gmm-digits, classifier-free guidance 7.5, 300 samples, float64, logSNR steps, t_end = 1e-3: number of
samples whose norm exceeds 3x the data's RMS norm ("diverged") at NFE 6 / 8 / 10 / 15 / 20:
    ipndm (PLMS, order 4)   224 / 204 / 214 / 17 / 0      plms-hb (beta 0.8)     104 / 56 / 33 / 0 / 0
    plms-hb beta 0.5          0 / 0 / 0 / 0 / 0           ghvb (order 4, 0.8)    214 / 191 / 188 / 10 / 0
    ghvb beta 0.5           201 / 151 / 130 / 3 / 0       dpm-solver++ (2M)        9 / 0 / 0 / 0 / 0
    dpm-solver++-hb (0.8)     0 / 0 / 0 / 0 / 0
and on gmm-2d, guidance 7.5, 300 samples, RMSE to the exact guided solution at NFE 6 / 8 / 10 / 15:
    ipndm 19.9 / 22.3 / 26.3 / 28.0; plms-hb 5.60 / 7.11 / 6.91 / 1.76; ghvb 16.7 / 16.5 / 19.1 / 18.8;
    dpm-solver++ 1.48 / 1.21 / 0.58 / 0.074; dpm-solver++-hb 0.93 / 0.77 / 0.39 / 0.18.
So the claim holds for HB (PLMS and DPM-Solver++) - at NFE 15 the first-order dpm-solver++-hb is already less
accurate than the second-order base (0.18 vs 0.074) - and holds only weakly for GHVB at the official beta 0.8 (a
few percent fewer diverged samples).

Orders (gmm-2d, no guidance, RMSE vs NFE, logSNR): plms-hb 0.97 and dpm-solver++-hb 1.00 over NFE 80..640 (0.90
and 1.03 over 20..160): HB is first order. GHVB order 1 / 2 / 4: 1.01 / 1.91 / 1.99 over 80..640; order 4 is
second order exactly like ipndm (1.99; the fixed equal-step Adams-Bashforth weights on a non-rho-uniform grid,
see tests/test_deis_pndm.py), i.e. GHVB keeps the order of its base PLMS. That GHVB's weights are of order k is
checked directly: with the momentum-filtered velocities of a polynomial of degree < k they integrate it exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import gmm2d_convergence_setup, measured_order, rmse, run_cli

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import guided
from dpmbench.solvers.momentum import ghvb_coefficients
from dpmbench.solvers.pndm import AB_FIXED
from dpmbench.solvers.registry import get_solver

GUIDANCE = 7.5


def test_beta_one_is_the_base_solver() -> None:
    m = load_model("gmm-2d")
    x_T = m.prior(64, seed=0, dtype=torch.float64)
    cases = [("plms-hb:momentum=1", "ipndm"), ("ghvb:momentum=1", "ipndm"),
             ("dpm-solver++-hb:momentum=1", "dpm-solver++")]
    cases += [(f"{s}:momentum=1,order={k}", f"ipndm:max_order={k}") for s in ("plms-hb", "ghvb") for k in (1, 2, 3)]
    for spec, base in cases:
        for nfe in (4, 9):
            torch.testing.assert_close(sample(m, spec, nfe, x_T), sample(m, base, nfe, x_T), rtol=1e-12, atol=1e-12)
    assert float((sample(m, "ghvb", 9, x_T) - sample(m, "ipndm", 9, x_T)).abs().max()) > 1e-4


def _stationary_velocity(f, n: int, beta: float) -> float:  # type: ignore[no-untyped-def]
    """v_n = (1 - beta) v_{n-1} + beta f(n), started infinitely long ago (unit steps)."""
    m = np.arange(4000)
    return float(np.sum(beta * (1 - beta) ** m * f(n - m)))


@pytest.mark.parametrize("beta", [1.0, 0.8, 0.5])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ghvb_weights_have_order_k(order: int, beta: float) -> None:
    """GHVB's step h sum_j c_j(beta) v_{n-j} integrates every polynomial of degree < k exactly (order k), and not
    degree k; at beta = 1 the weights are Adams-Bashforth's. Heavy ball's step (momentum on the AB combination)
    is exact only for constants when beta < 1 (first order)."""
    c = ghvb_coefficients(order, beta)
    assert sum(c) == pytest.approx(1.0, abs=1e-14)
    for deg in range(order + 1):
        step = sum(cj * _stationary_velocity(lambda t, d=deg: t.astype(float) ** d, -j, beta) for j, cj in enumerate(c))
        exact = 1.0 / (deg + 1)  # int_0^1 t^deg dt
        if deg < order:
            assert step == pytest.approx(exact, abs=1e-9), (deg, step)
        else:
            assert abs(step - exact) > 1e-3
    if beta == 1.0:
        assert c == pytest.approx(AB_FIXED[order], abs=1e-15)
    else:  # heavy ball: v = (1 - beta) v + beta * AB-combination; for f(t) = t its step lags by (1 - beta)/beta
        ab = AB_FIXED[order]
        hb = _stationary_velocity(lambda t: sum(a * (t - j) for j, a in enumerate(ab)), 0, beta)
        ab_step = 0.5 if order >= 2 else 0.0  # AB-k is exact for f(t) = t when k >= 2
        assert hb == pytest.approx(ab_step - (1 - beta) / beta, abs=1e-9)


@pytest.fixture(scope="module")
def setup() -> tuple:
    return gmm2d_convergence_setup()


ORDERS = [("plms-hb", 1, [20, 40, 80, 160], 200), ("dpm-solver++-hb", 1, [20, 40, 80, 160], 200),
          ("ghvb:order=1", 1, [20, 40, 80, 160], 200), ("ghvb:order=2", 2, [80, 160, 320, 640], 50),
          ("ghvb", 2, [80, 160, 320, 640], 50)]


@pytest.mark.parametrize(("spec", "order", "nfes", "n"), ORDERS, ids=[c[0] for c in ORDERS])
def test_measured_order(setup: tuple, spec: str, order: int, nfes: list[int], n: int) -> None:
    model, x_T, ref = setup
    slope, errs = measured_order((model, x_T[:n], ref[:n]), spec, nfes)
    assert abs(slope - order) < 0.3, f"{spec}: slope {slope:.2f}, errors {errs}"
    if spec == "ghvb":  # the same order as its base PLMS (ipndm) on this grid
        base, _ = measured_order((model, x_T[:n], ref[:n]), "ipndm", nfes)
        assert abs(slope - base) < 0.1, (slope, base)


def _diverged(spec: str, nfes: list[int]) -> list[int]:
    m = load_model("gmm-digits")
    x_T, cond = m.prior(300, seed=0, dtype=torch.float64), m.labels(300)
    mu, cov = m.data_moments()
    scale = float((cov.trace() + mu @ mu).sqrt())
    out = []
    for nfe in nfes:
        x = sample(m, spec, nfe, x_T, guidance=GUIDANCE, cond=cond)
        out.append(int((x.reshape(len(x), -1).norm(dim=1) > 3 * scale).sum()))
    return out


def test_momentum_mitigates_divergence_under_large_guidance() -> None:
    nfes = [6, 8, 10]
    base, hb, gh = _diverged("ipndm", nfes), _diverged("plms-hb", nfes), _diverged("ghvb", nfes)
    assert min(base) > 150, base  # PLMS diverges on most samples (measured 224 / 204 / 214 of 300)
    assert all(h < 0.6 * b for h, b in zip(hb, base, strict=True)), (hb, base)  # measured 104 / 56 / 33
    assert all(g < b for g, b in zip(gh, base, strict=True)), (gh, base)  # weakly: measured 214 / 191 / 188
    assert _diverged("plms-hb:momentum=0.5", nfes) == [0, 0, 0]
    dpm, dpm_hb = _diverged("dpm-solver++", [6]), _diverged("dpm-solver++-hb", [6])
    assert dpm[0] >= 3 and dpm_hb == [0], (dpm, dpm_hb)  # measured 9 -> 0


def test_momentum_lowers_error_under_large_guidance_at_low_nfe() -> None:
    """gmm-2d, guidance 7.5, RMSE to the exact guided solution: HB lowers it at NFE 6 / 8 / 10; at NFE 15 the
    first-order dpm-solver++-hb is less accurate than DPM-Solver++(2M) (measured 0.18 vs 0.074)."""
    m = load_model("gmm-2d")
    x_T, cond = m.prior(300, seed=0, dtype=torch.float64), m.labels(300)
    ref = guided(m, GUIDANCE).exact_solution(x_T, t_end=1e-3, cond=cond)

    def err(spec: str, nfe: int) -> float:
        return rmse(sample(m, spec, nfe, x_T, guidance=GUIDANCE, cond=cond), ref)

    for nfe in (6, 8, 10):
        assert err("plms-hb", nfe) < 0.5 * err("ipndm", nfe)
        assert err("ghvb", nfe) < err("ipndm", nfe)
        assert err("dpm-solver++-hb", nfe) < 0.85 * err("dpm-solver++", nfe)
    assert err("dpm-solver++-hb", 15) > 1.5 * err("dpm-solver++", 15)


def test_registered_listed_and_validated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "solvers")
    assert code == 0 and all(n in out for n in ("plms-hb", "ghvb", "dpm-solver++-hb"))
    m = load_model("gmm-2d")
    x_T = m.prior(8, seed=0)
    for spec in ("plms-hb", "ghvb", "dpm-solver++-hb"):
        for nfe in (2, 7):
            assert torch.isfinite(sample(m, spec, nfe, x_T)).all()  # sample() asserts NFE spent == budget
    with pytest.raises(DpmbenchError, match="option 'momentum' of solver 'ghvb'"):
        get_solver("ghvb:momentum=1.5")
    with pytest.raises(DpmbenchError, match="option 'momentum' of solver 'plms-hb'"):
        get_solver("plms-hb:momentum=0")
    with pytest.raises(DpmbenchError, match="option 'method' of solver 'dpm-solver\\+\\+-hb'"):
        get_solver("dpm-solver++-hb:method=singlestep")
    with pytest.raises(DpmbenchError, match="option 'order' of solver 'dpm-solver\\+\\+-hb'"):
        get_solver("dpm-solver++-hb:order=3")
