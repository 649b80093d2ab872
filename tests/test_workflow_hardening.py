"""The Snakemake workflow with a diverging solver and with files truncated by a killed job or copy: the run
records 'diverged' cells and recomputes incomplete files (through Snakemake's command line)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import support
import yaml
from support import TIMINGS, run_snakemake, shared_registry_cache, workflow_pythonpath

ROOT = Path(__file__).parents[1]
PLUGIN = '''
from dpmbench.solvers.base import SinglestepSolver, register


@register
class NanSolver(SinglestepSolver):
    name = "nan-wf"
    summary = "test plugin that diverges"
    source = "tests/test_workflow_hardening.py"
    options = {}

    def step(self, model, x, s, t, order):
        return self.predict(model, x, s, "x0") * float("nan")
'''
CONFIG = {
    "results_dir": "results", "report_dir": "reports", "seed": 0, "t_end": 0.001,
    "metrics": ["rmse_exact", "fd_true"], "nfe": [3], "samples_per_shard": 12,  # one shard (job) per solver
    "solvers": ["ddim", "nan-wf"], "models": {"gmm-2d": {"num_samples": 12}},
}
CELL = "results/gmm-2d/gnone/seed0/logsnr"


def snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DPMBENCH_CACHE": shared_registry_cache(wd / "cache"), "DPMBENCH_PLUGINS": "nan_wf_plugin",
           "PYTHONPATH": workflow_pythonpath(ROOT)}
    return run_snakemake(["--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd),
                          "--configfile", str(wd / "config.yaml"), "--cores", "2", *args], env, timeout=900)


def rows(wd: Path) -> list[dict[str, str]]:
    rows = csv.DictReader((wd / "reports/results.csv").open())
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_workflow_records_divergence_and_recomputes_truncated_files(tmp_path: Path) -> None:
    wd = tmp_path
    (support.PLUGIN_DIR / "nan_wf_plugin.py").write_text(PLUGIN)  # on the jobs' PYTHONPATH (support.py)
    (wd / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = rows(wd)
    values = {(r["solver"], r["metric"]): r["value"] for r in first}
    assert values[("nan-wf", "rmse_exact")] == "nan" and values[("nan-wf", "fd_true")] == "nan"
    assert float(values[("ddim", "rmse_exact")]) > 0
    assert "| nan-wf | diverged |" in (wd / "reports/leaderboard.md").read_text()

    # a copy or job killed half-way: a truncated shard, metrics file and reference
    shard, metrics, ref = (wd / f"{CELL}/ddim/nfe3/0-12.npz", wd / f"{CELL}/ddim/nfe3.json",
                           wd / "results/gmm-2d/gnone/seed0/reference.npz")
    for p in (shard, metrics, ref):
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    for p in (shard, metrics, ref):
        assert f"removed incomplete file {p.relative_to(wd)}" in dry.stderr and not p.exists()
    assert "reference" in dry.stdout and "metrics" in dry.stdout  # the plan recomputes them
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(wd) == first  # recomputed, identical
    again = snakemake(wd)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
