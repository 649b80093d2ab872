"""Command line: ``dpmbench list|sample|reference|evaluate|report|regress|pull``. Bad input: one line, exit code 2."""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from dpmbench.errors import DpmbenchError, bad_value, did_you_mean

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process ended by SIGPIPE
# a parallel solver's counters (sampling.sample's stats), kept in the samples file and the metrics record
PARALLEL_COUNTERS = ("parallel_rounds", "nfe_total")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        m = re.match(r".*invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if m:  # argparse's "invalid choice" gets the "did you mean" of every other name error
            hint = did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
            message = f"{message}; {hint}" if hint else message
        self.exit(EXIT_USAGE, f"dpmbench: error: {message}\n")


def _nfe_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --nfe {text!r}; allowed: integers >= 1, comma-separated") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"invalid --nfe {text!r}; allowed: integers >= 1, comma-separated")
    return vals


def _number(name: str, cast: type, ok: Any, allowed: str) -> Any:
    """An argparse type: ``cast(text)`` accepted when ``ok(value)``, else a one-line error naming ``name``."""

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}; allowed: {allowed}")
        return v

    return parse


def _positive_int(name: str) -> Any:
    return _number(name, int, lambda v: v >= 1, "integers >= 1")


def _nonneg_int(name: str) -> Any:
    return _number(name, int, lambda v: v >= 0, "integers >= 0")


