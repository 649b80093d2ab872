"""Defaults that follow the official codes, each checked against an independent computation of its formula.

* Singlestep DPM-Solver / DPM-Solver++ (orders 2, 3) on time-uniform and time-quadratic grids: the official code
  (LuChengTHU/dpm-solver, ``sample(method='singlestep')``) evaluates inside a step s -> t of order k at the k-step
  grid of the same kind between s and t, with r from those points' lambda. The reference below builds those
  sub-grids itself (linspace in t, resp. sqrt t, between s and t) and steps with the papers' update formulas.
* DEIS order semantics: the official ``ab_order = r`` interpolates r + 1 eps values. The reference computes the
  tAB coefficients C_ij = alpha_t int l_j(tau) rho'(tau) dtau by adaptive quadrature of the analytic rho' of the
  VP-linear schedule (dpmbench integrates by parts with Gauss-Legendre) and runs the official step loop.
* diff-sampler's ``ipndm_v`` weights: the reference is its loop in the EDM variables (x / alpha, sigma = rho,
  d = eps) with its coefficient expressions as they stand in diff-solvers-main/solvers.py.

All float64 on gmm-2d, whose denoiser is exact: agreement is at round-off, so the tolerances are 1e-10 or tighter
(quadrature: 1e-9).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model
from dpmbench.solvers import get_solver
from dpmbench.solvers.deis import deis_coefficients
from dpmbench.solvers.pndm import diff_sampler_weights
from dpmbench.timesteps import timesteps

T_END = 1e-3


@pytest.fixture(scope="module")
def gmm() -> tuple[Model, torch.Tensor]:
    model = load_model("gmm-2d")
    return model, model.prior(16, seed=0, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# -- singlestep DPM-Solver: intermediate points ------------------------------------------------------------------


def _official_orders(steps: int, order: int) -> list[int]:
    """get_orders_and_timesteps_for_singlestep_solver's recipe (DPM-Solver-fast), restated."""
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    k = steps // 3 + 1
    return {0: [3] * (k - 2) + [2, 1], 1: [3] * (k - 1) + [1], 2: [3] * (k - 1) + [2]}[steps % 3]


def _grid(kind: str, a: float, b: float, n: int) -> np.ndarray:
    """The official get_time_steps: 'time_uniform' or 'time_quadratic', n steps from a down to b."""
    if kind == "time-uniform":
        return np.linspace(a, b, n + 1)
    return np.linspace(math.sqrt(a), math.sqrt(b), n + 1) ** 2


def _reference_singlestep(model: Model, x: torch.Tensor, nfe: int, order: int, kind: str, data: bool,
                          intermediate: str) -> torch.Tensor:
    """Singlestep DPM-Solver (data=False) / DPM-Solver++ (data=True), solver_type 'dpmsolver'."""
    sch = model.schedule
    orders = _official_orders(nfe, order)
    outer = _grid(kind, 1.0, T_END, nfe)[np.cumsum([0, *orders])]
    al, sg, lm = (lambda t: float(sch.alpha(t))), (lambda t: float(sch.sigma(t))), (lambda t: float(sch.lambda_(t)))

    def f(y: torch.Tensor, t: float) -> torch.Tensor:
        return model.x0(y, t) if data else model.eps(y, t)

    def first(y: torch.Tensor, m: torch.Tensor, s: float, t: float) -> torch.Tensor:
        h = lm(t) - lm(s)
        if data:  # DPM-Solver++ first order
            return sg(t) / sg(s) * y - al(t) * math.expm1(-h) * m
        return al(t) / al(s) * y - sg(t) * math.expm1(h) * m  # DPM-Solver-1

    for s, t, k in zip(outer[:-1], outer[1:], orders, strict=True):
        s, t = float(s), float(t)
        m_s = f(x, s)
        if k == 1:
            x = first(x, m_s, s, t)
            continue
        h = lm(t) - lm(s)
        if intermediate == "grid":  # the official timesteps_inner and r_i (dpm_solver_pytorch.py, sample)
            inner = [float(u) for u in _grid(kind, s, t, k)[1:-1]]
            rs = [(lm(u) - lm(s)) / h for u in inner]
        else:
            rs = [0.5] if k == 2 else [1.0 / 3.0, 2.0 / 3.0]
            inner = [float(sch.t_of_lambda(torch.tensor(lm(s) + r * h, dtype=torch.float64))) for r in rs]
        if k == 2:  # DPM-Solver-2 (Alg. 1) / DPM-Solver++(2S)
            (r1,), (s1,) = rs, inner
            d = f(first(x, m_s, s, s1), s1) - m_s
            sign, scale = (-1.0, al(t)) if data else (1.0, sg(t))
            x = first(x, m_s, s, t) - scale * math.expm1(sign * h) / (2.0 * r1) * d
            continue
        (r1, r2), (s1, s2) = rs, inner  # DPM-Solver-3 (Alg. 2) / DPM-Solver++ 3S, solver_type 'dpmsolver'
        d1 = f(first(x, m_s, s, s1), s1) - m_s
        if data:
            phi_22 = math.expm1(-r2 * h) / (r2 * h) + 1.0
            u2 = first(x, m_s, s, s2) + al(s2) * (r2 / r1) * phi_22 * d1
            d2 = f(u2, s2) - m_s
            x = first(x, m_s, s, t) + al(t) / r2 * (math.expm1(-h) / h + 1.0) * d2
        else:
            phi_22 = math.expm1(r2 * h) / (r2 * h) - 1.0
            u2 = first(x, m_s, s, s2) - sg(s2) * (r2 / r1) * phi_22 * d1
            d2 = f(u2, s2) - m_s
            x = first(x, m_s, s, t) - sg(t) / r2 * (math.expm1(h) / h - 1.0) * d2
    return x


