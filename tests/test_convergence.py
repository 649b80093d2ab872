"""Measured convergence orders on gmm-2d: RMSE to the exact ODE solution vs NFE, slope fitted over
NFE 20..160 (float64, logSNR steps, t_end = 1e-3), asserted within 0.3 of each solver's theoretical order.

Singlestep solvers are measured at NFE budgets where every step has the solver's order (the official
"fast" order plan ends with lower-order steps for other budgets: order 2 needs an even NFE; order 3
needs NFE = 2 mod 3, whose last step has order 2 and local error O(h^3)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import gmm2d_convergence_setup, measured_order

from dpmbench.solvers.base import History
from dpmbench.solvers.registry import get_solver

T_END = 1e-3
EVEN = [20, 40, 80, 160]
MOD3_2 = [20, 41, 80, 158]


@pytest.fixture(scope="module")
def setup() -> tuple:
    return gmm2d_convergence_setup()





CASES = [
    ("ddim", 1, EVEN),
    ("euler", 1, EVEN),
    ("heun", 2, EVEN),
    ("dpm-solver:order=1", 1, EVEN),
    ("dpm-solver:order=2", 2, EVEN),
    ("dpm-solver:order=3", 3, MOD3_2),
    ("dpm-solver++:order=2,method=singlestep", 2, EVEN),
    ("dpm-solver++:order=2,method=multistep", 2, EVEN),
    ("dpm-solver:order=2,method=multistep", 2, EVEN),
]


@pytest.mark.parametrize(("spec", "order", "nfes"), CASES, ids=[c[0] for c in CASES])
def test_convergence_order(setup: tuple, spec: str, order: int, nfes: list[int]) -> None:
    slope, errs = measured_order(setup, spec, nfes)
    assert abs(slope - order) < 0.3, f"{spec}: slope {slope:.2f}, errors {errs}"
    assert errs[-1] < errs[0]


# The noise-prediction 3M reaches its asymptotic range later (slopes 2.3, 2.6, 2.8, 2.9, 3.0 between successive
# doublings from NFE 20 to 640): it is measured over NFE 80..640.
THIRD_ORDER_MULTISTEP = [("dpm-solver++:order=3,method=multistep", EVEN),
                         ("dpm-solver:order=3,method=multistep", [80, 160, 320, 640])]


@pytest.mark.parametrize(("spec", "nfes"), THIRD_ORDER_MULTISTEP, ids=[c[0] for c in THIRD_ORDER_MULTISTEP])
def test_third_order_multistep(setup: tuple, spec: str, nfes: list[int]) -> None:
    """3M with the Taylor-consistent second-difference term (order3_rule=taylor) is third order.

    The official code's 3M (order3_rule=official, also diffusers') weights D2 with phi_3 instead of 2 phi_3;
    its fitted slope over NFE 20..160 is ~2.4 and tends to 2 (2.05 between NFE 320 and 640). The test asserts
    both measured facts, and that the official 3M still beats 2M at every NFE in the range.
    """
    slope, errs = measured_order(setup, spec + ",order3_rule=taylor", nfes)
    assert abs(slope - 3) < 0.3, f"{spec} (taylor): slope {slope:.2f}, errors {errs}"

    as_official, errs_official = measured_order(setup, spec, EVEN)
    assert 2.0 <= as_official < 2.7, f"{spec} (official): slope {as_official:.2f}"
    _, errs_2m = measured_order(setup, spec.replace("order=3", "order=2"), EVEN)
    assert all(e3 < e2 for e3, e2 in zip(errs_official, errs_2m, strict=True)), "3M must beat 2M at every NFE"


@pytest.mark.parametrize("rule", ["official", "taylor"])
def test_third_order_rule_on_a_quadratic_integrand(rule: str) -> None:
    """The update integrates sigma_t int e^lambda x0(lambda) dlambda; for x0 quadratic in lambda a consistent
    third-order rule is exact, the official one is off by an O(h^3) term."""
    from dpmbench.schedules import VPLinear
    from dpmbench.solvers.base import Point

    sch = VPLinear()
    solver = get_solver(f"dpm-solver++:order=3,order3_rule={rule}")
    lam0, h = 0.3, 0.2
    pts = [Point.at_lambda(sch, lam0 + k * h) for k in (-2, -1, 0, 1)]
    x0_of = lambda lam: torch.tensor([[lam**2]], dtype=torch.float64)  # noqa: E731
    hist = History(3)
    for p in pts[:3]:
        hist.push(p, x0_of(p.lam))
    x = torch.tensor([[0.0]], dtype=torch.float64)
    got = float(solver.update(x, hist, pts[3], 3))
    # exact: sigma_t * int_{lam0}^{lam0+h} e^lam lam^2 dlam (closed form of the antiderivative e^l (l^2 - 2l + 2))
    anti = lambda l: np.exp(l) * (l * l - 2 * l + 2)  # noqa: E731
    exact = pts[3].sigma * (anti(lam0 + h) - anti(lam0))
    if rule == "taylor":
        assert abs(got - exact) < 1e-12
    else:
        assert abs(got - exact) > 1e-4
