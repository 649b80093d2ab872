"""End-to-end wall time of the benchmark workflow and where it goes: the jobs' own work (sampling, metrics, exact
references, as recorded in the files they write) against Snakemake's total wall time x cores.

    PYTHONPATH=. python benchmarks/e2e.py [--quick] [--cores N] [--configfile config/default.yaml] [--keep]
                                          [--root CHECKOUT]

Runs ``snakemake --cores N`` on the config (its results/report directories redirected into a temporary directory,
with an empty $DPMBENCH_CACHE: a cold run, exact solutions included), then reads every metrics JSON (``wall_s``:
the sampling time of its cell, summed over shards; ``eval_wall_s``: the metric computation) and every reference
file (``wall_s``) and prepare file (``wall_s``), and the CPU time (user + sys) of the whole run: Snakemake and its
job processes, plus the warm job server (dpmbench/worker.py) and the jobs it forked, which are not Snakemake's
children (the server runs in a private ``DPMBENCH_WORKER_DIR`` and is stopped at the end, so its statistics are
final). On a shared machine, wall x cores counts time spent waiting for a core, CPU time does not. ``--root``
runs the Snakefile and package of another checkout (e.g. a ``git worktree`` of an older commit) on the same
config, for before/after comparisons made one right after the other. ``--quick`` runs a subset of the default
grid (gmm-2d and gmm-digits, 6 solvers, NFE 5/10/20, 500 samples) for machines where the full default takes too
long. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICK = {
    "seed": 0, "t_end": 0.001, "device": "cpu", "samples_per_shard": 500,
    "metrics": ["rmse_exact", "fd_true"], "nfe": [5, 10, 20], "schedules": ["logsnr"],
    "solvers": ["ddim", "heun", "dpm-solver:order=3", "dpm-solver++:order=2,method=multistep",
                "unipc:variant=bh1,order=2", "ddpm"],
    "models": {"gmm-2d": {"num_samples": 500, "guidance": ["none", 7.5]},
               "gmm-digits": {"num_samples": 500, "guidance": ["none"]}},
}


def job_counts(log: str) -> dict[str, int]:
    """Jobs per rule from Snakemake's 'Job stats' table."""
    counts: dict[str, int] = {}
    if "Job stats:" not in log:
        return counts
    for line in log.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def import_time(root: Path) -> float:
    """Seconds a new Python process spends starting and importing what a sample job imports."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, numpy, dpmbench.cli, dpmbench.sampling, dpmbench.solvers"],
                   check=True, env={**os.environ, "PYTHONPATH": str(root)})
    return time.perf_counter() - t0


def stop_servers(directory: Path) -> list[dict]:
    """Stop the job servers the run started (none for code without one); their final statistics."""
    if not directory.is_dir():
        return []
    sys.path.insert(0, str(ROOT))
    from dpmbench.worker import stop_all

    return stop_all(directory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default=str(ROOT / "config" / "default.yaml"))
    ap.add_argument("--quick", action="store_true", help="a subset of the default grid (see the module doc)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--root", default=str(ROOT), help="checkout whose Snakefile and package run (default: this one)")
    ap.add_argument("--scheduler", default="greedy", choices=["greedy", "ilp"],
                    help="Snakemake's job scheduler (greedy: what `make bench` uses)")
    args = ap.parse_args()
    config = dict(QUICK) if args.quick else yaml.safe_load(Path(args.configfile).read_text())
    work = Path(tempfile.mkdtemp(prefix="dpmbench-e2e-"))
    config.update(results_dir=str(work / "results"), report_dir=str(work / "reports"))
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    root = Path(args.root).resolve()
    env = {**os.environ, "DPMBENCH_CACHE": str(work / "cache"), "PYTHONPATH": str(root),
           "DPMBENCH_WORKER_DIR": str(work / "worker")}
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(root / "Snakefile"),
           "--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", str(args.cores),
           "--scheduler", args.scheduler]
    load0 = f"{os.getloadavg()[0]:.2f}"
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, ru1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)  # every job process, Snakemake included
    servers = stop_servers(work / "worker")
    server_cpu = sum(s["server_cpu_s"] for s in servers)
    forked_cpu = sum(s["job_cpu_s"] for s in servers)
    cpu += server_cpu + forked_cpu
    if proc.returncode:
        sys.exit(f"snakemake failed:\n{proc.stderr[-3000:]}")
    t0 = time.perf_counter()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    noop = time.perf_counter() - t0
    assert "Nothing to be done" in again.stdout + again.stderr
    jobs = job_counts(proc.stdout + proc.stderr)
    sample_s = eval_s = prep_s = 0.0
    for p in (work / "results").rglob("*.json"):  # metrics files, and the prepare jobs' records
        rec = json.loads(p.read_text())
        if isinstance(rec, dict) and "metrics" in rec:
            sample_s += float(rec.get("wall_s") or 0.0)
            eval_s += float(rec.get("eval_wall_s") or 0.0)
        elif isinstance(rec, dict) and "prepared" in rec:
            prep_s += float(rec.get("wall_s") or 0.0)
    ref_s = 0.0
    for p in (work / "results").rglob("reference.npz"):
        with np.load(p) as f:
            ref_s += float(f["wall_s"])
    work_s = sample_s + eval_s + ref_s + prep_s
    per_job = import_time(root)
    njobs = sum(v for k, v in jobs.items() if k != "total")
    print(f"code: {root}; config: {'--quick subset of config/default.yaml' if args.quick else args.configfile}; "
          f"{njobs} jobs ({', '.join(f'{k} {v}' for k, v in jobs.items() if k not in ('total', 'all'))}); "
          f"--cores {args.cores}\n")
    by_cmd: dict[str, list[float]] = {}
    for st in servers:
        for name, v in st.get("by_command", {}).items():
            acc = by_cmd.setdefault(name, [0, 0.0])
            acc[0] += v["jobs"]
            acc[1] += v["cpu_s"]
    print(f"load average before / after: {load0} / {os.getloadavg()[0]:.2f}\n")
    print(f"**in-job work (timers) / CPU time of the run: {work_s / cpu * 100:.1f}%**"
          + (f"; CPU of the forked jobs other than the report / CPU time of the run: "
             f"{(forked_cpu - by_cmd.get('dpmbench report', [0, 0.0])[1]) / cpu * 100:.1f}%" if servers else "")
          + "\n")
    print("| quantity | seconds | share of wall x cores |")
    print("|---|---|---|")
    cap = wall * args.cores
    rows = [("total wall time (snakemake, cold cache)", wall), ("wall time x cores", cap),
            ("sampling (sum of shard wall_s)", sample_s), ("metrics computation (sum of eval_wall_s)", eval_s),
            ("exact references (sum of reference wall_s)", ref_s),
            ("prepare (sum of prepare wall_s)", prep_s), ("all in-job work (timers)", work_s),
            ("CPU time (user + sys) of Snakemake, all its jobs and the job server", cpu)]
    if servers:
        rows += [("of which the job server's start-up and imports (once)", server_cpu)]
        rows += [(f"of which {int(n)} forked `{name}` jobs", c) for name, (n, c) in sorted(by_cmd.items())]
        rows += [("of which Snakemake, the shells and the job clients", cpu - server_cpu - forked_cpu)]
    else:
        rows += [(f"of which process start + imports, measured once ({per_job:.2f} s) x {njobs} jobs",
                  per_job * njobs)]
    rows += [("everything but in-job work (wall x cores - work)", cap - work_s),
             ("second run (nothing to be done)", noop)]
    for name, sec in rows:
        print(f"| {name} | {sec:.1f} | {sec / cap * 100:.1f}% |")
    if args.keep:
        print(f"\nkept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
