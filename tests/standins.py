"""Stand-in checkpoints and metric weights: random weights saved in the file formats the adapters and evaluators
read, built offline (nothing downloaded). Shared by the adapter tests and the paper dress rehearsal
(``tests/rehearsal.py``).

Formats, and where a stand-in differs from the real file:

- EDM pickles (``edm-pickle``): a pickled dict ``{"ema": net, ...}`` whose network is a class importable from an
  "EDM checkout" folder written here (``torch_utils`` and ``dnnlib`` packages, as the adapter requires, and the
  network's module). The network has EDMPrecond/VPPrecond's call signature ``net(x, sigma, class_labels)`` and
  attributes (``img_resolution``, ``img_channels``, ``label_dim``, ``sigma_min``/``sigma_max``, VP ``beta_d`` /
  ``beta_min``) and EDM's preconditioning (Karras et al. 2022, Table 1); its F is one 3x3 convolution instead of
  the DDPM++/ADM U-Net (EDM's ``training/networks.py`` is not vendored: its licence is CC BY-NC-SA), so the
  stand-in is small but keeps the real resolution, channels and label count.
- score_sde checkpoints (``score-sde``): ``checkpoint_N.pth`` as score_sde_pytorch's ``save_checkpoint`` writes it
  (``optimizer``, ``model`` (a DataParallel state dict, ``module.`` prefix), ``ema`` (``shadow_params``),
  ``step``), loaded through a score_sde-like checkout written here (``configs/<config>.py`` with the real config's
  module path and its ``training``/``data``/``model`` fields, ``models/utils.py``'s registry); the registered
  network is one convolution plus a time embedding, not NCSN++.
- diffusers folders (``diffusers-unet``, ``latent-diffusion``, ``stable-diffusion``): ``save_pretrained`` of the
  real diffusers classes (``UNet2DModel``, ``VQModel``, ``UNet2DConditionModel``, ``AutoencoderKL``,
  ``CLIPTextModel``, a byte-level CLIP tokenizer) with the real file layout and config.json fields; channels,
  layers and the sample size are shrunk (config.json fields), so the images are smaller than the real ones.
- guided-diffusion checkpoints (``guided-diffusion``): plain state dicts (``torch.save(net.state_dict())``) of the
  diffusion UNet and the classifier. ``guided_diffusion_pair`` builds them with the real code (the pinned
  ``guided-diffusion-sdk`` package: openai's ``unet.py`` / ``script_util.py``) at 64 px with the narrowest widths its
  GroupNorm(32) allows; the dress rehearsal uses a guided-diffusion-like checkout written here
  (``write_guided_diffusion_code``: ``script_util`` with the real functions' signatures and flag defaults, networks
  of one convolution plus time and label embeddings) at 16 px, because the real classifier's smallest size (64 px)
  costs ~45 ms per row on one core and DPM-Solver-v3's statistics on the config's 500-point grid evaluate ~160,000
  rows.
- Inception (FID): a state dict of torch-fidelity's ``FeatureExtractorInceptionV3`` with PyTorch's default
  (seeded) initialization: the real architecture and keys, random weights.
- reference statistics: an ``.npz`` with ``mu`` (2048) and ``sigma`` (2048 x 2048), the mean and a diagonal
  covariance of the stand-in Inception's features of a few random images.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
import textwrap
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}  # SD 1.x/2.x scheduler
EDM_MODULE = "dpmbench_tiny_edm_net"


def seeded(seed: int = 0) -> None:
    """Seed torch's global generator (the stand-ins' weights depend only on it)."""
    torch.manual_seed(seed)


def files_of(root: Path) -> list[dict[str, Any]]:
    """The manifest's file list of a saved folder: every file (sorted by path) with its sha256 and size."""
    return [{"path": p.relative_to(root).as_posix(), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
             "size": p.stat().st_size} for p in sorted(root.rglob("*")) if p.is_file()]


# -- diffusers ---------------------------------------------------------------------------------------------------
def tiny_unet(in_channels: int = 3, sample_size: int = 8, **kw: Any) -> Any:
    """A seeded two-level ``diffusers.UNet2DModel`` (8 / 16 channels, one attention level)."""
    import diffusers

    seeded(0)
    return diffusers.UNet2DModel(sample_size=sample_size, in_channels=in_channels,
                                 out_channels=kw.pop("out_channels", in_channels), layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, **kw).eval()


