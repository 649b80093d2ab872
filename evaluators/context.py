"""What a metric sees and is: the evaluation context (samples, metadata, reference, options) and the metric record,
with the small readers of the metadata every metric family shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError, bad_value
from evaluators.bootstrap import UNBOUNDED, Bounds

DEFAULT_OPTIONS: dict[str, Any] = {
    "fid_backend": "torch-fidelity",   # or "clean-fid"
    "cleanfid_mode": "clean",          # or "legacy_tensorflow" (clean-fid backend)
    "fid_stats": None,                 # reference stats: a reference_stats/manifest.yaml name or an .npz path
    "fid_implementation": None,        # the published numbers' FID implementation (recorded in the protocol)
    "kid_reference": None,             # .npz of reference features (key "feats" or "features") for kid
    "prdc_reference": None,            # .npz of reference features (same keys) for precision/recall/density/coverage
    "reference_images": None,          # .npz of reference images (key "x"): features computed once, cached
    "inception_weights": None,         # local override (else env DPMBENCH_INCEPTION_WEIGHTS / _CLEANFID_INCEPTION)
    "clip_model": "ViT-L-14",
    "clip_pretrained": "openai",
    "clip_weights": None,              # local override (else env DPMBENCH_CLIP_WEIGHTS)
    "fd_dinov2_stats": None,           # fd_dinov2 reference: .npz (mu/sigma of DINOv2 features) or a manifest name
    "dinov2_weights": None,            # local folder: config.json + model.safetensors (else DPMBENCH_DINOV2_WEIGHTS)
    "cmmd_reference": None,            # .npz of reference CLIP embeddings (key "feats" or "features") for cmmd
    "cmmd_clip_model": "ViT-L-14-336",  # open_clip model of cmmd (the paper's CLIP ViT-L/14@336px)
    "cmmd_weights": None,              # local file (else env DPMBENCH_CMMD_WEIGHTS, else the manifest's pinned file)
    "batch_size": 64,
    "device": "cpu",
    "sw2_projections": 256,
    "model_error_oracle": "digits-empirical",  # the exact model of the data a trained network learned (model_error)
}


@dataclass
class Context:
    """What a metric sees: samples ``x``, their metadata (model, guidance, labels, ...) and a reference."""

    x: np.ndarray
    meta: dict[str, Any]
    reference: np.ndarray | None = None
    options: dict[str, Any] | None = None

    def opt(self, key: str) -> Any:
        """An evaluation option (``DEFAULT_OPTIONS`` overridden by the caller's)."""
        return (self.options or {}).get(key, DEFAULT_OPTIONS.get(key))

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """A per-evaluation cache (features, targets) shared by the metrics and their bootstrap replicates."""
        store = self.meta.setdefault("_cache", {})
        if key not in store:
            store[key] = compute()
        return store[key]

    def require_reference(self, metric: str, exact: bool = True) -> np.ndarray:
        """The reference array, or a one-line error naming the metric that needs it (``exact``: the reference
        must hold exact ODE solutions, not a high-NFE solver run)."""
        if self.reference is None:
            what = "the exact solutions" if exact else "a reference run"
            raise DpmbenchError(f"invalid metrics: {metric!r} needs --reference ({what})")
        solver = str(self.meta.get("reference_solver", "exact"))
        if exact and solver != "exact":
            raise DpmbenchError(f"invalid --reference for {metric!r}: it holds a {solver!r} run, not exact solutions; "
                                "use mse_ref with solver references")
        if self.reference.shape[0] != self.x.shape[0]:
            raise DpmbenchError(
                f"invalid reference: {self.reference.shape[0]} samples for {self.x.shape[0]} samples"
            )
        return self.reference


@dataclass(frozen=True)
class Metric:
    """A metric: ``stat(ctx, idx)`` evaluated on the samples selected by ``idx`` (None: all)."""

    stat: Callable[[Context, np.ndarray | None], float]
    doc: str
    lower_is_better: bool = True
    max_bootstraps: int | None = None  # cap for costly statistics (2048-D FID, KID)
    deterministic_only: bool = False  # meaningless for samples of stochastic solvers (skipped for them)
    needs_labels: bool = False  # class-conditional samples only (skipped for unconditional ones)
    bounds: Bounds = UNBOUNDED  # the range of the true value; the CI is clipped to it (evaluators.bootstrap)


def guidance_of(meta: dict[str, Any]) -> float | None:
    """The guidance scale of the samples (None: unguided)."""
    g = meta.get("guidance")
    return None if g is None or (isinstance(g, float) and math.isnan(g)) else float(g)


def labels_of(ctx: Context) -> np.ndarray | None:
    """The class labels of the samples (None: unconditional)."""
    labels = ctx.meta.get("labels")
    return None if labels is None or np.size(labels) == 0 else np.asarray(labels)


def t_end_of(ctx: Context) -> float:
    """The samples' t_end (a one-line error where the metadata lacks it)."""
    t = ctx.meta.get("t_end")
    if t is None:
        raise DpmbenchError("invalid samples: metadata 't_end' is missing (needed for the true distribution)")
    return float(t)


def images_of(ctx: Context) -> Any:
    """The samples as uint8 images (a latent model's decoded images), computed once."""
    from evaluators.images import to_uint8

    if "images" in ctx.meta:  # latent models: the decoded images (x holds the latents)
        return ctx.cached("uint8", lambda: to_uint8(np.asarray(ctx.meta["images"], dtype=np.uint8)))
    return ctx.cached("uint8", lambda: to_uint8(ctx.x))


def backend_of(ctx: Context) -> str:
    """The FID backend (torch-fidelity or clean-fid), checked."""
    from evaluators.images import BACKENDS

    b = str(ctx.opt("fid_backend"))
    if b not in BACKENDS:
        raise bad_value("fid backend", b, list(BACKENDS))
    return b


def load_input_npz(path: str, what: str) -> dict[str, np.ndarray]:
    """A user-given ``.npz`` (verified if it carries dpmbench's checksum); a missing, truncated or corrupted file
    is a one-line error naming it."""
    from dpmbench.io import load_npz

    try:
        return load_npz(path, what)
    except FileNotFoundError:
        raise DpmbenchError(f"invalid {what} {path!r}: no such file") from None
