"""The commands of the command line, one function each (``cmd_<name>``); the work itself lives in the library."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from dpmbench.errors import DpmbenchError, bad_value


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
        from dpmbench.models.manifest import load_manifest
        from dpmbench.models.store import checkpoint_dir

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
        from dpmbench.report.coverage import coverage

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
        from dpmbench.flowgrids import PARAMETERIZED

        for name in [*_described("schedules")["kinds"], *PARAMETERIZED]:
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


def _request(args: argparse.Namespace) -> Any:
    """The samples a sample or reference command names."""
    from dpmbench.sampling.shards import Request

    return Request(args.model, args.seed, args.num_samples, getattr(args, "start", 0), args.guidance,
                   getattr(args, "captions", None), args.batch_size, getattr(args, "dtype", "float32"))


def cmd_sample(args: argparse.Namespace) -> None:
    from dpmbench.sampling.shards import write_samples
    from dpmbench.search import run_search

    model, device = _setup(args)
    paths = write_samples(_request(args), model, args.solver, args.nfe, args.out, args.schedule, args.t_end, device,
                          run_search, t_start=args.t_start)
    print(f"wrote {len(paths)} samples file{'s' if len(paths) > 1 else ''}: {', '.join(paths)}")


def _context(args: argparse.Namespace, model: Any, device: Any, nfe: int) -> Any:
    import torch

    from dpmbench.models.base import guided
    from dpmbench.search import run_search
    from dpmbench.solvers.base import Context

    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    t_end = model.schedule.t_end_default if args.t_end is None else args.t_end
    t_start = getattr(args, "t_start", None)  # `dpmbench search` starts at the schedule's T
    from dpmbench.sampling.shards import fit_prompts

    prompts, prompts_id = fit_prompts(args.model, getattr(args, "captions", None), args.guidance)
    return Context(guided(model, args.guidance), nfe, args.schedule, t_start, t_end, args.guidance, dtype, device,
                   run_search, prompts, prompts_id)


def _options(text: str) -> dict[str, str]:
    from dpmbench.solvers.base import parse_spec

    return parse_spec("search:" + text)[1] if text.strip() else {}


def cmd_search(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from dpmbench.artifacts import check_name, save_named
    from dpmbench.io import save_json
    from dpmbench.search import get_search, parse_options, run_search
    from dpmbench.solvers.registry import get_solver

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
    from dpmbench.solvers.registry import get_solver

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


def cmd_reference(args: argparse.Namespace) -> None:
    from dpmbench.sampling.reference import write_reference
    from dpmbench.search import run_search

    model, device = _setup(args)
    write_reference(_request(args), model, args.out, args.solver, args.nfe, args.schedule, args.t_end, device,
                    run_search, t_start=args.t_start)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from evaluators.job import EvalOptions, evaluate_files

    options = EvalOptions(**{k: getattr(args, k) for k in EvalOptions.__dataclass_fields__})
    evaluate_files(args.samples, args.out, args.metrics, args.reference, options)


def cmd_metrics_job(args: argparse.Namespace) -> int:
    from evaluators.job import run_evaluate

    return run_evaluate(args.cells, args.out, args.metrics, args.reference, args.seed, args.fid_stats,
                        args.fid_implementation)


def cmd_validate(args: argparse.Namespace) -> None:
    from dpmbench.grid import build_grid
    from dpmbench.yamlfile import read_yaml

    if not Path(args.configfile).is_file():
        raise DpmbenchError(f"invalid config {args.configfile!r}: no such file")
    grid = build_grid(read_yaml(args.configfile) or {})
    n = len(grid.models)
    print(f"{args.configfile}: valid ({len(grid.cells())} cells: {n} model{'' if n == 1 else 's'})")


def cmd_report(args: argparse.Namespace) -> None:
    from dpmbench.report import write_report

    write_report(args.results_dir, args.out, papers_dir=args.papers, site=args.site, jobs=args.jobs,
                 previous_claims=args.previous_claims)


def cmd_recommend(args: argparse.Namespace) -> None:
    from dpmbench.report.recommend import answer_text, load_results, recommend

    answers = recommend(load_results(args.results), args.model, args.nfe, args.metric)
    print("\n\n".join(answer_text(a) for a in answers))


def cmd_pull(args: argparse.Namespace) -> None:
    import warnings

    from dpmbench.models.manifest import get_entry, load_manifest
    from dpmbench.models.store import pull

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
    changes = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed))
               if v is not None}
    log = train_digits_unet(args.out, dataclasses.replace(TrainConfig(), **changes), progress=not args.no_progress,
                            device=args.device, model=args.model)
    print(f"{args.model}: {log['config']['steps']} steps in {log['wall_s']:.0f} s, final loss "
          f"{log['final_loss']:.4f} (mean of the last {log['final_loss_window']} steps); saved to {args.out}")


def cmd_regress(args: argparse.Namespace) -> int:
    from dpmbench.report.regress import load_tolerances, regress

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


