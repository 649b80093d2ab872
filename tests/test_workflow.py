"""The Snakemake workflow on a tiny grid, through Snakemake's command line (the stable interface).

One full run (module fixture), then: nothing to do, one shard deleted, the Snakemake report, a solver added;
separately a run killed mid-way and restarted, and bad configs that must fail before any job.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import TIMINGS, run_snakemake, shared_registry_cache, workflow_pythonpath

ROOT = Path(__file__).parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SOLVERS = ["ddim", "dpm-solver++:order=2,method=multistep"]
TINY = {
    "results_dir": "results", "report_dir": "reports", "seed": 0, "t_end": 0.001, "device": "cpu",
    "metrics": ["rmse_exact", "fd_true"], "nfe": [3, 5], "schedules": ["logsnr"], "samples_per_shard": 20,
    "solvers": SOLVERS,
    "models": {"gmm-2d": {"num_samples": 40, "guidance": [2.0]}},
}
CELL = "results/gmm-2d/g2.0/seed0/logsnr"
DDIM, DPMPP = f"{CELL}/ddim", f"{CELL}/dpm-solver++__order-2_method-multistep"


def _env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "DPMBENCH_CACHE": shared_registry_cache(workdir / "cache"),
            "PYTHONPATH": workflow_pythonpath(ROOT)}


def _cmd(workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``snakemake`` with these arguments (tests/warm_snakemake.py: Snakemake's command line in a warm process)."""
    return run_snakemake(_cmd(workdir, *args)[1:], _env(workdir), timeout=900)


def planned_jobs(workdir: Path) -> dict[str, int]:
    """Jobs a dry run would execute, per rule."""
    proc = snakemake(workdir, "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    if "Nothing to be done" in out:
        return {}
    counts: dict[str, int] = {}
    for line in out.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}


def leftovers(workdir: Path) -> list[Path]:
    """Temporary or partial files: atomic-write temporaries and merge directories."""
    return [p for p in workdir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".merge-")]


