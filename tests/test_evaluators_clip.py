"""CLIP score, offline: an open_clip model of a tiny config with random weights (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpmbench.errors import DpmbenchError
from evaluators import evaluate
from evaluators.clip import clip_embeddings, clip_score, load_clip, per_sample_clip_score

TINY = "dpmbench-tiny-clip"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    import open_clip

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    d = tmp_path_factory.mktemp("clipcfg")
    (d / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return TINY


def test_hand_made_embeddings_follow_100_max_cos_0() -> None:
    img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    txt = np.array([[0.6, 0.8], [-1.0, 0.0], [0.0, 5.0], [-3.0, -4.0]])
    s = per_sample_clip_score(img, txt)
    np.testing.assert_allclose(s, [60.0, 0.0, 100.0, 0.0], atol=1e-12)  # cos 0.6, -1 (clamped), 1, -1
    assert clip_score(img, txt) == pytest.approx(40.0)
    assert clip_score(img, txt, np.array([0, 0, 2])) == pytest.approx(220.0 / 3)
    with pytest.raises(DpmbenchError, match="image \\(4, 2\\) vs text \\(3, 2\\)"):
        per_sample_clip_score(img, txt[:3])


def test_clip_pipeline_shapes_and_metric(tiny_model: str) -> None:
    model, pre, tok = load_clip(tiny_model, None)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (5, 3, 40, 48)).astype(np.float32)  # non-square: open_clip resizes + crops
    prompts = ["a cat", "a dog", "a digit seven", "a red car", "a house"]
    from evaluators.images import to_uint8

    im, tx = clip_embeddings(model, pre, tok, to_uint8(x), prompts, batch_size=2)
    assert im.shape == (5, 32) and tx.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(im, axis=1), 1.0, rtol=1e-12)
    with torch.no_grad():  # independent check of one sample: same preprocessing, cosine by hand
        from PIL import Image

        u = to_uint8(x)[3].permute(1, 2, 0).numpy()
        a = model.encode_image(pre(Image.fromarray(u))[None]).double()[0]
        b = model.encode_text(tok(["a red car"])).double()[0]
    cos = float(a @ b / (a.norm() * b.norm()))
    # float32 features, in a batch of 2 there and alone here (kernels differ by batch shape): they agree to ~1e-7
    # relative, and the cosine of near-orthogonal random features (~0.01 here) is a cancellation, so its error is
    # absolute, ~1e-7 (1.3e-7 seen on one machine): 1e-6 in the cosine, 1e-4 in the 0-100 score
    assert 100 * max(cos, 0.0) == pytest.approx(per_sample_clip_score(im[3:4], tx[3:4])[0], rel=1e-5, abs=1e-4)
    meta = {"model": "images", "prompts": np.array(prompts)}
    opts = {"clip_model": tiny_model, "clip_pretrained": None}
    v, ci, info = evaluate(["clip_score"], x, meta, bootstraps=20, options=opts)
    # the evaluate path re-embeds the images in float32 with its own batching: agreement to float32 round-off
    assert v["clip_score"] == pytest.approx(per_sample_clip_score(im, tx).mean(), rel=1e-5)
    assert info["clip"]["convention"].startswith("100*max(cos,0)") and ci["clip_score"][0] <= ci["clip_score"][1]
    x1 = np.concatenate([x, x[:1]])
    with pytest.raises(DpmbenchError, match="one prompt per sample"):
        evaluate(["clip_score"], x1, meta, bootstraps=0, options=opts)


def test_clip_offline_without_weights_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")
    monkeypatch.delenv("DPMBENCH_CLIP_WEIGHTS", raising=False)
    with pytest.raises(DpmbenchError, match=r"offline .*ViT-B-32/openai.*huggingface.co/timm/vit_base_patch32_clip"):
        load_clip("ViT-B-32", "openai", None, str(tmp_path / "hf"))
    with pytest.raises(DpmbenchError, match="invalid CLIP pretrained tag 'nope'"):
        load_clip("ViT-B-32", "nope", None, str(tmp_path / "hf"))
    monkeypatch.setenv("DPMBENCH_CLIP_WEIGHTS", str(tmp_path / "missing.safetensors"))
    with pytest.raises(DpmbenchError, match="from DPMBENCH_CLIP_WEIGHTS.*no such file"):
        load_clip("ViT-B-32", "openai", None, str(tmp_path / "hf"))
