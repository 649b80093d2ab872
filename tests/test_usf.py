"""USF (Liu et al., ICLR 2024): the per-step schedule executor `usf` and the `usf` search (S^3, scaled down)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support import T_END, gmm2d_convergence_setup, measured_order, rmse, run_cli, slope

from dpmbench import load_model, sample
from dpmbench.artifacts import load_named, save_named
from dpmbench.errors import DpmbenchError
from dpmbench.search import run_search
from dpmbench.search.usf import search_usf
from dpmbench.solvers.base import Context
from dpmbench.timesteps import timesteps

SMALL = {"samples": 128, "random": 32, "generations": 4, "population": 6, "children": 12}




def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("model_name", ["gmm-2d", "gmm-digits"])
def test_usf_reproduces_existing_solvers(model_name: str) -> None:
    model = load_model(model_name)
    x_T = model.prior(64 if model_name == "gmm-2d" else 8, seed=0, dtype=torch.float64)
    pairs = [("usf:strategy=ddim", "ddim"), ("usf:strategy=dpm-solver++", "dpm-solver++:order=2"),
             ("usf:strategy=unipc", "unipc:variant=bh1,order=2"),
             ("usf:strategy=3m", "dpm-solver++:order=3,order3_rule=taylor")]
    for nfe in (5, 6, 10, 12):
        for kind in ("logsnr", "time-uniform"):
            for ours, theirs in pairs:
                a = sample(model, ours, nfe, x_T, schedule=kind, t_end=T_END)
                b = sample(model, theirs, nfe, x_T, schedule=kind, t_end=T_END)
                assert _rel(a, b) < 1e-12, (ours, nfe, kind, _rel(a, b))


def test_explicit_schedules_reduce_to_dpm_solver_unipc_ddim(artifacts: Path) -> None:
    """Written out step by step, as a search would save them (time steps included)."""
    model = load_model("gmm-digits")
    x_T = model.prior(32, seed=0, dtype=torch.float64)
    n = 8
    times = timesteps("logsnr", n, model.schedule, None, T_END).tolist()

    def steps(pred: str, scale: str, corr: str, orders: list[int]) -> list[dict[str, Any]]:
        return [{"pred": pred, "order": o, "scale": scale, "corrector": corr} for o in orders]

    two_m = [1, 2, 2, 2, 2, 2, 2, 1]  # warm-up, then 2M; lower_order_final below 10 steps (official code)
    cases = {
        "dpm-solver++:order=2": steps("x0", "bh2", "none", two_m),  # data prediction, 2M, no corrector
        "dpm-solver:method=multistep,order=2": steps("eps", "bh2", "none", two_m),  # noise prediction
        "unipc": steps("x0", "bh1", "unic", two_m),  # + UniC: UniPC-2 (bh1)
        # one scale for predictor and corrector: DPM-Solver++(2M) + UniC with the same B(h) = e^h - 1
        "dpm-solver++:order=2,corrector=unic,unic_variant=bh2": steps("x0", "bh2", "unic", two_m),
        "ddim": steps("eps", "taylor", "none", [1] * n),
    }
    for i, (spec, st) in enumerate(cases.items()):
        save_named(f"case{i}", "usf", {"steps": st, "times": times})
        a = sample(model, f"usf:schedule_name=case{i}", n, x_T, schedule="time-uniform", t_end=T_END)
        b = sample(model, spec, n, x_T, schedule="logsnr", t_end=T_END)  # the artifact's times win
        assert _rel(a, b) < 1e-12, (spec, _rel(a, b))
    with pytest.raises(DpmbenchError, match="it has 8 steps"):
        sample(model, "usf:schedule_name=case0", 6, x_T, t_end=T_END)
    with pytest.raises(DpmbenchError, match="spans t"):
        sample(model, "usf:schedule_name=case0", 8, x_T, t_end=1e-2)
    save_named("bad", "usf", {"steps": [{"pred": "x1", "order": 1, "scale": "bh1", "corrector": "none"}] * n})
    with pytest.raises(DpmbenchError, match="pred='x1'; allowed: x0, eps"):
        sample(model, "usf:schedule_name=bad", n, x_T, t_end=T_END)


def test_convergence_order_of_a_mixed_schedule(artifacts: Path) -> None:
    """Noise prediction, order 3 with the Taylor coefficients and UniC on every step (no lower-order final
    step): fourth order (UniC-3 makes every corrected step order 4; the one uncorrected last step adds only its
    local O(h^4) error), measured on gmm-2d."""
    nfes = [20, 40, 80, 160]
    data = {str(n): {"steps": [{"pred": "eps", "order": 3, "scale": "taylor", "corrector": "unic"}] * n,
                     "times": None} for n in nfes}
    save_named("eps3c", "usf", data)
    order, errs = measured_order(gmm2d_convergence_setup(), "usf:schedule_name=eps3c", nfes)
    last = slope(nfes[-2:], errs[-2:])
    assert 3.3 < order < 4.5 and 3.8 < last < 4.5, (order, last, errs)  # measured 3.64 over 20..160, 4.11 at 80..160


def test_search_is_deterministic_and_prepare_uses_it(artifacts: Path) -> None:
    model = load_model("gmm-2d")
    ctx = Context(model, 5, "logsnr", None, T_END, None, torch.float64)  # what sample() passes for float64 x_T
    opts = {"samples": 64, "random": 8, "generations": 2, "population": 4, "children": 6, "pool": 64,
            "predictor": "ridge", "kinds": "logsnr,time-quadratic", "orders": "1,2,3"}
    a, b = search_usf(ctx, None, 0, opts), search_usf(ctx, None, 0, opts)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["rmse"] <= min(a["baselines"].values()) and a["trace"] == sorted(a["trace"], reverse=True)
    # search=true: prepare() runs the (default) search once, outside the NFE budget; samples follow its schedule
    x_T = model.prior(16, seed=5, dtype=torch.float64)
    x = sample(model, "usf:search=true", 5, x_T, t_end=T_END)
    data = run_search("usf", ctx, None, 0, {})  # the cached artifact
    save_named("same", "usf", data)
    assert torch.equal(x, sample(model, "usf:schedule_name=same", 5, x_T, t_end=T_END))


def test_searched_schedule_beats_dpm_solver_and_unipc_on_held_out_x_T(artifacts: Path) -> None:
    """The paper's claim (Table 2: S^3 schedules beat DPM-Solver++ and UniPC at 4-10 NFE), on the oracle track:
    gmm-digits, schedule searched on x_T of seed 0, measured on 128 held-out x_T (seed 1)."""
    model = load_model("gmm-digits")
    x_T = model.prior(128, seed=1, dtype=torch.float64)
    ref = model.exact_solution(x_T, t_end=T_END)
    margins = {}
    for nfe in (5, 10):
        data = run_search("usf", Context(model, nfe, "logsnr", None, T_END), None, 0, SMALL)
        save_named(f"usf{nfe}", "usf", data)
        ours = rmse(sample(model, f"usf:schedule_name=usf{nfe}", nfe, x_T, t_end=T_END), ref)
        dpm = rmse(sample(model, "dpm-solver++", nfe, x_T, t_end=T_END), ref)
        uni = rmse(sample(model, "unipc", nfe, x_T, t_end=T_END), ref)
        best_fixed = min(rmse(sample(model, s, nfe, x_T, schedule=k, t_end=T_END), ref)
                         for s in ("dpm-solver++", "unipc") for k in ("time-quadratic", "time-uniform", "karras"))
        margins[nfe] = (ours, dpm, uni, best_fixed)
    # measured (held-out RMSE; ours, DPM-Solver++(2M) logSNR, UniPC logSNR, their best other standard grid):
    # NFE 5: 0.078, 0.150, 0.200, 0.105 (time-quadratic); NFE 10: 0.034, 0.061, 0.093, 0.045 (UniPC
    # time-quadratic). On the search set the NFE-10 schedule reaches 0.018: it overfits the 128 search x_T.
    for nfe, (ours, dpm, uni, best_fixed) in margins.items():
        assert ours < 0.75 * dpm and ours < 0.75 * uni, (nfe, margins)
        assert ours < best_fixed, (nfe, margins)


def test_cli_search_and_sample(capsys: Any, artifacts: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "search", "usf", "--model", "gmm-2d", "--nfe", "5,6", "--t-end", "1e-3",
                           "--guidance", "2.0", "--set", "samples=32,random=4,generations=1,children=4",
                           "--name", "u56")
    assert code == 0, err
    data = load_named("u56", "usf")
    assert sorted(data) == ["5", "6"] and len(data["6"]["steps"]) == 6
    code, _, err = run_cli(capsys, "sample", "--model", "gmm-2d", "--solver", "usf:schedule_name=u56", "--nfe",
                           "5,6", "--num-samples", "8", "--seed", "0", "--t-end", "1e-3", "--guidance", "2.0",
                           "--out", str(tmp_path / "x{nfe}.npz"))
    assert code == 0, err
    model = load_model("gmm-2d")  # denoise_to_zero keeps the last NFE back: the search=true schedule has 3 steps
    x = sample(model, "usf:search=true,denoise_to_zero=true", 4, model.prior(4, seed=0), t_end=T_END)
    assert x.shape == (4, 2)
    code, _, err = run_cli(capsys, "search", "usf", "--model", "gmm-2d", "--nfe", "5", "--set", "orders=4")
    assert code == 2 and "option 'orders' of search 'usf'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "sample", "--model", "gmm-2d", "--solver", "usf:strategy=foo", "--nfe", "5",
                           "--num-samples", "8", "--seed", "0", "--out", str(tmp_path / "y.npz"))
    assert code == 2 and "option 'strategy' of solver 'usf'" in err