def build_ldm_dir(root: Path, sample_size: int = 16) -> Path:
    """A diffusers LDMPipeline folder (``unet``, ``vqvae``, ``scheduler``): images of ``sample_size`` pixels from
    4-channel latents of half that size."""
    import diffusers

    tiny_unet(in_channels=4, sample_size=sample_size // 2).save_pretrained(root / "unet")
    seeded(2)
    diffusers.VQModel(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                      norm_num_groups=4, num_vq_embeddings=32, vq_embed_dim=4, sample_size=sample_size,
                      scaling_factor=0.5).save_pretrained(root / "vqvae")
    diffusers.DDIMScheduler(**SD_BETAS).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline", "scheduler": [
        "diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "VQModel"]}))
    return root


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet (256 symbols), for a tiny offline CLIP vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder: Path, max_len: int = 16) -> int:
    """A byte-level CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json); returns the vocab size."""
    folder.mkdir(parents=True)
    chars = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = ["a t</w>", "c at</w>", "d o", "do g</w>"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_len}))
    return len(vocab)


def build_sd_dir(root: Path, sample_size: int = 16) -> tuple[Any, Any, Any]:
    """A Stable Diffusion (v1 layout) folder: unet, vae, text_encoder, tokenizer, scheduler, model_index.json.
    Returns (unet, text_encoder, tokenizer)."""
    import diffusers
    import transformers

    vocab = write_tokenizer(root / "tokenizer")
    seeded(3)
    unet = diffusers.UNet2DConditionModel(
        sample_size=sample_size // 2, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4).eval()
    unet.save_pretrained(root / "unet")
    diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=4, sample_size=sample_size).save_pretrained(root / "vae")
    cfg = transformers.CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                      num_hidden_layers=2, max_position_embeddings=16, bos_token_id=vocab - 2,
                                      eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    text_encoder = transformers.CLIPTextModel(cfg).eval()
    text_encoder.save_pretrained(root / "text_encoder")
    diffusers.PNDMScheduler(**SD_BETAS, skip_prk_steps=True).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", **{
        k: v for k, v in (("scheduler", ["diffusers", "PNDMScheduler"]), ("text_encoder", ["transformers",
                          "CLIPTextModel"]), ("tokenizer", ["transformers", "CLIPTokenizer"]),
                          ("unet", ["diffusers", "UNet2DConditionModel"]), ("vae", ["diffusers", "AutoencoderKL"]))}}))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(root / "tokenizer")
    return unet, text_encoder, tokenizer


# -- EDM pickles -------------------------------------------------------------------------------------------------
EDM_NET = '''
import numpy as np
import torch

class TinyPrecond(torch.nn.Module):
    """Mimics NVlabs/edm EDMPrecond: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (Karras et al. Table 1)."""

    def __init__(self, img_resolution=8, img_channels=3, label_dim=0, sigma_min=0.0, sigma_max=float("inf"),
                 sigma_data=0.5, **vp):
        super().__init__()
        self.__dict__.update(vp)  # VPPrecond's beta_d, beta_min
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data
        self.conv = torch.nn.Conv2d(img_channels, img_channels, 3, padding=1)
        self.map_label = torch.nn.Linear(label_dim, img_channels) if label_dim else None

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = None if self.label_dim == 0 else torch.zeros([1, self.label_dim], device=x.device) \\
            if class_labels is None else class_labels.to(torch.float32).reshape(-1, self.label_dim)
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.conv(c_in * x) + c_noise
        if class_labels is not None:
            F_x = F_x + self.map_label(class_labels)[:, :, None, None]
        return c_skip * x + c_out * F_x
'''


def write_edm_code(code: Path) -> Path:
    """An EDM-checkout-like folder: ``torch_utils``, ``dnnlib`` and the stand-in network's module."""
    for pkg in ("torch_utils", "dnnlib"):
        (code / pkg).mkdir(parents=True, exist_ok=True)
        (code / pkg / "__init__.py").write_text("")
    (code / f"{EDM_MODULE}.py").write_text(textwrap.dedent(EDM_NET))
    return code


