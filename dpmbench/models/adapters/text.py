"""Prompt conditioning shared by the text-conditional adapters (``stable-diffusion``, ``sd3``, ``flux``).

``cond`` of a text-conditional model is a list of prompts (one per sample), a single prompt (every sample), or None
(the empty prompt ``""``, the unconditional branch of classifier-free guidance as diffusers' pipelines encode it).
``prompt_key`` turns it into the tuple of prompts to encode (one prompt, expanded to the batch, or one per sample);
``EmbeddingCache`` keeps the encodings of the last few prompt batches, so a sampling run encodes each batch once, not
once per evaluation. ``load_pretrained`` loads one component folder of a pipeline (text encoder, tokenizer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError

EMBED_CACHE = 8  # prompt batches kept


def prompt_key(cond: Any, n: int, model: str, allowed: str = "prompts (str or list of str) or None"
               ) -> tuple[str, ...]:
    """The prompts of ``cond`` for a batch of ``n``: ``("",)`` for None, ``(cond,)`` for one prompt (both expanded to
    the batch by the caller), else the ``n`` prompts of a list; a one-line error naming ``allowed`` otherwise."""
    if cond is None:
        return ("",)
    if isinstance(cond, str):
        return (cond,)
    if isinstance(cond, torch.Tensor) or not hasattr(cond, "__iter__"):
        raise DpmbenchError(f"invalid cond for model {model!r}: allowed: {allowed}")
    prompts = list(cond)
    if not all(isinstance(p, str) for p in prompts):
        raise DpmbenchError(f"invalid cond for model {model!r}: allowed: {allowed}")
    if len(prompts) != n:
        raise DpmbenchError(f"invalid cond: {len(prompts)} prompts for a batch of {n} samples")
    return tuple(prompts)


def expand_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """A tensor of one row (1, ...) expanded to ``n`` rows (a view); a tensor of ``n`` rows unchanged."""
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n != 1 else t


class EmbeddingCache:
    """Encodings of the last ``size`` prompt batches, keyed by the prompts (oldest dropped first)."""

    def __init__(self, size: int = EMBED_CACHE):
        self.size = int(size)
        self._items: dict[tuple[str, ...], Any] = {}

    def get(self, key: tuple[str, ...], compute: Callable[[list[str]], Any]) -> Any:
        """The cached encoding of ``key``, computed by ``compute(list(key))`` the first time."""
        value = self._items.get(key)
        if value is None:
            value = compute(list(key))
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value
        return value


def load_pretrained(cls: Any, root: Path, opts: Mapping[str, Any], key: str, adapter: str,
                    required: bool = True, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` of the pipeline component in ``root / opts.get(key, key)`` (a text encoder or a
    tokenizer); None when the folder is absent and the component is optional, else a one-line error. Networks come
    back in eval mode without gradients, on the device given as ``device=`` (if any)."""
    folder = Path(root) / str(opts.get(key, key))
    if not folder.is_dir():
        if required:
            raise DpmbenchError(f"invalid {adapter} folder {str(root)!r}: no {folder.name}/ subfolder (option {key})")
        return None
    device = kwargs.pop("device", None)
    obj = cls.from_pretrained(folder, **kwargs)
    if isinstance(obj, torch.nn.Module):
        obj = obj.to(device or "cpu").eval().requires_grad_(False)
    return obj
