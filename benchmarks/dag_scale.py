"""How long `snakemake -n` takes to build the DAG of a paper-scale grid.

20 solver specs x 10 NFEs x 3 schedules x 6 (model, guidance) pairs (3 oracle models) x 2 shards per cell:
3,600 cells, 720 sample jobs, 360 metrics jobs, 7,200 shard files. Nothing is sampled (dry run).

    PYTHONPATH=. python benchmarks/dag_scale.py [--repeat 3]

Measured 2026-11-23 on the 2-core development VM (load average 0.4), Snakemake 9.27.1: 8.1 s with an empty
$DPMBENCH_CACHE (registry facts computed: torch import, model construction), 5.0-5.1 s warm (no torch import),
1,088 jobs. The first run after a source change pays the cold time once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOLVERS = [
    "ddim", "euler", "heun",
    "dpm-solver:order=1", "dpm-solver:order=2", "dpm-solver:order=3",
    "dpm-solver:order=2,method=multistep", "dpm-solver:order=3,method=multistep",
    "dpm-solver:order=2,solver_type=taylor", "dpm-solver:order=3,lower_order_final=false,method=multistep",
    "dpm-solver++:order=1", "dpm-solver++:order=2,method=singlestep", "dpm-solver++:order=3,method=singlestep",
    "dpm-solver++:order=2,method=multistep", "dpm-solver++:order=3,method=multistep",
    "dpm-solver++:order=3,method=multistep,order3_rule=taylor", "dpm-solver++:order=2,solver_type=taylor",
    "dpm-solver++:order=2,lower_order_final=false", "dpm-solver++:order=3,lower_order_final=false",
    "dpm-solver++:order=3,method=singlestep,lower_order_final=false",
]
CONFIG = {
    "metrics": ["rmse_exact", "fd_true"], "nfe": [5, 6, 8, 10, 12, 15, 20, 25, 50, 100],
    "schedules": ["logsnr", "time-uniform", "karras"], "solvers": SOLVERS, "samples_per_shard": 500,
    "models": {"gmm-2d": {"num_samples": 1000, "guidance": ["none", 1.0, 7.5]},
               "gmm-digits": {"num_samples": 1000, "guidance": ["none", 7.5]},
               "digits-empirical": {"num_samples": 1000}},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "paper-scale.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG))
        cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(ROOT / "Snakefile"),
               "--directory", tmp, "--configfile", str(cfg), "--cores", "2", "-n", "--quiet", "rules"]
        for i in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode:
                sys.exit(proc.stderr[-2000:])
            stats = proc.stdout.split("Job stats:")[1].split("Reasons")[0].strip() if "Job stats:" in proc.stdout \
                else proc.stdout[-500:]
            if i == 0:
                print(stats)
            print(f"run {i + 1}: snakemake -n wall {wall:.1f} s")


if __name__ == "__main__":
    main()