def edm_nets(code: Path, *specs: dict[str, Any], seed: int = 5) -> list[Any]:
    """Networks of the stand-in class built from keyword dicts (seeded in order), with ``code`` importable only
    while they are built (pickling them records the module name, not the folder)."""
    sys.path.insert(0, str(code))
    try:
        import dpmbench_tiny_edm_net as mod

        seeded(seed)
        return [mod.TinyPrecond(**spec).eval() for spec in specs]
    finally:
        sys.path.remove(str(code))


def write_edm_pickle(path: Path, net: Any, **extra: Any) -> Path:
    """Pickle ``{"ema": net, **extra}`` as EDM's training loop saves its snapshots."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"ema": net, **extra}, f)
    return path


def forget_edm_module() -> None:
    """Drop the stand-in network's module from ``sys.modules`` (a later unpickling imports it again)."""
    sys.modules.pop(EDM_MODULE, None)


# -- score_sde -----------------------------------------------------------------------------------------------------
SCORE_SDE_CONFIG = '''
    from types import SimpleNamespace as NS

    def get_config():
        return NS(training=NS(sde="vpsde", continuous=True),
                  data=NS(image_size={size}, num_channels=3, centered=True),
                  model=NS(name="tinynet", beta_min=0.1, beta_max=20.0), device="cpu")
'''
SCORE_SDE_FILES = {
    "configs/__init__.py": "",
    "models/__init__.py": "",
    "models/utils.py": '''
        _MODELS = {}

        def register_model(cls=None, *, name=None):
            def _register(cls):
                _MODELS[name or cls.__name__] = cls
                return cls
            return _register if cls is None else _register(cls)

        def get_model(name):
            return _MODELS[name]
    ''',
    "models/tinynet.py": '''
        import torch
        from models import utils

        @utils.register_model(name="tinynet")
        class TinyNet(torch.nn.Module):
            def __init__(self, config):
                super().__init__()
                c = config.data.num_channels
                self.conv = torch.nn.Conv2d(c, c, 3, padding=1)
                self.temb = torch.nn.Linear(1, c)
                self.register_buffer("unused", torch.zeros(1))

            def forward(self, x, labels):
                return self.conv(x) + self.temb(labels[:, None] / 1000.0)[:, :, None, None]
    ''',
}


def write_score_sde_code(code: Path, config: str = "tiny_vp", image_size: int = 8) -> Path:
    """A score_sde_pytorch-like checkout: ``configs/<config>.py`` (a path such as ``vp/cifar10_..._continuous``),
    ``models/utils.py``'s registry and the stand-in network ``tinynet``."""
    files = {**SCORE_SDE_FILES, f"configs/{config}.py": SCORE_SDE_CONFIG.replace("{size}", str(image_size))}
    for parent in Path(config).parents:
        if str(parent) != ".":
            files[f"configs/{parent}/__init__.py"] = ""
    for rel, text in files.items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text(textwrap.dedent(text))
    return code


