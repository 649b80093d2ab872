"""``latent-diffusion``: a diffusers UNet in the latent space of an autoencoder (``AutoencoderKL`` or ``VQModel``).

Sampling happens in latent space: ``model.shape`` is the latent shape, x_T is latent noise and solver errors
(MSE to a reference) are measured on latents, as the latent-diffusion papers do (Rombach et al. 2022; the
DPM-Solver++ and UniPC papers' latent-space comparisons). ``decode(latents)`` maps latents to uint8 RGB images
the way diffusers' pipelines do: ``vae.decode(latents / scaling_factor + shift_factor)``, then
``round((image / 2 + 0.5).clamp(0, 1) * 255)`` (``VQModel.decode`` quantizes, as ``LDMPipeline`` does).

Time, schedule and parameterization follow ``diffusers-unet`` (vp-discrete, UNet timestep ``N t - 1``).
A ``UNet2DConditionModel`` without a text encoder takes precomputed ``encoder_hidden_states`` as ``cond``
(tensor (n, L, D) or (L, D)); the text-conditional subclass is ``stable-diffusion``.

Latent size: ``resolution // 2 ** (len(vae.block_out_channels) - 1)`` when the entry gives the image
``resolution``, else the UNet's ``sample_size``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters.common import entry_digest, model_dtype, options, to_uint8
from dpmbench.models.adapters.diffusers_unet import (
    UNET_OPTIONS,
    DiffusersUNet,
    _unet_folder,
    component_dir,
    schedule_and_parameterization,
    set_micro_batch,
)

LATENT_OPTIONS = (*UNET_OPTIONS, "vae", "vqvae", "decode_batch_size")


class LatentDiffusion(DiffusersUNet):
    """A latent-space diffusers UNet plus its autoencoder (``decode``)."""

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, *args: Any, conditional_unet: bool = False,
                 decode_batch_size: int = 16, **kwargs: Any):
        super().__init__(unet, *args, **kwargs)
        self.vae, self.conditional_unet = vae, conditional_unet
        self.scale_factor = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(vae.config, "shift_factor", 0.0) or 0.0)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.decode_batch_size = int(decode_batch_size)

    def encoder_states(self, cond: Any, n: int, device: torch.device) -> torch.Tensor:
        """``encoder_hidden_states`` for a batch of n: precomputed embeddings (no text encoder here)."""
        if cond is None:
            raise DpmbenchError(f"invalid cond None for model {self.name!r}: its UNet needs encoder_hidden_states "
                                "(precomputed embeddings) and it has no text encoder")
        if not isinstance(cond, torch.Tensor):
            raise DpmbenchError(f"invalid cond for model {self.name!r}: allowed: a tensor of embeddings (n, L, D)")
        emb = cond.to(device=device, dtype=self.dtype)
        return emb.expand(n, *emb.shape[-2:]) if emb.ndim == 2 or emb.shape[0] == 1 else emb

    def unet_kwargs(self, cond: Any, n: int, device: torch.device) -> dict[str, Any]:
        if self.conditional_unet:
            return {"encoder_hidden_states": self.encoder_states(cond, n, device)}
        return super().unet_kwargs(cond, n, device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (n, *shape) -> uint8 images (n, 3, H, W) on the latents' device, in chunks of
        ``decode_batch_size``."""
        vae_device = next(self.vae.parameters()).device
        vae_dtype = next(self.vae.parameters()).dtype
        out = []
        for chunk in latents.split(self.decode_batch_size):
            z = chunk.to(device=vae_device, dtype=vae_dtype) / self.scale_factor + self.shift_factor
            out.append(to_uint8(self.vae.decode(z, return_dict=False)[0]).to(latents.device))
        if not out:
            return torch.zeros((0, 3, *(s * self.vae_scale for s in self.shape[1:])), dtype=torch.uint8)
        return torch.cat(out)


def load_vae(root: Path, opts: Mapping[str, Any], dtype: torch.dtype, device: str | torch.device) -> torch.nn.Module:
    """The autoencoder: ``vae/`` or ``vqvae/`` (options ``vae`` / ``vqvae``), AutoencoderKL or VQModel by its
    config's class name."""
    from diffusers import AutoencoderKL, VQModel

    folder = component_dir(root, opts, ("vae", "vqvae"), ("vae", "vqvae"), "config.json")
    if folder is None:
        raise DpmbenchError(f"invalid latent-diffusion folder {str(root)!r}: no vae/ or vqvae/ with a config.json")
    cls_name = json.loads((folder / "config.json").read_text()).get("_class_name", "AutoencoderKL")
    cls = VQModel if cls_name == "VQModel" else AutoencoderKL
    net = cls.from_pretrained(folder, torch_dtype=dtype, low_cpu_mem_usage=False)  # = without `accelerate`, no warning
    return net.to(device).eval().requires_grad_(False)


def load_unet_any(unet_dir: Path, dtype: torch.dtype, device: str | torch.device) -> tuple[torch.nn.Module, bool]:
    """``UNet2DModel`` or ``UNet2DConditionModel`` by the config's class name; also says which."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    cls_name = json.loads((unet_dir / "config.json").read_text()).get("_class_name", "UNet2DModel")
    conditional = cls_name == "UNet2DConditionModel"
    cls = UNet2DConditionModel if conditional else UNet2DModel
    net = cls.from_pretrained(unet_dir, torch_dtype=dtype, low_cpu_mem_usage=False)  # = without `accelerate`
    return net.to(device).eval().requires_grad_(False), conditional


def latent_parts(entry: Mapping[str, Any], root: Path, device: str | torch.device, allowed: tuple[str, ...]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything a latent model is built from: (constructor kwargs, checked options)."""
    opts = options(entry, allowed)
    dtype = model_dtype(opts)
    unet_dir, sched_dir = _unet_folder(root, opts)
    schedule, param, _ = schedule_and_parameterization(entry, sched_dir, opts)
    if schedule.kind == "flow":
        raise DpmbenchError(f"invalid scheduler config for latent model {entry.get('id')!r}: a flow-matching "
                            "config; allowed: a DDPM-family (betas) config")
    unet, conditional = load_unet_any(unet_dir, dtype, device)
    vae = load_vae(root, opts, dtype, device)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    res = entry.get("resolution")
    size = int(res) // vae_scale if res else int(unet.config.sample_size)
    num_classes = None if conditional else opts.get("num_classes", entry.get("num_classes")
                                                          or unet.config.num_class_embeds)
    kwargs = {"unet": unet, "vae": vae, "schedule": schedule, "parameterization": param,
              "name": str(entry.get("id", Path(root).name)), "shape": (unet.config.in_channels, size, size),
              "dtype": dtype, "num_classes": num_classes, "null_class": opts.get("null_class"),
              "digest": entry_digest(entry), "conditional_unet": conditional,
              "decode_batch_size": int(opts.get("decode_batch_size", 16))}
    return kwargs, opts


def load_latent_diffusion(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> LatentDiffusion:
    """Load a ``latent-diffusion`` entry (UNet + autoencoder + scheduler)."""
    kwargs, opts = latent_parts(entry, root, device, LATENT_OPTIONS)
    unet, vae = kwargs.pop("unet"), kwargs.pop("vae")
    return set_micro_batch(LatentDiffusion(unet, vae, **kwargs), opts)
