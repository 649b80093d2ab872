"""Text-conditional flow-matching transformers in a VAE's latent space: the shared base of ``sd3`` and ``flux``.

A diffusers pipeline folder with ``transformer/`` (``SD3Transformer2DModel`` / ``FluxTransformer2DModel``),
``vae/`` (``AutoencoderKL``), ``scheduler/`` (a ``FlowMatchEulerDiscreteScheduler`` config) and the text encoders and
tokenizers of the pipeline. The schedule is ``flow`` (x_t = (1 - t) x0 + t eps, t = sigma), the network predicts the
velocity v = eps - x0 (parameterization ``flow``), and the scheduler config's ``shift`` / dynamic shifting is a time
grid (``diffusers-flow-*``, ``flow-shift:S``, ``flux-shift:L``), not part of the model.

The model's state is the latent (C, H/8, W/8) of a ``resolution`` x ``resolution`` image (the transformer's
``in_channels`` for SD3, ``in_channels / 4`` for FLUX, which packs 2 x 2 patches into tokens inside the call):
x_T is latent noise, errors are measured on latents, and ``decode`` gives uint8 images as the pipelines'
``(latents / scaling_factor) + shift_factor`` then ``vae.decode`` (the VAE's ``shift_factor``: 0.0609 for SD3,
0.1159 for FLUX; its inverse maps an image's latent z to (z - shift) * scale).

``cond`` is prompts (``dpmbench.models.adapters.text``); the encoders run once per prompt batch (cached). Options:
``dtype``, ``transformer`` / ``vae`` / ``scheduler`` (folder names), ``micro_batch`` (rows per transformer call,
default ``MICRO_BATCH``), ``decode_batch_size``, ``max_sequence_length`` (T5 tokens) and each adapter's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters.common import entry_digest, model_dtype, options
from dpmbench.models.adapters.diffusers_unet import component_dir, schedule_and_parameterization
from dpmbench.models.adapters.latent import LatentDiffusion, load_vae
from dpmbench.models.adapters.text import EmbeddingCache, expand_rows, prompt_key

FLOW_OPTIONS = ("dtype", "transformer", "vae", "scheduler", "micro_batch", "decode_batch_size",
                "max_sequence_length")
# Rows per transformer call (chunks of fixed size, the last padded: samples independent of the batch they come in,
# see DiffusersUNet.net). 4: a guided batch of 2 prompts or an unguided one of 4 fills one call; at 1024 px (4096
# latent tokens) 4 rows already fill a GPU. Set batch_size to a multiple of 4 (or 2 with guidance) to pad nothing.
MICRO_BATCH = 4


class LatentFlowTransformer(LatentDiffusion):
    """A text-conditional latent flow transformer; subclasses encode prompts (``encode``) into the transformer's
    keyword arguments."""

    text_conditional = True
    micro_batch: int | None = MICRO_BATCH

    def __init__(self, transformer: torch.nn.Module, vae: torch.nn.Module, *args: Any, max_sequence_length: int,
                 **kwargs: Any):
        super().__init__(transformer, vae, *args, conditional_unet=True, **kwargs)
        self.transformer = transformer
        self.max_sequence_length = int(max_sequence_length)
        self._embeddings = EmbeddingCache()

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The transformer's keyword arguments carrying the prompts (one row per prompt), in the model's dtype."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """``encode`` of the prompts, cached per prompt batch."""
        return self._embeddings.get(tuple(str(p) for p in prompts), self.encode)

    def unet_kwargs(self, cond: Any, n: int, device: torch.device) -> dict[str, Any]:
        """The prompt encodings of ``cond`` (prompts, one prompt, or None: the empty prompt) for a batch of n."""
        emb = self.encode_prompts(prompt_key(cond, n, self.name))
        return {k: expand_rows(v.to(device), n) for k, v in emb.items()}

    def _call(self, x: torch.Tensor, timestep: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out = self.transformer(hidden_states=x.to(self.dtype), timestep=timestep, return_dict=False, **kwargs)[0]
        return out.to(x.dtype)


def flow_parts(entry: Mapping[str, Any], root: Path, device: str | torch.device, allowed: tuple[str, ...],
               cls_name: str, max_sequence_length: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a latent flow transformer is built from: (constructor kwargs with ``transformer`` and ``vae``, checked
    options). The transformer's config must name ``cls_name``; the scheduler config must be a flow-matching one;
    ``max_sequence_length``: the default T5 token count (the pipeline's)."""
    import diffusers

    adapter = str(entry.get("adapter"))
    opts = options(entry, allowed)
    dtype = model_dtype(opts)
    tr_dir = component_dir(root, opts, ("transformer",), ("transformer",), "config.json")
    sched_dir = component_dir(root, opts, ("scheduler",), ("scheduler",), "scheduler_config.json")
    if tr_dir is None or sched_dir is None:
        raise DpmbenchError(f"invalid {adapter} folder {str(root)!r}: no transformer/config.json or "
                            "scheduler/scheduler_config.json")
    found = json.loads((tr_dir / "config.json").read_text()).get("_class_name")
    if found != cls_name:
        raise DpmbenchError(f"invalid {adapter} transformer {found!r} in {str(tr_dir)!r}: allowed: {cls_name}")
    schedule, param, big_n = schedule_and_parameterization(entry, sched_dir, opts)
    if schedule.kind != "flow":
        raise DpmbenchError(f"invalid scheduler config for {adapter} model {entry.get('id')!r}: not a flow-matching "
                            "config; allowed: FlowMatchEulerDiscreteScheduler's")
    # low_cpu_mem_usage=False: what diffusers falls back to without `accelerate`, said explicitly (no warning per load)
    transformer = getattr(diffusers, cls_name).from_pretrained(tr_dir, torch_dtype=dtype, low_cpu_mem_usage=False)
    transformer = transformer.to(device).eval().requires_grad_(False)
    vae = load_vae(root, opts, dtype, device)
    seq = opts.get("max_sequence_length", max_sequence_length)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= 512:
        raise DpmbenchError(f"invalid option max_sequence_length {seq!r} of adapter {adapter!r}: allowed: an "
                            "integer 1..512")
    kwargs = {"transformer": transformer, "vae": vae, "schedule": schedule, "parameterization": param,
              "name": str(entry.get("id", Path(root).name)), "dtype": dtype, "digest": entry_digest(entry),
              "num_train_timesteps": big_n, "decode_batch_size": int(opts.get("decode_batch_size", 16)),
              "max_sequence_length": seq}
    return kwargs, opts


def latent_size(entry: Mapping[str, Any], vae: torch.nn.Module, default_pixels: int, multiple: int = 1) -> int:
    """The latent side of the entry's ``resolution`` (else ``default_pixels``): pixels over the VAE's downscale,
    rounded down to a multiple of ``multiple`` (FLUX packs 2 x 2 patches)."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    pixels = int(entry.get("resolution") or default_pixels)
    size = multiple * (pixels // (scale * multiple))
    if size < 1:
        raise DpmbenchError(f"invalid resolution {pixels} for {entry.get('id')!r}: allowed: at least "
                            f"{scale * multiple} pixels")
    return size
