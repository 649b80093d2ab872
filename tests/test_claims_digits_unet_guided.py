"""The claims of test_claims_digits_unet.py measured at guidance 7.5 on ``digits-unet`` (protocol, tolerances and
measured numbers: that module's docstring). A module of their own so that the guided reference run and the unguided
one are computed side by side by the two worker processes of ``make test`` (each module runs on one of them).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_claims_digits_unet import (  # noqa: F401  (net: fixture)
    DC,
    DPMPP_2M,
    UNIPC,
    V3,
    _cell,
    _claims,
    _mse,
    _results,
    _values,
    _verdicts,
    net,
)


@pytest.fixture(scope="module")
def guided(net) -> dict[str, Any]:  # noqa: ANN001, F811
    return _cell(net, 7.5)


def test_dpm_solver_pp_beats_noise_prediction_dpm_solver_at_guidance_7_5(net, guided) -> None:  # noqa: ANN001, F811
    pp = [_mse(net, guided, "dpm-solver++:order=2,method=singlestep", nfe) for nfe in (6, 10)]
    noise = [_mse(net, guided, "dpm-solver:order=2", nfe) for nfe in (6, 10)]
    assert pp == pytest.approx([0.06420, 0.013500], rel=1e-3)
    assert noise[0] > 10 and noise[1] == pytest.approx(1.1825, rel=1e-2)  # diverging: chaotic in the last bits
    assert all(a < b / 50 for a, b in zip(pp, noise, strict=True))


def test_dpm_solver_v3_holds_at_guidance_7_5_on_the_network(net, guided) -> None:  # noqa: ANN001, F811
    df = _results(net, guided, [V3, DPMPP_2M, UNIPC], (5, 6, 8, 10))
    # EMS from samples 2^32.. of seed 0 (held out; from the evaluated x_T before: 0.03827 / 0.02744 / 0.009016 /
    # 0.005376)
    assert _values(df, V3) == pytest.approx([0.04206, 0.02732, 0.009024, 0.004390], rel=1e-3)
    assert _values(df, DPMPP_2M) == pytest.approx([0.4596, 0.1278, 0.03469, 0.01311], rel=1e-3)
    assert _values(df, UNIPC) == pytest.approx([11.81, 1.443, 0.6033, 0.05031], rel=1e-3)
    got = _claims(df)
    for key in ("dpm-solver-v3-vs-2m", "dpm-solver-v3-vs-unipc"):
        assert got[key]["verdict"] == "holds" and _verdicts(got[key]) == ["holds"] * 4, key
        assert all(d is not None for *_, d in got[key]["rows"])  # decided on the paired CI, not the marginal one


def test_dc_solver_beats_unipc_at_guidance_7_5_on_the_network(net, guided) -> None:  # noqa: ANN001, F811
    df = _results(net, guided, [DC, UNIPC], (5, 10))
    assert _values(df, DC) == pytest.approx([2.0956, 0.010124], rel=1e-3)  # held-out search (before 1.943, 0.01307)
    assert _values(df, UNIPC) == pytest.approx([11.81, 0.05031], rel=1e-3)
    got = _claims(df)["dc-solver-vs-unipc-cfg"]
    assert got["verdict"] == "holds" and _verdicts(got) == ["holds", "holds"]
    assert got["verdict_strongest"] == "holds"  # UniPC is the only other solver of this table
