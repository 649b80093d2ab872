"""``sd3``: Stable Diffusion 3 / 3.5 in diffusers' layout (``StableDiffusion3Pipeline`` folders).

``transformer/`` (``SD3Transformer2DModel``), ``vae/`` (``AutoencoderKL`` with ``shift_factor``), ``scheduler/``
(``FlowMatchEulerDiscreteScheduler``), ``text_encoder/`` + ``tokenizer/`` and ``text_encoder_2/`` + ``tokenizer_2/``
(two ``CLIPTextModelWithProjection``), ``text_encoder_3/`` + ``tokenizer_3/`` (``T5EncoderModel``; optional: without
it, or with option ``use_t5: false``, its states are zeros, as the pipeline passes them without a third encoder).
The shared conventions (flow schedule, velocity, latent state, ``decode``): ``latent_flow``.

Prompt encoding as ``StableDiffusion3Pipeline.encode_prompt`` (no clip-skip, no LoRA, the same prompt to all three
encoders): each CLIP tokenizes padded to the first tokenizer's ``model_max_length`` (77) and truncated; its
penultimate hidden state (``hidden_states[-2]``) is its token states, its projected output its pooled embedding.
The two CLIPs' token states are concatenated on the feature axis and zero-padded to the T5 width, then concatenated
with the T5 states (``max_sequence_length`` tokens, default 256, the pipeline's) along the sequence:
``encoder_hidden_states`` (n, 77 + 256, 4096); the pooled embeddings concatenated: ``pooled_projections`` (n, 2048).

Time: the transformer's timestep is sigma * 1000 (``num_train_timesteps`` t: the diffusers flow convention,
``diffusers_unet.timestep_offset``). Classifier-free guidance: ``guided(model, w)``, v = v(x | "") + w (v(x | c) -
v(x | "")), the empty prompt as the unconditional branch, one guided evaluation (1 NFE) = one transformer call on the
[cond; uncond] batch (``native_cond_uncond``), as the pipeline does with ``guidance_scale`` > 1; w = 1 is one
conditional call. The pipeline's own time grid is the schedule ``diffusers-flow-sd3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import bad_value
from dpmbench.models.adapters.diffusers_unet import set_micro_batch
from dpmbench.models.adapters.latent_flow import FLOW_OPTIONS, LatentFlowTransformer, flow_parts, latent_size
from dpmbench.models.adapters.text import load_pretrained

SD3_OPTIONS = (*FLOW_OPTIONS, "use_t5", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer",
               "tokenizer_2", "tokenizer_3")
T5_TOKENS = 256  # StableDiffusion3Pipeline's max_sequence_length default


class SD3(LatentFlowTransformer):
    """SD3 / SD3.5 (see the module docstring); ``clips`` = [(tokenizer, CLIPTextModelWithProjection)] x 2,
    ``t5`` = (tokenizer, T5EncoderModel) or None."""

    def __init__(self, transformer: torch.nn.Module, vae: torch.nn.Module, clips: list[tuple[Any, Any]],
                 t5: tuple[Any, Any] | None, *args: Any, **kwargs: Any):
        super().__init__(transformer, vae, *args, **kwargs)
        self.clips, self.t5 = clips, t5
        self.clip_tokens = int(clips[0][0].model_max_length)

    def _clip(self, tokenizer: Any, encoder: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(encoder.parameters()).device
        ids = tokenizer(prompts, padding="max_length", max_length=self.clip_tokens, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids.to(device), output_hidden_states=True)
        return out.hidden_states[-2], out[0]

    def _t5(self, prompts: list[str], like: torch.Tensor) -> torch.Tensor:
        if self.t5 is None:
            width = int(self.transformer.config.joint_attention_dim)
            return torch.zeros((len(prompts), self.max_sequence_length, width), dtype=like.dtype, device=like.device)
        tokenizer, encoder = self.t5
        ids = tokenizer(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                        add_special_tokens=True, return_tensors="pt").input_ids
        return encoder(ids.to(next(encoder.parameters()).device))[0]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """``encoder_hidden_states`` and ``pooled_projections`` of the prompts (the pipeline's ``encode_prompt``)."""
        (h1, p1), (h2, p2) = (self._clip(tok, enc, prompts) for tok, enc in self.clips)
        clip = torch.cat([h1, h2.to(h1.device)], dim=-1)
        t5 = self._t5(prompts, clip).to(device=clip.device)
        clip = torch.nn.functional.pad(clip.to(t5.dtype), (0, t5.shape[-1] - clip.shape[-1]))
        states = torch.cat([clip, t5], dim=-2)
        pooled = torch.cat([p1, p2.to(p1.device)], dim=-1)
        return {"encoder_hidden_states": states.to(self.dtype), "pooled_projections": pooled.to(self.dtype)}


def load_sd3(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> SD3:
    """Load an ``sd3`` entry (diffusers StableDiffusion3Pipeline folder)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    kwargs, opts = flow_parts(entry, root, device, SD3_OPTIONS, "SD3Transformer2DModel", T5_TOKENS)
    dtype = kwargs["dtype"]
    use_t5 = opts.get("use_t5", True)
    if not isinstance(use_t5, bool):
        raise bad_value("option use_t5", use_t5, ("true", "false"))
    clips = [(load_pretrained(CLIPTokenizer, root, opts, tok, "sd3"),
              load_pretrained(CLIPTextModelWithProjection, root, opts, enc, "sd3", torch_dtype=dtype, device=device))
             for tok, enc in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))]
    t5 = None
    if use_t5:
        encoder = load_pretrained(T5EncoderModel, root, opts, "text_encoder_3", "sd3", required=False,
                                  torch_dtype=dtype, device=device)
        if encoder is not None:
            t5 = (load_pretrained(T5TokenizerFast, root, opts, "tokenizer_3", "sd3"), encoder)
    transformer, vae = kwargs.pop("transformer"), kwargs.pop("vae")
    size = latent_size(entry, vae, int(transformer.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1))
    kwargs["shape"] = (int(transformer.config.in_channels), size, size)
    return set_micro_batch(SD3(transformer, vae, clips, t5, **kwargs), opts)
