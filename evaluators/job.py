"""The metrics job: evaluate samples files (``dpmbench evaluate``) and sharded cells (``dpmbench metrics-job``:
concatenate each cell's shards, then evaluate them in one process), recording each number's protocol and
provenance beside it."""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.io import PARALLEL_COUNTERS

PER_SAMPLE_KEYS = ("images", "prompts")  # besides x and labels: one entry per sample, concatenated over shards
# what a cell's sampling time was measured under (dpmbench.sampling.shards.cost_meta, plus dtype and device name):
# recorded in the metrics file's provenance as sample_<key>; shards that differ in one are recorded as "a | b"
COST_KEYS = ("dtype", "device", "device_name", "batch_size", "torch_threads")
_SHARD = re.compile(r"^(\d+)-(\d+)\.npz$")


@dataclass
class EvalOptions:
    """How metrics are computed (``dpmbench evaluate``'s options; the defaults are the metrics job's)."""

    bootstraps: int = 200
    fid_backend: str = "torch-fidelity"
    cleanfid_mode: str = "clean"
    fid_stats: str | None = None
    fid_implementation: str | None = None  # the published numbers' FID implementation (manifest fid_implementations)
    kid_reference: str | None = None
    prdc_reference: str | None = None
    reference_images: str | None = None
    inception_weights: str | None = None
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"
    clip_weights: str | None = None
    fd_dinov2_stats: str | None = None
    dinov2_weights: str | None = None
    cmmd_reference: str | None = None
    cmmd_weights: str | None = None
    eval_batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.fid_implementation is not None:
            from evaluators.refstats import fid_implementations

            known = list(fid_implementations())
            if self.fid_implementation not in known:
                raise bad_value("fid implementation", self.fid_implementation, known)

    def metric_options(self) -> dict[str, Any]:
        """The options the metrics receive (``evaluators.registry.evaluate``)."""
        return {"fid_backend": self.fid_backend, "cleanfid_mode": self.cleanfid_mode, "fid_stats": self.fid_stats,
                "fid_implementation": self.fid_implementation,
                "kid_reference": self.kid_reference, "prdc_reference": self.prdc_reference,
                "reference_images": self.reference_images,
                "inception_weights": self.inception_weights, "clip_model": self.clip_model,
                "clip_pretrained": self.clip_pretrained, "clip_weights": self.clip_weights,
                "fd_dinov2_stats": self.fd_dinov2_stats, "dinov2_weights": self.dinov2_weights,
                "cmmd_reference": self.cmmd_reference, "cmmd_weights": self.cmmd_weights,
                "batch_size": self.eval_batch_size, "device": self.device}


def _load_npz(path: str, what: str) -> dict[str, Any]:
    """An input ``.npz``, its embedded checksum verified (a truncated or corrupted file is a one-line error)."""
    from dpmbench.io import load_npz

    try:
        return load_npz(path, what)
    except FileNotFoundError:
        raise DpmbenchError(f"invalid {what} {path!r}: no such file") from None


def _scalar(v: Any) -> Any:
    import numpy as np

    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v


def _file_sha256(path: str) -> str:
    from dpmbench.download import sha256_file

    return sha256_file(path)


def _run_protocol(meta: dict[str, Any], n: int, reference: str | None, ref_sha: str | None) -> dict[str, Any]:
    """The protocol fields a metrics file records beside the metric's own: sample count, end time (and start time
    where the run gave one), reference (exact solutions or a solver run, with the file's sha256)."""
    t_end = meta.get("t_end")
    ref = None
    if reference:
        solver = meta.get("reference_solver", "exact")
        ref = "exact ODE solutions" if solver == "exact" else f"{solver} at NFE {meta.get('reference_nfe')}"
    out = {"n_samples": int(n), "t_end": None if t_end is None else float(t_end), "reference": ref,
           "reference_sha256": ref_sha}
    if meta.get("t_start") is not None:  # where the solver started with x_T, where not the schedule's T (flow)
        out["t_start"] = float(meta["t_start"])
    return out


def _provenance(meta: dict[str, Any], eval_device: str) -> dict[str, Any]:
    """Where the numbers come from: the evaluating process (code, libraries, device, config hash, date) and what the
    sampling run's time was measured under (recorded in the samples file: dtype, device and its name, batch size,
    torch threads; ``sample_*``)."""
    from dpmbench.provenance import environment

    env = environment(eval_device)
    env["sample_dtype"] = str(meta.get("dtype", "float32"))
    env["sample_device_name"] = str(meta["device_name"]) if "device_name" in meta else None
    for key in ("device", "batch_size", "torch_threads"):  # samples files written before they were recorded: None
        v = meta.get(key)
        env[f"sample_{key}"] = v if v is None or isinstance(v, int) else str(v)
    return env