def forget_score_sde_modules() -> None:
    """Drop the checkout's ``configs`` / ``models`` packages from ``sys.modules``."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "configs")]:
        sys.modules.pop(name)


def write_score_sde_checkpoint(code: Path, path: Path, config: str = "tiny_vp", seed: int = 7
                               ) -> tuple[Any, list[torch.Tensor]]:
    """Save a ``checkpoint_8.pth`` of the stand-in network as score_sde's ``save_checkpoint`` does; returns the
    network and its EMA parameters (the weights the adapter evaluates)."""
    import importlib

    sys.path.insert(0, str(code))
    try:
        cfg = importlib.import_module("configs." + config.replace("/", ".")).get_config()
        tinynet = importlib.import_module("models.tinynet")
        seeded(seed)
        net = tinynet.TinyNet(cfg)
        wrapped = torch.nn.DataParallel(net)  # as score_sde's create_model: keys get a "module." prefix
        shadow = [p.detach() + 0.01 for p in net.parameters()]
        opt = torch.optim.Adam(net.parameters())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"optimizer": opt.state_dict(), "model": wrapped.state_dict(), "step": 8,
                    "ema": {"decay": 0.9999, "num_updates": 8, "shadow_params": shadow}}, path)
    finally:
        sys.path.remove(str(code))
        forget_score_sde_modules()
    return net, shadow


# -- guided-diffusion ----------------------------------------------------------------------------------------------
GD_TINY_FLAGS = {"attention_resolutions": "8", "class_cond": True, "diffusion_steps": 1000, "image_size": 64,
                 "learn_sigma": True, "noise_schedule": "linear", "num_channels": 32, "num_head_channels": 32,
                 "num_res_blocks": 1, "channel_mult": "1,1,1,1", "resblock_updown": True, "use_fp16": False,
                 "use_scale_shift_norm": True}  # the README's 256x256 flags, narrowed (GroupNorm(32) needs >= 32)
GD_TINY_CLASSIFIER_FLAGS = {"classifier_width": 32, "classifier_depth": 1, "classifier_attention_resolutions": "8",
                            "classifier_use_fp16": False}


def _gd_networks(su: Any, flags: dict[str, Any], classifier_flags: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The UNet and classifier of a ``script_util`` module ``su`` (the real one or the stand-in checkout's), built from
    the flags over its defaults as the official scripts build them (``args_to_dict``), with seeded weights."""
    import inspect

    flags = {**su.model_and_diffusion_defaults(), **flags}
    cflags = {**su.classifier_defaults(), "image_size": flags["image_size"], **classifier_flags}
    seeded(seed)
    net = su.create_model(**{k: flags[k] for k in inspect.signature(su.create_model).parameters if k in flags})
    clf = su.create_classifier(**{k: cflags[k] for k in inspect.signature(su.create_classifier).parameters
                                  if k in cflags})
    return net, clf


def guided_diffusion_pair(folder: Path, flags: dict[str, Any] | None = None,
                          classifier_flags: dict[str, Any] | None = None, seed: int = 3) -> tuple[Any, Any]:
    """``unet.pt`` and ``classifier.pt`` in ``folder``: state dicts of the real guided-diffusion networks (installed
    ``guided_diffusion``) built from ``flags`` (``GD_TINY_FLAGS``) as the official scripts build them; returns the
    (float32) networks."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import guided_diffusion.script_util as su
    net, clf = _gd_networks(su, flags or GD_TINY_FLAGS, classifier_flags or GD_TINY_CLASSIFIER_FLAGS, seed)
    with torch.no_grad():  # zero-initialized output layers (zero_module) would make eps and the gradient 0
        for p in net.out.parameters():
            p.normal_(0.0, 0.05)
        for p in clf.out.parameters():  # logits of a few units: a gradient of log p(y | x) that is not negligible
            p.normal_(0.0, 1.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "unet.pt")
    torch.save(clf.state_dict(), folder / "classifier.pt")
    return net.eval(), clf.eval()


GD_SCRIPT_UTIL = '''
    """Stand-in of guided_diffusion.script_util: the real functions' names, signatures and flag defaults; tiny nets."""
    import math

    import torch

    NUM_CLASSES = 1000


    def model_and_diffusion_defaults():
        return dict(image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
                    num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0,
                    class_cond=False, use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False,
                    use_fp16=False, use_new_attention_order=False, learn_sigma=False, diffusion_steps=1000,
                    noise_schedule="linear", timestep_respacing="", use_kl=False, predict_xstart=False,
                    rescale_timesteps=False, rescale_learned_sigmas=False)


    def classifier_defaults():
        return dict(image_size=64, classifier_use_fp16=False, classifier_width=128, classifier_depth=2,
                    classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
                    classifier_resblock_updown=True, classifier_pool="attention")


    def _temb(t, dim):
        freqs = torch.exp(-math.log(10000) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


    class _Half:
        def convert_to_fp16(self):
            self.body.half()
            self.dtype = torch.float16


    class TinyUNet(torch.nn.Module, _Half):
        def __init__(self, channels, out_channels, num_classes):
            super().__init__()
            self.dtype, self.num_classes = torch.float32, num_classes
            self.temb = torch.nn.Linear(channels, channels)
            self.label_emb = torch.nn.Embedding(num_classes, channels) if num_classes else None
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.SiLU())
            self.out = torch.nn.Conv2d(channels, out_channels, 3, padding=1)
            self.channels = channels

        def forward(self, x, timesteps, y=None):
            assert (y is not None) == (self.num_classes is not None)
            emb = self.temb(_temb(timesteps, self.channels))
            if y is not None:
                emb = emb + self.label_emb(y)
            h = self.body(x.type(self.dtype)).float() + emb[:, :, None, None]
            return self.out(h).type(x.dtype)


    class TinyClassifier(torch.nn.Module, _Half):
        def __init__(self, channels):
            super().__init__()
            self.dtype, self.channels = torch.float32, channels
            self.temb = torch.nn.Linear(channels, channels)
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.SiLU())
            self.out = torch.nn.Linear(channels, NUM_CLASSES)

        def forward(self, x, timesteps):
            h = self.body(x.type(self.dtype)).float() + self.temb(_temb(timesteps, self.channels))[:, :, None, None]
            return self.out(torch.tanh(h).mean(dim=(2, 3)))


    def create_model(image_size, num_channels, num_res_blocks, channel_mult="", learn_sigma=False, class_cond=False,
                     use_checkpoint=False, attention_resolutions="16", num_heads=1, num_head_channels=-1,
                     num_heads_upsample=-1, use_scale_shift_norm=False, dropout=0, resblock_updown=False,
                     use_fp16=False, use_new_attention_order=False):
        net = TinyUNet(num_channels, 6 if learn_sigma else 3, NUM_CLASSES if class_cond else None)
        net.dtype = torch.float16 if use_fp16 else torch.float32
        return net


    def create_classifier(image_size, classifier_use_fp16, classifier_width, classifier_depth,
                          classifier_attention_resolutions, classifier_use_scale_shift_norm, classifier_resblock_updown,
                          classifier_pool):
        net = TinyClassifier(classifier_width)
        net.dtype = torch.float16 if classifier_use_fp16 else torch.float32
        return net
