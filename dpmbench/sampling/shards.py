"""Batched, sharded sampling to files: what one sample job (``dpmbench sample``) computes.

A :class:`Request` names the samples ``start .. start + num_samples - 1`` of a run (model, seed, guidance,
captions). Sample i's x_T depends only on (seed, i) and a stochastic solver's noise on (seed, i, step), so a shard
holds the same samples whatever the batch size or the shard boundaries (tested bit for bit).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.io import PARALLEL_COUNTERS, save_npz
from dpmbench.models.base import Model
from dpmbench.provenance import device_name
from dpmbench.sampling.loop import make_plan, sample
from dpmbench.solvers.registry import get_solver

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Request:
    """Which samples of a run: ``model`` (its id), ``seed``, samples ``start .. start + num_samples - 1``, the
    guidance scale (None: unguided), the captions file of a text-conditional model, the batch size (None: one
    batch) and the sampling precision."""

    model: str
    seed: int
    num_samples: int
    start: int = 0
    guidance: float | None = None
    captions: str | None = None
    batch_size: int | None = None
    dtype: str = "float32"


def batches(n: int, batch: int | None) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of ``n`` samples in batches of ``batch`` (None: one batch)."""
    b = batch or n
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def t_end_of(model: Model, t_end: float | None) -> float:
    """The run's t_end: the given one, else the model schedule's default."""
    return model.schedule.t_end_default if t_end is None else t_end


def run_meta(req: Request, model: Model, t_end: float, t_start: float | None = None) -> dict[str, Any]:
    """What every samples or reference file of the run records: model, seed, samples, guidance, t_end (and t_start
    where given), the class labels of guided samples (and the prompts of a text-conditional model), and the
    checkpoint files without a pinned sha256 it was computed from (``unpinned``: JSON ``{label: sha256}``, only under
    ``--trust-unpinned``)."""
    from dpmbench.download import unpinned_used

    text = getattr(model, "text_conditional", False)
    labels = (model.labels(req.num_samples, start=req.start) if req.guidance is not None and not text
              else torch.zeros(0, dtype=torch.long))
    meta = {
        "model": req.model, "seed": req.seed, "num_samples": req.num_samples, "start": req.start,
        "guidance": math.nan if req.guidance is None else req.guidance,
        "t_end": t_end, "labels": labels.numpy(),
    }
    if t_start is not None:
        meta["t_start"] = t_start
    unpinned = unpinned_used(f"checkpoint:{req.model}/")
    if unpinned:
        import json

        meta["unpinned"] = json.dumps(unpinned, sort_keys=True)
    if text:
        import numpy as np

        meta["prompts"] = np.array(prompts(req, 0, req.num_samples), dtype=str)
    return meta


def prompts(req: Request, lo: int, hi: int) -> list[str]:
    """Prompts of samples ``start + lo .. start + hi - 1``: a seeded, prefix-stable subset of the captions file,
    so sample i gets the same prompt however the samples are sharded or batched."""
    if not req.captions:
        raise DpmbenchError(f"invalid --captions None: model {req.model!r} is text-conditional; give a captions "
                            "file (MS-COCO captions JSON, or one caption per line)")
    subset = _caption_subset(req.captions, req.start + req.num_samples, req.seed)
    return list(subset[req.start + lo:req.start + hi])


def fit_prompts(model: str, captions: str | None, guidance: float | None
                ) -> tuple[Callable[[int], list[str]] | None, str]:
    """The prompts of a fit's n samples and what they depend on (``Context.prompts`` / ``prompts_id``): the captions
    subset of seed 0, as class fits use labels i mod C, and the captions file's sha256; ``(None, "")`` without a
    captions file. The prepare step and the sample jobs both use it, so they key a text model's fit alike."""
    if not captions:
        return None, ""
    from dpmbench.download import sha256_file

    def fit(n: int) -> list[str]:
        return prompts(Request(model, 0, n, 0, guidance, captions), 0, n)

    return fit, sha256_file(captions)


@functools.lru_cache(maxsize=4)
def _caption_subset(path: str, n: int, seed: int) -> tuple[str, ...]:
    """The captions file is read and its subset chosen once per command, not once per batch."""
    from dpmbench.models.adapters import prompts_from_captions

    return tuple(prompts_from_captions(path, n, seed))


def conditioning(req: Request, model: Model, lo: int, hi: int, device: Any) -> Any:
    """The conditioning of samples ``start + lo .. start + hi - 1``: prompts for text-conditional models, class
    labels (i mod num_classes) when guided, else None."""
    if getattr(model, "text_conditional", False):
        return prompts(req, lo, hi)
    if req.guidance is None:
        return None
    return model.labels(hi - lo, start=req.start + lo).to(device)