def _float(name: str) -> Any:
    return _number(name, float, math.isfinite, "a finite number")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dpmbench`` command."""
    p = _Parser(prog="dpmbench", description="Benchmark of fast diffusion-model samplers.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="list solvers, models, metrics, schedules, searches or papers (coverage of the "
                        "published numbers by config/papers/*.yaml)")
    ls.add_argument("what", choices=["solvers", "models", "metrics", "schedules", "searches", "papers"])

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", required=True)
        q.add_argument("--num-samples", type=_positive_int("--num-samples"), required=True)
        q.add_argument("--seed", type=_nonneg_int("--seed"), required=True)
        q.add_argument("--guidance", type=_float("--guidance"), default=None,
                       help="classifier-free guidance scale (class labels i mod num_classes)")
        q.add_argument("--t-end", type=_float("--t-end"), default=None)
        q.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None)
        q.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        q.add_argument("--captions", default=None, help="text-conditional models: captions file (MS-COCO captions "
                       "JSON or one per line); sample i gets caption i of a subset chosen with --seed")
        q.add_argument("--out", required=True)

    s = sub.add_parser("sample", help="sample with one solver and one (or several) NFE budgets")
    common(s)
    s.add_argument("--solver", required=True, help="NAME[:key=value,...]")
    s.add_argument("--nfe", type=_nfe_list, required=True, help="an NFE budget, or a comma list with {nfe} in --out")
    s.add_argument("--schedule", default="logsnr")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--start", type=_nonneg_int("--start"), default=0,
                   help="index of the first sample (a shard: samples START..START+K-1 of the seed's stream)")

    se = sub.add_parser("search", help="run a search (time grid, solver schedule, ...) and save it by name")
    se.add_argument("kind", help="a search name (`dpmbench list searches`)")
    se.add_argument("--model", required=True)
    se.add_argument("--nfe", type=_nfe_list, required=True, help="an NFE budget or a comma list")
    se.add_argument("--solver", default=None, help="NAME[:key=value,...]: the solver searched for")
    se.add_argument("--guidance", type=_float("--guidance"), default=None)
    se.add_argument("--schedule", default="logsnr", help="the timestep schedule the search starts from")
    se.add_argument("--t-end", type=_float("--t-end"), default=None)
    se.add_argument("--seed", type=_nonneg_int("--seed"), default=0)
    se.add_argument("--set", default="", help="search options key=value,...")
    se.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    se.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    se.add_argument("--name", default=None, help="save the result as this named artifact (e.g. for "
                    "--schedule searched:NAME)")
    se.add_argument("--out", default=None, help="also write the result to this JSON file")

    pr = sub.add_parser("prepare", help="compute a solver's cached artifacts (searches, model statistics) once")
    pr.add_argument("--model", required=True)
    pr.add_argument("--solver", required=True, help="NAME[:key=value,...]")
    pr.add_argument("--nfe", type=_nfe_list, required=True)
    pr.add_argument("--guidance", type=_float("--guidance"), default=None)
    pr.add_argument("--schedule", default="logsnr")
    pr.add_argument("--t-end", type=_float("--t-end"), default=None)
    pr.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    pr.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    pr.add_argument("--out", required=True, help="JSON summary of what was prepared")

    r = sub.add_parser("reference", help="exact ODE solutions of an oracle model (or a high-NFE solver run) "
                       "from the same x_T")
    common(r)
    r.add_argument("--solver", default=None, help="NAME[:key=value,...]: a high-NFE reference run instead of the "
                   "exact solution (e.g. dpm-solver++ with --nfe 500, or ddim with --nfe 999); needs --nfe")
    r.add_argument("--nfe", type=_positive_int("--nfe"), default=None)
    r.add_argument("--schedule", default="logsnr", help="timestep schedule of the --solver run")

    e = sub.add_parser("evaluate", help="compute metrics of a samples file")
    e.add_argument("--samples", required=True, nargs="+", help="one or more samples files")
    e.add_argument("--metrics", required=True)
    e.add_argument("--reference", default=None)
    e.add_argument("--bootstraps", type=_nonneg_int("--bootstraps"), default=200)
    e.add_argument("--fid-backend", choices=["torch-fidelity", "clean-fid"], default="torch-fidelity",
                   help="library computing fid/is/kid/fdd features (default torch-fidelity)")
    e.add_argument("--cleanfid-mode", choices=["clean", "legacy_tensorflow"], default="clean")
    e.add_argument("--fid-stats", default=None, help="fid reference statistics: a name in "
                   "reference_stats/manifest.yaml or an .npz with mu/sigma")
    e.add_argument("--kid-reference", default=None, help="kid reference features (.npz, key feats or features)")
    e.add_argument("--reference-images", default=None, help="reference images (.npz, key x) for fid/kid: their "
                   "features are computed once and cached under $DPMBENCH_CACHE/features")
    e.add_argument("--inception-weights", default=None,
                   help="local Inception weights (else env DPMBENCH_INCEPTION_WEIGHTS / DPMBENCH_CLEANFID_INCEPTION, "
                   "else the libraries' caches)")
    e.add_argument("--clip-model", default="ViT-L-14")
    e.add_argument("--clip-pretrained", default="openai")
    e.add_argument("--clip-weights", default=None, help="local CLIP weights (else env DPMBENCH_CLIP_WEIGHTS)")
    e.add_argument("--eval-batch-size", type=_positive_int("--eval-batch-size"), default=64,
                   help="feature-extraction batch size")
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    e.add_argument("--out", required=True, nargs="+", help="one metrics file per samples file")

    rep = sub.add_parser("report", help="aggregate (and merge) metric files into results.csv, leaderboard.md and "
                         "a static site")
    rep.add_argument("results_dir", nargs="+", help="one or more results directories (several: merged; cells that "
                     "differ in protocol are shown apart, identical cells must agree)")
    rep.add_argument("--out", default="reports")
    rep.add_argument("--previous-claims", default=None, help="the claims.md this report replaces (default: the one in "
                     "--out, if any): claims.md then closes with every verdict that changed, before -> after, and why")
    rep.add_argument("--site", default=None, help="also write a self-contained static site (index.html and a page "
                     "per model) into this directory")
    rep.add_argument("--papers", default=None,
                     help="directory of published numbers (papers/*.yaml; default: ./papers if it exists)")
    rep.add_argument("--jobs", type=_positive_int("--jobs"), default=1,
                     help="processes drawing the figures (default 1)")

    pl = sub.add_parser("pull", help="download and verify (sha256) a checkpoint of the manifest")
    pl.add_argument("id", help="a checkpoint id (`dpmbench list models`)")
    pl.add_argument("--manifest", default=None, help="a manifest or run config whose `checkpoints:` entries add to "
                    "(or override) config/checkpoints.yaml")
    pl.add_argument("--offline", action="store_true", help="never open a connection (also DPMBENCH_OFFLINE=1): "
                    "verify what is there and say which file to place where")
    pl.add_argument("--no-progress", action="store_true", help="no progress bar")

    tr = sub.add_parser("train", help="train one of the project's own networks (digits-unet) and save it in "
                        "diffusers' save_pretrained layout")
    tr.add_argument("model", choices=["digits-unet"])
    tr.add_argument("--out", required=True, help="output folder (written whole, then renamed into place)")
    tr.add_argument("--steps", type=_positive_int("--steps"), default=None,
                    help="optimizer steps (default: those of the shipped weights)")
    tr.add_argument("--seed", type=_nonneg_int("--seed"), default=None)
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    reg = sub.add_parser("regress", help="fail (exit 1) when results are worse than a baseline; improvements beyond "
                         "tolerance are listed, and fail (exit 3) with --fail-on-improvement")
    reg.add_argument("--baseline", required=True)
    reg.add_argument("--results", required=True)
    reg.add_argument("--fail-on-improvement", action="store_true",
                     help="exit 3 when a cell is better than the baseline beyond tolerance (and none worse): numbers "
                     "that moved either way are seen until the baseline is refreshed on purpose (make baseline)")
    reg.add_argument("--config", default=None, help="YAML with regression.tolerances: metric -> rtol/atol/stochastic")
    return p


# -- commands --------------------------------------------------------------------------------------------
def _option_line(opt: dict[str, str]) -> str:
    """One option of ``dpmbench list solvers|searches``: ``key=default  [allowed]  doc`` (a catalogue record)."""
    return f"    {opt['key']}={opt['default']}  [{opt['allowed']}]  {opt['doc']}"


def _described(section: str) -> dict[str, Any]:
    """What the built-in registries describe for ``dpmbench list SECTION`` (``dpmbench.catalogue``)."""
    from dpmbench.catalogue import section as catalogue_section

    return catalogue_section(section)


def cmd_list(args: argparse.Namespace) -> None:
    # each listing imports only what it needs: what the built-in registries describe comes from the catalogue
    # (dpmbench/catalogue.json, no torch); what depends on this machine (files present, saved artifacts) is read here
    if args.what == "solvers":
        cat = _described("solvers")
        print("options every solver accepts (NAME:key=value):")
        for opt in cat["common_options"]:
            print(_option_line(opt))
        for fam in cat["families"]:
            print(f"{fam['name']}: {fam['summary']}")
            print(f"    source: {fam['source']}")
            for opt in fam["options"]:  # a solver's own options (or its own default of a common one)
                print(_option_line(opt))
    elif args.what == "models":
        from dpmbench.checkpoints import checkpoint_dir, load_manifest

        for m in _described("models")["oracles"]:
            cond = f", {m['num_classes']} classes" if m["num_classes"] else ""
            print(f"{m['name']}: oracle, shape {tuple(m['shape'])}{cond}; {m['description']}")
        for name, e in load_manifest().items():
            src = (e.source.get("hf") or e.source.get("url")
                   or (f"shipped in {e.source['local']}" if "local" in e.source else "manual download"))
            cond = "" if e.conditioning == "none" else f", {e.conditioning}-conditioned"
            pulled = "pulled" if all((checkpoint_dir(e) / f.path).is_file() for f in e.files) else "not pulled"
            pulled = ("present" if pulled == "pulled" else "missing") if "local" in e.source else pulled
            print(f"{name}: checkpoint ({e.adapter}), {e.resolution}px{cond}, {e.schedule}/{e.parameterization}, "
                  f"license {e.license}; {src}; {pulled}")
    elif args.what == "papers":
        from dpmbench.paper_coverage import coverage

        for cov in coverage():
            print(cov.line())
    elif args.what == "metrics":
        from evaluators.registry import METRICS

        for name, metric in METRICS.items():
            print(f"{name}: {metric.doc}")
    elif args.what == "searches":
        from dpmbench.artifacts import list_named

        for srch in _described("searches")["searches"]:
            print(f"{srch['name']}: {srch['summary']} (produces {srch['produces']})")
            print(f"    source: {srch['source']}")
            for opt in srch["options"]:
                print(_option_line(opt))
        for name, kind in list_named().items():
            print(f"saved {kind}: {name}")
    else:
        from dpmbench.artifacts import list_named

        for name in _described("schedules")["kinds"]:
            print(name)
        for name, kind in list_named().items():
            if kind == "timesteps":
                print(f"searched:{name}")


def _setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and the torch device of a sample/reference command, with their input checks."""
    import torch

    from dpmbench.models.base import FIT_START
    from dpmbench.models.registry import load_model

    start, n = getattr(args, "start", 0), getattr(args, "num_samples", 0)
    if start + n > FIT_START:  # searches and fits draw from there: evaluated x_T never reach them
        raise DpmbenchError(f"invalid --num-samples {n} / --start {start}: samples {FIT_START} and "
                            "above of every stream are reserved for searches and fits")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DpmbenchError("invalid --device 'cuda': no CUDA device is available; allowed: cpu")
    model = load_model(args.model, device=args.device)
    if args.guidance is not None and not (model.num_classes or getattr(model, "text_conditional", False)):
        raise DpmbenchError(f"invalid --guidance {args.guidance}: model {args.model!r} is unconditional")
    return model, torch.device(args.device)