SINGLESTEP_CASES = [(name, order, kind, nfe) for name in ("dpm-solver", "dpm-solver++") for order in (2, 3)
                    for kind in ("time-uniform", "time-quadratic") for nfe in (6, 7, 8)]


@pytest.mark.parametrize(("name", "order", "kind", "nfe"), SINGLESTEP_CASES)
def test_singlestep_intermediate_points_follow_the_official_code(gmm: tuple, name: str, order: int, kind: str,
                                                                 nfe: int) -> None:
    model, x_T = gmm
    spec = f"{name}:order={order},method=singlestep"
    data = name == "dpm-solver++"
    official = sample(model, spec, nfe, x_T, schedule=kind, t_end=T_END)  # default: intermediate=grid
    ref = _reference_singlestep(model, x_T, nfe, order, kind, data, "grid")
    torch.testing.assert_close(official, ref, rtol=1e-11, atol=1e-11)
    lam = sample(model, spec + ",intermediate=lambda", nfe, x_T, schedule=kind, t_end=T_END)
    torch.testing.assert_close(lam, _reference_singlestep(model, x_T, nfe, order, kind, data, "lambda"),
                               rtol=1e-11, atol=1e-11)
    assert _rel(official, lam) > 1e-4  # the two conventions are different solvers on these grids


def test_singlestep_conventions_coincide_on_logsnr(gmm: tuple) -> None:
    """Uniform in lambda, the official sub-grid points are the lambda fractions 1/2 and 1/3, 2/3."""
    model, x_T = gmm
    for spec in ("dpm-solver:order=3", "dpm-solver++:order=2,method=singlestep"):
        a = sample(model, spec, 10, x_T, t_end=T_END)
        b = sample(model, spec + ",intermediate=lambda", 10, x_T, t_end=T_END)
        assert torch.equal(a, b)


def test_intermediate_option_is_validated() -> None:
    with pytest.raises(DpmbenchError, match="'intermediate'.*grid, lambda"):
        get_solver("dpm-solver:intermediate=midpoint")


# -- DEIS: order = ab_order + 1 ----------------------------------------------------------------------------------


