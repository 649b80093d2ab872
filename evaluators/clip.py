"""CLIP score with open_clip: ``100 * max(cos(image, prompt), 0)`` per sample, averaged over the prompts.

Default model: ``ViT-L-14`` with the ``openai`` weights, the CLIP of the Stable Diffusion papers and of
torchmetrics' ``CLIPScore`` (``openai/clip-vit-large-patch14``). Convention recorded with every number: scale
100, clamp per sample, no prompt prefix (torchmetrics clamps the mean instead; the two differ only when some
cosine is negative; the original CLIPScore uses 2.5 * max(cos, 0) and the prefix "A photo depicts"). Images
are uint8 (quantized like FID inputs) and go through open_clip's own preprocessing (resize shortest side bicubic,
center crop, CLIP mean/std).

Weights: open_clip's cache (``cache_dir``, default the Hugging Face hub cache); local override
``clip_weights`` (config/CLI) or env ``DPMBENCH_CLIP_WEIGHTS`` (a file open_clip loads, ``weights_only``). A
local file of OpenAI weights needs QuickGELU, which is forced here when the tag is ``openai``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpmbench.download import offline, resolve_local
from dpmbench.errors import DpmbenchError

DEFAULT_MODEL = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"
SCALE = 100.0
CONVENTION = "100*max(cos,0) per sample, mean over prompts, no prefix"


def _hf_cached(pretrained_cfg: dict[str, Any], cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo = pretrained_cfg.get("hf_hub", "").strip("/")
    if not repo:
        return False
    return any(isinstance(try_to_load_from_cache(repo, f, cache_dir=cache_dir), str)
               for f in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME))


def load_clip(model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
              weights: str | None = None, cache_dir: str | None = None, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) from open_clip, loaded once per process for the same arguments.
    ``pretrained=None`` builds random weights (tests)."""
    return _load_clip(model_name, pretrained, weights, cache_dir, device)


@lru_cache(maxsize=2)
def _load_clip(model_name: str, pretrained: str | None, weights: str | None, cache_dir: str | None,
               device: str) -> tuple[Any, Any, Any]:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    local = resolve_local(weights, "DPMBENCH_CLIP_WEIGHTS", "CLIP weights")
    kw: dict[str, Any] = {"device": device, "cache_dir": cache_dir}
    if local is not None:
        kw.update(pretrained=str(local), force_quick_gelu=pretrained == "openai")
    elif pretrained:
        cfg = get_pretrained_cfg(model_name, pretrained)
        if not cfg:
            raise DpmbenchError(f"invalid CLIP pretrained tag {pretrained!r} for model {model_name!r}; allowed: "
                                f"{open_clip.list_pretrained_tags_by_model(model_name)}")
        if offline() and not _hf_cached(cfg, cache_dir):
            repo = cfg.get("hf_hub", "").strip("/")
            raise DpmbenchError(
                f"offline and the CLIP weights {model_name}/{pretrained} are not cached: download "
                f"open_clip_model.safetensors from https://huggingface.co/{repo} into the Hugging Face cache "
                f"(huggingface-cli download {repo}) or set DPMBENCH_CLIP_WEIGHTS=/path/to/the/file")
        kw["pretrained"] = pretrained
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, **kw)
    return model.eval().requires_grad_(False), preprocess, open_clip.get_tokenizer(model_name)


@torch.no_grad()
def clip_embeddings(model: Any, preprocess: Any, tokenizer: Any, images: torch.Tensor, prompts: list[str],
                    batch_size: int = 32, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """L2-normalized image and text embeddings (float64), one row per sample; ``images`` uint8 NCHW."""
    from PIL import Image

    if len(prompts) != len(images):
        raise DpmbenchError(f"invalid prompts: {len(prompts)} prompts for {len(images)} images")
    im_out, tx_out = [], []
    for lo in range(0, len(images), batch_size):
        batch = images[lo:lo + batch_size]
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        pil = [Image.fromarray(b.permute(1, 2, 0).numpy()) for b in batch]
        px = torch.stack([preprocess(p) for p in pil]).to(device)
        im_out.append(model.encode_image(px).double().cpu())
        tx_out.append(model.encode_text(tokenizer(prompts[lo:lo + batch_size]).to(device)).double().cpu())
    im, tx = torch.cat(im_out), torch.cat(tx_out)
    return (torch.nn.functional.normalize(im, dim=-1).numpy(), torch.nn.functional.normalize(tx, dim=-1).numpy())


def per_sample_clip_score(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """``100 * max(cos, 0)`` of matched rows (embeddings need not be normalized)."""
    a, b = np.atleast_2d(np.asarray(image_emb, np.float64)), np.atleast_2d(np.asarray(text_emb, np.float64))
    if a.shape != b.shape:
        raise DpmbenchError(f"invalid CLIP embeddings: image {a.shape} vs text {b.shape}")
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return SCALE * np.maximum(cos, 0.0)


def clip_score(image_emb: np.ndarray, text_emb: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Mean over samples (``idx``: a bootstrap selection) of the per-sample CLIP score."""
    s = per_sample_clip_score(image_emb, text_emb)
    return float(s.mean() if idx is None else s[idx].mean())


@torch.no_grad()
def clip_image_embeddings(model: Any, preprocess: Any, images: torch.Tensor, batch_size: int = 32,
                          device: str = "cpu") -> np.ndarray:
    """L2-normalized image embeddings (float64), one row per uint8 NCHW image (grey repeated to RGB), through
    open_clip's ``preprocess`` on PIL images."""
    from PIL import Image

    out = []
    for lo in range(0, len(images), batch_size):
        batch = images[lo:lo + batch_size]
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        px = torch.stack([preprocess(Image.fromarray(b.permute(1, 2, 0).numpy())) for b in batch]).to(device)
        out.append(model.encode_image(px).double().cpu())
    return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy()


def is_torchscript(path: str | Path) -> bool:
    """True when ``path`` is a TorchScript archive (a zip holding compiled ``code/``), as OpenAI's CLIP files are."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n for n in zf.namelist())


# not weights: OpenAI's scalars (open_clip's own OpenAI loader drops them too) and a causal-mask buffer
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def openai_state_dict_file(path: str | Path, sha256: str) -> Path:
    """A safetensors state dict of OpenAI's TorchScript CLIP file ``path`` (cached under
    ``$DPMBENCH_CACHE/weights/converted/<sha256>.safetensors``), which open_clip then loads like any local file.
    The archive is read with ``torch.jit.load`` only after its sha256 matches ``sha256`` (the publisher's checksum:
    OpenAI's download URLs carry it), never otherwise."""
    from safetensors.torch import save_file

    from dpmbench.download import verify_sha256
    from dpmbench.io import atomic_write, cache_dir

    verify_sha256(path, sha256, "OpenAI CLIP weights")
    out = cache_dir("weights", "converted") / f"{sha256}.safetensors"
    if out.is_file():
        return out
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp)))
    return out
