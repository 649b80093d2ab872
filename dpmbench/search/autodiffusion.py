"""The ``autodiffusion`` search: AutoDiffusion's training-free evolutionary search of the time-step sequence (Li et
al. 2023, 'AutoDiffusion: Training-Free Optimization of Time Steps and Architectures for Automated Diffusion Model
Acceleration', ICCV 2023, Sec. 3.2-3.3; official code github.com/lilijiangg/AutoDiffusion,
examples/Stable Diffusion/scripts/search_ea.py, ``EvolutionSearcher``).

A candidate is a set of ``steps - 1`` distinct interior time points taken from a fine grid of ``grid`` points (the
official search picks ``time_step`` of the 1000 DDPM steps); here the end points stay the run's t_start and t_end,
so a searched grid is used as ``--schedule searched:NAME`` beside the others. The search is the official one:

1. an initial population of ``population`` random candidates (official ``use_ddim_init_x=False``; ``init=schedule``
   seeds it with the run's ``--schedule`` grid, half random, the rest its mutations with probability 0.1, as the
   official ``use_ddim_init_x=True``);
2. for ``epochs`` epochs: the ``select`` best candidates seen so far are the parents (elitist ``keep_top_k``);
   ``mutations`` children replace each point of a parent with probability ``m_prob`` by an unused grid point,
   ``crossovers`` children take each position from one of two parents at random; the population is filled up with
   random candidates; a candidate is evaluated once (``vis_dict``), and a child with repeated points is rejected;
3. the best candidate wins. Official defaults: population 50, select 10, mutations 25, crossovers 25, m_prob 0.1,
   10 epochs (at most 500 evaluations).

The fitness is the sample-quality proxy: the paper scores a candidate by the FID of a few generated samples
against the data statistics (official ``get_cand_fid``: Inception features of ``num_sample`` samples, Frechet
distance to ``ref_mu`` / ``ref_sigma``). ``objective`` chooses it:

* ``fd`` (oracle models): the Frechet distance between the solver's samples from the search's own x_T (``samples``,
  samples ``2^32 ..`` of the search seed's stream, as every search set) and the moments of their exact ODE
  solutions; ``exact``: the RMSE to those solutions;
* ``fdd`` (8x8 digits models: the trained network ``digits-unet``, also the digits oracles): the paper's proxy
  itself, the ``fdd`` metric's digits-CNN features (``evaluators.images.digits_features``, EDM uint8 quantization) of
  the solver's samples, Frechet distance to the moments of the 1,797 digits' features (the ``fdd`` metric's
  reference, ``digits_reference_features``). Its x_T are samples ``2^32 ..`` of the search seed
  (``search_prior``): no evaluation run draws them, so a searched grid is judged on other x_T than it was fitted on;
* ``auto`` (default): ``fd`` on the oracle models, ``fdd`` on the other digits models; a model with neither exact
  solutions nor digits-shaped samples is refused.

The architecture-compression half of AutoDiffusion (dropping network blocks) needs a network with removable blocks;
it does not apply to the oracle models, and for the diffusers UNet it is not implemented.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.base import NFECounter, NoiseSource, has_exact_solution
from dpmbench.search._common import SEARCH_START, oracle_set, rmse, search_prior, single_thread
from dpmbench.search.ays import steps_for
from dpmbench.search.base import register_search
from dpmbench.solvers.base import Context, Option, Solver
from dpmbench.timesteps import TIMESTEP_SCHEDULES, timesteps

OPTIONS = {
    "objective": Option(str, "auto", "the few-sample quality proxy (the paper's: FID to the data statistics). fd: "
                        "Frechet distance of the samples to the moments of their exact ODE solutions (oracle models); "
                        "exact: RMSE to the exact solutions; fdd: Frechet digits distance (the fdd metric's digits-CNN "
                        "features) to the 1,797 digits (8x8 digits models, e.g. digits-unet); auto: fd on oracle "
                        "models, fdd on digits models", choices=("auto", "fd", "exact", "fdd")),
    "population": Option(int, 50, "candidates per epoch (official population_num=50)", minimum=2),
    "select": Option(int, 10, "parents: the best candidates seen so far (official select_num=10)", minimum=1),
    "mutations": Option(int, 25, "mutated children per epoch (official mutation_num=25)", minimum=0),
    "crossovers": Option(int, 25, "crossover children per epoch (official crossover_num=25)", minimum=0),
    "m_prob": Option(float, 0.1, "probability that a mutation moves a point (official m_prob=0.1)", minimum=0.0),
    "epochs": Option(int, 10, "epochs (official max_epochs=10)", minimum=1),
    "samples": Option(int, 128, "x_T of the search set (samples 2^32.. of the search seed's stream, never an "
                      "evaluation x_T); the official search_plms.sh / search_dpm_solver.sh use num_sample=2000 / "
                      "1000 on Stable Diffusion, 128 here keeps the proxy few-sample and cheap", minimum=2),
    "grid": Option(int, 1000, "candidate points: a time-uniform grid of this many interior times (official: the "
                   "1000 DDPM steps)", minimum=2),
    "init": Option(str, "random", "random (official use_ddim_init_x=False) or schedule (the run's --schedule grid, "
                   "half random, the rest its mutations: use_ddim_init_x=True)", choices=("random", "schedule")),
}


class _Evolution:
    """The official EvolutionSearcher on candidates = sorted tuples of grid indices (ascending index = later time)."""

    def __init__(self, fitness: Any, k: int, grid: int, opts: dict[str, Any], seed: int):
        self.fitness, self.k, self.grid, self.opts = fitness, k, grid, opts
        self.rng = random.Random(seed)
        self.seen: dict[tuple[int, ...], float] = {}
        self.top: list[tuple[int, ...]] = []

    def _try(self, cand: list[int]) -> tuple[int, ...] | None:
        """Evaluate a candidate once; None if it repeats a point or was seen (official ``is_legal``)."""
        c = tuple(sorted(cand))
        if len(set(c)) != self.k or c in self.seen:
            return None
        self.seen[c] = self.fitness(c)
        return c

    def random(self) -> list[int]:
        return self.rng.sample(range(self.grid), self.k)

    def mutate(self, parent: tuple[int, ...], m_prob: float) -> list[int]:
        free = [i for i in range(self.grid) if i not in parent]
        cand = list(parent)
        for i in range(len(cand)):
            if self.rng.random() < m_prob and free:
                cand[i] = free.pop(self.rng.randrange(len(free)))
        return cand

    def cross(self) -> list[int]:
        a, b = self.rng.choice(self.top), self.rng.choice(self.top)
        return [x if self.rng.random() < 0.5 else y for x, y in zip(a, b, strict=True)]

    def fill(self, pop: list[tuple[int, ...]], n: int, make: Any) -> None:
        tries = 10 * max(n, 1)
        while len(pop) < n and tries > 0:
            tries -= 1
            c = self._try(make())
            if c is not None:
                pop.append(c)

    def run(self, init: tuple[int, ...] | None) -> tuple[int, ...]:
        o = self.opts
        pop: list[tuple[int, ...]] = []
        if init is not None:
            c = self._try(list(init))
            pop += [c] if c is not None else []
            self.fill(pop, len(pop) + o["population"] // 2, self.random)
            self.fill(pop, o["population"], lambda: self.mutate(init, 0.1))
        self.fill(pop, o["population"], self.random)
        for epoch in range(o["epochs"]):
            self.top = sorted(dict.fromkeys(self.top + pop), key=lambda c: self.seen[c])[: o["select"]]
            if epoch + 1 == o["epochs"]:
                break
            pop = []
            self.fill(pop, o["mutations"], lambda: self.mutate(self.rng.choice(self.top), o["m_prob"]))
            children: list[tuple[int, ...]] = []
            self.fill(children, o["crossovers"], self.cross)
            pop += children
            self.fill(pop, o["population"], self.random)
        return self.top[0]


def resolve_objective(ctx: Context, objective: str) -> str:
    """The objective ``auto`` stands for on this model (``fd`` on oracles, ``fdd`` on 8x8 digits models), checked
    against what the model offers; a one-line error naming the option and the allowed values otherwise."""
    from evaluators.images import DIGITS_SHAPE

    oracle, digits = has_exact_solution(ctx.model), tuple(ctx.model.shape) == DIGITS_SHAPE
    if objective == "auto":
        objective = "fd" if oracle else "fdd" if digits else "auto"
    allowed = (["fd", "exact"] if oracle else []) + (["fdd"] if digits else [])
    if objective not in allowed:
        raise bad_value(f"option 'objective' of search 'autodiffusion' for model {ctx.model.name!r}", objective,
                        allowed or "none (it needs exact ODE solutions, an oracle model, or 8x8 digits samples)")
    return objective


def _digits_fdd() -> Any:
    """``x -> FDD``: the ``fdd`` metric's digits-CNN features of the quantized samples, Frechet distance to the
    moments of the 1,797 digits' features (the metric's reference, computed once)."""
    from evaluators.images import DIGITS_SHAPE, digits_features, digits_reference_features, feature_moments, to_uint8
    from evaluators.oracle import frechet_to

    mu, cov = feature_moments(digits_reference_features())
    return lambda x: frechet_to(digits_features(to_uint8(x.reshape(len(x), *DIGITS_SHAPE))), mu, cov)


@register_search("autodiffusion", "AutoDiffusion: evolutionary search of the time-step sequence with a few-sample "
                 "quality proxy (training-free; oracle models: FD to exact solutions, digits-unet: FDD to the data; "
                 "the architecture half is not implemented)",
                 "Li et al. 2023 (ICCV), 'AutoDiffusion', Sec. 3.2-3.3; defaults from the official "
                 "scripts/search_ea.py (EvolutionSearcher, get_cand_fid); see dpmbench/search/autodiffusion.py",
                 produces="timesteps", options=OPTIONS, needs_solver=True)
def search_autodiffusion(ctx: Context, solver: Solver | None, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """The best time grid of the solver's step count for ``ctx.nfe``; returns ``{"grids": {steps: times}}``."""
    from evaluators.oracle import frechet_to

    assert solver is not None
    if solver.needs_prepare or solver.adaptive or solver.parallel:
        raise DpmbenchError(f"invalid solver {solver.spec!r} for search 'autodiffusion': it needs a fixed-step solver "
                            "without prepare")
    objective = resolve_objective(ctx, opts["objective"])
    sch, t0, t1 = ctx.model.schedule, ctx.start, ctx.end
    steps = steps_for(solver, ctx.nfe, sch, t0, t1)
    if steps - 1 > opts["grid"]:
        raise DpmbenchError(f"invalid option 'grid' of search 'autodiffusion': {opts['grid']} (allowed: >= {steps - 1} "
                            "for this NFE)")
    fine = torch.linspace(t0, t1, opts["grid"] + 2, dtype=torch.float64)[1:-1]
    if objective == "fdd":
        x_T, cond, start = search_prior(ctx, opts["samples"], seed)
        score = _digits_fdd()
    else:
        x_T, cond, ref = oracle_set(ctx, opts["samples"], seed, "search 'autodiffusion'")
        start = SEARCH_START  # oracle_set's x_T are these samples too (a stochastic solver's step noise of them)
        flat = ref.reshape(len(ref), -1).numpy()
        mu, cov = flat.mean(axis=0), np.cov(flat, rowvar=False)

        def score(x: torch.Tensor) -> float:
            if objective == "exact":
                return rmse(x, ref)
            return frechet_to(x.reshape(len(x), -1).numpy(), mu, cov)

    def grid_of(c: tuple[int, ...]) -> torch.Tensor:
        return torch.cat([torch.tensor([t0], dtype=torch.float64), fine[list(c)],
                          torch.tensor([t1], dtype=torch.float64)])

    bar = tqdm(total=opts["population"] * opts["epochs"], desc=f"autodiffusion NFE {ctx.nfe}", unit="candidate",
               leave=False, disable=None)

    def fitness(c: tuple[int, ...]) -> float:
        bar.update()
        plan = solver.make_plan(ctx.nfe, sch, grid_of(c), t0, t1)
        noise = NoiseSource(seed, start, x_T) if solver.stochastic else None
        v = float(score(solver.run(NFECounter(ctx.model, cond, noise), x_T, plan).to(torch.float64)))
        return v if np.isfinite(v) else float("inf")

    init = None
    if opts["init"] == "schedule":
        kind = ctx.kind if isinstance(ctx.kind, str) and ctx.kind in TIMESTEP_SCHEDULES else "logsnr"
        inner = timesteps(kind, steps, sch, t0, t1)[1:-1]
        init = tuple(sorted({int(torch.argmin((fine - t).abs())) for t in inner.tolist()}))
        init = init if len(init) == steps - 1 else None
    with single_thread(), torch.no_grad():
        evo = _Evolution(fitness, steps - 1, opts["grid"], opts, seed)
        best = evo.run(init)
    bar.close()
    return {"grids": {str(steps): grid_of(best).tolist()}, "objective": objective,
            "value": evo.seen[best], "evaluations": len(evo.seen)}
