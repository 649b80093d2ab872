"""Solver core: specs and options, NFE accounting over the default grid, consistency between solvers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from support import CountingModel

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.solvers import get_solver, list_solvers, parse_spec
from dpmbench.solvers.dpm_solver import singlestep_orders

DEFAULT = yaml.safe_load((Path(__file__).parents[1] / "config" / "default.yaml").read_text())




@pytest.mark.parametrize("spec", DEFAULT["solvers"])
@pytest.mark.parametrize("nfe", DEFAULT["nfe"])
def test_every_solver_uses_exactly_its_nfe(spec: str, nfe: int) -> None:
    base = load_model("gmm-2d")
    x_T = base.prior(4, seed=0)
    sol = get_solver(spec)
    model = CountingModel(base)
    if sol.needs_prepare:  # statistics/searches run in prepare, outside the budget: cache them first
        sample(model, sol, nfe, x_T)
        sample(model, sol, nfe, x_T, guidance=7.5, cond=base.labels(4))
        model.calls = 0
    out = sample(model, sol, nfe, x_T)
    assert model.calls == nfe and out.shape == x_T.shape and bool(torch.isfinite(out).all())
    # guided: one guided evaluation = 1 NFE, made of a conditional and an unconditional call
    model.calls = 0
    sample(model, sol, nfe, x_T, guidance=7.5, cond=base.labels(4))
    assert model.calls == 2 * nfe


@pytest.mark.parametrize("nfe", range(1, 25))
@pytest.mark.parametrize("order", [1, 2, 3])
def test_singlestep_orders_sum_to_nfe(nfe: int, order: int) -> None:
    orders = singlestep_orders(nfe, order)
    assert sum(orders) == nfe and max(orders) <= order
    if order == 3 and nfe % 3 == 0:
        assert orders[-2:] == [2, 1]  # the official plan


def test_spec_parsing_and_canonical_names() -> None:
    expected = ("dpm-solver++", {"order": "3", "method": "multistep"})
    assert parse_spec("dpm-solver++:order=3, method=multistep") == expected
    s = get_solver("dpm-solver++:order=3,lower_order_final=false")
    assert s.order == 3 and s.lower_order_final is False and s.method == "multistep"
    assert s.spec == "dpm-solver++:order=3,lower_order_final=false"
    assert get_solver("dpm-solver++:order=2").spec == "dpm-solver++"
    assert {"ddim", "euler", "heun", "dpm-solver", "dpm-solver++"} <= set(list_solvers())


@pytest.mark.parametrize(("spec", "message"), [
    ("dpm-solvr", "invalid solver 'dpm-solvr'; allowed: ddim, "),
    ("dpm-solver++:order=4", "invalid option 'order' of solver 'dpm-solver++' '4'; allowed: 1, 2, 3"),
    ("dpm-solver++:steps=4", "invalid option of solver 'dpm-solver++' 'steps'; allowed: "),
    ("dpm-solver++:order", "options must be key=value"),
    ("dpm-solver++:method=fast", "allowed: singlestep, multistep"),
    ("dpm-solver++:lower_order_final=maybe", "allowed: true, false"),
    ("ddim:eta=0.5", "invalid option of solver 'ddim' 'eta'; allowed: denoise_to_zero, sample_max_value"),
])
def test_bad_specs_give_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(DpmbenchError) as err:
        get_solver(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("spec", "nfe"), [("dpm-solver:order=3", 2), ("dpm-solver++:order=3", 2), ("heun", 1),
                                           ("ddim", 0)])
def test_too_small_nfe(spec: str, nfe: int) -> None:
    m = load_model("gmm-2d")
    with pytest.raises(DpmbenchError, match=f"invalid nfe {nfe} for solver"):
        sample(m, spec, nfe, m.prior(2))


def test_first_order_solvers_coincide() -> None:
    """DDIM, Euler on the scale-free ODE, DPM-Solver-1 and DPM-Solver++-1 are the same method."""
    m = load_model("gmm-digits")
    x_T = m.prior(16, seed=1, dtype=torch.float64)
    ref = sample(m, "ddim", 7, x_T)
    for spec in ["euler", "dpm-solver:order=1", "dpm-solver++:order=1", "dpm-solver++:order=1,method=singlestep"]:
        torch.testing.assert_close(sample(m, spec, 7, x_T), ref, rtol=1e-10, atol=1e-10)


def test_deterministic_and_batch_independent() -> None:
    m = load_model("gmm-digits")
    x_T = m.prior(64, seed=3)
    a = sample(m, "dpm-solver++:order=3", 10, x_T)
    b = sample(m, "dpm-solver++:order=3", 10, x_T)
    c = torch.cat([sample(m, "dpm-solver++:order=3", 10, x_T[i : i + 16]) for i in range(0, 64, 16)])
    assert torch.equal(a, b) and torch.equal(a, c)
    assert a.dtype == torch.float32


def test_time_grid_plans() -> None:
    m = load_model("gmm-2d")
    s = get_solver("dpm-solver:order=3")
    plan = s.plan(10, m.schedule, "logsnr", None, 1e-3)
    assert plan.orders == [3, 3, 3, 1] and len(plan.points) == 5
    lam = [p.lam for p in plan.points]
    assert max(lam[i + 1] - lam[i] for i in range(4)) - min(lam[i + 1] - lam[i] for i in range(4)) < 1e-9
    plan_u = s.plan(10, m.schedule, "time-uniform", None, 1e-3)  # the 10-step grid taken at the outer points
    assert [round(p.t, 6) for p in plan_u.points] == [1.0, round(1 - 3 * 0.0999, 6), round(1 - 6 * 0.0999, 6),
                                                      round(1 - 9 * 0.0999, 6), 0.001]
    heun = get_solver("heun").plan(7, m.schedule)
    assert heun.orders == [2, 2, 2, 1] and len(heun.points) == 5
    ms = get_solver("dpm-solver++:order=3").plan(6, m.schedule)
    assert ms.orders == [1, 2, 3, 3, 2, 1]  # warm-up, then lower_order_final (< 10 steps)
    assert get_solver("dpm-solver++:order=3").plan(12, m.schedule).orders[-1] == 3


def test_custom_times_are_used_exactly() -> None:
    m = load_model("gmm-2d")
    times = [1.0, 0.6, 0.2, 0.05, 0.001]
    x = m.prior(4, seed=0, dtype=torch.float64)
    manual = x
    for s, t in zip(times[:-1], times[1:], strict=True):
        eps = m.eps(manual, s)
        x0 = (manual - m.schedule.sigma(s) * eps) / m.schedule.alpha(s)
        manual = m.schedule.alpha(t) * x0 + m.schedule.sigma(t) * eps
    torch.testing.assert_close(sample(m, "ddim", 4, x, schedule=times), manual)


def test_dynamic_thresholding() -> None:
    from dpmbench.solvers.base import dynamic_threshold

    x0 = torch.tensor([[0.5, -0.2, 0.1, 0.3], [3.0, -2.0, 0.5, 1.0]], dtype=torch.float64)
    out = dynamic_threshold(x0, 1.0, float("inf"))  # s = max |x0| per sample, at least 1
    torch.testing.assert_close(out[0], x0[0])
    torch.testing.assert_close(out[1], x0[1] / 3.0)
    capped = dynamic_threshold(x0, 1.0, 2.0)  # s capped at 2: clip to [-2, 2], then / 2
    torch.testing.assert_close(capped[1], torch.tensor([1.0, -1.0, 0.25, 0.5], dtype=torch.float64))


def test_thresholding_and_denoise_to_zero() -> None:
    m = load_model("gmm-digits")
    x_T, c = m.prior(32, seed=0), m.labels(32)
    counting = CountingModel(m)
    out = sample(counting, "dpm-solver++:thresholding=true,denoise_to_zero=true", 8, x_T, guidance=8.0, cond=c)
    assert counting.calls == 2 * 8  # denoise_to_zero spends one of the 8 NFE
    assert float(out.abs().max()) <= 1.0 + 1e-6  # the final output is a thresholded x0
    plain = sample(m, "dpm-solver++", 8, x_T, guidance=8.0, cond=c)
    assert float(plain.abs().max()) > 1.0  # guidance 8 pushes samples out of the data range
    with pytest.raises(DpmbenchError, match="needs an integer >= 4"):
        sample(m, "dpm-solver++:order=3,denoise_to_zero=true", 3, x_T)


def test_noise_source_is_batch_independent() -> None:
    from dpmbench.models.base import NoiseSource

    like = torch.zeros(10, 1, 8, 8)
    full = NoiseSource(7, 0, like)(3)
    part = NoiseSource(7, 5, like[:3])(3)
    assert torch.equal(full[5:8], part) and not torch.equal(full, NoiseSource(7, 0, like)(4))


def test_step_noise_is_drawn_in_the_run_precision() -> None:
    """Step noise of a float64 run is float64 (x_T's draw, on its own stream); every lower precision draws float32
    (then casts), with the same batch independence; the float32 draw is not the float64 one rounded."""
    from dpmbench.models.base import NoiseSource, prior_noise

    like64 = torch.zeros(10, 1, 8, 8, dtype=torch.float64)
    z64 = NoiseSource(7, 0, like64)(3)
    assert z64.dtype == torch.float64 and torch.equal(z64, prior_noise(10, (1, 8, 8), 7, 0, stream=4))
    z32 = NoiseSource(7, 0, like64.float())(3)
    assert z32.dtype == torch.float32
    assert torch.equal(z32, prior_noise(10, (1, 8, 8), 7, 0, stream=4, dtype=torch.float32))
    assert torch.equal(NoiseSource(7, 5, like64[:3].float())(3), z32[5:8])
    assert not torch.equal(z32, z64.float())
    z16 = NoiseSource(7, 0, like64.half())(3)
    assert z16.dtype == torch.float16 and torch.equal(z16, z32.half())
    with pytest.raises(DpmbenchError, match="noise dtype"):
        prior_noise(2, (2,), 0, dtype=torch.float16)


def test_options_are_instance_attributes() -> None:
    """Every option is an attribute of the solver (declared in the family's class body for type checkers); ``opts``
    and the canonical spec read them; an option may not hide a solver method or attribute."""
    from dpmbench.solvers.base import Option, Solver
    from dpmbench.solvers.pndm import IPNDM
    from dpmbench.solvers.unipc import UniPC

    sol, uni, default = (get_solver("ipndm:max_order=3,variable_step=true"), get_solver("unipc:prediction=eps"),
                         get_solver("unipc"))
    assert isinstance(sol, IPNDM) and isinstance(uni, UniPC) and isinstance(default, UniPC)
    assert sol.max_order == 3 and sol.variable_step is True and sol.full_order() == 3
    assert sol.opts["max_order"] == 3 and sol.spec == "ipndm:max_order=3,variable_step=true"
    assert uni.prediction == "eps" and default.prediction == "x0"  # the option sets the loop's model output type
    for key in ("plan", "options"):
        with pytest.raises(TypeError, match=f"option '{key}'"):
            type("Bad", (Solver,), {"name": "bad", "options": {key: Option(int, 1, "clashes")}})
