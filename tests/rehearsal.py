"""Dress rehearsal of the paper reproductions (``make rehearse``): every ``config/reproductions/*.yaml`` runs through
the real workflow on stand-in checkpoints (``tests/standins.py``: random weights in the checkpoints' file formats),
pulled from a local HTTP server with their sha256 pinned, with a stand-in Inception and stand-in reference
statistics, two samples per cell; then ``dpmbench report`` over every results directory writes
``paper_comparison.md``, and the published numbers are checked against the cells.

Each config is run unchanged but for one overlay (written to ``WORK/overlays/<config>.yaml``): ``device: cpu``,
``samples_per_shard: 2``, ``fit_samples_max: 64`` (DPM-Solver-v3's EMS from at most 64 trajectories, on the config's
grids), ``threads: 1`` for every stage the config gives resources, per model ``num_samples: 2`` and, where the
config names FID statistics, the stand-in statistics file, and a ``checkpoints:`` section pointing every checkpoint
at its stand-in. A model that no stand-in can represent (``EXCLUDED``: no adapter loads its kind of checkpoint) is
left out of its config's run, and its published numbers are listed with that reason.

Fails (exit 1) when a config cell has no published number (an entry or an unpinned row of ``papers/*.yaml`` with
the same model, solver, metric and NFE, and the same schedule and guidance where the number states them), when a
published number has neither a result of a config cell nor a reason (``not_in_config``, a solver dpmbench does not
implement, an unpinned row's ``why``, an excluded model), or when a workflow run fails. Prints per paper: published
numbers, cells run, numbers matched, and the exclusions with their reasons.

    python tests/rehearsal.py [--work DIR] [--cores N] [--only NAME ...] [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import yaml  # noqa: E402
from standins import (  # noqa: E402
    build_ldm_dir,
    build_sd_dir,
    edm_nets,
    files_of,
    forget_edm_module,
    random_inception,
    write_edm_code,
    write_edm_pickle,
    write_guided_diffusion_code,
    write_guided_diffusion_standin,
    write_reference_stats,
    write_score_sde_checkpoint,
    write_score_sde_code,
)
from support import local_http_server  # noqa: E402

CONFIGS = ROOT / "config" / "reproductions"
PAPERS = ROOT / "papers"
SAMPLES = 2
# Every fit's sample count capped (config fit_samples_max): DPM-Solver-v3's EMS of the paper config (1024-4096
# trajectories x 120-1200 grid points per model, guidance and end time) would take hours of CPU on the stand-ins;
# at 64 trajectories each fit still runs on the config's grid and the specs sharing a grid share one fit.
FIT_SAMPLES = 64
REVISION = "rehearsal"
# Checkpoints no stand-in can stand for: nothing in dpmbench loads their kind of file, so their config cells cannot
# run on any checkpoint (a gap of the product, reported by the rehearsal, not hidden by it).
EXCLUDED: dict[str, str] = {}
# Every other checkpoint the configs name: how its stand-in is built. EDM pickles keep the real resolution and
# label count; the diffusers folders are shrunk to 16 px (their config.json fields allow it).
EDM = {  # id: (file name of the real pickle, resolution, label_dim, VP attributes)
    "edm-cifar10-uncond-vp": ("edm-cifar10-32x32-uncond-vp.pkl", 32, 0, True),
    "edm-cifar10-cond-vp": ("edm-cifar10-32x32-cond-vp.pkl", 32, 10, True),
    "edm-ffhq64-uncond-vp": ("edm-ffhq-64x64-uncond-vp.pkl", 64, 0, True),
    "edm-afhqv2-64-uncond-vp": ("edm-afhqv2-64x64-uncond-vp.pkl", 64, 0, True),
    "edm-imagenet64-cond-adm": ("edm-imagenet-64x64-cond-adm.pkl", 64, 1000, False),
}
SCORE_SDE = {"scoresde-cifar10-ddpmpp-deep-continuous": ("vp/cifar10_ddpmpp_deep_continuous", 32)}
DIFFUSERS = {  # id: (adapter, Hugging Face repo of the real checkpoint or of the stand-in, options)
    "ldm-lsun-bedroom256": ("latent-diffusion", "rehearsal/ldm-lsun-bedroom256", {"unet": "unet", "vqvae": "vqvae"}),
    "sd14": ("stable-diffusion", "CompVis/stable-diffusion-v1-4", {}),
}
SHRUNK_PX = 16
# guided-diffusion (ADM + classifier) checkpoints: the stand-in checkout's tiny networks (tests/standins.py says why not
# the real ones) from the real entry's flags, shrunk to 16 px and 8 channels; the rest of the flags (fp16, learned
# variance, class conditioning, schedule) as the real entry's
GUIDED_DIFFUSION = {"adm-imagenet256-classifier-guided"}
GD_SHRUNK = {"image_size": SHRUNK_PX, "num_channels": 8}
# Config cells that have no published number of their own, and why (from the configs' comments): (model, solver
# family, options the cell's canonical spec contains (comma-separated, each exactly) or "", NFE or None, reason).
# Printed with the results.
UNPUBLISHED = [
    (m, "unipc", "variant=bh2", None, "DPM-Solver-v3 reports the better of UniPC's B1(h) and B2(h) at each NFE "
     "(Sec. 4.1): both run, the number names one spec (config/reproductions/dpm-solver-v3.yaml)")
    for m in ("scoresde-cifar10-ddpmpp-deep-continuous", "edm-cifar10-uncond-vp", "ldm-lsun-bedroom256")
] + [
    ("sd14", "dpm-solver-v3", "corrector_half=low-noise", None, "DPM-Solver-v3 reports the better of the half and "
     "the full corrector at s = 7.5 (Sec. 4.1): both run, the number names one spec"),
    ("scoresde-cifar10-ddpmpp-deep-continuous", "ddim", "", 25, "DPM-Solver-v3's Table 9 (DDIM) has no NFE-25 "
     "column; NFE 25 is in the model's list for Tables 1 and 12"),
] + [
    ("scoresde-cifar10-ddpmpp-deep-continuous", "dpm-solver-v3", opt, 25, "DPM-Solver-v3's Tables 8 (EMS sizes) and 9 "
     "(DPM-Solver-v3-1) have no NFE-25 column; NFE 25 is in the model's list for Tables 1 and 12")
    for opt in ("ems_samples=512,ems_steps=1200", "ems_samples=1024,ems_steps=1200", "ems_samples=4096,ems_steps=120",
                "ems_samples=4096,ems_steps=250", "order=1,corrector=false,ems_samples=4096,ems_steps=1200")
] + [
    ("adm-imagenet256-classifier-guided", "dpm-solver++", "thresholding=true", 20, "DPM-Solver++'s guided "
     "ImageNet-256 example setting, published without a number (docs/papers.md)"),
]


# -- stand-ins -----------------------------------------------------------------------------------------------------
def _named(cid: str) -> dict[str, Any]:
    """The entry of ``cid`` in config/checkpoints.yaml (a pinned or a named-only entry)."""
    doc = yaml.safe_load((ROOT / "config" / "checkpoints.yaml").read_text())
    return dict(doc["checkpoints"].get(cid) or {})


def _entry(cid: str, adapter: str, source: dict[str, Any], files: list[dict[str, Any]], resolution: int,
           **kw: Any) -> dict[str, Any]:
    """The overlay's manifest entry of a stand-in: the real entry's schedule, parameterization, conditioning and
    options where it has them, the stand-in's source, files (sha256 and size) and resolution."""
    real = _named(cid)
    entry = {"adapter": adapter, "source": source, "files": files, "license": "stand-in (random weights)",
             "schedule": real.get("schedule"), "parameterization": real.get("parameterization"),
             "resolution": resolution, "conditioning": real.get("conditioning", "none"),
             "options": dict(real.get("options") or {}), "notes": "dress-rehearsal stand-in (tests/standins.py)"}
    entry.update(kw)
    if entry["conditioning"] == "class" and "num_classes" not in entry:
        entry["num_classes"] = real.get("num_classes")
    return entry