def _batches(n: int, batch: int | None) -> list[tuple[int, int]]:
    b = batch or n
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def _meta(args: argparse.Namespace, model: Any, t_end: float) -> dict[str, Any]:
    import torch

    start = getattr(args, "start", 0)
    text = getattr(model, "text_conditional", False)
    labels = (model.labels(args.num_samples, start=start) if args.guidance is not None and not text
              else torch.zeros(0, dtype=torch.long))
    meta = {
        "model": args.model, "seed": args.seed, "num_samples": args.num_samples, "start": start,
        "guidance": math.nan if args.guidance is None else args.guidance,
        "t_end": t_end, "labels": labels.numpy(),
    }
    if text:
        import numpy as np

        meta["prompts"] = np.array(_prompts(args, model, 0, args.num_samples), dtype=str)
    return meta


def _prompts(args: argparse.Namespace, model: Any, lo: int, hi: int) -> list[str]:
    """Prompts of samples ``start + lo .. start + hi - 1``: a seeded, prefix-stable subset of the captions file,
    so sample i gets the same prompt however the samples are sharded or batched."""
    if not getattr(args, "captions", None):
        raise DpmbenchError(f"invalid --captions None: model {args.model!r} is text-conditional; give a captions "
                            "file (MS-COCO captions JSON, or one caption per line)")
    start = getattr(args, "start", 0)
    return list(_caption_subset(args.captions, start + args.num_samples, args.seed)[start + lo:start + hi])


