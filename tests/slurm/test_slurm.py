"""The workflow through a real SLURM cluster and profiles/slurm: end to end (bit-identical to the local run) and the
scheduler's faults. Needs the single-node cluster of cluster/slurm-local: `make test-slurm` starts it, runs these
tests and stops it; `make test` deselects them (marker ``slurm``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from dpmbench.grid import npz_complete

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CLUSTER = str(ROOT / "cluster" / "slurm-local")
LIMIT_S = 600  # every Snakemake call runs under `timeout`
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
# faults: a tiny grid, 4 sample jobs (2 submissions of 2), a reference, grouped metrics, the report
FAULT_GRID = {
    "results_dir": "results", "report_dir": "reports", "seed": 0, "t_end": 0.001, "device": "cpu",
    "metrics": ["rmse_exact", "fd_true"], "nfe": [5], "schedules": ["logsnr"], "samples_per_shard": 16,
    "solvers": ["ddim", "dpm-solver++:order=2,method=multistep"],
    "models": {"gmm-2d": {"num_samples": 32, "guidance": ["none"]}},
}


def _env(wd: Path) -> dict[str, str]:
    return {**os.environ, "DPMBENCH_CACHE": str(wd / "cache"), "PYTHONPATH": str(ROOT)}


def _cmd(wd: Path, *args: str, slurm: bool = True) -> list[str]:
    where = ["--profile", str(ROOT / "profiles" / "slurm")] if slurm else ["--cores", "2"]
    return ["timeout", "-s", "INT", "-k", "30", str(LIMIT_S), SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(wd), "--configfile", str(wd / "config.yaml"), *where, *args]


def snakemake(wd: Path, *args: str, slurm: bool = True) -> subprocess.CompletedProcess[str]:
    """One Snakemake run (under `timeout`), its output kept in ``wd/run-<n>.log``."""
    proc = subprocess.run(_cmd(wd, *args, slurm=slurm), capture_output=True, text=True, env=_env(wd),
                          timeout=LIMIT_S + 60)
    n = len(list(wd.glob("run-*.log")))
    (wd / f"run-{n}.log").write_text(proc.stdout + proc.stderr)
    return proc


def start(wd: Path, *args: str) -> subprocess.Popen[str]:
    """A SLURM run in the background (under `timeout`); output in ``wd/bg.log``."""
    log = (wd / "bg.log").open("w")
    return subprocess.Popen(_cmd(wd, *args), stdout=log, stderr=subprocess.STDOUT, text=True, env=_env(wd))


def job_ids(text: str) -> list[int]:
    return [int(j) for j in SUBMITTED.findall(text)]


def job_logs(text: str, job: int) -> list[Path]:
    """The SLURM log files of ``job`` that a run's output names."""
    return [Path(p) for p in re.findall(r"log: (\S+?\.log)", text) if p.endswith(f"/{job}.log")]


def squeue(*args: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %P %T", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:-1]


def job_state(job: int) -> str:
    out = subprocess.run(["scontrol", "show", "job", str(job)], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"JobState=(\S+)", out)
    return m.group(1) if m else "GONE"


def wait_for(what: Callable[[], object], timeout: float, what_for: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = what()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what_for}")


def wait_queue_empty(timeout: float = 180) -> None:
    wait_for(lambda: not squeue(), timeout, "an empty queue")


def results_without_wall_times(wd: Path, report: str = "reports") -> bytes:
    """results.csv as bytes, without its timing columns (wall_s, s_per_sample: measured times, not results)."""
    rows = list(csv.reader((wd / report / "results.csv").open()))
    keep = [i for i, name in enumerate(rows[0]) if name not in ("wall_s", "s_per_sample")]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
    return buf.getvalue().encode()


def shards(wd: Path, results: str = "results") -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((wd / results).rglob("nfe*/*.npz")):
        with np.load(p) as f:
            out[str(p.relative_to(wd / results))] = f["x"]
    return out


def leftovers(wd: Path) -> list[Path]:
    """Partial files: atomic-write temporaries, merge directories, npz files cut short."""
    res = wd / "results"
    bad = [p for p in res.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".merge-")]
    return bad + [p for p in res.rglob("*.npz") if not npz_complete(p)]


def grid_dir(tmp_path_factory: pytest.TempPathFactory, name: str, grid: dict) -> Path:
    wd = tmp_path_factory.mktemp(name)
    (wd / "config.yaml").write_text(yaml.safe_dump(grid))
    return wd


