"""A cell's cost beside its quality: what its sampling time is measured under (recorded by the sample job, merged over
shards, kept in the metrics file's provenance), seconds per sample in the results, and the Pareto figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpmbench.io import load_npz, save_npz
from dpmbench.models.registry import load_model
from dpmbench.report.figures import matched_winners, pareto_figure, running_best
from dpmbench.report.tables import collect
from dpmbench.sampling.shards import Request, write_samples
from evaluators.job import _provenance, merge_shards


def test_sample_job_records_device_batch_and_threads(tmp_path: Path) -> None:
    out = tmp_path / "0-6.npz"
    write_samples(Request("gmm-2d", 0, 6, batch_size=4), load_model("gmm-2d"), "ddim", [3], str(out))
    f = load_npz(out)
    assert str(f["device"]) == "cpu" and int(f["batch_size"]) == 4 and str(f["dtype"]) == "float32"
    assert int(f["torch_threads"]) == torch.get_num_threads() and float(f["wall_s"]) > 0
    write_samples(Request("gmm-2d", 0, 6), load_model("gmm-2d"), "ddim", [3], str(out))  # one batch: all six
    assert int(load_npz(out)["batch_size"]) == 6


def _shard(path: Path, batch: int, wall: float) -> str:
    save_npz(path, x=np.zeros((2, 2), np.float32), nfe=5, solver="ddim", model="gmm-2d", seed=0, schedule="logsnr",
             wall_s=wall, dtype="float32", device="cpu", device_name="test CPU", batch_size=batch, torch_threads=2)
    return str(path)


def test_shards_merge_their_times_and_name_every_setting_they_differ_in(tmp_path: Path) -> None:
    same = merge_shards([_shard(tmp_path / "0-2.npz", 2, 0.5), _shard(tmp_path / "2-4.npz", 2, 0.25)])
    assert same["wall_s"] == 0.75 and int(same["batch_size"]) == 2 and int(same["torch_threads"]) == 2
    (tmp_path / "b").mkdir()
    mixed = merge_shards([_shard(tmp_path / "b" / "0-2.npz", 2, 0.5), _shard(tmp_path / "b" / "2-4.npz", 1, 0.5)])
    assert mixed["batch_size"] == "2 | 1" and int(mixed["torch_threads"]) == 2
    prov = _provenance({k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v)
                        for k, v in mixed.items()}, "cpu")
    assert (prov["sample_device"], prov["sample_batch_size"], prov["sample_torch_threads"]) == ("cpu", "2 | 1", 2)
    assert prov["sample_device_name"] == "test CPU" and prov["sample_dtype"] == "float32"


def test_results_hold_seconds_per_sample_and_the_device(tmp_path: Path) -> None:
    rec = {"model": "gmm-2d", "solver": "ddim", "nfe": 5, "schedule": "logsnr", "guidance": None, "n_samples": 8,
           "metrics": {"fd_true": 0.5}, "ci": {"fd_true": [0.4, 0.6]}, "wall_s": 2.0,
           "provenance": {"sample_device_name": "NVIDIA H100", "sample_device": "cuda"}}
    (tmp_path / "a.json").write_text(json.dumps(rec))
    (tmp_path / "b.json").write_text(json.dumps({**rec, "solver": "heun", "provenance": None, "n_samples": 0}))
    df = collect(tmp_path).set_index("solver")
    assert df.loc["ddim", "s_per_sample"] == 0.25 and df.loc["ddim", "device"] == "NVIDIA H100"
    assert math.isnan(df.loc["heun", "s_per_sample"]) and pd.isna(df.loc["heun", "device"])  # nothing to divide by


def _cells() -> pd.DataFrame:
    """NFE 5 and 10; at NFE 10 the best (a) is slow, and b at NFE 10 is better than a's NFE-5 cell at less time."""
    rows = [("a", 5, 3.0, 1.0), ("b", 5, 4.0, 0.5), ("a", 10, 1.0, 4.0), ("b", 10, 2.0, 0.9), ("c", 10, math.nan, 0.1)]
    return pd.DataFrame([{"model": "m", "solver": s, "schedule": "logsnr", "nfe": n, "value": v, "s_per_sample": t,
                          "metric": "sw2_true", "device": "test CPU"} for s, n, v, t in rows])


def test_pareto_front_and_matched_winners() -> None:
    front = running_best([(1.0, 3.0, "a5"), (0.5, 4.0, "b5"), (4.0, 1.0, "a10"), (0.9, 2.0, "b10"),
                          (math.nan, 0.1, "x")])
    assert [p[2] for p in front] == ["b5", "b10", "a10"]  # a5 (slower than b10 and worse) is dominated
    assert [p[2] for p in running_best([(1, 3.0, "a"), (2, 5.0, "b")], higher=True)] == ["a", "b"]
    (at5, timed5), (at10, timed10) = matched_winners(_cells())
    assert (at5.solver, at5.nfe, timed5.solver, timed5.nfe) == ("a", 5, "b", 10)  # the same time buys b at NFE 10
    assert (at10.solver, at10.nfe) == (timed10.solver, timed10.nfe) == ("a", 10)


def test_pareto_figure_is_written(tmp_path: Path) -> None:
    path = pareto_figure(_cells(), "m · sw2_true", tmp_path / "pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