@functools.lru_cache(maxsize=4)
def _caption_subset(path: str, n: int, seed: int) -> tuple[str, ...]:
    """The captions file is read and its subset chosen once per command, not once per batch."""
    from dpmbench.models.adapters import prompts_from_captions

    return tuple(prompts_from_captions(path, n, seed))


def _cond(args: argparse.Namespace, model: Any, lo: int, hi: int, device: Any) -> Any:
    """The conditioning of samples ``start + lo .. start + hi - 1``: prompts for text-conditional models, class
    labels (i mod num_classes) when guided, else None."""
    if getattr(model, "text_conditional", False):
        return _prompts(args, model, lo, hi)
    if args.guidance is None:
        return None
    return model.labels(hi - lo, start=getattr(args, "start", 0) + lo).to(device)


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from dpmbench.io import save_npz
    from dpmbench.provenance import device_name
    from dpmbench.sampling import make_plan, sample
    from dpmbench.solvers.base import get_solver

    model, device = _setup(args)
    if len(args.nfe) > 1 and "{nfe}" not in args.out:
        raise DpmbenchError("invalid --out: several --nfe values need '{nfe}' in the output path")
    sol = get_solver(args.solver)
    t_end = model.schedule.t_end_default if args.t_end is None else args.t_end
    for nfe in args.nfe:  # validate everything before any work or output
        make_plan(model, sol, nfe, args.schedule, None, t_end)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    meta = _meta(args, model, t_end)
    for nfe in args.nfe:  # a killed earlier run may have left temporary files of these outputs
        _remove_stale_temporaries(args.out.replace("{nfe}", str(nfe)))
    decode = getattr(model, "decode", None)  # latent models: also write the decoded uint8 `images`
    for nfe in args.nfe:
        start = time.perf_counter()
        chunks, used, images, decode_s = [], [], [], 0.0
        counters: dict[str, int] = {}
        for lo, hi in _batches(args.num_samples, args.batch_size):
            lo, hi = lo + args.start, hi + args.start  # sample i depends only on (seed, i): any sharding agrees
            x_T = model.prior(hi - lo, seed=args.seed, dtype=dtype, device=device, start=lo)
            cond = _cond(args, model, lo - args.start, hi - args.start, device)
            stats: dict[str, Any] = {}
            xb = sample(model, sol, nfe, x_T, schedule=args.schedule, t_end=t_end,
                        guidance=args.guidance, cond=cond, seed=args.seed, start=lo, stats=stats)
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
        save_npz(args.out.replace("{nfe}", str(nfe)), x=x.to(torch.float32).numpy(), nfe=nfe,
                 solver=args.solver.replace(" ", ""), solver_canonical=sol.spec, schedule=str(args.schedule),
                 wall_s=wall, nfe_used=max(used), stochastic=sol.stochastic, dtype=args.dtype,
                 device_name=device_name(str(device)), **counters, **extra,
                 **meta)  # nfe_used < nfe: adaptive and parallel only


