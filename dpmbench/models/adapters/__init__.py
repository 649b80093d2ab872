"""Adapters from pretrained checkpoints to dpmbench's ``Model`` interface, one module per kind.

``load_adapter(entry, root, device)`` builds the model of one checkpoint-manifest ``entry`` (a mapping with
``id``, ``adapter``, ``parameterization``, ``schedule``, ``resolution``, ``options``; pickles also ``sha256`` or
``files``) from the verified files under ``root``. Heavy dependencies (diffusers, transformers, the checkpoints'
own code) are imported only when an adapter runs.

Adapters: ``diffusers-unet`` (pixel UNet2DModel + DDPM scheduler), ``latent-diffusion`` (UNet + VAE/VQ, latent
space, ``decode``), ``stable-diffusion`` (SD 1.x/2.x, text conditioning and classifier-free guidance), ``sd3``
(Stable Diffusion 3 / 3.5: flow-matching transformer, three text encoders, classifier-free guidance), ``flux``
(FLUX.1 [dev] / [schnell]: flow-matching transformer, packed latents, the guidance embedding of the distilled
[dev]), ``edm-pickle`` (NVlabs/edm ``*.pkl``, sha256-gated), ``score-sde`` (score_sde_pytorch VP
``checkpoint_*.pth``) and ``guided-diffusion`` (openai/guided-diffusion ADM ``*.pt`` with its noisy classifier:
classifier guidance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.base import Model


def _diffusers_unet(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.diffusers_unet import load_diffusers_unet

    return load_diffusers_unet(entry, root, device)


def _latent(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.latent import load_latent_diffusion

    return load_latent_diffusion(entry, root, device)


def _stable_diffusion(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(entry, root, device)


def _sd3(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.sd3 import load_sd3

    return load_sd3(entry, root, device)


def _flux(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.flux import load_flux

    return load_flux(entry, root, device)


def _edm(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.edm_pickle import load_edm_pickle

    return load_edm_pickle(entry, root, device)


def _guided_diffusion(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.guided_diffusion import load_guided_diffusion

    return load_guided_diffusion(entry, root, device)


def _score_sde(entry: Mapping[str, Any], root: Path, device: str | torch.device) -> Model:
    from dpmbench.models.adapters.score_sde import load_score_sde

    return load_score_sde(entry, root, device)


ADAPTERS: dict[str, Callable[[Mapping[str, Any], Path, str | torch.device], Model]] = {
    "diffusers-unet": _diffusers_unet,
    "latent-diffusion": _latent,
    "stable-diffusion": _stable_diffusion,
    "sd3": _sd3,
    "flux": _flux,
    "edm-pickle": _edm,
    "score-sde": _score_sde,
    "guided-diffusion": _guided_diffusion,
}


def load_adapter(entry: Mapping[str, Any], root: str | Path, device: str | torch.device = "cpu") -> Model:
    """The ``Model`` of manifest ``entry`` from the checkpoint files under ``root``, on ``device``."""
    name = entry.get("adapter")
    if name not in ADAPTERS:
        raise bad_value("adapter", name, ADAPTERS)
    root = Path(root)
    if not root.is_dir():
        raise DpmbenchError(f"invalid checkpoint root {str(root)!r} for {entry.get('id')!r}: no such directory")
    return ADAPTERS[name](entry, root, device)


def prompts_from_captions(path: str | Path, n: int, seed: int = 0) -> list[str]:
    """A fixed, seeded subset of n captions (see ``stable_diffusion.prompts_from_captions``)."""
    from dpmbench.models.adapters.stable_diffusion import prompts_from_captions as choose

    return choose(path, n, seed)


__all__ = ["ADAPTERS", "load_adapter", "prompts_from_captions"]
