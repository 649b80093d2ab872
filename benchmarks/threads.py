"""Does a run with ``--cores N`` ever keep more than N threads busy? (issue 15, item 6: no oversubscription)

    PYTHONPATH=. python benchmarks/threads.py [--cores 2] [--configfile config/regression.yaml] [--interval 0.02]

Runs ``snakemake --cores N`` on the config (a cold cache in a temporary directory, its own job server), and every
``--interval`` seconds reads ``/proc/<pid>/task/<tid>/stat`` of every process of the run (Snakemake, its shells and
job clients, the job server and the jobs it forks) and counts the threads in state R (running or runnable). It
also records each process's thread count, so a job that *creates* more threads than it was given shows even when
they are idle. Prints the distribution of busy threads per sample and the largest thread pool per command line.
On a shared machine, other processes' threads are not counted (only the run's process tree).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids[ppid].append(int(entry))
    return kids


def _tree(roots: list[int]) -> set[int]:
    kids, seen, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(kids.get(pid, ()))
    return seen


def _threads(pid: int) -> tuple[int, int, str]:
    """(threads in state R, all threads, command line) of one process."""
    running = total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += 1
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "R":
                    running += 1
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0, 0, ""
    return running, total, cmd


def _server_pids(directory: Path) -> list[int]:
    import json

    pids = []
    for p in directory.glob("*.stats.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.append(int(json.loads(p.read_text())["pid"]))
    return pids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default=str(ROOT / "config" / "regression.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.02)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dpmbench-threads-"))
    config = yaml.safe_load(Path(args.configfile).read_text())
    config.update(results_dir=str(work / "results"), report_dir=str(work / "reports"))
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "DPMBENCH_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT),
           "DPMBENCH_WORKER_DIR": str(work / "worker")}
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(work), "--configfile", str(work / "config.yaml"), "--cores", str(args.cores), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    busy_hist: collections.Counter[int] = collections.Counter()
    pools: dict[str, int] = {}
    samples = 0
    while proc.poll() is None:
        roots = [proc.pid, *_server_pids(work / "worker")]
        busy = 0
        for pid in _tree(roots):
            running, total, cmdline = _threads(pid)
            busy += running
            if " dpmbench" in cmdline or "snakemake" in cmdline:
                key = " ".join(cmdline.split()[2:5])[:60]
                pools[key] = max(pools.get(key, 0), total)
        busy_hist[busy] += 1
        samples += 1
        time.sleep(args.interval)
    if proc.returncode:
        sys.exit(f"snakemake failed: {proc.stderr.read()[-2000:]}")
    sys.path.insert(0, str(ROOT))
    from dpmbench.worker import stop_all

    stop_all(work / "worker")
    over = sum(c for b, c in busy_hist.items() if b > args.cores)
    print(f"config {args.configfile}, --cores {args.cores}: {samples} samples every {args.interval} s; "
          f"samples with more than {args.cores} busy threads: {over} ({over / max(samples, 1) * 100:.1f}%)\n")
    print("| busy threads | samples |\n|---|---|")
    for b in sorted(busy_hist):
        print(f"| {b} | {busy_hist[b]} |")
    print("\n| process (command) | largest thread count seen |\n|---|---|")
    for key, n in sorted(pools.items(), key=lambda kv: -kv[1]):
        print(f"| `{key}` | {n} |")


if __name__ == "__main__":
    main()