def table(path: Path) -> list[dict[str, str]]:
    """results.csv rows without the wall times (which differ between runs)."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(path.open())]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("wf")
    (wd / "config.yaml").write_text(yaml.safe_dump(TINY))
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd


def test_full_run_produces_reports(workdir: Path) -> None:
    rep = workdir / "reports"
    rows = list(csv.DictReader((rep / "results.csv").open()))
    assert list(rows[0])[:11] == ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low",
                                  "ci_high", "n_samples", "wall_s"]
    assert len(rows) == 2 * 2 * 2  # solvers x nfe x metrics
    assert {r["solver"] for r in rows} == set(SOLVERS) and {r["n_samples"] for r in rows} == {"40"}
    md = (rep / "leaderboard.md").read_text()
    assert "### rmse_exact · guidance 2.0 · schedule logsnr (n=40)" in md and "**" in md
    page = (rep / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and "<td class=best>" in page
    assert "src=\"http" not in page and "<link" not in page  # self-contained
    assert sorted(p.name for p in (rep / "figures").glob("*.png")) == [
        "gmm-2d_g2.0_logsnr_fd_true.png", "gmm-2d_g2.0_logsnr_rmse_exact.png", "pareto_gmm-2d_g2.0_rmse_exact.png"]
    # provenance: the config's hash reaches every metrics file; the site is written beside the reports
    recs = [json.loads(p.read_text()) for p in (workdir / "results").rglob("nfe*.json")]
    assert len({r["provenance"]["config_sha256"] for r in recs}) == 1
    assert re.fullmatch("[0-9a-f]{64}", recs[0]["provenance"]["config_sha256"])
    assert (rep / "provenance.csv").is_file() and (rep / "site" / "model-gmm-2d.html").is_file()
    assert (rep / "paper_comparison.md").is_file()
    assert sorted(p.name for p in Path(workdir, DDIM, "nfe3").iterdir()) == ["0-20.npz", "20-40.npz"]
    assert not leftovers(workdir)


def test_second_run_has_nothing_to_do(workdir: Path) -> None:
    proc = snakemake(workdir)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_deleting_one_shard_reruns_only_that_shard(workdir: Path) -> None:
    shard = workdir / DDIM / "nfe5" / "20-40.npz"
    before = np.load(shard)["x"]
    old = mtimes(workdir)
    shard.unlink()
    assert planned_jobs(workdir) == {"sample": 1, "metrics": 1, "report": 1, "all": 1}
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(np.load(shard)["x"], before)
    new = mtimes(workdir)
    changed = sorted(k for k in old if new[k] != old[k])
    # the job of that shard (the shard at NFE 3 and 5) and the solver's metrics; nothing else
    assert changed == [f"{DDIM}/nfe3.json", f"{DDIM}/nfe3/20-40.npz", f"{DDIM}/nfe5.json",
                       f"{DDIM}/nfe5/20-40.npz"], changed


def test_snakemake_report_has_the_figures(workdir: Path) -> None:
    proc = snakemake(workdir, "--report", "reports/snakemake_report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (workdir / "reports" / "snakemake_report.html").read_text()
    assert "gmm-2d_g2.0_logsnr_rmse_exact.png" in page and "leaderboard.html" in page


def test_adding_a_solver_runs_only_the_new_cells(workdir: Path) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump({**TINY, "solvers": [*SOLVERS, "heun"]}))
    old = mtimes(workdir)
    # heun: one sample job per shard, one metrics job, then the report
    assert planned_jobs(workdir) == {"sample": 2, "metrics": 1, "report": 1, "all": 1}
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = mtimes(workdir)
    assert all(new[k] == v for k, v in old.items())
    assert sorted(k for k in new if k not in old) == sorted(
        [f"{CELL}/heun/nfe{n}/{s}.npz" for n in (3, 5) for s in ("0-20", "20-40")]
        + [f"{CELL}/heun/nfe{n}.json" for n in (3, 5)])
    assert {r["solver"] for r in table(workdir / "reports" / "results.csv")} == {*SOLVERS, "heun"}


def test_killed_run_restarts_to_identical_results(workdir: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    proc = subprocess.Popen(_cmd(tmp_path), env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "results").rglob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    # SIGTERM to snakemake and its running jobs (the process group), then SIGKILL after a grace period, as a cluster
    # scheduler does (SLURM: KillWait, 30 s by default). The grace period is needed: Snakemake 9.27.1's SIGTERM handler
    # (snakemake/scheduling/job_scheduler.py:574, exit_gracefully) takes the scheduler's non-reentrant lock, so a
    # SIGTERM that lands while the main thread holds that lock hangs Snakemake for ever (seen once in a suite run
    # on an idle machine). The jobs have ended on the SIGTERM by then; only Snakemake itself is left to kill.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        status = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait(timeout=60)
        unlock = snakemake(tmp_path, "--unlock")  # a killed Snakemake leaves its directory lock behind
        assert unlock.returncode == 0, unlock.stderr[-3000:]
    assert status != 0
    assert not (tmp_path / "reports" / "results.csv").exists()  # it was stopped mid-way
    assert not leftovers(tmp_path)
    done = snakemake(tmp_path, "--rerun-incomplete")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not leftovers(tmp_path)
    ours = table(tmp_path / "reports" / "results.csv")
    assert ours == [r for r in table(workdir / "reports" / "results.csv") if r["solver"] in SOLVERS]
    for shard in (tmp_path / "results").rglob("*.npz"):
        assert np.array_equal(np.load(shard)["x"], np.load(workdir / shard.relative_to(tmp_path))["x"]), shard


@pytest.mark.parametrize(("change", "key"), [
    ({"solvers": ["ddim", "no-such-solver"]}, "solvers[1]"),
    ({"nfe": [3, -5]}, "nfe[1]"),
    ({"models": {"gmm-3d": {"num_samples": 8}}}, "models.gmm-3d"),
    ({"models": {"gmm-2d": {"num_sample": 8}}}, "models.gmm-2d.num_sample"),
    ({"metric": ["fd_true"]}, "metric"),
])
def test_bad_config_fails_before_any_job(tmp_path: Path, change: dict, key: str) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**TINY, **change}))
    proc = snakemake(tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and "Assuming" not in ln]
    assert len(lines) == 1 and lines[0].startswith(f"dpmbench: error: invalid config key {key!r}: "), lines
    assert not (tmp_path / "results").exists() and not list((tmp_path / ".snakemake").glob("metadata/*"))
