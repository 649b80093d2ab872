"""The search registry and runner (the searches themselves register here; ``dpmbench.search`` loads them all).

Searches: deterministic optimizations run once per (model, NFE, ...) before sampling, whose results are
cached artifacts (``dpmbench.artifacts``) and may be saved under a name for reuse.

A search is a function ``fn(ctx, solver, seed, opts) -> data`` (``ctx``: ``dpmbench.solvers.base.Context``
with the uncounted model; ``solver``: the solver it searches for, or None; ``data``: JSON-able) registered with
``register_search``. ``run_search`` caches it by everything it depends on. ``dpmbench search KIND ... --name N``
runs one from the command line; a search producing time grids (``produces="timesteps"``) is then usable as
``--schedule searched:N``.

Held out by construction: every search draws its set (x_T, data, noise) from samples ``FIT_START ..`` of its seed's
streams (``dpmbench.models.base.fit_prior``), an index range no evaluation run reaches (the command line refuses one
that would), so a searched or fitted solver is never scored on the x_T it was fitted on; the artifact's ``stream``
records it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dpmbench.artifacts import cached, save_named
from dpmbench.errors import bad_value
from dpmbench.models.base import FIT_START
from dpmbench.solvers.base import Context, Option, Solver


@dataclass(frozen=True)
class Search:
    """A registered search: its function, options, what it produces, and its source."""

    name: str
    fn: Callable[[Context, Solver | None, int, dict[str, Any]], Any]
    summary: str
    source: str
    produces: str
    options: dict[str, Option] = field(default_factory=dict)
    needs_solver: bool = False


SEARCHES: dict[str, Search] = {}


def register_search(name: str, summary: str, source: str, produces: str,
                    options: dict[str, Option] | None = None, needs_solver: bool = False
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(ctx, solver, seed, opts) -> data`` as the search ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        SEARCHES[name] = Search(name, fn, summary, source, produces, dict(options or {}), needs_solver)
        return fn

    return deco


def get_search(name: str) -> Search:
    """The registered search ``name`` (one-line error listing the registered ones)."""
    if name not in SEARCHES:
        raise bad_value("search", name, list(SEARCHES) or "none")
    return SEARCHES[name]


def parse_options(search: Search, raw: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``raw`` (text or values), each validated by its ``Option``."""
    unknown = set(raw) - set(search.options)
    if unknown:
        raise bad_value(f"option of search {search.name!r}", sorted(unknown)[0], sorted(search.options) or "none")
    opts = {k: o.default for k, o in search.options.items()}
    for k, v in raw.items():
        opts[k] = search.options[k].parse(search.name, k, v, owner="search")
    return opts


def run_search(kind: str, ctx: Context, solver: Solver | None = None, seed: int = 0,
               options: dict[str, Any] | None = None, name: str | None = None) -> Any:
    """Run (or load from the cache) the search ``kind`` for this context; save it as ``name`` if given."""
    search = get_search(kind)
    if search.needs_solver and solver is None:
        raise bad_value(f"solver of search {kind!r}", None, "a solver spec (--solver)")
    opts = parse_options(search, options or {})
    meta: dict[str, Any] = {"search": kind, "model": ctx.model.cache_key(), "nfe": ctx.nfe, "guidance": ctx.guidance,
                            "kind": ctx.kind if isinstance(ctx.kind, str) else "custom", "t_start": ctx.t_start,
                            "t_end": ctx.t_end, "solver": solver.spec if solver else None, "seed": seed,
                            "stream": {"seed": seed, "start": FIT_START}, "options": opts}

    def compute() -> Any:
        t0 = time.perf_counter()
        data = search.fn(ctx, solver, seed, opts)
        meta["wall_s"] = round(time.perf_counter() - t0, 3)
        return data

    items = (*ctx.key(), solver.spec if solver else None, seed, FIT_START, sorted(opts.items()))
    data = cached(f"search-{kind}", items, compute, meta, code=search.fn)
    if name is not None:
        save_named(name, search.produces, data, meta)
    return data