def _reference_tab(model: Model, x: torch.Tensor, ts: torch.Tensor, ab_order: int) -> torch.Tensor:
    """The official t_ab sampler (th_deis/sampler.py get_sampler_t_ab) with ab_order = r: step i interpolates eps at
    min(i, r) + 1 times; C_ij = alpha_{t_{i+1}} int_{t_i}^{t_{i+1}} l_j(tau) rho'(tau) dtau, rho' = beta / (2 rho
    alpha^2) for the VP-linear schedule, integrated by scipy's adaptive quadrature."""
    sch = model.schedule
    b0, b1 = sch.beta_0, sch.beta_1

    def drho(t: float) -> float:
        a, s = float(sch.alpha(t)), float(sch.sigma(t))
        return (b0 + t * (b1 - b0)) / (2.0 * (s / a) * a * a)

    t_list = [float(t) for t in ts]
    eps_hist: list[torch.Tensor] = []
    for i, (s, t) in enumerate(zip(t_list[:-1], t_list[1:], strict=True)):
        eps_hist.insert(0, model.eps(x, s))
        nodes = t_list[i - min(i, ab_order): i + 1][::-1]  # newest first
        coef = []
        for j, tj in enumerate(nodes):
            others = [tk for k, tk in enumerate(nodes) if k != j]
            basis = lambda u, tj=tj, others=others: math.prod((u - tk) / (tj - tk) for tk in others)  # noqa: E731
            val, _ = quad(lambda u, basis=basis: basis(u) * drho(u), s, t, epsabs=0.0, epsrel=1e-13, limit=200)
            coef.append(val)
        y = x / float(sch.alpha(s)) + sum(c * e for c, e in zip(coef, eps_hist, strict=False))
        x = float(sch.alpha(t)) * y
        del eps_hist[ab_order:]
    return x


def test_deis_default_is_the_official_ab_order_3(gmm: tuple) -> None:
    """The official default ab_order=3 (4 eps values) is dpmbench's default deis, i.e. deis:order=4; ab_order=2 is
    deis:order=3."""
    model, x_T = gmm
    ts = timesteps("logsnr", 10, model.schedule, None, T_END)
    ref3, ref2 = _reference_tab(model, x_T, ts, 3), _reference_tab(model, x_T, ts, 2)
    default = sample(model, "deis", 10, x_T, schedule=ts)
    torch.testing.assert_close(default, ref3, rtol=1e-9, atol=1e-9)
    assert torch.equal(default, sample(model, "deis:order=4", 10, x_T, schedule=ts))
    torch.testing.assert_close(sample(model, "deis:order=3", 10, x_T, schedule=ts), ref2, rtol=1e-9, atol=1e-9)
    assert _rel(ref3, ref2) > 1e-3
    assert get_solver("deis").plan(6, model.schedule).orders == [1, 2, 3, 4, 4, 4]
    # fewer steps than the order: the warm-up orders 1, 2, 3 only (the official recursion). Three steps span t in
    # [1e-3, 1]; over such long steps dpmbench's Gauss-Legendre coefficients (4 panels x 8 nodes) agree with the
    # adaptive quadrature to ~2e-8 (measured), so 1e-6 here
    ts3 = timesteps("logsnr", 3, model.schedule, None, T_END)
    torch.testing.assert_close(sample(model, "deis", 3, x_T, schedule=ts3), _reference_tab(model, x_T, ts3, 3),
                               rtol=1e-6, atol=1e-6)


# -- iPNDM: diff-sampler's ipndm_v weights -----------------------------------------------------------------------


