"""Throughput of the FID pipeline on CPU: images/s of batched feature extraction (quantization included).

- digits-CNN extractor (the ``fdd`` metric) through torch-fidelity and through clean-fid's generator path;
- torch-fidelity's Inception (``inception-v3-compat``, resize to 299 inside) at batch 64, with the real weights
  when they are in the torch hub cache / ``DPMBENCH_INCEPTION_WEIGHTS``, else PyTorch's default random init
  (same FLOPs, so the same speed);
- the Frechet distance itself at 2048-D (ours, torch-fidelity's, clean-fid's formula).

Run: ``PYTHONPATH=. python benchmarks/fid_throughput.py [--inception-images 128] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch


def _timeit(fn, repeats: int = 2) -> float:
    fn()  # warm-up (model construction, caches)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _inception_weights() -> tuple[str | None, str]:
    from evaluators.images import TF_INCEPTION_FILE

    if os.environ.get("DPMBENCH_INCEPTION_WEIGHTS") or (Path(torch.hub.get_dir()) / "checkpoints" /
                                                         TF_INCEPTION_FILE).is_file():
        return None, "pretrained"
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    with mock.patch.object(fe, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = Path(tempfile.mkdtemp()) / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return str(path), "random init"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--digits-images", type=int, default=1797 * 4)
    ap.add_argument("--inception-images", type=int, default=128)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from evaluators.frechet import frechet_distance
    from evaluators.images import digits_features, fidelity_features, to_uint8

    rng = np.random.default_rng(0)
    rows = []
    x = rng.uniform(-1, 1, (a.digits_images, 1, 8, 8)).astype(np.float32)
    for backend, bs in (("torch-fidelity", 64), ("torch-fidelity", 256), ("clean-fid", 64), ("clean-fid", 256)):
        s = _timeit(lambda b=backend, n=bs: digits_features(to_uint8(x), b, batch_size=n))
        rows.append({"pipeline": f"digits-cnn via {backend}", "batch": bs, "images": len(x), "seconds": s,
                     "images_per_s": len(x) / s})
    weights, kind = _inception_weights()
    xi = rng.uniform(-1, 1, (a.inception_images, 3, 32, 32)).astype(np.float32)
    s = _timeit(lambda: fidelity_features(to_uint8(xi), batch_size=64, weights=weights), repeats=1)
    rows.append({"pipeline": f"inception-v3-compat via torch-fidelity ({kind}), 32x32 -> 299", "batch": 64,
                 "images": len(xi), "seconds": s, "images_per_s": len(xi) / s})
    f = rng.standard_normal((4096, 2048))
    m1, s1 = f[:2048].mean(0), np.cov(f[:2048], rowvar=False)
    m2, s2 = f[2048:].mean(0), np.cov(f[2048:], rowvar=False)
    from cleanfid.fid import frechet_distance as cf_fd
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    fd = {"ours (eigh)": lambda: frechet_distance(m1, s1, m2, s2),
          "torch-fidelity (eigvals)": lambda: fid_statistics_to_metric({"mu": m1, "sigma": s1},
                                                                       {"mu": m2, "sigma": s2}, False),
          "clean-fid (scipy sqrtm)": lambda: cf_fd(m1, s1, m2, s2)}
    fd_rows = [{"frechet": k, "dim": 2048, "seconds": _timeit(v, repeats=1)} for k, v in fd.items()]
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
    print(f"# FID pipeline throughput (CPU, {info})\n")
    print("| pipeline | batch | images | seconds | images/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pipeline']} | {r['batch']} | {r['images']} | {r['seconds']:.3f} | {r['images_per_s']:.1f} |")
    print("\n| Frechet distance formula | dim | seconds |\n|---|---|---|")
    for r in fd_rows:
        print(f"| {r['frechet']} | {r['dim']} | {r['seconds']:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "extraction": rows, "frechet": fd_rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
