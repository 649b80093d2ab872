"""Image metrics (FID, IS, KID, Frechet digits distance) through torch-fidelity (default) or clean-fid.

Protocol (as in the papers): samples in [-1, 1] are quantized to uint8 **before** any feature is computed,
with the EDM convention ``uint8 = clip(x * 127.5 + 128, 0, 255)`` (truncation; EDM's generate.py then saves PNGs).
Grey images (1 channel) are repeated to 3 channels for Inception. Features are extracted in batches; the
features of a reference image set are computed once and cached under ``$DPMBENCH_CACHE/features`` keyed by the
images' digest, the extractor and its weights. FID against precomputed statistics (``.npz`` mu/sigma, see
:mod:`evaluators.refstats`) never recomputes reference features.

Weights are found the way the libraries find them: torch-fidelity's Inception in the torch hub cache
(``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``), clean-fid's TorchScript Inception at
``/tmp/inception-2015-12-05.pt``. Local overrides: ``inception_weights`` (config/CLI) or the env vars
``DPMBENCH_INCEPTION_WEIGHTS`` (torch-fidelity) / ``DPMBENCH_CLEANFID_INCEPTION`` (clean-fid).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpmbench.download import offline, resolve_local, verify_sha256
from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.io import cache_dir, cached_npz, digest

QUANTIZATION = "edm: uint8 = clip(x*127.5+128, 0, 255), truncated"
BACKENDS = ("torch-fidelity", "clean-fid")
CLEANFID_MODES = ("clean", "legacy_tensorflow")
TF_INCEPTION = "inception-v3-compat"
TF_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
TF_INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + TF_INCEPTION_FILE
CLEANFID_FILE = "inception-2015-12-05.pt"
CLEANFID_DIR = "/tmp"  # clean-fid 0.1.35 hard-codes this location on Linux
CLEANFID_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + CLEANFID_FILE
DEFAULT_BATCH = 64


def to_uint8(x: Any) -> torch.Tensor:
    """Samples -> uint8 NCHW tensor: float input in [-1, 1] is quantized with the EDM convention; uint8 passes."""
    t = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x.detach().cpu()
    if t.dim() != 4:
        raise DpmbenchError(f"invalid samples for an image metric: shape {tuple(t.shape)}; allowed: (n, C, H, W)")
    if t.dtype == torch.uint8:
        return t.contiguous()
    return (t.to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8).contiguous()


def to_rgb(u: torch.Tensor) -> torch.Tensor:
    """Repeat grey (1-channel) uint8 images to 3 channels."""
    return u.expand(-1, 3, -1, -1).contiguous() if u.shape[1] == 1 else u


class _Images(torch.utils.data.Dataset):
    """A uint8 image tensor as the Dataset torch-fidelity consumes (one CxHxW tensor per item)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


# -- weights ---------------------------------------------------------------------------------------------
def torch_fidelity_inception_weights(explicit: str | None = None) -> str | None:
    """Path for torch-fidelity's ``feature_extractor_weights_path``: the override (checked to hold a plain
    state dict, ``weights_only=True``), None to let torch-fidelity use its hub cache / download, or a one-line
    error when offline and the file is nowhere."""
    p = resolve_local(explicit, "DPMBENCH_INCEPTION_WEIGHTS", "Inception weights", TF_INCEPTION_FILE)
    if p is not None:
        try:  # refuse anything that is not a plain tensor state dict before torch-fidelity unpickles it
            torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: not a safe state dict
            raise DpmbenchError(f"invalid Inception weights {str(p)!r}: not a plain state dict "
                                f"({exc.__class__.__name__})") from None
        return str(p)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TF_INCEPTION_FILE
    if cached.is_file():
        verify_sha256(cached, "6726825d", "torch-fidelity Inception weights")  # torch-hub file-name hash prefix
        return None
    if offline():
        raise DpmbenchError(f"offline and torch-fidelity's Inception weights are absent: download {TF_INCEPTION_URL} "
                            f"and place it at {cached} (or set DPMBENCH_INCEPTION_WEIGHTS=/path/{TF_INCEPTION_FILE})")
    return None


def cleanfid_inception_dir(explicit: str | None = None) -> str:
    """Folder holding clean-fid's ``inception-2015-12-05.pt``: the override's folder, else clean-fid's cache
    (``/tmp``), downloaded there atomically with clean-fid's own downloader when online."""
    p = resolve_local(explicit, "DPMBENCH_CLEANFID_INCEPTION", "clean-fid Inception weights", CLEANFID_FILE)
    if p is not None:
        if p.name != CLEANFID_FILE:
            raise DpmbenchError(f"invalid clean-fid Inception weights {str(p)!r}: the file must be named "
                                f"{CLEANFID_FILE}")
        return str(p.parent)
    target = Path(CLEANFID_DIR) / CLEANFID_FILE
    if target.is_file():
        return CLEANFID_DIR
    if offline():
        raise DpmbenchError(f"offline and clean-fid's Inception weights are absent: download {CLEANFID_URL} and place "
                            f"it at {target} (or set DPMBENCH_CLEANFID_INCEPTION=/path/{CLEANFID_FILE})")
    from cleanfid.downloads_helper import check_download_inception

    with tempfile.TemporaryDirectory(dir=CLEANFID_DIR) as tmp:  # no partial file left at the cached name
        check_download_inception(fpath=tmp)
        shutil.move(os.path.join(tmp, CLEANFID_FILE), target)
    return CLEANFID_DIR


