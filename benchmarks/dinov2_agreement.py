"""fd_dinov2's network against the DINOv2 code dgm-eval and torch-fidelity load through torch.hub, on the same
weights: does transformers' Dinov2Model (as evaluators.dinov2 loads it) give the features of dinov2's own
``dinov2_vitl14``?

Needs a local copy of github.com/facebookresearch/dinov2 (torch.hub keeps one at
``$TORCH_HOME/hub/facebookresearch_dinov2_main``); nothing is downloaded. The dinov2 model is built with random
weights (``pretrained=False``), its state dict converted to transformers' layout and saved as a folder, which
evaluators.dinov2 loads like the real weights (the names of facebook/dinov2-large's file, which transformers renames
on loading). Compared on 224x224 uint8 images, where neither pipeline resizes
(torch-fidelity's TF1-style bilinear resize and dgm-eval's PIL bicubic resize are both the identity at 224):

- torch-fidelity 0.4.0's ``FeatureExtractorDinoV2('dinov2-vit-l-14')`` (its ``torch.hub.load`` answered with the
  local model) vs ``evaluators.dinov2.dinov2_features``;
- the same with transformers' own positional-embedding resize (``size=16``, not dinov2's scale factor
  ``(16 + 0.1) / 37``), to show what the replacement in evaluators.dinov2 changes.

Usage: python benchmarks/dinov2_agreement.py --hub-dir PATH [--arch vitl14|vits14] [--n 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ARCH = {"vits14": (384, 12, 6), "vitb14": (768, 12, 12), "vitl14": (1024, 24, 16)}  # width, depth, heads


def to_transformers(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """dinov2's ViT state dict -> the names of facebook/dinov2-large's model.safetensors (transformers' original
    Dinov2 layout; the fused qkv projection split in three)."""
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": sd["mask_token"],
           "embeddings.position_embeddings": sd["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    for i in range(depth):
        b, t = f"blocks.{i}.", f"encoder.layer.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].chunk(3)
        qb, kb, vb = sd[b + "attn.qkv.bias"].chunk(3)
        a = t + "attention.attention."
        out.update({a + "query.weight": q, a + "key.weight": k, a + "value.weight": v,
                    a + "query.bias": qb, a + "key.bias": kb, a + "value.bias": vb,
                    t + "attention.output.dense.weight": sd[b + "attn.proj.weight"],
                    t + "attention.output.dense.bias": sd[b + "attn.proj.bias"],
                    t + "layer_scale1.lambda1": sd[b + "ls1.gamma"], t + "layer_scale2.lambda1": sd[b + "ls2.gamma"]})
        for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            out[t + n + ".weight"], out[t + n + ".bias"] = sd[b + n + ".weight"], sd[b + n + ".bias"]
    return {k: v.contiguous() for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hub-dir", required=True, help="a local copy of github.com/facebookresearch/dinov2")
    ap.add_argument("--arch", default="vitl14", choices=list(ARCH))
    ap.add_argument("--n", type=int, default=4, help="number of random 224x224 images")
    args = ap.parse_args()
    from safetensors.torch import save_file
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
    from transformers import Dinov2Config

    import evaluators.dinov2 as dv

    torch.manual_seed(0)
    hub = torch.hub.load(args.hub_dir, f"dinov2_{args.arch}", source="local", pretrained=False).eval()
    with torch.no_grad():  # random, non-trivial layer scales and norms (the hub initializes them to 1 / 0)
        for name, p in hub.named_parameters():
            if name.endswith("gamma") or ".norm" in name or name.startswith("norm"):
                p.add_(0.1 * torch.randn_like(p))
    width, depth, heads = ARCH[args.arch]
    cfg = Dinov2Config(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, mlp_ratio=4,
                       image_size=518, patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6, qkv_bias=True)
    images = torch.randint(0, 256, (args.n, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:  # the layout of facebook/dinov2-large: config.json, model.safetensors
        cfg.save_pretrained(tmp)
        save_file(to_transformers(hub.state_dict(), depth), str(Path(tmp) / "model.safetensors"))
        ours = dv.dinov2_features(images, tmp, batch_size=args.n)
        plain = dv._hub_interpolate_pos_encoding
        from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

        with mock.patch.object(dv, "_hub_interpolate_pos_encoding", Dinov2Embeddings.interpolate_pos_encoding):
            dv._load.cache_clear()
            hf_interp = dv.dinov2_features(images, tmp, batch_size=args.n)
        assert dv._hub_interpolate_pos_encoding is plain
    with mock.patch.object(torch.hub, "load", return_value=hub):
        fe = FeatureExtractorDinoV2(f"dinov2-vit-{args.arch[3]}-14", ["dinov2"]).eval()
    with torch.no_grad():
        tf = fe(images)[0].double().numpy()
    scale = np.abs(tf).max()
    print(f"arch {args.arch}, {args.n} images 224x224, |feature| max {scale:.4g}")
    print(f"torch-fidelity vs evaluators.dinov2:              max |diff| {np.abs(tf - ours).max():.3g} "
          f"(relative {np.abs(tf - ours).max() / scale:.3g})")
    print(f"torch-fidelity vs transformers' own pos. resize:  max |diff| {np.abs(tf - hf_interp).max():.3g} "
          f"(relative {np.abs(tf - hf_interp).max() / scale:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