def evaluate_files(samples: Sequence[str], outs: Sequence[str], metrics: str, reference: str | None = None,
                   options: EvalOptions | None = None) -> None:
    """Metrics of samples files: ``samples[i]``'s metrics json is written to ``outs[i]`` (every input is validated
    before any output is written)."""
    from dpmbench.download import unpinned_used
    from dpmbench.io import save_json
    from evaluators.registry import evaluate, list_metrics

    opts = options or EvalOptions()
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    for n in names:
        if n not in list_metrics():
            raise bad_value("--metrics entry", n, list_metrics())
    if len(samples) != len(outs):
        raise DpmbenchError(f"invalid --out: {len(outs)} files for {len(samples)} --samples files")
    ref_file = _load_npz(reference, "--reference") if reference else None
    ref_sha = _file_sha256(reference) if reference else None
    loaded = [_load_npz(path, "--samples") for path in samples]  # validate all before writing any
    for path, s in zip(samples, loaded, strict=True):
        if "x" not in s or "model" not in s:
            raise DpmbenchError(f"invalid --samples {path!r}: missing keys 'x'/'model'")
        if ref_file is not None and (str(_scalar(ref_file["model"])) != str(_scalar(s["model"]))
                                     or int(_scalar(ref_file["seed"])) != int(_scalar(s["seed"]))):
            raise DpmbenchError(f"invalid --reference for {path!r}: model or seed differs from the samples'")
        if ref_file is not None:  # the same ODE: from the same start time (a flow model's t_start) to the same end
            for k in ("t_start", "t_end"):
                a, b = float(_scalar(ref_file.get(k, math.nan))), float(_scalar(s.get(k, math.nan)))
                if a != b and not (math.isnan(a) and math.isnan(b)):
                    raise DpmbenchError(f"invalid --reference for {path!r}: its {k} {a} differs from the samples' {b}")
    for s, out_path in zip(loaded, outs, strict=True):
        meta = {k: _scalar(v) for k, v in s.items() if k != "x"}
        unpinned = json.loads(str(meta.pop("unpinned", "{}")))  # checkpoint files the samples were computed from
        start = time.perf_counter()
        ref = None if ref_file is None else ref_file["x"]
        if ref_file is not None:
            meta["reference_solver"] = str(_scalar(ref_file["solver"])) if "solver" in ref_file else "exact"
            meta["reference_nfe"] = int(_scalar(ref_file["nfe"])) if "nfe" in ref_file else -1
        if ref_file is not None and "target_mu" in ref_file:
            meta["target_moments"] = (ref_file["target_mu"], ref_file["target_cov"])
        values, cis, info = evaluate(names, s["x"], meta, ref, bootstraps=opts.bootstraps,
                                     options=opts.metric_options())
        info["protocol"] = {**info.get("protocol", {}), **_run_protocol(meta, len(s["x"]), reference, ref_sha)}
        info["provenance"] = _provenance(meta, opts.device)
        unpinned.update(unpinned_used("reference_stats:"))  # statistics and weights this process used unpinned
        unpinned.update(unpinned_used("weights:"))
        info["provenance"]["unpinned_files"] = dict(sorted(unpinned.items()))
        info["unpinned"] = bool(unpinned)
        g = meta.get("guidance")
        save_json(out_path, {
            "model": str(meta["model"]), "solver": str(meta.get("solver")), "nfe": int(meta.get("nfe", -1)),
            "schedule": str(meta.get("schedule")),
            "guidance": None if g is None or math.isnan(float(g)) else float(g),
            "n_samples": len(s["x"]), "metrics": values, "ci": cis,
            "wall_s": float(meta.get("wall_s", 0.0)), "eval_wall_s": time.perf_counter() - start, **info,
            **{k: int(meta[k]) for k in PARALLEL_COUNTERS if k in meta},
        })


