"""``stable-diffusion``: Stable Diffusion 1.x / 2.x folders (unet, vae, text_encoder, tokenizer, scheduler).

Text conditioning as diffusers' ``StableDiffusionPipeline.encode_prompt`` (no clip-skip, no LoRA): the prompt is
tokenized padded to ``tokenizer.model_max_length`` (77) and truncated, and the CLIP text encoder's last hidden
state is the UNet's ``encoder_hidden_states``. The unconditional branch of classifier-free guidance is the
empty prompt ``""`` encoded the same way (Ho & Salimans 2022; diffusers' pipelines). Embeddings are computed
once per prompt batch and cached. ``cond`` is a list of prompts (one per sample), a single prompt, or a tensor
of precomputed embeddings (n, L, D).

``guided(model, 7.5)`` runs classifier-free guidance; one guided evaluation (1 NFE) is one UNet call on the
concatenated [cond; uncond] batch (``eps_cond_uncond``), as the pipelines do. SD 2.x 768 checkpoints are
v-prediction: the scheduler config's ``prediction_type`` sets the parameterization. Sampling happens in latent
space (``decode`` gives uint8 images), see ``latent-diffusion``.

Prompts for benchmarks: ``prompts_from_captions(path, n, seed)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters.diffusers_unet import set_micro_batch
from dpmbench.models.adapters.latent import LATENT_OPTIONS, LatentDiffusion, latent_parts
from dpmbench.models.adapters.text import EmbeddingCache, expand_rows, prompt_key

SD_OPTIONS = (*LATENT_OPTIONS, "text_encoder", "tokenizer")


class StableDiffusion(LatentDiffusion):
    """Text-conditional latent diffusion (CLIP text encoder); see the module docstring."""

    text_conditional = True

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer: Any,
                 *args: Any, **kwargs: Any):
        super().__init__(unet, vae, *args, **kwargs)
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self._embeddings = EmbeddingCache()

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        mask = ids.attention_mask.to(device) if getattr(self.text_encoder.config, "use_attention_mask",
                                                        False) else None
        return self.text_encoder(ids.input_ids.to(device), attention_mask=mask)[0].to(self.dtype)

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP embeddings (len(prompts), L, D) of the prompts, in the UNet's dtype (cached per prompt batch)."""
        return self._embeddings.get(tuple(str(p) for p in prompts), self._encode)

    def encoder_states(self, cond: Any, n: int, device: torch.device) -> torch.Tensor:
        if isinstance(cond, torch.Tensor):
            return super().encoder_states(cond, n, device)
        key = prompt_key(cond, n, self.name, allowed="prompts (str or list of str), None or an embeddings tensor")
        return expand_rows(self.encode_prompts(key).to(device), n)


def load_stable_diffusion(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu"
                          ) -> StableDiffusion:
    """Load a ``stable-diffusion`` entry (diffusers SD 1.x / 2.x folder)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    kwargs, opts = latent_parts(entry, root, device, SD_OPTIONS)
    if not kwargs["conditional_unet"]:
        raise DpmbenchError(f"invalid stable-diffusion folder {str(root)!r}: its UNet is not a UNet2DConditionModel")
    te_dir = Path(root) / str(opts.get("text_encoder", "text_encoder"))
    tok_dir = Path(root) / str(opts.get("tokenizer", "tokenizer"))
    for d in (te_dir, tok_dir):
        if not d.is_dir():
            raise DpmbenchError(f"invalid stable-diffusion folder {str(root)!r}: no {d.name}/ subfolder")
    text_encoder = CLIPTextModel.from_pretrained(te_dir, torch_dtype=kwargs["dtype"]).to(device).eval()
    text_encoder.requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    unet, vae = kwargs.pop("unet"), kwargs.pop("vae")
    return set_micro_batch(StableDiffusion(unet, vae, text_encoder, tokenizer, **kwargs), opts)


def read_captions(path: str | Path) -> list[str]:
    """Captions of a file: MS-COCO captions JSON (``annotations[].caption``, ordered by annotation ``id``) or
    plain text (one caption per non-empty line)."""
    p = Path(path)
    if not p.is_file():
        raise DpmbenchError(f"invalid captions file {str(p)!r}: no such file")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            anns = sorted(data["annotations"], key=lambda a: a.get("id", 0))
            captions = [" ".join(str(a["caption"]).split()) for a in anns]
        except (ValueError, KeyError, TypeError) as exc:
            raise DpmbenchError(f"invalid captions file {str(p)!r}: not a COCO captions JSON "
                                f"(annotations[].caption): {exc.__class__.__name__}") from None
    else:
        captions = [" ".join(line.split()) for line in text.splitlines()]
    captions = [c for c in captions if c]
    if not captions:
        raise DpmbenchError(f"invalid captions file {str(p)!r}: no captions")
    return captions


def prompts_from_captions(path: str | Path, n: int, seed: int = 0) -> list[str]:
    """A fixed subset of ``n`` captions chosen with ``seed``, deterministic across machines and library versions.

    Caption i gets the key sha256("dpmbench-captions:{seed}:{i}"); the n smallest keys are taken, in key order.
    The subset for a larger n contains the one for a smaller n (prefix-stable), so shards agree.
    """
    captions = read_captions(path)
    if not 1 <= n <= len(captions):
        raise DpmbenchError(f"invalid number of prompts {n}: allowed: 1..{len(captions)} (captions in {str(path)!r})")

    def key(i: int) -> bytes:
        return hashlib.sha256(f"dpmbench-captions:{int(seed)}:{i}".encode()).digest()

    order = sorted(range(len(captions)), key=key)
    return [captions[i] for i in order[:n]]