def cost_meta(req: Request, device: torch.device | str) -> dict[str, Any]:
    """What the cost of a samples file (its ``wall_s``) was measured under, recorded beside it: the torch device
    (``cpu``, ``cuda``, ``cuda:1``), the batch size actually used (the samples of one batch) and the CPU threads torch
    used (``torch.get_num_threads()``: the job's ``OMP_NUM_THREADS``). The dtype and the device's name are recorded
    beside them (``dtype``, ``device_name``)."""
    return {"device": str(device), "batch_size": int(min(req.batch_size or req.num_samples, req.num_samples)),
            "torch_threads": int(torch.get_num_threads())}


def remove_stale_temporaries(out: str) -> None:
    """Remove ``.NAME.*.tmp`` files that an atomic write of ``out`` left behind when its process was killed."""
    p = Path(out)
    if p.parent.is_dir():
        for tmp in p.parent.glob(f".{p.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def write_samples(req: Request, model: Model, solver: str, nfes: list[int], out: str, schedule: Any = "logsnr",
                  t_end: float | None = None, device: torch.device | str = "cpu",
                  searcher: Callable[..., Any] | None = None, t_start: float | None = None) -> list[str]:
    """Sample ``req`` with the solver spec ``solver`` at every NFE of ``nfes`` and write one samples ``.npz`` per NFE
    (``out`` with ``{nfe}`` replaced; each written to a temporary name, then renamed). Everything is validated before
    any work; returns the paths written. ``searcher``: the search runner a solver's prepare may need
    (``dpmbench.sampling.sample``). ``t_start``: where the solver starts with x_T (default the schedule's T;
    recorded in the file when given)."""
    if len(nfes) > 1 and "{nfe}" not in out:
        raise DpmbenchError("invalid --out: several --nfe values need '{nfe}' in the output path")
    sol = get_solver(solver)
    t_end = t_end_of(model, t_end)
    for nfe in nfes:  # validate everything before any work or output
        make_plan(model, sol, nfe, schedule, t_start, t_end)
    dtype = DTYPES[req.dtype]
    meta = run_meta(req, model, t_end, t_start)
    paths = [out.replace("{nfe}", str(nfe)) for nfe in nfes]
    for path in paths:  # a killed earlier run may have left temporary files of these outputs
        remove_stale_temporaries(path)
    decode = getattr(model, "decode", None)  # latent models: also write the decoded uint8 `images`
    # a text model's fits, keyed as the prepare step keys them; only a solver with a prepare step reads them (the
    # key hashes the captions file, which no other job needs)
    fit, fit_id = fit_prompts(req.model, req.captions, req.guidance) if sol.needs_prepare else (None, "")
    for nfe, path in zip(nfes, paths, strict=True):
        start = time.perf_counter()
        chunks, used, images, decode_s = [], [], [], 0.0
        counters: dict[str, int] = {}
        for lo, hi in batches(req.num_samples, req.batch_size):
            lo, hi = lo + req.start, hi + req.start  # sample i depends only on (seed, i): any sharding agrees
            x_T = model.prior(hi - lo, seed=req.seed, dtype=dtype, device=device, start=lo)
            cond = conditioning(req, model, lo - req.start, hi - req.start, device)
            stats: dict[str, Any] = {}
            xb = sample(model, sol, nfe, x_T, schedule=schedule, t_end=t_end, guidance=req.guidance, cond=cond,
                        seed=req.seed, start=lo, stats=stats, searcher=searcher, t_start=t_start, prompts=fit,
                        prompts_id=fit_id)
            if decode is not None:
                d0 = time.perf_counter()
                images.append(decode(xb).cpu())
                decode_s += time.perf_counter() - d0
            chunks.append(xb.cpu())
            used.append(stats["nfe_used"])
            for k in PARALLEL_COUNTERS:  # parallel solvers (picard): the most any batch used
                if k in stats:
                    counters[k] = max(counters.get(k, 0), stats[k])
        x = torch.cat(chunks)
        wall = time.perf_counter() - start - decode_s  # sampling only
        extra = {"images": torch.cat(images).numpy(), "decode_wall_s": decode_s} if decode is not None else {}
        save_npz(path, x=x.to(torch.float32).numpy(), nfe=nfe, solver=solver.replace(" ", ""),
                 solver_canonical=sol.spec,
                 schedule=str(schedule), wall_s=wall, nfe_used=max(used), stochastic=sol.stochastic,
                 dtype=req.dtype, device_name=device_name(str(device)), **counters, **extra,
                 **cost_meta(req, device), **meta)  # nfe_used < nfe: adaptive and parallel only
    return paths
