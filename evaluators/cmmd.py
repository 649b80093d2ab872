"""CMMD (Jayasumana et al., CVPR 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation"):
the squared maximum mean discrepancy between CLIP ViT-L/14@336px image embeddings of the samples and of reference
images, with a Gaussian RBF kernel.

Estimator and constants, from google-research/google-research@4c4299485319ed72ef782020c81784be5468924e:
cmmd/distance.py (``mmd``): ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` with ``sigma = 10``, the biased
(minimum-variance, V-statistic) estimator of Gretton et al. (JMLR 2012) Eq. (5), ``mean K_xx + mean K_yy -
2 mean K_xy`` with the diagonals included, times ``scale = 1000``.

Embeddings: google-research/google-research@5b09c22d73a9d35eb6c5d2a99b95677a45053466:cmmd/embedding.py (CLIP
``vit_l14_336px`` through scenic, whose ``encode_image`` L2-normalizes:
google-research/scenic@03c3032af3e4885489d2e201cf18331753b3c366:scenic/projects/baselines/clip/layers.py). Images:
google-research/google-research@19638399cc9e03623c5b9087a1d6fa8813974ce9:cmmd/io_util.py center-crops to a square
and resizes to 336 with PIL's bicubic, then CLIP's mean/std. Here: open_clip's ``ViT-L-14-336`` with the OpenAI
weights (QuickGELU) and open_clip's preprocessing (bicubic resize of the short side to 336, center crop): for square
images the same PIL resize as CMMD's; for other aspect ratios crop and resize swap order. The sums run in float64
(the official code runs in JAX's default float32).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError

SIGMA = 10.0
SCALE = 1000.0
MODEL = "ViT-L-14-336"
PRETRAINED = "openai"
WEIGHTS_ENTRY = "clip-vit-l-14-336-openai"
ENV = "DPMBENCH_CMMD_WEIGHTS"
CONVENTION = "1000 * biased MMD^2, Gaussian RBF sigma 10, L2-normalized CLIP image embeddings"
_CHUNK = 2048


def _kernel_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row sums of the RBF kernel matrix ``k(a_i, b_j)`` (float64), ``b`` taken in chunks (bounded memory)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    an = (a * a).sum(1)
    out = np.zeros(len(a))
    for lo in range(0, len(b), _CHUNK):
        bb = b[lo:lo + _CHUNK]
        d2 = np.maximum(an[:, None] + (bb * bb).sum(1)[None, :] - 2.0 * a @ bb.T, 0.0)
        out += np.exp(-d2 / (2.0 * SIGMA**2)).sum(1)
    return out


def kernel_mean(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the RBF kernel over all pairs (a_i, b_j), diagonal included when ``a is b``."""
    return float(_kernel_sum(a, b).sum() / (len(a) * len(b)))


def cmmd_distance(x: np.ndarray, y: np.ndarray) -> float:
    """CMMD between embedding sets ``x`` (samples) and ``y`` (reference): ``SCALE`` times the biased MMD^2."""
    x, y = _rows(x, "samples"), _rows(y, "reference")
    if x.shape[1] != y.shape[1]:
        raise DpmbenchError(f"invalid CMMD embeddings: samples {x.shape[1]}-d vs reference {y.shape[1]}-d")
    return SCALE * (kernel_mean(x, x) + kernel_mean(y, y) - 2.0 * kernel_mean(x, y))


def _rows(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise DpmbenchError(f"invalid CMMD {what} embeddings: shape {a.shape}; allowed: (n > 0, d)")
    return a


class CmmdBlocks:
    """The kernel blocks of samples vs samples and vs the reference, computed once, so that a bootstrap replicate
    (a resample of the samples; the reference fixed) costs an index: ``value(idx)`` equals
    ``cmmd_distance(x[idx], y)`` (tested)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x, y = _rows(x, "samples"), _rows(y, "reference")
        xn = (x * x).sum(1)
        self.kxx = np.exp(-np.maximum(xn[:, None] + xn[None, :] - 2.0 * x @ x.T, 0.0) / (2.0 * SIGMA**2))
        self.kxy_row = _kernel_sum(x, y) / len(y)
        self.yy = kernel_mean(y, y)

    def value(self, idx: np.ndarray) -> float:
        """CMMD of rows ``idx`` (duplicates kept, as the V-statistic counts them) against the reference."""
        return float(SCALE * (self.kxx[np.ix_(idx, idx)].mean() + self.yy - 2.0 * self.kxy_row[idx].mean()))


def weights_file(explicit: str | None = None) -> tuple[str, str | None]:
    """(file, sha256 the file must have when it is a TorchScript archive) of the CMMD CLIP weights: the override
    (``explicit`` or ``$DPMBENCH_CMMD_WEIGHTS``: OpenAI's ``ViT-L-14-336px.pt`` or a state dict open_clip loads),
    else the manifest entry's verified file in the cache."""
    from dpmbench.download import resolve_local
    from evaluators.weights import load_weights_manifest, weights_files

    pinned = load_weights_manifest()[WEIGHTS_ENTRY].files[0]
    local = resolve_local(explicit, ENV, "CMMD CLIP weights", pinned.name)
    if local is not None:
        return str(local), pinned.sha256
    return str(weights_files(WEIGHTS_ENTRY, f"--cmmd-weights FILE or {ENV}=FILE") / pinned.name), pinned.sha256


def load_cmmd_clip(model_name: str = MODEL, weights: str | None = None, device: str = "cpu") -> tuple[Any, Any, str]:
    """(model, preprocess, sha256 of the weights file) of the CMMD CLIP: open_clip ``model_name`` with QuickGELU
    (OpenAI weights) from a local file; OpenAI's TorchScript file is first turned into a state dict (after its
    sha256 matched the pinned one)."""
    from evaluators.clip import is_torchscript, load_clip, openai_state_dict_file

    path, pinned = weights_file(weights)
    sha = _sha256(path)
    if is_torchscript(path):
        if not pinned:
            raise DpmbenchError(f"invalid CMMD CLIP weights {path!r}: a TorchScript archive is read only after its "
                                "sha256 matches the manifest's pinned one, and none is pinned")
        path = str(openai_state_dict_file(path, pinned))
    model, preprocess, _ = load_clip(model_name, PRETRAINED, path, None, device)
    return model, preprocess, sha


@lru_cache(maxsize=4)
def _sha256(path: str) -> str:
    from dpmbench.download import sha256_file

    return sha256_file(path)


def cmmd_embeddings(images: Any, model_name: str = MODEL, weights: str | None = None, batch_size: int = 32,
                    device: str = "cpu") -> np.ndarray:
    """L2-normalized CLIP image embeddings (float64) of uint8 NCHW ``images`` for CMMD."""
    from evaluators.clip import clip_image_embeddings

    model, preprocess, _ = load_cmmd_clip(model_name, weights, device)
    return clip_image_embeddings(model, preprocess, images, batch_size, device)
