"""Submissions that fit (dpmbench/grid/cluster.py): node sizes read from sinfo, requests checked, groups capped."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import shared_registry_cache

from dpmbench.errors import DpmbenchError
from dpmbench.grid.cluster import Node, Request, fit_groups, parse_sinfo, parse_time_limit

ROOT = Path(__file__).parents[1]
# sinfo -h -N -o '%R|%c|%m|%G|%l' of a site with a small and a large GPU node, and of the local test cluster
SINFO = """cpu*|64|256000|(null)|2-00:00:00
gpu|16|120000|gpu:a100:4(S:0-1)|1-00:00:00
gpu|32|500000|gpu:h100:8|1-00:00:00
"""
NODES = parse_sinfo(SINFO)


def test_sinfo_is_read_per_partition_largest_node() -> None:
    assert NODES["cpu"] == Node(64, 256000, 0, 2 * 24 * 60)
    assert NODES["gpu"] == Node(32, 500000, 8, 24 * 60)
    assert list(NODES) == ["cpu", "gpu"]  # the default partition first
    assert parse_time_limit("infinite") == math.inf and parse_time_limit("30:00") == 30
    assert parse_time_limit("1-02:03:00") == 26 * 60 + 3 and parse_time_limit("90") == 90


def test_groups_are_capped_at_what_one_node_holds() -> None:
    reqs = {"sample": Request(1, 4000, 1, 60, "gpu"), "metrics": Request(1, 4000, 0, 30, "cpu"),
            "reference": Request(1, 2000, 0, 60, "cpu")}
    groups = {"sample": "sample-{model}", "metrics": "metrics-{model}"}
    capped, notes = fit_groups(reqs, groups, {"sample-{model}": 16, "metrics-{model}": 64}, NODES)
    assert capped == {"sample-{model}": 8, "metrics-{model}": 64}  # 8 GPUs; 64 x 4000 MB fit 256000 MB
    assert len(notes) == 1 and "cpus=16, mem_mb=64000, gpus=16" in notes[0] and "8 per submission" in notes[0]
    small = {"cpu": Node(2, 24105, 2), "gpu": Node(2, 24105, 2)}
    capped, _ = fit_groups(reqs, groups, {"sample-{model}": 16, "metrics-{model}": 64}, small)
    assert capped == {"sample-{model}": 2, "metrics-{model}": 2}


@pytest.mark.parametrize(("request_", "message"), [
    (Request(1, 600000, 0, 60, "gpu"), "rule 'sample' asks for cpus=1, mem_mb=600000, gpus=0, runtime=60 min but "
     "the largest node of partition 'gpu' has cpus=32, mem_mb=500000, gpus=8, runtime=1440 min: it could never be "
     "scheduled"),
    (Request(1, 4000, 0, 2000, "gpu"), "runtime=2000 min but the largest node of partition 'gpu'"),
    (Request(1, 4000, 1, 60, "cpu"), "gpus=1, runtime=60 min but the largest node of partition 'cpu' has cpus=64, "
     "mem_mb=256000, gpus=0"),
    (Request(1, 4000, 0, 60, "a100"), "rule 'sample' asks for partition 'a100'; allowed: cpu, gpu"),
])
def test_a_request_no_node_holds_is_one_line(request_: Request, message: str) -> None:
    with pytest.raises(DpmbenchError) as err:
        fit_groups({"sample": request_}, {}, {}, NODES)
    assert message in str(err.value) and "\n" not in str(err.value)


def _fake_sinfo(tmp_path: Path, text: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}EOF\n")
    (bin_dir / "sinfo").chmod(0o755)
    for tool in ("squeue", "sacct"):  # the SLURM executor plugin refuses to load where neither exists (a machine
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")  # without SLURM): a dry run queries neither
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "DPMBENCH_CACHE": shared_registry_cache(tmp_path / "cache")}


def _dry_run(tmp_path: Path, sinfo: str, **extra: object) -> subprocess.CompletedProcess[str]:
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    grid = {"seed": 0, "metrics": ["rmse_exact"], "nfe": [5], "solvers": ["ddim", "euler", "heun"],
            "models": {"gmm-2d": {"num_samples": 64}}, "samples_per_shard": 16, **extra}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    return subprocess.run(
        ["timeout", "300", snakemake, "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(tmp_path / "grid.yaml")],
        capture_output=True, text=True, env=_fake_sinfo(tmp_path, sinfo), timeout=360)


def test_profile_is_checked_before_submitting(tmp_path: Path) -> None:
    """`snakemake -n --profile profiles/slurm` (12 sample jobs of one model) against a 2-CPU node: groups are capped
    (said on one line each); a sample request larger than the node stops the run with one line, exit 2."""
    node = "cpu*|2|24105|gpu:2|infinite\ngpu|2|24105|gpu:2|infinite\n"
    proc = _dry_run(tmp_path, node)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dpmbench: group 'sample-{model}': 16 jobs side by side would ask for cpus=16, mem_mb=64000" in proc.stderr
    assert "2 per submission" in proc.stderr
    assert proc.stdout.count("Group job sample-gmm-2d") == 6  # 12 jobs, 2 per submission
    proc = _dry_run(tmp_path, node, resources={"sample": {"mem_mb": 30000}})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dpmbench: error:")]
    assert len(errors) == 1 and re.fullmatch(
        r"dpmbench: error: rule '\w+' asks for cpus=1, mem_mb=30000, gpus=0, runtime=60 min but the largest node of "
        r"partition 'gpu' has cpus=2, mem_mb=24105, gpus=2, runtime=unlimited: it could never be scheduled",
        errors[0]), proc.stderr[-2000:]
