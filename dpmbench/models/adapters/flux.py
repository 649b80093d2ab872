"""``flux``: FLUX.1 [dev] / [schnell] in diffusers' layout (``FluxPipeline`` folders).

``transformer/`` (``FluxTransformer2DModel``), ``vae/`` (``AutoencoderKL`` with ``shift_factor``), ``scheduler/``
(``FlowMatchEulerDiscreteScheduler``), ``text_encoder/`` + ``tokenizer/`` (``CLIPTextModel``: its pooled output) and
``text_encoder_2/`` + ``tokenizer_2/`` (``T5EncoderModel``: the token states). The shared conventions (flow schedule,
velocity, ``decode``): ``latent_flow``.

State: the UNPACKED latent (C, H/8, W/8) with C = ``in_channels / 4`` (16 for FLUX.1), H/8 and W/8 even, the shape of
the noise ``FluxPipeline.prepare_latents`` draws before it packs it; every transformer call packs the 2 x 2 patches
into (H/16)(W/16) tokens of 4C features (the pipeline's ``_pack_latents``, with its ``img_ids`` = (0, row, column)
and ``txt_ids`` = 0) and unpacks the velocity. So x_T, solver errors and ``decode`` are those of any latent model.

Prompt encoding as ``FluxPipeline.encode_prompt`` (the same prompt to both encoders): CLIP tokens padded to its
tokenizer's ``model_max_length`` (77), its ``pooler_output`` is ``pooled_projections``; T5 tokens padded and
truncated to ``max_sequence_length`` (option; default 512, the pipeline's; FLUX.1-schnell's model card uses 256),
its last hidden state is ``encoder_hidden_states``.

Time: the transformer's timestep is sigma itself, ``(1000 sigma) / 1000`` in float32 as the pipeline computes it
(its scheduler's timesteps are 1000 sigma, which it divides by 1000; the transformer multiplies by 1000 again).

Guidance. FLUX.1 [dev] is guidance-distilled (``transformer.config.guidance_embeds``): the guidance scale is an
INPUT of the network, not classifier-free guidance. ``guided(model, w)`` returns the model with guidance w (one
transformer call per evaluation, 1 NFE, as the pipeline's ``guidance_scale``); unguided (guidance None) the model
runs at its default guidance, option ``default_guidance`` (3.5, ``FluxPipeline``'s default ``guidance_scale``).
FLUX.1 [schnell] (no guidance embedding) takes no guidance: ``guided`` refuses any scale in one line. Neither runs
classifier-free guidance (the pipeline's ``true_cfg_scale`` with a negative prompt is not modelled).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.adapters.diffusers_unet import set_micro_batch
from dpmbench.models.adapters.latent_flow import FLOW_OPTIONS, LatentFlowTransformer, flow_parts, latent_size
from dpmbench.models.adapters.text import load_pretrained

FLUX_OPTIONS = (*FLOW_OPTIONS, "default_guidance", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
T5_TOKENS = 512  # FluxPipeline's max_sequence_length default
DEFAULT_GUIDANCE = 3.5  # FluxPipeline's guidance_scale default


def pack(x: torch.Tensor) -> torch.Tensor:
    """Latents (n, C, h, w) -> tokens (n, (h/2)(w/2), 4C): each 2 x 2 patch one token, channel-major within it."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), 4 * c)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of ``pack`` for latents of height ``h`` and width ``w``."""
    n, _, f = tokens.shape
    return tokens.reshape(n, h // 2, w // 2, f // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, f // 4, h, w)


def image_ids(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Position ids ((h/2)(w/2), 3) of the packed tokens: (0, row, column)."""
    rows = torch.arange(h // 2).repeat_interleave(w // 2)
    cols = torch.arange(w // 2).repeat(h // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=1).to(device=device, dtype=dtype)


class Flux(LatentFlowTransformer):
    """FLUX.1 (see the module docstring); ``clip`` = (tokenizer, CLIPTextModel), ``t5`` = (tokenizer,
    T5EncoderModel)."""

    def __init__(self, transformer: torch.nn.Module, vae: torch.nn.Module, clip: tuple[Any, Any],
                 t5: tuple[Any, Any], *args: Any, default_guidance: float = DEFAULT_GUIDANCE, **kwargs: Any):
        super().__init__(transformer, vae, *args, **kwargs)
        self.clip, self.t5 = clip, t5
        self.distilled = bool(getattr(transformer.config, "guidance_embeds", False))
        self.guidance = float(default_guidance) if self.distilled else None

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """``encoder_hidden_states`` (T5) and ``pooled_projections`` (CLIP) of the prompts (``encode_prompt``)."""
        (ctok, cenc), (ttok, tenc) = self.clip, self.t5
        ids = ctok(prompts, padding="max_length", max_length=int(ctok.model_max_length), truncation=True,
                   return_tensors="pt").input_ids
        pooled = cenc(ids.to(next(cenc.parameters()).device), output_hidden_states=False).pooler_output
        ids = ttok(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                   return_tensors="pt").input_ids
        states = tenc(ids.to(next(tenc.parameters()).device), output_hidden_states=False)[0]
        return {"encoder_hidden_states": states.to(self.dtype), "pooled_projections": pooled.to(self.dtype)}

    def timestep(self, t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sigma, as the pipeline feeds it: the flow timestep 1000 sigma (float32) divided by 1000."""
        return super().timestep(t, x) / 1000

    def unet_kwargs(self, cond: Any, n: int, device: torch.device) -> dict[str, Any]:
        kwargs = super().unet_kwargs(cond, n, device)
        if self.distilled:
            kwargs["guidance"] = torch.full((n,), float(self.guidance), dtype=torch.float32, device=device)
        return kwargs

    def _call(self, x: torch.Tensor, timestep: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        h, w = x.shape[-2:]
        txt = torch.zeros((kwargs["encoder_hidden_states"].shape[1], 3), dtype=self.dtype, device=x.device)
        out = self.transformer(hidden_states=pack(x.to(self.dtype)), timestep=timestep,
                               img_ids=image_ids(h, w, self.dtype, x.device), txt_ids=txt, return_dict=False,
                               **kwargs)[0]
        return unpack(out, h, w).to(x.dtype)

    def with_guidance(self, scale: float) -> Flux:
        """The model at guidance ``scale`` (guidance-distilled models only: the scale is the network's input)."""
        if not self.distilled:
            raise DpmbenchError(f"invalid guidance {scale} for model {self.name!r}: it has no guidance embedding "
                                "(FLUX.1-schnell-like) and no classifier-free guidance; allowed: none")
        if not float(scale) >= 0:
            raise bad_value("guidance", scale, "a number >= 0")
        model = copy.copy(self)
        model.guidance = float(scale)
        return model

    def cache_key(self) -> str:
        return super().cache_key() + (f"|guidance={self.guidance!r}" if self.distilled else "")


def load_flux(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> Flux:
    """Load a ``flux`` entry (diffusers FluxPipeline folder)."""
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    kwargs, opts = flow_parts(entry, root, device, FLUX_OPTIONS, "FluxTransformer2DModel", T5_TOKENS)
    dtype = kwargs["dtype"]
    default = opts.get("default_guidance", DEFAULT_GUIDANCE)
    if isinstance(default, bool) or not isinstance(default, int | float) or default < 0:
        raise bad_value("option default_guidance", default, "a number >= 0")
    clip = (load_pretrained(CLIPTokenizer, root, opts, "tokenizer", "flux"),
            load_pretrained(CLIPTextModel, root, opts, "text_encoder", "flux", torch_dtype=dtype, device=device))
    t5 = (load_pretrained(T5TokenizerFast, root, opts, "tokenizer_2", "flux"),
          load_pretrained(T5EncoderModel, root, opts, "text_encoder_2", "flux", torch_dtype=dtype, device=device))
    transformer, vae = kwargs.pop("transformer"), kwargs.pop("vae")
    if int(transformer.config.in_channels) % 4:
        raise DpmbenchError(f"invalid flux transformer in_channels {transformer.config.in_channels}: allowed: a "
                            "multiple of 4 (2 x 2 packed latent channels)")
    size = latent_size(entry, vae, 1024, multiple=2)
    kwargs["shape"] = (int(transformer.config.in_channels) // 4, size, size)
    return set_micro_batch(Flux(transformer, vae, clip, t5, default_guidance=float(default), **kwargs), opts)
