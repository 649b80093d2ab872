"""DINOv2 ViT-L/14 features for ``fd_dinov2``, as dgm-eval computes them (Stein et al., NeurIPS 2023, "Exposing
flaws of generative model evaluation metrics"; the FD_DINOv2 of EDM2, Karras et al., CVPR 2024).

Preprocessing, from layer6ai-labs/dgm-eval@74c79f7527fbf38fdccfbac51f25d759bc02ab07:dgm_eval/models/dinov2.py
(``DINOv2Encoder.transform``, default ``clean_resize=False``): the uint8 RGB image (grey repeated to RGB, as
dgm-eval's ``convert('RGB')``) as a PIL image, ``torchvision Resize((224, 224), BICUBIC)`` (PIL's bicubic,
antialiased), ``ToTensor`` (/255), ``Normalize`` with the ImageNet mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225). The feature is the model's output, the class token after the final layer norm (1024-d for
ViT-L/14): dinov2's ``forward`` returns ``head(x_norm_clstoken)`` with an identity head; transformers'
``Dinov2Model`` returns the same token as ``pooler_output``.

Network: transformers' ``Dinov2Model`` (the architecture is defined in the installed library, nothing is fetched
through torch.hub), weights ``facebook/dinov2-large`` (``reference_stats/manifest.yaml``, entry ``dinov2-vitl14``)
or a local folder (``dinov2_weights`` / env ``DPMBENCH_DINOV2_WEIGHTS``: ``config.json`` and
``model.safetensors``, as ``save_pretrained`` writes them; safetensors only, never a pickle). At 224 px the
positional embeddings (trained at 518 px: 37 x 37 patches) are resized to 16 x 16 the way the dinov2 code that
dgm-eval loads does it (facebookresearch/dinov2@b8931f7bf91576930313be2c6d6af376033b35f0:
dinov2/models/vision_transformer.py ``interpolate_pos_encoding``, with ``interpolate_offset=0.1`` and no antialias
from dinov2/hub/backbones.py): bicubic with the scale factor ``(16 + 0.1) / 37``; transformers resizes to the size
16 instead, which moves the features slightly, so the dinov2 rule replaces it here.
"""

from __future__ import annotations

import math
import os
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpmbench.errors import DpmbenchError

WEIGHTS_ENTRY = "dinov2-vitl14"
ENV = "DPMBENCH_DINOV2_WEIGHTS"
SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1
PREPROCESSING = "dgm-eval: PIL bicubic resize to 224x224, /255, ImageNet mean/std; CLS token of the final layer norm"


def weights_folder(explicit: str | None = None) -> Path:
    """The folder to load: the override (``explicit`` or ``$DPMBENCH_DINOV2_WEIGHTS``; a folder, or a file inside
    one), else the manifest entry's verified files in the cache."""
    path = explicit or os.environ.get(ENV) or None
    if path is not None:
        folder = Path(path).expanduser()
        folder = folder.parent if folder.is_file() else folder
        if not folder.is_dir():
            raise DpmbenchError(f"invalid DINOv2 weights path {path!r} (from {'config/CLI' if explicit else ENV}): "
                                "no such folder")
        missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
        if missing:
            raise DpmbenchError(f"invalid DINOv2 weights folder {str(folder)!r}: missing {missing} (a folder as "
                                "transformers' save_pretrained writes it)")
        return folder
    from evaluators.weights import weights_files

    return weights_files(WEIGHTS_ENTRY, f"--dinov2-weights DIR or {ENV}=DIR")


def _hub_interpolate_pos_encoding(self: Any, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """dinov2's positional-embedding resize (bicubic, scale factor ``(patches + 0.1) / M``, no antialias), in
    float32, for transformers' ``Dinov2Embeddings`` (``self``)."""
    pos = self.position_embeddings
    n, num_positions = embeddings.shape[1] - 1, pos.shape[1] - 1
    if n == num_positions and height == width:
        return pos
    patch = self.patch_embeddings.patch_size
    h0, w0 = height // patch[0], width // patch[1]
    m = int(math.sqrt(num_positions))
    grid = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, mode="bicubic", antialias=False,
                                           scale_factor=((h0 + INTERPOLATE_OFFSET) / m, (w0 + INTERPOLATE_OFFSET) / m))
    if tuple(grid.shape[-2:]) != (h0, w0):
        raise DpmbenchError(f"DINOv2 positional embeddings resized to {tuple(grid.shape[-2:])}, not {(h0, w0)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    return torch.cat((pos[:, :1].float(), grid), dim=1).to(pos.dtype)


def load_dinov2(explicit: str | None = None, device: str = "cpu") -> tuple[Any, str]:
    """(model, sha256 of its ``model.safetensors``) of the DINOv2 network: transformers' ``Dinov2Model`` in float32,
    eval mode, with dinov2's positional-embedding resize."""
    folder = weights_folder(explicit)
    return _load(str(folder.resolve()), device)


@lru_cache(maxsize=2)
def _load(folder: str, device: str) -> tuple[Any, str]:
    from transformers import Dinov2Model
    from transformers.utils import logging as hf_logging

    from dpmbench.download import sha256_file

    hf_logging.disable_progress_bar()

    try:
        model, info = Dinov2Model.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                  dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise DpmbenchError(f"invalid DINOv2 weights folder {folder!r}: {str(exc).splitlines()[0]}") from None
    bad = {k: sorted(map(str, v))[:3] for k, v in info.items()
           if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:  # a partly random network would give plausible-looking, wrong features
        raise DpmbenchError(f"invalid DINOv2 weights folder {folder!r}: {bad}")
    emb = model.embeddings
    emb.interpolate_pos_encoding = types.MethodType(_hub_interpolate_pos_encoding, emb)
    sha = sha256_file(Path(folder) / "model.safetensors")
    return model.to(device).eval().requires_grad_(False), sha


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW images -> the network's float32 input (dgm-eval's transform, see the module docstring)."""
    from PIL import Image
    from torchvision import transforms as tf

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise DpmbenchError(f"invalid images for DINOv2: {images.dtype} {tuple(images.shape)}; allowed: uint8 "
                            "(n, 1 or 3, H, W)")
    chain = tf.Compose([tf.Resize((SIZE, SIZE), tf.InterpolationMode.BICUBIC), tf.ToTensor(), tf.Normalize(MEAN, STD)])
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    return torch.stack([chain(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in rgb])


@torch.no_grad()
def dinov2_features(images: torch.Tensor, weights: str | None = None, batch_size: int = 64,
                    device: str = "cpu") -> np.ndarray:
    """DINOv2 features (float64, one row per image) of uint8 NCHW ``images``."""
    model, _ = load_dinov2(weights, device)
    out = []
    for lo in range(0, len(images), batch_size):
        px = preprocess(images[lo:lo + batch_size]).to(device)
        out.append(model(pixel_values=px).pooler_output.double().cpu())
    return torch.cat(out).numpy()