def _context(args: argparse.Namespace, model: Any, device: Any, nfe: int) -> Any:
    import torch

    from dpmbench.models.base import guided
    from dpmbench.solvers.base import Context

    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    t_end = model.schedule.t_end_default if args.t_end is None else args.t_end
    return Context(guided(model, args.guidance), nfe, args.schedule, None, t_end, args.guidance, dtype, device)


def _options(text: str) -> dict[str, str]:
    from dpmbench.solvers.base import parse_spec

    return parse_spec("search:" + text)[1] if text.strip() else {}


def cmd_search(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from dpmbench.artifacts import check_name, save_named
    from dpmbench.io import save_json
    from dpmbench.search import get_search, parse_options, run_search
    from dpmbench.solvers.base import get_solver

    search = get_search(args.kind)
    opts = _options(args.set)
    parse_options(search, opts)  # validate before any work
    if args.name is not None:
        check_name(args.name)
    model, device = _setup(args)
    sol = None if args.solver is None else get_solver(args.solver)
    if search.needs_solver and sol is None:
        raise DpmbenchError(f"invalid --solver None: search {args.kind!r} needs the solver it searches for")
    for nfe in args.nfe:
        if sol is not None:
            sol.check_nfe(nfe)
    results = {}
    with torch.no_grad():
        for nfe in tqdm(args.nfe, desc=f"search {args.kind}", disable=len(args.nfe) < 2):
            results[nfe] = run_search(args.kind, _context(args, model, device, nfe), sol, args.seed, opts)
    if search.produces == "timesteps":  # one artifact holds the grids of every NFE searched
        data: Any = {"grids": {k: v for r in results.values() for k, v in r["grids"].items()},
                     "details": {str(n): {k: v for k, v in r.items() if k != "grids"} for n, r in results.items()}}
    else:
        data = {str(n): r for n, r in results.items()} if len(results) > 1 else next(iter(results.values()))
    meta = {"search": args.kind, "model": args.model, "nfe": args.nfe, "solver": args.solver,
            "guidance": args.guidance, "schedule": args.schedule, "t_end": args.t_end, "seed": args.seed,
            "options": opts}
    if args.name is not None:
        print(save_named(args.name, search.produces, data, meta))
    if args.out is not None:
        save_json(args.out, {"meta": meta, "data": data})


def cmd_prepare(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from dpmbench.io import save_json
    from dpmbench.solvers.base import get_solver

    model, device = _setup(args)
    sol = get_solver(args.solver)
    for nfe in args.nfe:  # validate everything before any work
        sol.check_nfe(nfe)
    done: dict[str, Any] = {}
    start = time.perf_counter()
    with torch.no_grad():
        for nfe in tqdm(args.nfe, desc=f"prepare {sol.spec}", disable=not sol.needs_prepare):
            done[str(nfe)] = sol.prepare(_context(args, model, device, nfe)) if sol.needs_prepare else {}
    save_json(args.out, {"model": args.model, "solver": sol.spec, "guidance": args.guidance,
                         "schedule": args.schedule, "prepared": done, "wall_s": time.perf_counter() - start})


def _remove_stale_temporaries(out: str) -> None:
    """Remove ``.NAME.*.tmp`` files that an atomic write of ``out`` left behind when its process was killed."""
    p = Path(out)
    if p.parent.is_dir():
        for tmp in p.parent.glob(f".{p.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def cmd_reference(args: argparse.Namespace) -> None:
    import torch

    from dpmbench.io import save_npz

    model, device = _setup(args)
    oracle = hasattr(model, "exact_solution")
    if (args.solver is None) != (args.nfe is None):
        raise DpmbenchError("invalid reference: --solver and --nfe go together (a high-NFE reference run)")
    if args.solver is None and not oracle:
        raise DpmbenchError(f"invalid --model {args.model!r} for an exact reference: only oracle models have exact "
                            "solutions; give --solver SPEC --nfe N for a high-NFE reference run")
    from dpmbench.models.base import guided

    t_end = model.schedule.t_end_default if args.t_end is None else args.t_end
    meta = _meta(args, model, t_end)
    start = time.perf_counter()
    cond = _cond(args, model, 0, args.num_samples, "cpu")
    if args.solver is None:
        net = guided(model, args.guidance)
        x_T = model.prior(args.num_samples, seed=args.seed, dtype=torch.float64)
        x = net.exact_solution(x_T, t_end=t_end, cond=cond)
        run = {"solver": "exact", "nfe": -1, "schedule": "adaptive"}
    else:  # a high-NFE run of a solver from the same x_T as `dpmbench sample` (float64)
        from dpmbench.sampling import make_plan, sample
        from dpmbench.solvers.base import get_solver

        sol = get_solver(args.solver)
        make_plan(model, sol, args.nfe, args.schedule, None, t_end)
        chunks = []
        for lo, hi in _batches(args.num_samples, args.batch_size):
            x_T = model.prior(hi - lo, seed=args.seed, dtype=torch.float64, device=device, start=lo)
            c = _cond(args, model, lo, hi, device)
            chunks.append(sample(model, sol, args.nfe, x_T, schedule=args.schedule, t_end=t_end,
                                 guidance=args.guidance, cond=c, seed=args.seed, start=lo).cpu())
        x = torch.cat(chunks)
        run = {"solver": args.solver.replace(" ", ""), "solver_canonical": sol.spec, "nfe": args.nfe,
               "schedule": str(args.schedule)}
    extra = {}
    if oracle:  # the target distribution's moments travel with the reference, so metrics need no model
        if args.guidance is None or args.guidance == 1.0:
            mu, cov = model.data_moments(cond, t=t_end)
        else:
            mu, cov = x.reshape(len(x), -1).mean(0), torch.cov(x.reshape(len(x), -1).T)
        extra = {"target_mu": mu.numpy(), "target_cov": cov.numpy()}
    save_npz(args.out, x=x.numpy(), wall_s=time.perf_counter() - start, **run, **extra, **meta)


def _load_npz(path: str, what: str) -> dict[str, Any]:
    """An input ``.npz``, its embedded checksum verified (a truncated or corrupted file is a one-line error)."""
    from dpmbench.io import load_npz

    try:
        return load_npz(path, what)
    except FileNotFoundError:
        raise DpmbenchError(f"invalid {what} {path!r}: no such file") from None


def _scalar(v: Any) -> Any:
    import numpy as np

    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v


def _file_sha256(path: str) -> str:
    from evaluators.download import sha256_file

    return sha256_file(path)


def _run_protocol(meta: dict[str, Any], n: int, reference: str | None, ref_sha: str | None) -> dict[str, Any]:
    """The protocol fields a metrics file records beside the metric's own: sample count, end time, reference
    (exact solutions or a solver run, with the file's sha256)."""
    t_end = meta.get("t_end")
    ref = None
    if reference:
        solver = meta.get("reference_solver", "exact")
        ref = "exact ODE solutions" if solver == "exact" else f"{solver} at NFE {meta.get('reference_nfe')}"
    return {"n_samples": int(n), "t_end": None if t_end is None else float(t_end), "reference": ref,
            "reference_sha256": ref_sha}


def _provenance(meta: dict[str, Any], eval_device: str) -> dict[str, Any]:
    """Where the numbers come from: the evaluating process (code, libraries, device, config hash, date) and the
    sampling run's dtype and device (recorded in the samples file)."""
    from dpmbench.provenance import environment

    env = environment(eval_device)
    env["sample_dtype"] = str(meta.get("dtype", "float32"))
    env["sample_device_name"] = str(meta["device_name"]) if "device_name" in meta else None
    return env


def cmd_evaluate(args: argparse.Namespace) -> None:
    from dpmbench.io import save_json
    from evaluators.registry import evaluate, list_metrics

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for n in names:
        if n not in list_metrics():
            raise bad_value("--metrics entry", n, list_metrics())
    if len(args.samples) != len(args.out):
        raise DpmbenchError(f"invalid --out: {len(args.out)} files for {len(args.samples)} --samples files")
    options = {"fid_backend": args.fid_backend, "cleanfid_mode": args.cleanfid_mode, "fid_stats": args.fid_stats,
               "kid_reference": args.kid_reference, "reference_images": args.reference_images,
               "inception_weights": args.inception_weights,
               "clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained,
               "clip_weights": args.clip_weights, "batch_size": args.eval_batch_size, "device": args.device}
    ref_file = _load_npz(args.reference, "--reference") if args.reference else None
    ref_sha = _file_sha256(args.reference) if args.reference else None
    loaded = [_load_npz(path, "--samples") for path in args.samples]  # validate all before writing any
    for path, s in zip(args.samples, loaded, strict=True):
        if "x" not in s or "model" not in s:
            raise DpmbenchError(f"invalid --samples {path!r}: missing keys 'x'/'model'")
        if ref_file is not None and (str(_scalar(ref_file["model"])) != str(_scalar(s["model"]))
                                     or int(_scalar(ref_file["seed"])) != int(_scalar(s["seed"]))):
            raise DpmbenchError(f"invalid --reference for {path!r}: model or seed differs from the samples'")
    for s, out_path in zip(loaded, args.out, strict=True):
        meta = {k: _scalar(v) for k, v in s.items() if k != "x"}
        start = time.perf_counter()
        ref = None if ref_file is None else ref_file["x"]
        if ref_file is not None:
            meta["reference_solver"] = str(_scalar(ref_file["solver"])) if "solver" in ref_file else "exact"
            meta["reference_nfe"] = int(_scalar(ref_file["nfe"])) if "nfe" in ref_file else -1
        if ref_file is not None and "target_mu" in ref_file:
            meta["target_moments"] = (ref_file["target_mu"], ref_file["target_cov"])
        values, cis, info = evaluate(names, s["x"], meta, ref, bootstraps=args.bootstraps, options=options)
        info["protocol"] = {**info.get("protocol", {}), **_run_protocol(meta, len(s["x"]), args.reference,
                                                                          ref_sha)}
        info["provenance"] = _provenance(meta, args.device)
        g = meta.get("guidance")
        save_json(out_path, {
            "model": str(meta["model"]), "solver": str(meta.get("solver")), "nfe": int(meta.get("nfe", -1)),
            "schedule": str(meta.get("schedule")),
            "guidance": None if g is None or math.isnan(float(g)) else float(g),
            "n_samples": len(s["x"]), "metrics": values, "ci": cis,
            "wall_s": float(meta.get("wall_s", 0.0)), "eval_wall_s": time.perf_counter() - start, **info,
            **{k: int(meta[k]) for k in PARALLEL_COUNTERS if k in meta},
        })


def cmd_report(args: argparse.Namespace) -> None:
    from dpmbench.report import write_report

    write_report(args.results_dir, args.out, papers_dir=args.papers, site=args.site, jobs=args.jobs,
                 previous_claims=args.previous_claims)


def cmd_pull(args: argparse.Namespace) -> None:
    import warnings

    from dpmbench.checkpoints import get_entry, load_manifest, pull

    manifest = load_manifest()
    if args.manifest:
        manifest.update(load_manifest(args.manifest))
    entry = get_entry(args.id, manifest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = pull(entry, offline=True if args.offline else None, progress=not args.no_progress)
    for w in caught:
        print(f"dpmbench: warning: {w.message}", file=sys.stderr)
    print(f"{entry.id}: {len(entry.files)} file(s) verified in {root}")


def cmd_train(args: argparse.Namespace) -> None:
    import dataclasses

    from dpmbench.train import TrainConfig, train_digits_unet

    if args.device not in ("cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise bad_value("--device", args.device, ("cpu", "cuda"))
    changes = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    log = train_digits_unet(args.out, dataclasses.replace(TrainConfig(), **changes), progress=not args.no_progress,
                            device=args.device)
    print(f"{args.model}: {log['config']['steps']} steps in {log['wall_s']:.0f} s, final loss "
          f"{log['final_loss']:.4f} (mean of the last {log['final_loss_window']} steps); saved to {args.out}")


def cmd_regress(args: argparse.Namespace) -> int:
    from dpmbench.regress import load_tolerances, regress

    tolerances = {}
    if args.config:
        import yaml

        from dpmbench.yamlfile import load_yaml

        path = Path(args.config)
        if not path.is_file():
            raise DpmbenchError(f"invalid --config {args.config!r}: no such file")
        try:
            config = load_yaml(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DpmbenchError(f"invalid --config {args.config!r}: not YAML ({exc.__class__.__name__})") from None
        tolerances = load_tolerances(config)
    passed, bad, summary = regress(args.baseline, args.results, tolerances, args.fail_on_improvement)
    print(summary)
    if passed:
        return 0
    return 3 if set(bad["verdict"]) == {"better"} else 1


COMMANDS = {"list": cmd_list, "sample": cmd_sample, "reference": cmd_reference,
            "evaluate": cmd_evaluate, "report": cmd_report, "regress": cmd_regress,
            "search": cmd_search, "prepare": cmd_prepare, "pull": cmd_pull, "train": cmd_train}


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwind, so that atomic writes remove their temporary files


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dpmbench`` console script."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, while it can still be handled
    except DpmbenchError as exc:
        print(f"dpmbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `dpmbench list solvers | head`: the reader has gone; stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_BROKEN_PIPE
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
