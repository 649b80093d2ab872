"""The autodiffusion search (AutoDiffusion, Li et al. 2023, ICCV): evolutionary search of the time steps.

The paper's claim: a searched time-step sequence beats the hand-designed ones at the same (small) number of steps.
Measured with the official defaults (population 50, 10 epochs: 500 candidates, few-sample FD proxy on 128 search
samples of seed 0), judged on 500 held-out x_T (seed 7) against their exact solutions, gmm-2d, t_end = 1e-3:

    ddim, NFE 5           FD 1.85e-3 (searched) vs 1.47e-2 logsnr, 3.69e-3 time-quadratic, 1.06e-1 time-uniform;
                          RMSE 0.049 vs 0.111 / 0.061 / 0.278   (search: 10 s)
    dpm-solver++ 2M, NFE 5  FD 1.04e-4 vs 6.97e-4 / 5.12e-4 / 9.46e-2; RMSE 0.037 vs 0.073 / 0.040 / 0.266 (17 s)
    ddim, NFE 10          FD 4.16e-4 vs 2.45e-3 / 7.06e-4 / 8.56e-3; RMSE 0.023 vs 0.050 / 0.029 / 0.091 (32 s)

so the claim holds there (1.7x-5x lower FD than the best fixed grid, lower RMSE too). The test below runs a
reduced search (24 candidates per epoch, 4 epochs) and asserts the measured gain over logsnr on held-out samples,
plus the mechanics.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dpmbench import load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.search import get_search, run_search
from dpmbench.search._common import search_prior
from dpmbench.search.autodiffusion import _Evolution, resolve_objective
from dpmbench.solvers.base import Context
from dpmbench.solvers.registry import get_solver
from evaluators.oracle import frechet_to

T_END = 1e-3
SMALL = {"population": 24, "select": 6, "mutations": 12, "crossovers": 12, "epochs": 4, "samples": 64, "grid": 200}


def _ctx(m: Any, nfe: int) -> Context:
    return Context(m, nfe, "logsnr", None, T_END)


def test_searched_grid_beats_logsnr_on_held_out_samples(artifacts: Any) -> None:
    """Reduced search, gmm-2d, ddim NFE 5: held-out FD of the searched grid below logsnr's (measured 8x lower with
    the official defaults)."""
    m = load_model("gmm-2d")
    data = run_search("autodiffusion", _ctx(m, 5), get_solver("ddim"), seed=0, options=SMALL, name="ad-test")
    grid = data["grids"]["5"]
    assert len(grid) == 6 and grid[0] == m.schedule.T and abs(grid[-1] - T_END) < 1e-15
    assert all(a > b for a, b in zip(grid[:-1], grid[1:], strict=False))
    assert data["evaluations"] <= SMALL["population"] * SMALL["epochs"]
    x_T = m.prior(500, seed=7, dtype=torch.float64)
    ref = m.exact_solution(x_T, t_end=T_END)
    mu, cov = ref.mean(0).numpy(), torch.cov(ref.T).numpy()
    fd = {s: frechet_to(sample(m, "ddim", 5, x_T, schedule=s, t_end=T_END).numpy(), mu, cov)
          for s in ("logsnr", "searched:ad-test")}
    assert fd["searched:ad-test"] < 0.5 * fd["logsnr"], fd


def test_evolution_is_elitist_deterministic_and_official() -> None:
    """On a toy fitness (distance to a target set): the best of all evaluated candidates wins, every candidate is
    evaluated once and has distinct points, the same seed gives the same result, and the search improves on the
    initial candidate (init=schedule is evaluated first)."""
    target = (10, 50, 90, 130)

    def fitness(c: tuple[int, ...]) -> float:
        return float(sum(abs(a - b) for a, b in zip(c, target, strict=True)))

    opts = {**SMALL, "epochs": 6, "m_prob": 0.1}
    runs = []
    for _ in range(2):
        evo = _Evolution(fitness, 4, 200, opts, seed=3)
        best = evo.run((0, 1, 2, 3))
        runs.append(best)
        assert evo.seen[best] == min(evo.seen.values())
        assert all(len(set(c)) == 4 and list(c) == sorted(c) for c in evo.seen)
        assert (0, 1, 2, 3) in evo.seen and evo.seen[best] < evo.seen[(0, 1, 2, 3)]
    assert runs[0] == runs[1]


def test_listed_with_official_defaults_and_bad_input(artifacts: Any) -> None:
    s = get_search("autodiffusion")
    d = {k: o.default for k, o in s.options.items()}
    assert (d["population"], d["select"], d["mutations"], d["crossovers"], d["m_prob"], d["epochs"]) == (
        50, 10, 25, 25, 0.1, 10)
    m = load_model("gmm-2d")
    with pytest.raises(DpmbenchError, match="option 'grid' of search 'autodiffusion'"):
        run_search("autodiffusion", _ctx(m, 10), get_solver("ddim"), options={**SMALL, "grid": 5})
    with pytest.raises(DpmbenchError, match="search 'autodiffusion'"):
        run_search("autodiffusion", _ctx(m, 5), get_solver("iia-ddim"), options=SMALL)


def test_objective_auto_follows_the_model_and_the_data_search_set_is_its_own() -> None:
    """auto is fd on an oracle and fdd on the trained digits network; an objective the model cannot score, or a model
    with neither exact solutions nor 8x8 digits samples, is a one-line error naming the option and what is allowed.
    The fdd search set's x_T are drawn from the search seed but are no evaluation x_T of any seed."""
    oracle, digits_oracle, net = load_model("gmm-2d"), load_model("gmm-digits"), load_model("digits-unet")
    assert resolve_objective(_ctx(oracle, 5), "auto") == "fd"
    assert resolve_objective(_ctx(digits_oracle, 5), "auto") == "fd"
    assert resolve_objective(_ctx(digits_oracle, 5), "fdd") == "fdd"
    assert resolve_objective(Context(net, 5, "logsnr", None, None), "auto") == "fdd"
    with pytest.raises(DpmbenchError, match=r"option 'objective' of search 'autodiffusion' for model 'digits-unet' "
                       r"'exact'; allowed: fdd$"):
        resolve_objective(Context(net, 5, "logsnr", None, None), "exact")
    with pytest.raises(DpmbenchError, match=r"option 'objective' of search 'autodiffusion' for model 'gmm-2d' 'fdd'; "
                       r"allowed: fd, exact"):
        resolve_objective(_ctx(oracle, 5), "fdd")
    toy = Context(type("Toy", (), {"name": "toy", "shape": (3,)})(), 5)  # neither an oracle nor 8x8 digits
    with pytest.raises(DpmbenchError, match=r"'auto'; allowed: none \(it needs exact ODE solutions"):
        resolve_objective(toy, "auto")
    ctx = Context(net, 5, "logsnr", None, None)
    x_T, cond, start = search_prior(ctx, 8, seed=0)
    assert cond is None and x_T.dtype == torch.float64 and torch.equal(x_T, search_prior(ctx, 8, seed=0)[0])
    for seed in range(3):
        assert not torch.isin(x_T, net.prior(1024, seed=seed, dtype=torch.float64)).any()
    assert torch.equal(x_T, net.prior(8, seed=0, dtype=torch.float64, start=start))