# -- feature extraction ----------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _fidelity_extractor(name: str, features: tuple[str, ...], weights: str | None, device: str) -> Any:
    from torch_fidelity.utils import create_feature_extractor

    from evaluators.digits_cnn import register

    register()
    kw: dict[str, Any] = {"verbose": False}
    if weights is not None:
        kw["feature_extractor_weights_path"] = weights
    return create_feature_extractor(name, list(features), cuda=device == "cuda", **kw)


def fidelity_features(images: torch.Tensor, extractor: str = TF_INCEPTION, features: tuple[str, ...] = ("2048",),
                      batch_size: int = DEFAULT_BATCH, weights: str | None = None, device: str = "cpu"
                      ) -> dict[str, np.ndarray]:
    """Features of uint8 NCHW ``images`` through torch-fidelity's extractor ``extractor`` (batched, its own
    ``get_featuresdict_from_dataset`` loop)."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    if extractor == TF_INCEPTION:
        images = to_rgb(images)
        weights = torch_fidelity_inception_weights(weights)
    fe = _fidelity_extractor(extractor, tuple(features), weights, device)
    out = get_featuresdict_from_dataset(_Images(images), fe, batch_size, device == "cuda", True, False)
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}


def cleanfid_features(images: torch.Tensor, mode: str = "clean", batch_size: int = DEFAULT_BATCH,
                      weights: str | None = None, device: str = "cpu",
                      custom_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      custom_resize: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Features through clean-fid's generator path (``cleanfid.fid.get_model_features``): its resizer for
    ``mode`` (``clean``: PIL bicubic to 299 in float; ``legacy_tensorflow``: the network's own TF-style resize)
    and its TorchScript Inception, or ``custom_extractor`` (a float [0, 255] batch -> features)."""
    from cleanfid.fid import get_model_features

    if mode not in CLEANFID_MODES:
        raise bad_value("clean-fid mode", mode, list(CLEANFID_MODES))
    if custom_extractor is None:
        from cleanfid.features import build_feature_extractor
        from cleanfid.inception_torchscript import InceptionV3W

        images = to_rgb(images)
        folder = cleanfid_inception_dir(weights)
        net = InceptionV3W(folder, download=False, resize_inside=mode == "legacy_tensorflow").to(device).eval()
        model = net if folder != CLEANFID_DIR else build_feature_extractor(mode, torch.device(device), False)
    else:
        model = custom_extractor
    n = len(images)
    state = {"i": 0}

    def gen(z: torch.Tensor) -> torch.Tensor:  # the samples in order; the last batch padded, then cut to n
        i = state["i"]
        idx = torch.arange(i, i + len(z)).clamp_max(n - 1)
        state["i"] = i + len(z)
        return images[idx].to(torch.float32)

    with torch.random.fork_rng(), torch.no_grad():  # clean-fid draws z from the global RNG
        feats = get_model_features(gen, model, mode=mode, z_dim=1, num_gen=n, batch_size=batch_size,
                                   device=torch.device(device), verbose=False, custom_fn_resize=custom_resize)
    return np.asarray(feats, np.float64)


