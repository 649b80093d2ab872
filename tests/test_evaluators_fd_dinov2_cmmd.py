"""fd_dinov2 and cmmd, offline: the formulas against independent computations on fixed features (scipy's sqrtm
Frechet distance, a double-loop MMD), and both metrics end to end through ``evaluate`` with tiny random networks of
the real architectures (transformers' Dinov2Model, an open_clip CLIP) saved locally and loaded through the same
code as the real weights."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dpmbench.errors import DpmbenchError
from evaluators import evaluate
from evaluators.images import to_uint8

TINY_CLIP = "dpmbench-tiny-cmmd-clip"


def _scipy_fd(f: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """dgm-eval's ``compute_FD_with_stats`` (scipy.linalg.sqrtm of S1 S2, real part), written out here."""
    from scipy import linalg

    mu1, s1 = f.mean(0), np.cov(f, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _loop_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """1000 * biased MMD^2 with exp(-|a-b|^2 / 200), one pair at a time."""
    def mean_k(a: np.ndarray, b: np.ndarray) -> float:
        return sum(np.exp(-np.sum((ai - bj) ** 2) / 200.0) for ai in a for bj in b) / (len(a) * len(b))
    return 1000.0 * (mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y))


def _unit(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    a = rng.standard_normal((n, d)) + shift
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_cmmd_formula_matches_a_double_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluators.cmmd as cm

    rng = np.random.default_rng(0)
    x, y = _unit(rng, 7, 8), _unit(rng, 5, 8, shift=0.7)
    want = _loop_cmmd(x, y)
    assert cm.cmmd_distance(x, y) == pytest.approx(want, rel=1e-12)
    monkeypatch.setattr(cm, "_CHUNK", 2)  # the chunked kernel sums agree with one block
    assert cm.cmmd_distance(x, y) == pytest.approx(want, rel=1e-12)
    assert want > 0 and cm.cmmd_distance(y, y) == pytest.approx(0.0, abs=1e-12)
    idx = np.array([0, 0, 3, 6, 2, 2, 2])  # a bootstrap resample: duplicates count, as in the V-statistic
    assert cm.CmmdBlocks(x, y).value(idx) == pytest.approx(_loop_cmmd(x[idx], y), rel=1e-12)
    with pytest.raises(DpmbenchError, match="samples 8-d vs reference 3-d"):
        cm.cmmd_distance(x, y[:, :3])


# -- fd_dinov2 -------------------------------------------------------------------------------------------
# facebook/dinov2-large's model.safetensors names the attention weights as transformers 4 did; transformers 5
# renames them on loading
OLD_NAMES = {"attention.q_proj.": "attention.attention.query.", "attention.k_proj.": "attention.attention.key.",
             "attention.v_proj.": "attention.attention.value.", "attention.o_proj.": "attention.output.dense."}


def _old_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for new, old in OLD_NAMES.items():
            k = k.replace(new, old)
        out[k] = v.contiguous()
    return out


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random transformers Dinov2Model of the real layout (patch 14, 518 px: 37 x 37 positions), tiny width,
    saved as the published folder is: config.json and model.safetensors with the published weight names."""
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                       image_size=518, patch_size=14)
    folder = tmp_path_factory.mktemp("dinov2")
    cfg.save_pretrained(folder)
    sd = _old_layout(Dinov2Model(cfg).state_dict())
    assert "encoder.layer.0.attention.attention.query.weight" in sd
    save_file(sd, str(folder / "model.safetensors"))
    return folder


def _dgm_eval_input(images: torch.Tensor) -> torch.Tensor:
    """dgm-eval's transform written out: PIL bicubic resize to 224, /255, ImageNet mean/std (numpy)."""
    from PIL import Image

    out = []
    for im in images:
        pil = Image.fromarray(im.expand(3, -1, -1).permute(1, 2, 0).numpy()).resize((224, 224), Image.BICUBIC)
        a = np.asarray(pil, np.float32) / 255.0
        a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
        out.append(torch.from_numpy(a.transpose(2, 0, 1).copy()))
    return torch.stack(out)


def test_fd_dinov2_end_to_end_with_tiny_local_weights(tiny_dinov2: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Dinov2Model

    from evaluators.dinov2 import dinov2_features, load_dinov2, preprocess

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (14, 1, 12, 12)).astype(np.float32)  # grey: repeated to RGB
    u = to_uint8(x)
    px = preprocess(u)
    np.testing.assert_allclose(px.numpy(), _dgm_eval_input(u).numpy(), atol=1e-6)
    f = dinov2_features(u, str(tiny_dinov2), batch_size=10)
    model, sha = load_dinov2(str(tiny_dinov2))
    from safetensors.torch import load_file

    ref_sd = load_file(str(tiny_dinov2 / "model.safetensors"))
    assert all(torch.equal(v, ref_sd[k]) for k, v in _old_layout(model.state_dict()).items())  # every weight loaded
    with torch.no_grad():  # the feature is the class token after the final layer norm
        out = model(pixel_values=px)
        np.testing.assert_allclose(f, out.last_hidden_state[:, 0].double().numpy(), atol=1e-6)
        plain = Dinov2Model.from_pretrained(tiny_dinov2).eval()(pixel_values=px).pooler_output
    assert f.shape == (14, 8) and sha == hashlib.sha256((tiny_dinov2 / "model.safetensors").read_bytes()).hexdigest()
    assert not np.allclose(f, plain.double().numpy(), atol=1e-4)  # dinov2's position resize, not transformers'
    g = rng.standard_normal((40, 8))
    mu2, s2 = g.mean(0) + 0.1, np.cov(g, rowvar=False)
    np.savez(tmp_path / "stats.npz", mu=mu2, sigma=s2)
    opts = {"fd_dinov2_stats": str(tmp_path / "stats.npz"), "dinov2_weights": str(tiny_dinov2)}
    v, ci, info = evaluate(["fd_dinov2"], x, {"model": "images"}, bootstraps=80, options=opts)
    assert v["fd_dinov2"] == pytest.approx(_scipy_fd(f, mu2, s2), rel=1e-6)
    assert info["bootstraps"]["fd_dinov2"] == 50 and ci["fd_dinov2"][0] < v["fd_dinov2"] < ci["fd_dinov2"][1]
    assert info["protocol"]["extractor_sha256"] == sha and info["fd_dinov2"]["reference"].startswith("file")
    assert info["quantization"].startswith("edm")
    np.savez(tmp_path / "inception.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(DpmbenchError, match="2048-d statistics for 8-d DINOv2 features"):
        evaluate(["fd_dinov2"], x, {"model": "images"}, bootstraps=0,
                 options={**opts, "fd_dinov2_stats": str(tmp_path / "inception.npz")})
    # reference images: DINOv2 features computed once, cached on disk
    y = rng.uniform(-1, 1, (12, 3, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "ref.npz", x=y)
    fy = dinov2_features(to_uint8(y), str(tiny_dinov2))
    opts = {"reference_images": str(tmp_path / "ref.npz"), "dinov2_weights": str(tiny_dinov2)}
    v, _, _ = evaluate(["fd_dinov2"], x, {"model": "images"}, bootstraps=0, options=opts)
    assert v["fd_dinov2"] == pytest.approx(_scipy_fd(f, fy.mean(0), np.cov(fy, rowvar=False)), rel=1e-6)
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 1


def test_cli_lists_both_and_evaluates_fd_dinov2(tiny_dinov2: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from support import run_cli

    code, out, _ = run_cli(capsys, "list", "metrics")
    assert code == 0 and "\nfd_dinov2: " in out and "\ncmmd: CMMD" in out
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "s.npz", x=rng.uniform(-1, 1, (12, 3, 8, 8)).astype(np.float32), model="images", seed=0)
    g = rng.standard_normal((30, 8))
    np.savez(tmp_path / "stats.npz", mu=g.mean(0), sigma=np.cov(g, rowvar=False))
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(tmp_path / "s.npz"), "--metrics", "fd_dinov2",
                           "--fd-dinov2-stats", str(tmp_path / "stats.npz"), "--dinov2-weights", str(tiny_dinov2),
                           "--bootstraps", "5", "--out", str(tmp_path / "m.json"))
    rec = json.loads((tmp_path / "m.json").read_text())
    assert code == 0, err
    assert rec["metrics"]["fd_dinov2"] > 0 and rec["protocol"]["reference_stats"] == str(tmp_path / "stats.npz")
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(tmp_path / "s.npz"), "--metrics", "cmmd",
                           "--out", str(tmp_path / "c.json"))
    assert code == 2 and "'cmmd' needs reference embeddings" in err and not (tmp_path / "c.json").exists()


def test_fd_dinov2_refuses_a_partial_weights_file(tiny_dinov2: Path, tmp_path: Path) -> None:
    """A folder whose file lacks a weight is an error, not a network with that weight left random."""
    import shutil

    from safetensors.torch import load_file, save_file

    from evaluators.dinov2 import load_dinov2

    shutil.copy(tiny_dinov2 / "config.json", tmp_path / "config.json")
    sd = load_file(str(tiny_dinov2 / "model.safetensors"))
    del sd["encoder.layer.0.attention.attention.key.bias"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(DpmbenchError, match=r"invalid DINOv2 weights folder .*missing_keys.*k_proj.bias"):
        load_dinov2(str(tmp_path))


def test_fd_dinov2_refuses_unpinned_weights_and_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluators.dinov2 import weights_folder

    monkeypatch.delenv("DPMBENCH_DINOV2_WEIGHTS", raising=False)
    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))
    with pytest.raises(DpmbenchError, match=r"weights 'dinov2-vitl14' have no sha256 pinned .*--dinov2-weights DIR"):
        weights_folder()
    (tmp_path / "w").mkdir()
    with pytest.raises(DpmbenchError, match=r"missing \['config.json', 'model.safetensors'\]"):
        weights_folder(str(tmp_path / "w"))
    monkeypatch.setenv("DPMBENCH_DINOV2_WEIGHTS", str(tmp_path / "nowhere"))
    with pytest.raises(DpmbenchError, match="from DPMBENCH_DINOV2_WEIGHTS.*no such folder"):
        weights_folder()
    x = np.zeros((3, 3, 8, 8), np.float32)
    with pytest.raises(DpmbenchError, match="'fd_dinov2' needs reference statistics"):
        evaluate(["fd_dinov2"], x, {"model": "images"}, bootstraps=0)


