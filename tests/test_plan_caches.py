"""What a plan determines is computed once per process and reused bit-identically: UniPC's rho coefficients,
the time grids of a noise-schedule instance and their schedule values, and the per-step noise seeds.
(DEIS's and SA-Solver's coefficient caches are tested in test_deis_pndm.py and test_stochastic.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpmbench import load_model, sample
from dpmbench.models import base as model_base
from dpmbench.schedules import VPDiscrete, VPLinear
from dpmbench.solvers.base import History, Point
from dpmbench.solvers.unipc import b_of_h, cached_rhos, phi_terms, unified_update
from dpmbench.timesteps import timesteps


def _reference_update(x: torch.Tensor, hist: History, t: Point, order: int, prediction: str, variant: str,
                      new_out: torch.Tensor | None = None) -> torch.Tensor:
    """UniP/UniC as first written: a fresh linear solve per call and the sum started from zeros."""
    s0, m0 = hist[-1].point, hist[-1].out
    h = t.lam - s0.lam
    rks, diffs = [], []
    for k in range(1, order):
        rk = (hist[-(k + 1)].point.lam - s0.lam) / h
        rks.append(rk)
        diffs.append((hist[-(k + 1)].out - m0) / rk)
    if new_out is not None:
        rks.append(1.0)
        diffs.append(new_out - m0)
    hh = -h if prediction == "x0" else h
    b_h = b_of_h(variant, hh)
    if len(rks) == 0:
        rhos: list[float] = []
    elif len(rks) == 1:
        rhos = [0.5]
    else:
        big_r = np.array([[r**i for r in rks] for i in range(len(rks))], dtype=np.float64)
        rhos = list(np.linalg.solve(big_r, np.array(phi_terms(hh, len(rks))) / b_h))
    res = sum((float(rho) * d for rho, d in zip(rhos, diffs, strict=True)), torch.zeros_like(x))
    if prediction == "x0":
        return (t.sigma / s0.sigma) * x - t.alpha * math.expm1(hh) * m0 - t.alpha * b_h * res
    return (t.alpha / s0.alpha) * x - t.sigma * math.expm1(hh) * m0 - t.sigma * b_h * res


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unipc_update_is_bit_identical_to_a_fresh_solve(dtype: torch.dtype) -> None:
    """Every predictor/corrector order, both variants and predictions: the memoized coefficients and the
    reordered accumulation give exactly the values of a fresh solve summed from zeros."""
    sch = VPLinear()
    gen = torch.Generator().manual_seed(0)
    pts = [Point.at(sch, t) for t in (0.9, 0.7, 0.45, 0.3)]
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64).to(dtype)
    new_out = torch.randn(5, 2, generator=gen, dtype=torch.float64).to(dtype)
    cached_rhos.cache_clear()
    for rounds in range(2):  # the first round fills the cache, the second is served from it
        for order in (1, 2, 3):
            hist = History(3)
            for p in pts[:3]:
                hist.push(p, torch.randn(5, 2, generator=gen, dtype=torch.float64).to(dtype))
            for variant in ("bh1", "bh2"):
                for pred in ("x0", "eps"):
                    for corr in (None, new_out):
                        got = unified_update(x, hist, pts[3], order, pred, variant, corr)
                        want = _reference_update(x, hist, pts[3], order, pred, variant, corr)
                        assert got.dtype == dtype and torch.equal(got, want), (order, variant, pred, rounds)
        if rounds == 0:
            misses = cached_rhos.cache_info().misses
    assert cached_rhos.cache_info().misses == misses  # the second round solved nothing


def test_unipc_coefficients_are_reused_across_sample_calls() -> None:
    """A second sample() call (a new solver object) solves no system, and its samples equal the first's."""
    m = load_model("gmm-2d")
    x_T = m.prior(8, seed=1, dtype=torch.float64)
    cached_rhos.cache_clear()
    first = sample(m, "unipc:variant=bh2,order=3", 7, x_T)
    solved = cached_rhos.cache_info().misses
    assert solved > 0
    again = sample(m, "unipc:variant=bh2,order=3", 7, x_T)
    assert torch.equal(first, again) and cached_rhos.cache_info().misses == solved
    cached_rhos.cache_clear()
    assert torch.equal(sample(m, "unipc:variant=bh2,order=3", 7, x_T), first)  # recomputed: the same


@pytest.mark.parametrize("kind", ["logsnr", "time-uniform", "time-quadratic", "karras"])
def test_time_grids_are_memoized_per_schedule_instance(kind: str) -> None:
    """The same grid again is served from the schedule instance, as a copy the caller may modify, equal to what
    a fresh schedule computes; the grid's schedule values match a fresh computation too."""
    sch, fresh = VPDiscrete(), VPDiscrete()
    first = timesteps(kind, 6, sch, None, 2e-3)
    first[1] = 123.0  # the caller's copy
    again = timesteps(kind, 6, sch, None, 2e-3)
    want = timesteps(kind, 6, fresh, None, 2e-3)
    assert again[1] != 123.0 and torch.equal(again, want)
    assert len(sch.__dict__["_grid_cache"]) == 1
    assert torch.equal(timesteps(kind, 7, sch, None, 2e-3), timesteps(kind, 7, fresh, None, 2e-3))
    assert len(sch.__dict__["_grid_cache"]) == 2  # other steps: their own entry
    assert sch.values(again) == fresh.values(want) == sch.values(again)  # second call: from the scalar cache


def test_noise_without_a_copy_equals_the_blockwise_draw() -> None:
    """Batch 1 (one exact block draw, no copy) and any sub-range equal the rows of one large draw."""
    shape = (3, 4)
    full = model_base.prior_noise(40, shape, seed=7, start=0, stream=3)
    for start, n in ((0, 1), (5, 1), (3, 9), (0, 40), (17, 0)):
        part = model_base.prior_noise(n, shape, seed=7, start=start, stream=3)
        assert part.shape == (n, *shape) and torch.equal(part, full[start:start + n])