def _reference_ipndm_v(model: Model, x: torch.Tensor, ts: torch.Tensor, max_order: int = 4) -> torch.Tensor:
    """diff-sampler's ipndm_v_sampler in its own variables: x_edm = x / alpha, t = sigma / alpha, d = eps."""
    sch = model.schedule
    t_steps = [float(sch.sigma(t) / sch.alpha(t)) for t in ts]
    x_next, buf = x / float(sch.alpha(ts[0])), []
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:], strict=True)):
        x_cur = x_next
        d_cur = model.eps(x_cur * float(sch.alpha(ts[i])), float(ts[i]))
        order = min(max_order, i + 1)
        h_n = t_next - t_cur
        if order == 1:
            x_next = x_cur + h_n * d_cur
        elif order == 2:
            h_n_1 = t_cur - t_steps[i - 1]
            x_next = x_cur + h_n * ((2 + h_n / h_n_1) / 2 * d_cur - (h_n / h_n_1) / 2 * buf[-1])
        elif order == 3:
            h_n_1, h_n_2 = t_cur - t_steps[i - 1], t_steps[i - 1] - t_steps[i - 2]
            temp = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            c1 = (2 + (h_n / h_n_1)) / 2 + temp
            c2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp
            c3 = temp * h_n_1 / h_n_2
            x_next = x_cur + h_n * (c1 * d_cur + c2 * buf[-1] + c3 * buf[-2])
        else:
            h_n_1, h_n_2, h_n_3 = (t_cur - t_steps[i - 1], t_steps[i - 1] - t_steps[i - 2],
                                   t_steps[i - 2] - t_steps[i - 3])
            temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (
                6 * (h_n + h_n_1 + h_n_2))) * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) / (
                h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
            g = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
            c1 = (2 + (h_n / h_n_1)) / 2 + temp1 + temp2
            c2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + g) * temp2
            c3 = temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + g * (1 + h_n_2 / h_n_3)) * temp2
            c4 = -temp2 * g * h_n_1 / h_n_2
            x_next = x_cur + h_n * (c1 * d_cur + c2 * buf[-1] + c3 * buf[-2] + c4 * buf[-3])
        buf = (buf + [d_cur])[-(max_order - 1):]
    return x_next * float(sch.alpha(ts[-1]))


@pytest.mark.parametrize("kind", ["logsnr", "time-uniform"])
def test_ipndm_diff_sampler_weights_match_its_sampler(gmm: tuple, kind: str) -> None:
    model, x_T = gmm
    ts = timesteps(kind, 9, model.schedule, None, T_END)
    ours = sample(model, "ipndm:variable_step=true,weights=diff-sampler", 9, x_T, schedule=ts)
    torch.testing.assert_close(ours, _reference_ipndm_v(model, x_T, ts), rtol=1e-11, atol=1e-11)
    exact = sample(model, "ipndm:variable_step=true", 9, x_T, schedule=ts)
    assert _rel(ours, exact) > 1e-6  # orders 3-4 differ on unequal steps


def test_diff_sampler_weights_against_exact_ones() -> None:
    """Orders 1-2, and order 3 on equal steps: the exact Adams-Bashforth weights. Orders 3-4 on unequal steps and
    order 4 on equal steps: not; order 4's sum equals the step only when h_1 h_3 = h_2^2."""
    rhos = [3.0, 2.2, 1.5, 1.1, 0.6]  # unequal steps, newest last; rho_t = 0.6
    steps = [b - a for a, b in zip(rhos[:-1], rhos[1:], strict=True)][::-1]  # h_n first
    sch = load_model("gmm-2d").schedule
    times = [float(sch.t_of_lambda(torch.tensor(-math.log(r), dtype=torch.float64))) for r in rhos]
    for order in (1, 2, 3, 4):
        exact = deis_coefficients("rhoab", sch, times[:-1][::-1][:order], times[-2], times[-1])
        ds = np.array(diff_sampler_weights(steps[:order]))
        if order <= 2:
            np.testing.assert_allclose(ds, exact, rtol=1e-10, atol=1e-12)
        else:
            assert np.abs(ds - exact).max() > 1e-3
    assert abs(sum(diff_sampler_weights(steps)) - steps[0]) > 1e-3
    geometric = [-0.4 * 0.8**k for k in range(4)]
    assert math.isclose(sum(diff_sampler_weights(geometric)), geometric[0], rel_tol=1e-12)
    np.testing.assert_allclose(diff_sampler_weights([-0.5] * 3), [-0.5 * c / 12 for c in (23, -16, 5)], rtol=1e-13)
    # order 4 on equal steps: (57, -65, 43, -11) / 24, not Adams-Bashforth's (55, -59, 37, -9) / 24 (its third-
    # difference weight is 11/24 instead of 9/24)
    equal = np.array(diff_sampler_weights([-0.5] * 4))
    np.testing.assert_allclose(equal, [-0.5 * c / 24 for c in (57, -65, 43, -11)], rtol=1e-13)
    assert math.isclose(equal.sum(), -0.5, rel_tol=1e-13)


def test_diff_sampler_weights_need_variable_steps() -> None:
    with pytest.raises(DpmbenchError, match="'weights'.*variable_step=false"):
        get_solver("ipndm:weights=diff-sampler")