def test_weights_manifest_pins_and_fetches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pinned entry is fetched into the cache and verified; a wrong pin leaves nothing behind."""
    from support import FileHandler, local_http_server

    from evaluators.weights import weights_files

    payload = b"weights" * 100
    handler = type("Handler", (FileHandler,), {"files": {"/a.bin": payload}, "requests": []})

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DPMBENCH_OFFLINE", raising=False)
    sha = hashlib.sha256(payload).hexdigest()
    with local_http_server(handler, timeout=5) as url:
        def manifest(pin: str, size: int) -> Path:
            entry = {"name": "w", "source": "url", "files": [{"name": "a.bin", "url": f"{url}/a.bin", "sha256": pin,
                                                              "size": size}]}
            path = tmp_path / f"m-{pin[:4]}.yaml"
            path.write_text(yaml.safe_dump({"weights": [entry]}))
            return path
        with pytest.raises(DpmbenchError, match="checksum mismatch"):
            weights_files("w", "--x", manifest("0" * 64, len(payload)))
        folder = weights_files("w", "--x", manifest(sha, len(payload)))
    assert (folder / "a.bin").read_bytes() == payload and folder == tmp_path / "cache" / "weights" / "w"
    with pytest.raises(DpmbenchError, match="invalid weights 'v'; allowed: w"):
        weights_files("v", "--x", manifest(sha, len(payload)))


# -- cmmd ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random open_clip CLIP of a tiny config, its state dict saved as safetensors (as a local weights file)."""
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("cmmdclip")
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 28, "layers": 1, "width": 32, "patch_size": 14, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (d / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(TINY_CLIP, pretrained=None, force_quick_gelu=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "tiny.safetensors"))
    return d / "tiny.safetensors"


