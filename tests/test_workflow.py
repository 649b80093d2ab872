"""The Snakemake workflow on a tiny grid, through Snakemake's command line (the stable interface)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = {
    "results_dir": "results", "report_dir": "reports", "seed": 0, "t_end": 0.001, "device": "cpu",
    "metrics": ["rmse_exact", "fd_true"], "nfe": [3, 5], "schedules": ["logsnr"],
    "solvers": ["ddim", "dpm-solver++:order=2,method=multistep"],
    "models": {"gmm-2d": {"num_samples": 64, "guidance": ["none", 2.0]}},
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DPMBENCH_CACHE": str(workdir / "cache")}
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("wf")
    (wd / "config.yaml").write_text(yaml.safe_dump(TINY))
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd


def test_full_run_produces_reports(workdir: Path) -> None:
    rows = list(csv.DictReader((workdir / "reports" / "results.csv").open()))
    assert len(rows) == 2 * 2 * 2 * 2  # guidance x solvers x nfe x metrics
    assert {r["solver"] for r in rows} == set(TINY["solvers"])
    assert {r["guidance"] for r in rows} == {"none", "2.0"}
    md = (workdir / "reports" / "leaderboard.md").read_text()
    assert "## gmm-2d · guidance 2.0 · schedule logsnr · rmse_exact (n=64)" in md
    assert list((workdir / "reports" / "figures").glob("*.png"))


def test_second_run_has_nothing_to_do(workdir: Path) -> None:
    proc = snakemake(workdir, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_adding_a_solver_runs_only_the_new_cells(workdir: Path, tmp_path: Path) -> None:
    grown = {**TINY, "solvers": [*TINY["solvers"], "heun"]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(grown))
    try:
        proc = snakemake(workdir, "-n", "--quiet", "rules")
    finally:
        (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    # heun x {guidance none, 2.0}: one sample and one metrics job each, then the report
    assert counts == {"sample": 2, "metrics": 2, "report": 1, "all": 1, "total": 6}, out


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    bad = {**TINY, "solvers": ["ddim", "dpm-solver++:order=7"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert "invalid option 'order' of solver 'dpm-solver++' '7'; allowed: 1, 2, 3" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
