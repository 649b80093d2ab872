"""Held-out fits: every search and every solver fit draws its set from samples no evaluation run can draw.

An evaluation run of seed s draws samples 0 .. num_samples - 1 (shards: start .. start + K - 1) of s's streams;
every search and fit draws from ``FIT_START`` (2^32) on, and the command line refuses a run that would reach it.
Each kind is run here with every draw of the noise streams recorded (``prior_noise``, which x_T, per-step noise and
the fits' noise all come from): none starts below ``FIT_START``, and each kind draws at least once.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from support import T_END, run_cli

import dpmbench.models.base as mb
from dpmbench import load_model
from dpmbench.models.base import FIT_START, fit_prior
from dpmbench.search import list_searches, run_search
from dpmbench.solvers.base import SOLVERS, Context
from dpmbench.solvers.registry import get_solver

pytestmark = pytest.mark.usefixtures("artifacts")


@contextlib.contextmanager
def draws() -> Iterator[list[tuple[int, int, int, int]]]:
    """Record (seed, stream, start, n) of every ``prior_noise`` call in the block, wherever it was imported."""
    list_searches()  # import every search and solver module first, so that each imported name is replaced
    seen: list[tuple[int, int, int, int]] = []
    orig = mb.prior_noise

    def rec(n: int, shape: tuple[int, ...], seed: int, start: int = 0, stream: int = 0, **kw: Any) -> torch.Tensor:
        seen.append((int(seed), int(stream), int(start), int(n)))
        return orig(n, shape, seed, start, stream, **kw)

    mods = [m for name, m in list(sys.modules.items())
            if name.startswith("dpmbench") and getattr(m, "prior_noise", None) is orig]
    for m in mods:
        m.prior_noise = rec
    try:
        yield seen
    finally:
        for m in mods:
            m.prior_noise = orig


def _held_out(seen: list[tuple[int, int, int, int]]) -> None:
    assert seen, "the fit drew nothing through the noise streams"
    low = [d for d in seen if d[2] < FIT_START]
    assert not low, f"draws from evaluated samples (seed, stream, start, n): {low[:5]}"


def _ctx(model: str, nfe: int, guidance: float | None = None) -> Context:
    import dpmbench.search as search  # its run_search as of now (a test may have patched it)
    from dpmbench.models.base import guided

    m = load_model(model)
    return Context(m if guidance is None else guided(m, guidance), nfe, "logsnr", None, T_END, guidance,
                   searcher=search.run_search)


SEARCH_CASES = {
    "autodiffusion": ("gmm-2d", None, "ddim", {"samples": 16, "population": 4, "select": 2, "mutations": 2,
                                              "crossovers": 2, "epochs": 1, "grid": 20}),
    "ays": ("gmm-2d", None, "dpm-solver++", {"objective": "klub", "samples": 8, "iterations": 1, "candidates": 3,
                                             "levels": 1, "subdivide": False, "quadrature": 2}),
    "usf": ("gmm-2d", None, None, {"samples": 8, "random": 2, "generations": 0, "kinds": "logsnr"}),
    "dc-ratios": ("gmm-2d", 7.5, "dc-solver", {"size": 4, "iters": 1}),
    # the CPR fit runs dc-ratios searches on its grid: their draws are the ones recorded
    "dc-cpr": ("gmm-2d", 7.5, "dc-solver:ratios=cpr,cpr_nfes=4/5/6,cpr_guidances=2/7.5,search_size=4,search_iters=1",
               {}),
}


@pytest.mark.parametrize("kind", sorted(SEARCH_CASES))
def test_every_search_draws_from_the_reserved_range(kind: str) -> None:
    model, guidance, solver, opts = SEARCH_CASES[kind]
    with draws() as seen:
        run_search(kind, _ctx(model, 4, guidance), solver and get_solver(solver), 3, opts)
    _held_out(seen)
    assert {d[0] for d in seen} == {3}  # the search's own seed, nothing else


def test_ays_exact_objective_and_a_stochastic_autodiffusion_too() -> None:
    with draws() as seen:
        run_search("ays", _ctx("gmm-2d", 4), get_solver("dpm-solver++"), 0,
                   {"objective": "exact", "samples": 8, "iterations": 1, "candidates": 3, "levels": 1,
                    "subdivide": False})
        run_search("autodiffusion", _ctx("gmm-2d", 4), get_solver("ddpm"), 0,
                   {"samples": 8, "population": 2, "select": 1, "mutations": 1, "crossovers": 0, "epochs": 1,
                    "grid": 10, "objective": "fd"})
    _held_out(seen)
    assert any(d[1] > 0 for d in seen)  # the stochastic solver's step noise: also from the reserved samples


def test_every_search_kind_is_covered() -> None:
    assert set(list_searches()) >= set(SEARCH_CASES)
    assert not set(list_searches()) - set(SEARCH_CASES) - {"toy-power"}, "a new search: add it to SEARCH_CASES"


FIT_CASES = {  # every built-in solver whose prepare fits something to drawn samples
    "dpm-solver-v3": "dpm-solver-v3:ems_samples=4,ems_steps=4",
    "iia-ddim": "iia-ddim:fit_samples=8",
    "d-ode": "d-ode:fit_samples=4,scale=2",
    "ta-ddim": "ta-ddim:fit_samples=4",
    "dc-solver": "dc-solver:search_size=4,search_iters=1",
    "usf": "usf:search=true",
}


@pytest.mark.parametrize("name", sorted(FIT_CASES))
@pytest.mark.parametrize("guidance", [None, 7.5])
def test_every_fit_draws_from_the_reserved_range(name: str, guidance: float | None, monkeypatch: Any) -> None:
    if name == "usf":  # prepare runs the search with its default options: scaled down here
        import dpmbench.search as search

        real = search.run_search
        monkeypatch.setattr(search, "run_search", lambda kind, ctx, s, seed, o=None, **kw: real(
            kind, ctx, s, seed, {"samples": 8, "random": 1, "generations": 0, "kinds": "logsnr"}, **kw))
    solver = get_solver(FIT_CASES[name])
    with draws() as seen:
        solver.prepare(_ctx("gmm-2d", 4, guidance))
    _held_out(seen)


def test_every_prepared_solver_is_covered() -> None:
    prepared = {n for n, cls in SOLVERS.items() if getattr(cls, "needs_prepare", False)}
    fits = {"dpm-solver-v3", "dc-solver", "usf", "d-ode", "ta-ddim"} | {n for n in prepared if n.startswith("iia")}
    assert prepared <= fits | {"prepared-ddim"}, f"a new prepared solver: add it to FIT_CASES: {prepared - fits}"


def test_fit_prior_is_disjoint_from_every_evaluation_x_T() -> None:
    model = load_model("gmm-2d")
    fit = fit_prior(model, 64, 0)
    assert torch.equal(fit, model.prior(64, seed=0, dtype=torch.float64, start=FIT_START))
    for seed in range(3):  # the x_T of evaluation runs: none of them is a fit sample
        ev = model.prior(512, seed=seed, dtype=torch.float64)
        assert not (torch.cdist(fit, ev) == 0).any()


def test_the_command_line_refuses_runs_that_reach_the_reserved_range(capsys: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "x.npz")
    code, _, err = run_cli(capsys, "sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "2", "--num-samples",
                           "2", "--seed", "0", "--start", str(FIT_START - 1), "--out", out)
    assert code == 2 and f"samples {FIT_START} and above of every stream are reserved" in err
    code, _, err = run_cli(capsys, "sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "2", "--num-samples",
                           "2", "--seed", "0", "--start", str(FIT_START - 2), "--out", out)
    assert code == 0, err


def test_search_artifacts_record_their_stream(artifacts: Any) -> None:
    run_search("usf", _ctx("gmm-2d", 4), None, 5, {"samples": 8, "random": 1, "generations": 0, "kinds": "logsnr"},
               name="held-out")
    meta = json.loads((artifacts / "named" / "held-out.json").read_text())["meta"]
    assert meta["stream"] == {"seed": 5, "start": FIT_START}