'''


def write_guided_diffusion_code(code: Path) -> Path:
    """A guided-diffusion-like checkout (``guided_diffusion/script_util.py``, see ``GD_SCRIPT_UTIL``)."""
    pkg = code / "guided_diffusion"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "script_util.py").write_text(textwrap.dedent(GD_SCRIPT_UTIL))
    return code


def write_guided_diffusion_standin(code: Path, folder: Path, flags: dict[str, Any],
                                   classifier_flags: dict[str, Any], names: tuple[str, str], seed: int = 11) -> None:
    """State dicts of the checkout's stand-in networks (``write_guided_diffusion_code``) under ``names`` (UNet,
    classifier) in ``folder``, built from the flags as the adapter builds them."""
    import importlib

    forget = [m for m in sys.modules if m.split(".")[0] == "guided_diffusion"]
    for name in forget:  # the installed package, if a test imported it
        sys.modules.pop(name)
    sys.path.insert(0, str(code))
    try:
        net, clf = _gd_networks(importlib.import_module("guided_diffusion.script_util"), flags, classifier_flags,
                                seed)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), folder / names[0])
        torch.save(clf.state_dict(), folder / names[1])
    finally:
        sys.path.remove(str(code))
        for name in [m for m in sys.modules if m.split(".")[0] == "guided_diffusion"]:
            sys.modules.pop(name)


# -- metric weights and reference statistics -------------------------------------------------------------------
def random_inception(path: Path) -> str:
    """A random-weights state dict of torch-fidelity's Inception (no download): its architecture and keys."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    seeded(0)
    with mock.patch.object(fe, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)  # PyTorch's default initialization (seeded)
    return str(path)


def write_reference_stats(path: Path, weights: str, n: int = 8, seed: int = 0) -> Path:
    """Stand-in FID statistics: mean and diagonal covariance (plus 1e-6) of the Inception features of ``n``
    random uint8 images (32 px)."""
    from evaluators.images import fidelity_features

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8))
    f = np.asarray(fidelity_features(images, batch_size=n, weights=weights)["2048"], np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=f.mean(0), sigma=np.diag(f.var(0, ddof=1) + 1e-6))
    return path
