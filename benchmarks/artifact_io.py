"""Writing and reading a keyed artifact whose data holds a data-sized array (DPM-Solver-v3's EMS ``b``: (N + 1) x D
float64): the array as a JSON list (how it was stored before) against the array in the artifact's ``.npz`` (now),
side by side in one process, each read as a sample job reads it (``dpmbench.artifacts.cached``, a cache hit).

    python benchmarks/artifact_io.py [--steps 251] [--dim 16384] [--repeats 3]

Default size: Stable Diffusion's latent (4 x 64 x 64) on DPM-Solver-v3's 250-point grid (sd14 in
config/reproductions/dpm-solver-v3.yaml). Prints wall seconds (best of the repeats) and file sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpmbench import artifacts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=251)
    ap.add_argument("--dim", type=int, default=4 * 64 * 64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    b = np.random.default_rng(0).standard_normal((args.steps, args.dim))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DPMBENCH_ARTIFACTS"] = tmp
        rows = []
        for form in ("json list", "npz beside the JSON"):
            kind = "bench-json" if form == "json list" else "bench-npz"

            def compute(form: str = form) -> dict[str, object]:
                return {"b": b.tolist() if form == "json list" else b, "l": [0.0] * args.steps}

            t0 = time.perf_counter()
            artifacts.cached(kind, ("x",), compute)
            write = time.perf_counter() - t0
            reads = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                data = artifacts.cached(kind, ("x",), compute)
                arr = np.asarray(data["b"], dtype=np.float64)
                reads.append(time.perf_counter() - t0)
            assert np.array_equal(arr, b)
            files = list((Path(tmp) / kind).glob("*"))
            size = sum(f.stat().st_size for f in files if not f.name.endswith(".lock"))
            rows.append((form, write, min(reads), size))
    print(f"b: {args.steps} x {args.dim} float64 ({b.nbytes / 1e6:.1f} MB)")
    print("| stored as | write s | read s (best) | files MB |")
    print("|---|---|---|---|")
    for form, write, read, size in rows:
        print(f"| {form} | {write:.2f} | {read:.3f} | {size / 1e6:.1f} |")
    print(f"read ratio npz / json: {rows[1][2] / rows[0][2]:.4f}")


if __name__ == "__main__":
    main()