def merge_shards(paths: Sequence[str]) -> dict[str, Any]:
    """Concatenate shard files (any order) of one cell into one sample record; check they tile ``0..n-1``."""
    import numpy as np

    from dpmbench.io import CorruptFileError, load_npz

    parts = []
    for p in paths:
        m = _SHARD.match(Path(p).name)
        if not m:
            raise DpmbenchError(f"invalid shard file {p!r}: name must be LO-HI.npz")
        parts.append((int(m.group(1)), int(m.group(2)), p))
    parts.sort()
    expect = 0
    for lo, hi, p in parts:
        if lo != expect:
            raise DpmbenchError(f"invalid shards: {p!r} starts at {lo}, expected {expect}")
        expect = hi
    xs, labels, wall, used, meta = [], [], 0.0, -1, None
    counters: dict[str, int] = {}
    per_sample: dict[str, list[Any]] = {k: [] for k in PER_SAMPLE_KEYS}
    cost: dict[str, list[str]] = {}  # COST_KEYS: the distinct values over the shards
    unpinned: dict[str, str] = {}
    for lo, hi, p in parts:
        try:
            d = load_npz(p, "shard")
        except FileNotFoundError:
            raise DpmbenchError(f"invalid shard {p!r}: no such file") from None
        except CorruptFileError as exc:  # never use it; remove it so that the next run recomputes it
            Path(p).unlink(missing_ok=True)
            raise DpmbenchError(f"{exc}; removed it: re-run snakemake to recompute it") from None
        if len(d["x"]) != hi - lo:
            raise DpmbenchError(f"invalid shard {p!r}: {len(d['x'])} samples for range {lo}-{hi}")
        xs.append(d.pop("x"))
        labels.append(d.pop("labels", np.zeros(0, np.int64)))
        for k in PER_SAMPLE_KEYS:
            if k in d:
                per_sample[k].append(d.pop(k))
        wall += float(d.pop("wall_s", 0.0))
        used = max(used, int(d.pop("nfe_used", -1)))  # adaptive solvers: the most any shard used
        for k in PARALLEL_COUNTERS:  # parallel solvers: likewise
            if k in d:
                counters[k] = max(counters.get(k, 0), int(d.pop(k)))
        d.pop("start", None)
        d.pop("num_samples", None)
        if "unpinned" in d:  # the unpinned checkpoint files any shard was computed from
            unpinned.update(json.loads(str(_scalar(d.pop("unpinned")))))
        for k in COST_KEYS:
            if k in d and str(d[k]) not in cost.setdefault(k, []):
                cost[k].append(str(d[k]))
        if meta is None:
            meta = d
        else:
            for k in ("model", "solver", "nfe", "seed", "schedule"):
                if k in d and str(d[k]) != str(meta.get(k)):
                    raise DpmbenchError(f"invalid shard {p!r}: {k} {d[k]} differs from the first shard's {meta[k]}")
    assert meta is not None
    if used >= 0:
        meta["nfe_used"] = used
    meta.update(counters)
    if unpinned:
        meta["unpinned"] = json.dumps(unpinned, sort_keys=True)
    meta.update({k: " | ".join(vs) for k, vs in cost.items() if len(vs) > 1})  # shards that differ: all of them
    for k, arrays in per_sample.items():
        if arrays and len(arrays) != len(parts):
            raise DpmbenchError(f"invalid shards: {k!r} is in some shards of the cell but not in all")
        if arrays:
            meta[k] = np.concatenate(arrays)
    return {**meta, "x": np.concatenate(xs), "labels": np.concatenate(labels), "wall_s": wall,
            "num_samples": expect, "num_shards": len(parts)}


def run_evaluate(cells: Sequence[str], outs: Sequence[str], metrics: str, reference: str | None,
                 seed: int | None = None, fid_stats: str | None = None, fid_implementation: str | None = None) -> int:
    """Metrics of several cells: ``cells[i]`` is a comma list of shard files, ``outs[i]`` its metrics json."""
    from dpmbench.io import save_json, save_npz

    if len(cells) != len(outs):
        raise DpmbenchError(f"invalid --out: {len(outs)} files for {len(cells)} --cells")
    options = EvalOptions(fid_stats=fid_stats, fid_implementation=fid_implementation)  # checked before any file
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=Path(outs[0]).parent) as tmp:
        merged, shards = [], []
        for i, cell in enumerate(cells):
            rec = merge_shards([p for p in cell.split(",") if p])
            shards.append(int(rec.pop("num_shards")))
            path = Path(tmp) / f"cell{i}.npz"
            save_npz(path, **rec)
            merged.append(str(path))
        evaluate_files(merged, outs, metrics, reference, options)
    for out, k in zip(outs, shards, strict=True):  # record where the numbers came from
        rec = json.loads(Path(out).read_text())
        rec["num_shards"] = k
        if seed is not None:
            rec["seed"] = seed
        save_json(out, rec)
    return 0