def cached_features(key: tuple[Any, ...], compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Features cached on disk under ``$DPMBENCH_CACHE/features/<digest(key)>.npz``: computed once (file lock
    across processes), a truncated or corrupted entry (embedded sha256) recomputed, never used."""
    return cached_npz(cache_dir("features") / f"{digest(*key)[:32]}.npz", compute, "feature cache entry")


# -- the digits reference (the embedded default) ---------------------------------------------------------
def digits_uint8() -> torch.Tensor:
    """scikit-learn's 1,797 digits as uint8 images (1x8x8), quantized like samples."""
    from dpmbench.models.registry import digits_data

    return to_uint8(digits_data()[0].reshape(-1, 1, 8, 8))


def digits_reference_features(backend: str = "torch-fidelity") -> np.ndarray:
    """64-D digits-CNN features of the 1,797 digits (computed once, cached by weights sha256 and backend)."""
    from evaluators.digits_cnn import EXTRACTOR_NAME, weights_sha256

    images = digits_uint8()
    key = ("digits-reference", EXTRACTOR_NAME, weights_sha256(), backend, digest(images.numpy()))
    return cached_features(key, lambda: {"64": digits_features(images, backend)})["64"]


def digits_features(images: torch.Tensor, backend: str = "torch-fidelity", batch_size: int = 256) -> np.ndarray:
    """64-D digits-CNN features of uint8 8x8 images through ``backend``."""
    from evaluators.digits_cnn import EXTRACTOR_NAME, load_digits_cnn

    if backend == "torch-fidelity":
        return fidelity_features(images, EXTRACTOR_NAME, ("64",), batch_size)["64"]
    if backend == "clean-fid":
        net = load_digits_cnn()

        def extract(batch: torch.Tensor) -> torch.Tensor:  # clean-fid hands float [0, 255] batches
            u = batch.round().clamp(0, 255).to(torch.uint8)
            return net.features((u.to(torch.float32)[:, :1] - 128.0) / 127.5)[0]

        return cleanfid_features(images, "clean", batch_size, custom_extractor=extract,
                                 custom_resize=lambda a: a)
    raise bad_value("fid backend", backend, list(BACKENDS))


def digits_logits(images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The digits CNN's class logits of uint8 8x8 images (torch-fidelity's ``logits_unbiased`` feature)."""
    from evaluators.digits_cnn import EXTRACTOR_NAME

    return fidelity_features(images, EXTRACTOR_NAME, ("logits_unbiased",), batch_size)["logits_unbiased"]


# -- metrics on features ---------------------------------------------------------------------------------
def feature_moments(f: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of feature rows ``f[idx]``."""
    f = f if idx is None else f[idx]
    return f.mean(0), np.cov(f, rowvar=False)


def inception_score(logits: np.ndarray, idx: np.ndarray | None = None, splits: int = 10) -> float:
    """torch-fidelity's Inception score (mean over ``splits``) of logits rows ``logits[idx]``."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric

    f = torch.from_numpy(logits if idx is None else logits[idx])
    return float(isc_features_to_metric(f, splits=splits)[KEY_METRIC_ISC_MEAN])


DIGITS_SHAPE = (1, 8, 8)  # the samples the digits CNN reads (fdd, kdd, is_digits, cond_acc)


class ScoreBlocks:
    """The Inception score's class probabilities of every sample, computed once (float64 softmax and log-softmax, as
    torch-fidelity computes them), so that a bootstrap replicate costs an index: ``score(idx)`` is the one-split
    score ``exp(mean_i KL(p(y|x_i) || p(y)))`` of the resampled rows (equal to ``inception_score(logits, idx,
    splits=1)`` to round-off: only the order of the sums differs; tested)."""

    def __init__(self, logits: np.ndarray):
        f = torch.from_numpy(np.asarray(logits)).double()
        self.p, self.log_p = f.softmax(dim=1).numpy(), f.log_softmax(dim=1).numpy()

    def score(self, idx: np.ndarray) -> float:
        """The score of rows ``idx``."""
        p, log_p = self.p[idx], self.log_p[idx]
        kl = (p * (log_p - np.log(p.mean(axis=0)))).sum(axis=1).mean()
        return float(np.exp(kl))


def kernel_distance(f1: np.ndarray, f2: np.ndarray, idx: np.ndarray | None = None, subsets: int = 100,
                    subset_size: int = 1000) -> float:
    """torch-fidelity's KID (polynomial kernel, unbiased MMD^2 averaged over random subsets)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    a = torch.from_numpy(f1 if idx is None else f1[idx])
    size = min(subset_size, len(a), len(f2))
    out = kid_features_to_metric(a, torch.from_numpy(f2), kid_subsets=subsets, kid_subset_size=size,
                                 verbose=False, kid_degree=3, kid_gamma=None, kid_coef0=1, rng_seed=2020)
    return float(out[KEY_METRIC_KID_MEAN])


_YY: dict[str, float] = {}


def _reference_mmd_term(ref: np.ndarray) -> float:
    """The reference-reference mean of KID's kernel over pairs i != j: the same for every sample set compared with
    one reference, so computed once per process and reference (keyed by the reference's bytes)."""
    ref = np.ascontiguousarray(ref)
    key = hashlib.sha256(ref.view(np.uint8)).hexdigest() + str(ref.shape) + str(ref.dtype)
    if key not in _YY:
        kyy = (ref @ ref.T / ref.shape[1] + 1) ** 3
        m = len(ref)
        _YY[key] = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return _YY[key]


class KernelBlocks:
    """KID's polynomial kernel ``(x.y / d + 1)^3`` blocks of samples vs reference, computed once, so that bootstrap
    replicates cost an index: the unbiased MMD^2 of the resampled samples against the whole reference set
    (torch-fidelity's estimator without subsets; the estimate itself uses torch-fidelity's subset average)."""

    def __init__(self, f: np.ndarray, ref: np.ndarray):
        d = f.shape[1]
        self.kxx = (f @ f.T / d + 1) ** 3
        kxy = (f @ ref.T / d + 1) ** 3
        self.kxy_row = kxy.mean(1)
        self.yy = _reference_mmd_term(ref)

    def mmd2(self, idx: np.ndarray) -> float:
        """Unbiased MMD^2 of rows ``idx`` (pairs i != j of the resample) against the reference."""
        n = len(idx)
        k = self.kxx[np.ix_(idx, idx)]
        xx = (k.sum() - np.trace(k)) / (n * (n - 1))
        return float(xx + self.yy - 2 * self.kxy_row[idx].mean())