def build_standins(work: Path, models: set[str], server: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Build the stand-ins of ``models`` under ``work/serve`` (the server's folder) and return the overlay's
    ``checkpoints`` entries and the environment the loaders need (the EDM and score_sde checkouts)."""
    serve, entries = work / "serve", {}
    env = {"DPMBENCH_EDM_CODE": str(write_edm_code(work / "code" / "edm"))}
    for cid in sorted(models & set(EDM)):
        name, res, labels, vp = EDM[cid]
        spec: dict[str, Any] = {"img_resolution": res, "label_dim": labels}
        spec.update({"beta_d": 19.9, "beta_min": 0.1} if vp else {"sigma_min": 0.0, "sigma_max": float("inf")})
        (net,) = edm_nets(Path(env["DPMBENCH_EDM_CODE"]), spec)
        folder = serve / "url" / cid
        write_edm_pickle(folder / name, net, loss_fn=None, augment_pipe=None, dataset_kwargs={})
        forget_edm_module()
        extra = {"num_classes": labels} if labels else {}
        entries[cid] = _entry(cid, "edm-pickle", {"url": f"{server}/url/{cid}/{name}"}, files_of(folder), res,
                              **extra)
    for cid in sorted(models & set(SCORE_SDE)):
        config, res = SCORE_SDE[cid]
        code = write_score_sde_code(work / "code" / "score_sde_pytorch", config, res)
        env["DPMBENCH_SCORE_SDE_CODE"] = str(code)
        folder = serve / "url" / cid
        write_score_sde_checkpoint(code, folder / "checkpoint_8.pth", config)
        entries[cid] = _entry(cid, "score-sde", {"url": f"{server}/url/{cid}/checkpoint_8.pth"}, files_of(folder),
                              res)
    for cid in sorted(models & GUIDED_DIFFUSION):
        code = write_guided_diffusion_code(work / "code" / "guided-diffusion")
        env["DPMBENCH_GUIDED_DIFFUSION_CODE"] = str(code)
        real = dict(_named(cid).get("options") or {})
        opts = {**real, "model_flags": {**real["model_flags"], **GD_SHRUNK},
                "classifier_flags": {**real.get("classifier_flags", {}), "classifier_width": 8}}
        folder = serve / "url" / cid
        write_guided_diffusion_standin(code, folder, opts["model_flags"], opts["classifier_flags"],
                                       (opts["model_file"], opts["classifier_file"]))
        entries[cid] = _entry(cid, "guided-diffusion", {"url": f"{server}/url/{cid}/"}, files_of(folder), SHRUNK_PX,
                              options=opts)
    for cid in sorted(models & set(DIFFUSERS)):
        adapter, repo, opts = DIFFUSERS[cid]
        folder = serve / repo / "resolve" / REVISION
        if adapter == "stable-diffusion":
            build_sd_dir(folder, SHRUNK_PX)
        else:
            build_ldm_dir(folder, SHRUNK_PX)
        entries[cid] = _entry(cid, adapter, {"hf": repo, "revision": REVISION}, files_of(folder), SHRUNK_PX,
                              options=opts)
    unknown = models - set(EDM) - set(SCORE_SDE) - set(DIFFUSERS) - GUIDED_DIFFUSION - set(EXCLUDED)
    if unknown:
        raise SystemExit(f"rehearsal: no stand-in for checkpoint(s) {sorted(unknown)}: add one to tests/rehearsal.py")
    return entries, env


def write_captions(work: Path, n: int = 1100) -> None:
    """Stand-in MS-COCO captions (``annotations`` of captions_val2014.json) where the configs name that file: as
    many as the largest EMS of a text model needs (ems_samples=1024)."""
    path = work / "data" / "coco" / "captions_val2014.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"annotations": [{"id": i, "image_id": i, "caption": f"a photo of a cat {i}"}
                                                for i in range(n)]}))


# -- configs -------------------------------------------------------------------------------------------------------
def overlay(config: dict[str, Any], entries: dict[str, Any], stats: str) -> dict[str, Any]:
    """The one overlay of a config: CPU, two samples per cell, capped fits, one thread per job, stand-in statistics
    and checkpoints."""
    models = {}
    for m, mc in (config.get("models") or {}).items():
        if m in EXCLUDED:
            continue
        models[m] = {"num_samples": SAMPLES, **({"reference_stats": stats} if "reference_stats" in mc else {})}
    out = {"device": "cpu", "samples_per_shard": SAMPLES, "fit_samples_max": FIT_SAMPLES, "models": models,
           "checkpoints": {m: entries[m] for m in models if m in entries}}
    if config.get("resources"):  # one thread per job: two jobs share the 2 cores (a config's 4 took both, one job
        out["resources"] = {stage: {"threads": 1} for stage in config["resources"]}  # at a time); mem, gpu kept
    return out


def merged(config: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``over`` merged in (mappings recursively, as Snakemake merges config files), without the
    excluded models."""
    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, **{k: merge(a.get(k), v) for k, v in b.items()}}
        return b

    out = merge(config, over)
    out["models"] = {m: mc for m, mc in out["models"].items() if m not in EXCLUDED}
    return out


def run_config(name: str, cfg: Path, work: Path, cores: int, env: dict[str, str]) -> tuple[int, float, str]:
    """One Snakemake run of a merged config in ``work``: (exit code, wall seconds, the end of its stderr)."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(work),
           "--cores", str(cores), "--scheduler", "greedy", "--quiet", "--rerun-incomplete", "--configfile", str(cfg)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"rehearsal-{name}.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, time.monotonic() - t0, proc.stderr[-3000:]


# -- the check -----------------------------------------------------------------------------------------------------
def _papers() -> list[tuple[str, str, dict[str, Any], str]]:
    """Every published number: (file, paper, row, kind) with kind ``entry`` or ``unpinned``."""
    rows = []
    for path in sorted(PAPERS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict) or "paper" not in doc:
            continue
        for kind in ("entries", "unpinned"):
            rows += [(path.name, str(doc["paper"]), e, kind[:-1] if kind == "entries" else kind)
                     for e in doc.get(kind) or []]
    return rows


def _publishes(e: dict[str, Any], key: tuple, canonical: Any, gkey: Any) -> bool:
    """Whether the published number ``e`` (entry or unpinned row) is one of config cell ``key``'s: same model,
    metric, NFE and canonical solver, and the same schedule and guidance where ``e`` states them."""
    model, spec, metric, nfe, schedule, guidance = key
    if (e["model"], e["metric"], int(e["nfe"])) != (model, metric, nfe):
        return False
    if ("schedule" in e and str(e["schedule"]) != schedule) or ("guidance" in e and gkey(e["guidance"]) != guidance):
        return False
    return canonical(str(e["solver"])) == spec


def check(work: Path, ran: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The rehearsal's verdict over every paper config, of which ``ran`` were run: (failures, per-paper rows of the
    printed table). A number whose cells are all in configs not run is excluded, naming them."""
    import pandas as pd

    from dpmbench.catalogue import canonical_spec, section
    from dpmbench.grid import build_grid, guidance_key
    from dpmbench.report.coverage import cell_for
    from dpmbench.report.papers import canonical_solvers, match_entry

    papers = _papers()
    implemented = {f["name"] for f in section("solvers")["families"]}
    failures: list[str] = []
    # every cell of every (unchanged) paper config, and the published numbers it reproduces
    cells: dict[tuple, set] = {}
    by_config: dict[str, dict[tuple, set]] = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        grid = build_grid(yaml.safe_load(path.read_text()))
        own = by_config.setdefault(path.stem, {})
        for c in grid.cells():
            spec = canonical_spec(grid.spec(c["solver"], c["model"], [c["nfe"]]))
            for metric in grid.metrics(c["model"]):
                key = (c["model"], spec, metric, c["nfe"], c["schedule"], c["guidance"])
                protocol = (grid.t_end_of(c["model"], [c["nfe"]]), grid.num_samples(c["model"]))
                cells.setdefault(key, set()).add(protocol)
                own.setdefault(key, set()).add(protocol)
    published = [e for _, _, e, _ in papers if str(e["solver"]).split(":")[0] in implemented]
    unpublished: Counter = Counter()
    for key in sorted(cells, key=str):
        if not any(_publishes(e, key, canonical_spec, guidance_key) for e in published):
            model, spec, metric, nfe, schedule, guidance = key
            family, _, options = spec.partition(":")
            why = next((r for m, fam, opt, n, r in UNPUBLISHED if m == model and family == fam
                        and set(filter(None, opt.split(","))) <= set(options.split(",")) and n in (None, nfe)), None)
            if why:
                unpublished[why] += 1
                continue
            failures.append(f"config cell without a published number: {model} {spec} {metric} NFE {nfe} "
                            f"{schedule} guidance {guidance}")
    merged_csv = work / "reports" / "rehearsal" / "results.csv"
    df = pd.read_csv(merged_csv) if merged_csv.is_file() else pd.DataFrame()
    canon, models = canonical_solvers(df), set(df["model"]) if not df.empty else set()
    table: dict[str, dict[str, Any]] = {}
    for file, paper, e, kind in papers:
        row = table.setdefault(file, {"paper": paper, "published": 0, "cells": set(), "matched": 0,
                                      "excluded": Counter()})
        row["published"] += 1
        if kind == "unpinned":
            row["excluded"][f"unpinned: {str(e.get('why', 'setting not stated'))[:90]}"] += 1
            continue
        solver = str(e["solver"]).split(":")[0]
        has_cell = solver in implemented and cell_for(e, cells)
        if has_cell:
            sel, why = match_entry(df, e, canon, models)
            if not sel.empty:
                row["matched"] += 1
                row["cells"].update(map(tuple, sel[["model", "solver", "nfe", "schedule", "guidance"]].values))
            elif e["model"] in EXCLUDED:
                row["excluded"][f"{e['model']}: {EXCLUDED[e['model']]}"] += 1
            elif not any(cell_for(e, by_config[n]) for n in ran):
                holders = ", ".join(n for n, own in by_config.items() if cell_for(e, own))
                row["excluded"][f"its config not run here (--skip): {holders}"] += 1
            else:
                failures.append(f"{file}: published {e['model']} {e['solver']} NFE {e['nfe']} {e['metric']} has a "
                                f"config cell but no result ({why})")
        elif solver not in implemented:
            row["excluded"][f"no dpmbench solver {solver!r}"] += 1
        elif e.get("not_in_config"):
            row["excluded"][f"not_in_config: {str(e['not_in_config'])[:90]}"] += 1
        else:
            failures.append(f"{file}: published {e['model']} {e['solver']} NFE {e['nfe']} {e['metric']} has no "
                            "config cell and no reason (not_in_config)")
    rows = [{**r, "file": f, "cells": len(r["cells"])} for f, r in table.items()]
    rows.append({"file": "(config cells without a published number)", "unpublished": unpublished})
    comparison = work / "reports" / "rehearsal" / "paper_comparison.md"
    if not comparison.is_file():
        failures.append(f"{comparison} was not written")
    return failures, rows


def print_table(rows: list[dict[str, Any]], runs: list[tuple[str, int, float, str]]) -> None:
    """The per-paper summary and the per-config runs."""
    print("\n## Dress rehearsal: published numbers and the cells that reproduce them\n")
    print("| papers file | published numbers | cells run | matched | excluded |")
    print("|---|---|---|---|---|")
    papers, unpublished = rows[:-1], rows[-1]["unpublished"]
    for r in papers:
        print(f"| {r['file']} | {r['published']} | {r['cells']} | {r['matched']} | {sum(r['excluded'].values())} |")
    for r in papers:
        if r["excluded"]:
            print(f"\n{r['file']} ({r['paper']}), exclusions:")
            for why, n in r["excluded"].most_common():
                print(f"  {n:4d}  {why}")
    print(f"\nconfig cells without a published number, with their reason: {sum(unpublished.values())}")
    for why, n in unpublished.most_common():
        print(f"  {n:4d}  {why}")
    print("\n| config | exit | wall s | models excluded |")
    print("|---|---|---|---|")
    for name, code, wall, excluded in runs:
        print(f"| {name} | {code} | {wall:.0f} | {excluded or '-'} |")


def main(argv: list[str] | None = None) -> int:
    """Build the stand-ins, run every paper config with its overlay, report, check; 0 when everything holds."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "reports" / "rehearsal-run"),
                    help="working directory (results, reports, stand-ins); emptied first")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", nargs="*", default=None, help="config names (default: every config/reproductions/*)")
    ap.add_argument("--skip", nargs="*", default=[], help="config names not to run (their numbers are listed as "
                    "excluded, naming them)")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "overlays").mkdir(parents=True)
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    unknown = sorted((set(args.only or []) | set(args.skip)) - set(names))
    if unknown:
        raise SystemExit(f"rehearsal: unknown config(s) {unknown}; allowed: {', '.join(names)}")
    names = [n for n in names if (args.only is None or n in args.only) and n not in args.skip]
    configs = {n: yaml.safe_load((CONFIGS / f"{n}.yaml").read_text()) for n in names}
    t0 = time.monotonic()
    handler = _handler(work / "serve")
    with local_http_server(handler) as server:
        models = {m for c in configs.values() for m in c.get("models") or {}}
        entries, env_extra = build_standins(work, models, server)
        weights = random_inception(work / "weights" / "inception-standin.pth")
        stats = str(write_reference_stats(work / "weights" / "reference-stats-standin.npz", weights))
        write_captions(work)
        env = {**os.environ, **env_extra, "DPMBENCH_CACHE": str(work / "cache"), "DPMBENCH_HF_ENDPOINT": server,
               "DPMBENCH_INCEPTION_WEIGHTS": weights,
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        env.pop("DPMBENCH_OFFLINE", None)
        print(f"rehearsal: stand-ins built in {time.monotonic() - t0:.0f} s ({len(entries)} checkpoints)", flush=True)
        runs, results_dirs = [], []
        for name in names:
            over = overlay(configs[name], entries, stats)
            (work / "overlays" / f"{name}.yaml").write_text(yaml.safe_dump(over, sort_keys=False))
            excluded = ", ".join(sorted(set(configs[name].get("models") or {}) & set(EXCLUDED)))
            cfg = merged(configs[name], over)
            if not cfg["models"]:
                runs.append((name, 0, 0.0, excluded + " (nothing left to run)"))
                continue
            path = work / "overlays" / f"{name}.merged.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            code, wall, err = run_config(name, path, work, args.cores, env)
            runs.append((name, code, wall, excluded))
            print(f"rehearsal: {name}: exit {code} in {wall:.0f} s", flush=True)
            if code:
                print(err, file=sys.stderr)
            if cfg["results_dir"] not in results_dirs:
                results_dirs.append(cfg["results_dir"])
    report = [str(Path(sys.executable).parent / "dpmbench"), "report", *[str(work / d) for d in results_dirs],
              "--out", str(work / "reports" / "rehearsal"), "--papers", str(PAPERS)]
    proc = subprocess.run(report, capture_output=True, text=True, env=env, cwd=work)
    failures = [f"dpmbench report failed: {proc.stderr[-2000:]}"] if proc.returncode else []
    failures += [f"workflow run {n} failed (exit {c}; log {work}/logs/rehearsal-{n}.log)" for n, c, _, _ in runs if c]
    more, rows = check(work, names)
    failures += more
    print_table(rows, runs)
    print(f"\nrehearsal: {len(names)} configs in {time.monotonic() - t0:.0f} s; paper comparison: "
          f"{work / 'reports' / 'rehearsal' / 'paper_comparison.md'}")
    for f in failures:
        print(f"rehearsal: FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


def _handler(folder: Path) -> type:
    """A handler serving ``folder``'s files (the stand-ins' Hugging Face-style and URL paths), quietly."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    return functools.partial(Quiet, directory=str(folder))  # type: ignore[return-value]


if __name__ == "__main__":
    sys.exit(main())
