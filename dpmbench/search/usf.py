"""The ``usf`` search: a per-step solver schedule of the unified sampling framework for one (model, NFE, guidance),
scaled down from S^3 (Liu et al., ICLR 2024, arXiv 2312.07243, Sec. 4).

The paper samples random solver schedules, trains a small performance predictor on their measured quality
(FID of a few thousand images), and runs an evolutionary search whose candidates are screened by the predictor
before being evaluated, in several stages. Here, on the oracle models, quality is measured directly and exactly:
the RMSE of a schedule's samples to the exact ODE solutions from the search's own x_T (``samples``, samples
``2^32 ..`` of stream ``seed``: never an evaluated x_T); a candidate costs one solver run (NFE model evaluations
of ``samples`` points), so the whole search is a few hundred runs:

1. seeds: the built-in strategies (ddim, DPM-Solver++(2M), UniPC-2, Taylor 3M) on each base time grid (``kinds``);
2. ``random`` random schedules (per step: prediction type, order, derivative scaling, corrector; a base grid and
   per-point offsets in lambda);
3. ``generations`` evolutionary generations: ``pool`` children of the ``population`` best (mutation of one or two
   decisions or grid points, uniform per-step crossover), ranked by the predictor (``ridge``: sklearn Ridge on
   one-hot decisions and grid offsets, fitted to log RMSE of everything evaluated so far; ``mlp``: a small
   sklearn MLPRegressor; ``none``: no screening), the ``children`` best-predicted evaluated.

Deterministic given the seed (numpy Generator, sklearn with fixed random_state, one torch thread).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.search._common import oracle_set, rmse, single_thread
from dpmbench.search.base import register_search
from dpmbench.solvers.base import Context, Option, Plan, Point, Solver
from dpmbench.solvers.usf import CORRECTORS, ORDERS, PREDS, PRESETS, SCALES, USF, preset_steps
from dpmbench.timesteps import TIMESTEP_SCHEDULES, timesteps

Genome = tuple[str, tuple[float, ...], tuple[tuple[str, int, str, str], ...]]
JITTER = 0.45  # an interior point moves by at most this fraction of its smaller neighbouring gap (in lambda)

OPTIONS = {
    "samples": Option(int, 128, "x_T of the search set (samples 2^32.. of the search seed's stream); exact solutions "
                      "cached", minimum=8),
    "random": Option(int, 64, "random schedules evaluated after the built-in seeds (S^3's random stage)", minimum=0),
    "generations": Option(int, 6, "evolutionary generations", minimum=0),
    "population": Option(int, 8, "parents: the best schedules evaluated so far", minimum=2),
    "children": Option(int, 16, "schedules evaluated per generation (the best-predicted of the pool)", minimum=1),
    "pool": Option(int, 256, "children generated per generation and ranked by the predictor", minimum=1),
    "predictor": Option(str, "ridge", "performance predictor screening the pool: ridge (sklearn Ridge), mlp "
                        "(sklearn MLPRegressor, one hidden layer of 32), none", choices=("ridge", "mlp", "none")),
    "kinds": Option(str, "logsnr,time-uniform,time-quadratic,karras", "base time grids (comma list of "
                    "`dpmbench list schedules` names); interior points are then moved in lambda"),
    "orders": Option(str, "1,2,3", "allowed per-step orders (comma list of 1, 2, 3)"),
}


def _csv(text: str, allowed: Any, field: str, cast: Any = str) -> list[Any]:
    try:
        vals = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(v not in allowed for v in vals):
        raise DpmbenchError(f"invalid option {field!r} of search 'usf' {text!r}; allowed: comma list of "
                            f"{', '.join(map(str, allowed))}")
    return list(dict.fromkeys(vals))


def normalize(g: Genome) -> Genome:
    """The canonical form of a schedule: effective orders (<= steps taken), no corrector on the last step, and the
    scale only where it changes the update (a single difference: order-2 predictor, or UniC after order 1)."""
    kind, jit, steps = g
    out = []
    for i, (pred, order, scale, corr) in enumerate(steps):
        order = min(order, i + 1)
        corr = "none" if i == len(steps) - 1 else corr
        if not (order == 2 or (order == 1 and corr == "unic")):
            scale = "taylor"
        out.append((pred, order, scale, corr))
    return kind, tuple(round(float(j), 4) for j in jit), tuple(out)


def _features(g: Genome, kinds: list[str]) -> list[float]:
    kind, jit, steps = g
    f = [float(kind == k) for k in kinds] + list(jit)
    for pred, order, scale, corr in steps:
        f += [float(pred == "eps"), *(float(order == o) for o in ORDERS), *(float(scale == s) for s in SCALES),
              float(corr == "unic")]
    return f


class _Evaluator:
    """Runs schedules on the search set and memoizes their RMSE to the exact solutions."""

    def __init__(self, ctx: Context, x_T: torch.Tensor, cond: Any, ref: torch.Tensor, kinds: list[str]):
        self.ctx, self.x_T, self.cond, self.ref = ctx, x_T, cond, ref
        sch = ctx.model.schedule
        self.sch = sch
        self.lams = {k: torch.tensor(sch.values(timesteps(k, ctx.nfe, sch, ctx.start, ctx.end))[0],
                                     dtype=torch.float64) for k in kinds}
        self.solver: Solver = USF()
        self.seen: dict[Genome, float] = {}

    def times(self, g: Genome) -> torch.Tensor:
        kind, jit, _ = g
        lam = self.lams[kind].clone()
        gaps = lam[1:] - lam[:-1]
        for j, d in enumerate(jit, start=1):  # interior point j: move within JITTER of its smaller gap
            lam[j] = lam[j] + d * JITTER * min(float(gaps[j - 1]), float(gaps[j]))
        t = self.sch.t_of_lambda(lam)
        t[0], t[-1] = self.ctx.start, self.ctx.end
        return t

    def decode(self, g: Genome) -> dict[str, Any]:
        steps = [{"pred": p, "order": o, "scale": s, "corrector": c} for p, o, s, c in g[2]]
        return {"steps": steps, "times": self.times(g).tolist()}

    def __call__(self, g: Genome) -> float:
        if g not in self.seen:
            d = self.decode(g)
            ts = torch.tensor(d["times"], dtype=torch.float64)
            orders = [min(s["order"], i + 1) for i, s in enumerate(d["steps"])]
            plan = Plan(Point.grid(self.sch, ts), orders, self.ctx.nfe, {"usf": d["steps"]})
            counter = NFECounter(self.ctx.model, self.cond)
            with torch.no_grad():
                x = self.solver.run(counter, self.x_T, plan)
            self.seen[g] = rmse(x, self.ref)
        return self.seen[g]


@register_search("usf", "per-step USF solver schedule (prediction type, order, derivative scaling, UniC, time "
                 "steps): random + predictor-screened evolutionary search on the exact-solution RMSE",
                 "Liu et al. 2024 (ICLR), 'A Unified Sampling Framework for Solver Searching of Diffusion "
                 "Probabilistic Models' (arXiv 2312.07243), Sec. 4 S^3, scaled down (see dpmbench/search/usf.py)",
                 produces="usf", options=OPTIONS)
def search_usf(ctx: Context, solver: Solver | None, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Search a USF schedule for ``ctx.nfe`` steps (one NFE each); returns ``{"steps", "times", ...}``."""
    kinds = _csv(opts["kinds"], [k for k in TIMESTEP_SCHEDULES if not k.startswith("ays")], "kinds")
    orders = _csv(opts["orders"], ORDERS, "orders", int)
    n = ctx.nfe
    rng = np.random.default_rng(seed)
    with single_thread():
        x_T, cond, ref = oracle_set(ctx, opts["samples"], seed, "search 'usf'")
        ev = _Evaluator(ctx, x_T, cond, ref, kinds)
        zero = (0.0,) * (n - 1)

        def preset(name: str, kind: str) -> Genome:
            steps = tuple((s["pred"], s["order"], s["scale"], s["corrector"]) for s in preset_steps(name, n))
            return normalize((kind, zero, steps))

        def random_genome() -> Genome:
            jit = zero if rng.random() < 0.5 else tuple(float(v) for v in rng.uniform(-1, 1, n - 1))
            steps = tuple((str(rng.choice(PREDS)), int(rng.choice(orders)), str(rng.choice(SCALES)),
                           str(rng.choice(CORRECTORS))) for _ in range(n))
            return normalize((str(rng.choice(kinds)), jit, steps))

        def mutate(g: Genome) -> Genome:
            kind, jit, steps = g[0], list(g[1]), [list(s) for s in g[2]]
            for _ in range(int(rng.integers(1, 3))):
                r = rng.random()
                if r < 0.1:
                    kind = str(rng.choice(kinds))
                elif r < 0.35 and n > 1:
                    j = int(rng.integers(0, n - 1))
                    jit[j] = float(np.clip(jit[j] + rng.normal(0.0, 0.3), -1.0, 1.0))
                else:
                    i, field = int(rng.integers(0, n)), int(rng.integers(0, 4))
                    steps[i][field] = [lambda: str(rng.choice(PREDS)), lambda: int(rng.choice(orders)),
                                       lambda: str(rng.choice(SCALES)), lambda: str(rng.choice(CORRECTORS))][field]()
            return normalize((kind, tuple(jit), tuple(tuple(s) for s in steps)))  # type: ignore[arg-type]

        def crossover(a: Genome, b: Genome) -> Genome:
            mask = rng.random(n) < 0.5
            steps = tuple(sa if m else sb for sa, sb, m in zip(a[2], b[2], mask, strict=True))
            return normalize((a[0], a[1], steps))

        seeds = [preset(p, k) for k in kinds for p in PRESETS]
        baselines = {f"{p}@{k}": ev(preset(p, k)) for k in kinds for p in PRESETS}
        for g in seeds:
            ev(g)
        for _ in range(opts["random"]):
            ev(random_genome())
        trace = [min(ev.seen.values())]
        spearman: list[float] = []
        for _ in range(opts["generations"]):
            ranked = sorted(ev.seen, key=lambda g: ev.seen[g])
            parents = ranked[: opts["population"]]
            pool: dict[Genome, None] = {}
            for _ in range(opts["pool"]):
                a = parents[int(rng.integers(0, len(parents)))]
                if rng.random() < 0.3:
                    child = mutate(crossover(a, parents[int(rng.integers(0, len(parents)))]))
                else:
                    child = mutate(a)
                if child not in ev.seen:
                    pool[child] = None
            cands = list(pool)
            if opts["predictor"] != "none" and len(cands) > opts["children"]:
                pred = _fit_predict(opts["predictor"], ev.seen, cands, kinds, seed)
                order = np.argsort(pred, kind="stable")
                cands = [cands[i] for i in order[: opts["children"]]]
                got = [math.log(ev(g)) if math.isfinite(ev(g)) else 10.0 for g in cands]
                spearman.append(_spearman(np.sort(pred)[: len(cands)], np.array(got)))
            else:
                for g in cands[: opts["children"]]:
                    ev(g)
            trace.append(min(ev.seen.values()))
        best = min(ev.seen, key=lambda g: ev.seen[g])
    out = ev.decode(best)
    out.update({"nfe": n, "kind": best[0], "offsets": list(best[1]), "rmse": ev.seen[best],
                "baselines": baselines, "evaluated": len(ev.seen), "trace": trace,
                "predictor": opts["predictor"], "predictor_spearman": spearman,
                "search_set": {"samples": opts["samples"], "seed": seed}})
    return out


def _fit_predict(kind: str, seen: dict[Genome, float], cands: list[Genome], kinds: list[str], seed: int
                 ) -> np.ndarray:
    """Predicted log RMSE of ``cands`` from a predictor fitted to every schedule evaluated so far."""
    from sklearn.linear_model import Ridge
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    gs = list(seen)
    X = np.array([_features(g, kinds) for g in gs])
    y = np.array([math.log(v) if math.isfinite(v) else 10.0 for v in seen.values()])
    y = np.minimum(y, np.quantile(y, 0.9))  # diverged and very bad schedules: clipped, not fitted exactly
    Xc = np.array([_features(g, kinds) for g in cands])
    scaler = StandardScaler().fit(X)
    if kind == "ridge":
        model: Any = Ridge(alpha=1.0)
    else:
        model = MLPRegressor(hidden_layer_sizes=(32,), max_iter=2000, random_state=seed)
    model.fit(scaler.transform(X), y)
    return np.asarray(model.predict(scaler.transform(Xc)))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of predicted and measured log RMSE of the evaluated children (predictor quality)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