def report(line: str) -> None:
    """A measured number of this suite, printed and appended to $DPMBENCH_SLURM_REPORT (make test-slurm)."""
    print(f"\nslurm: {line}")
    path = os.environ.get("DPMBENCH_SLURM_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """The cluster must be up (make test-slurm starts it): a missing cluster fails, it is not skipped."""
    assert shutil.which("sbatch"), "SLURM is not installed: run cluster/slurm-local start (make test-slurm does)"
    out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and re.search(r"\b(idle|mixed|allocated)\b", out.stdout), \
        f"no SLURM node available (run cluster/slurm-local start): {out.stdout}{out.stderr}"
    wait_queue_empty()


@pytest.fixture(scope="module")
def fault_expected(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, np.ndarray]]:
    """The fault grid run locally: what every faulted SLURM run must end with."""
    wd = grid_dir(tmp_path_factory, "fault-local", FAULT_GRID)
    proc = snakemake(wd, slurm=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results_without_wall_times(wd), shards(wd)


def assert_as_local(wd: Path, expected: tuple[bytes, dict[str, np.ndarray]]) -> None:
    table, arrays = expected
    assert results_without_wall_times(wd) == table
    got = shards(wd)
    assert got.keys() == arrays.keys()
    for k, v in arrays.items():
        assert np.array_equal(got[k], v), k
    assert not leftovers(wd)


def test_grid_through_slurm_is_bit_identical_to_the_local_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """config/slurm-ci.yaml (reference, AYS search, DC-Solver prepare, grouped sample/metrics jobs, report) locally
    and through profiles/slurm: the same results.csv (but its wall times) and bit-identical samples."""
    grid = yaml.safe_load((ROOT / "config" / "slurm-ci.yaml").read_text())
    grid.update(results_dir="results", report_dir="reports")
    local, slurm = grid_dir(tmp_path_factory, "ci-local", grid), grid_dir(tmp_path_factory, "ci-slurm", grid)
    t0 = time.monotonic()
    proc = snakemake(local, slurm=False)
    t_local = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    t0 = time.monotonic()
    proc = snakemake(slurm)
    t_slurm = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    ids = job_ids(out)
    # every rule but the local ones ran as a SLURM job, and SLURM says it completed
    assert len(ids) >= 6 and all(job_state(j) == "COMPLETED" for j in ids), [(j, job_state(j)) for j in ids]
    for rule in ("reference", "search", "prepare", "report"):
        assert f"rule_{rule}/" in out, rule
    assert "group_sample-gmm-2d" in out and "group_metrics-gmm-2d" in out
    assert results_without_wall_times(slurm) == results_without_wall_times(local)
    a, b = shards(local), shards(slurm)
    assert a.keys() == b.keys() and len(a) == 8  # 2 schedules x 2 solvers x 2 NFE
    assert all(np.array_equal(a[k], b[k]) for k in a)
    report(json.dumps({"grid": "config/slurm-ci.yaml", "slurm_jobs": len(ids), "slurm_wall_s": round(t_slurm, 1),
                       "local_wall_s": round(t_local, 1), "results_identical": True}))


def test_scancel_mid_run_then_rerun_incomplete(tmp_path_factory, fault_expected) -> None:
    """A running sample job cancelled by the scheduler: the run fails naming it, leaves no partial file, and the
    rerun (the profile's rerun-incomplete) completes with the local run's results."""
    wd = grid_dir(tmp_path_factory, "fault-scancel", FAULT_GRID)
    proc = start(wd, "--retries", "0")
    job = wait_for(lambda: [line.split()[0] for line in squeue("-t", "RUNNING", "-p", "gpu")], 180,
                   "a running sample job")[0]
    subprocess.run(["scancel", job], check=True, timeout=60)
    assert proc.wait(timeout=LIMIT_S + 60) != 0
    log = (wd / "bg.log").read_text()
    assert job_state(int(job)) == "CANCELLED"
    job_log = job_logs(log, int(job))  # the run names the failed submission's log, which says why
    assert job_log and "CANCELLED" in job_log[0].read_text(), log[-3000:]
    assert not leftovers(wd)
    wait_queue_empty()
    rerun = snakemake(wd)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_as_local(wd, fault_expected)
    again = len(job_ids(rerun.stdout + rerun.stderr))
    report(f"fault scancel: job {job} cancelled while running -> SLURM state CANCELLED, the run failed (exit "
           f"{proc.returncode}) naming the job's log, which says CANCELLED; no partial file; rerun completed with "
           f"{again} submissions, results identical to the local run")


def test_slurmd_stopped_while_jobs_are_queued(tmp_path_factory, fault_expected) -> None:
    """slurmd stopped while jobs are queued, started again 10 s later: the run completes (or, if it fails, a rerun
    does) with the local run's results."""
    wd = grid_dir(tmp_path_factory, "fault-slurmd", FAULT_GRID)
    proc = start(wd)
    wait_for(lambda: job_ids((wd / "bg.log").read_text()), 120, "a submission")
    subprocess.run([CLUSTER, "stop", "slurmd"], check=True, timeout=60)
    try:
        time.sleep(10)
        queued = squeue()
    finally:
        subprocess.run([CLUSTER, "start", "slurmd"], check=True, timeout=120)
    rc = proc.wait(timeout=LIMIT_S + 60)
    outcome = "the run completed" if rc == 0 else f"the run failed (exit {rc}), a rerun completed"
    if rc != 0:
        wait_queue_empty()
        rerun = snakemake(wd)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_as_local(wd, fault_expected)
    report(f"fault slurmd: stopped 10 s with {len(queued)} job(s) in the queue, restarted -> {outcome}; "
           "results identical to the local run")


def test_job_over_its_memory_is_killed_and_reported(tmp_path_factory) -> None:
    """Sample jobs asking for 100 MB (the Python process needs several times that): SLURM kills them (here, without
    cgroups, by its memory accounting: state FAILED, signal 9; with cgroups: OUT_OF_MEMORY), the run fails naming
    the SLURM job and its log, the log says why, and no shard (partial or not) exists."""
    grid = {**FAULT_GRID, "resources": {"sample": {"mem_mb": 100}}}
    wd = grid_dir(tmp_path_factory, "fault-mem", grid)
    proc = snakemake(wd, "--retries", "0")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    states = {j: job_state(j) for j in job_ids(out)}
    killed = [j for j, st in states.items() if st in ("OUT_OF_MEMORY", "FAILED")]
    assert killed, states
    logs = job_logs(out, killed[0])
    assert logs and "exceeded memory limit" in logs[0].read_text(), out[-3000:]
    assert f"SLURM-job '{killed[0]}'" in out or str(killed[0]) in out
    assert not list((wd / "results").rglob("nfe*/*.npz")) and not leftovers(wd)
    reason = re.search(r"exceeded memory limit \([^)]*\)", logs[0].read_text()).group(0)
    report(f"fault mem_mb: sample jobs with mem_mb=100 -> SLURM state {states[killed[0]]} (job {killed[0]}), "
           f"run failed (exit {proc.returncode}) naming the job and its log, which says '{reason}'; no shard written")


def test_driver_killed_then_rerun_recomputes_nothing_finished(tmp_path_factory, fault_expected) -> None:
    """The Snakemake driver SIGKILLed once the first sample submission finished: the submitted jobs finish on their
    own; after `--unlock`, the rerun submits only what had not finished and leaves finished files untouched."""
    wd = grid_dir(tmp_path_factory, "fault-kill", FAULT_GRID)
    proc = start(wd)
    wait_for(lambda: len(list((wd / "results").rglob("nfe*/*.npz"))) >= 2, 300, "a finished sample submission")
    finished = sorted(str(p.relative_to(wd)) for p in (wd / "results").rglob("nfe*/*.npz"))  # before the kill
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert children, "snakemake is not running under timeout"
    os.kill(int(children[0]), signal.SIGKILL)  # the driver itself, not its `timeout` wrapper
    proc.wait(timeout=60)
    first = job_ids((wd / "bg.log").read_text())
    wait_queue_empty()
    assert snakemake(wd, "--unlock").returncode == 0
    rerun = snakemake(wd)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    again = job_ids(out)
    assert_as_local(wd, fault_expected)
    redone = [f for line in out.splitlines() if "output: " in line  # the rerun's sample jobs
              for f in re.findall(r"results/[^\s,]+/nfe\d+/\d+-\d+\.npz", line)]
    assert not set(redone) & set(finished), redone  # finished cells were not recomputed
    assert len(again) < 5
    report(f"fault driver SIGKILL: killed after {len(first)} submission(s) with {len(finished)} of 4 shards "
           f"finished; rerun submitted {len(again)} job(s) (a full run: 5), recomputed {len(redone)} shard(s), "
           "none of the finished ones"
           "; results identical to the local run")