def _by_hand(weights: Path, images: torch.Tensor) -> np.ndarray:
    """Embeddings by open_clip directly: its preprocessing, encode_image, L2 normalization."""
    import open_clip
    from PIL import Image

    model, _, pre = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=str(weights), force_quick_gelu=True)
    pil = [Image.fromarray(im.expand(3, -1, -1).permute(1, 2, 0).numpy()) for im in images]
    with torch.no_grad():
        e = torch.cat([model.eval().encode_image(pre(p)[None]) for p in pil]).double()
    return (e / e.norm(dim=1, keepdim=True)).numpy()


def test_cmmd_end_to_end_with_tiny_local_weights(tiny_clip: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from open_clip.transformer import QuickGELU

    from evaluators.cmmd import load_cmmd_clip

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (6, 3, 20, 20)).astype(np.float32)
    y = np.clip(rng.uniform(-1, 1, (5, 1, 20, 20)) * 0.3 + 0.4, -1, 1).astype(np.float32)  # grey, another law
    np.savez(tmp_path / "ref.npz", x=y)
    ex, ey = _by_hand(tiny_clip, to_uint8(x)), _by_hand(tiny_clip, to_uint8(y))
    opts = {"cmmd_clip_model": TINY_CLIP, "cmmd_weights": str(tiny_clip), "reference_images": str(tmp_path / "ref.npz")}
    v, ci, info = evaluate(["cmmd"], x, {"model": "images"}, bootstraps=150, options=opts)
    assert v["cmmd"] == pytest.approx(_loop_cmmd(ex, ey), rel=1e-4) and v["cmmd"] > 0
    assert info["bootstraps"]["cmmd"] == 100 and ci["cmmd"][0] < v["cmmd"] < ci["cmmd"][1]
    model, _, sha = load_cmmd_clip(TINY_CLIP, str(tiny_clip))
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)  # OpenAI weights: QuickGELU
    assert info["protocol"]["extractor_sha256"] == sha == hashlib.sha256(tiny_clip.read_bytes()).hexdigest()
    np.savez(tmp_path / "emb.npz", feats=ey)  # precomputed reference embeddings give the same number
    opts = {"cmmd_clip_model": TINY_CLIP, "cmmd_weights": str(tiny_clip), "cmmd_reference": str(tmp_path / "emb.npz")}
    v2, _, _ = evaluate(["cmmd"], x, {"model": "images"}, bootstraps=0, options=opts)
    assert v2["cmmd"] == pytest.approx(v["cmmd"], rel=1e-5)  # ey: embedded one image at a time (float32 round-off)
    with pytest.raises(DpmbenchError, match="'cmmd' needs reference embeddings"):
        evaluate(["cmmd"], x, {"model": "images"}, bootstraps=0, options={"cmmd_weights": str(tiny_clip)})


def test_openai_torchscript_weights_are_read_after_their_sha256(tiny_clip: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAI-style TorchScript CLIP file becomes the state dict open_clip loads, only with a matching sha256."""
    import open_clip

    from evaluators.clip import is_torchscript, openai_state_dict_file

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(TINY_CLIP, pretrained=str(tiny_clip), force_quick_gelu=True).eval()
        traced = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, 28, 28)}, check_trace=False)
    torch.jit.save(traced, str(tmp_path / "ViT-tiny.pt"))
    jit = tmp_path / "ViT-tiny.pt"
    assert is_torchscript(jit) and not is_torchscript(tiny_clip)
    with pytest.raises(DpmbenchError, match="checksum mismatch"):
        openai_state_dict_file(jit, "0" * 64)
    from evaluators.cmmd import load_cmmd_clip

    with pytest.raises(DpmbenchError, match="checksum mismatch.*expected 3035c92b"):  # not OpenAI's pinned file
        load_cmmd_clip(TINY_CLIP, str(jit))
    out = openai_state_dict_file(jit, hashlib.sha256(jit.read_bytes()).hexdigest())
    from safetensors.torch import load_file

    got, want = load_file(str(out)), model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
