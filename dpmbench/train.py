"""Train the project's own small networks (``dpmbench train MODEL --out DIR``).

``digits-unet``: a diffusers ``UNet2DModel`` on scikit-learn's 8x8 digits (pixels in [-1, 1]), class-conditional
with a null class (index 10) for classifier-free guidance (labels dropped with probability ``label_dropout``),
epsilon prediction, the discrete DDPM schedule of google/ddpm-cifar10-32 (linear betas 1e-4 .. 0.02, 1000 steps),
an exponential moving average (EMA) of the weights. The held-out split (every 5th image, ``index % 5 == 4``, 359
images) is never trained on: it is the data-vs-data baseline of the Frechet digits distance.

The output folder is diffusers' ``save_pretrained`` layout of the EMA network (``config.json``,
``diffusion_pytorch_model.safetensors``) plus ``scheduler_config.json`` (a ``DDPMScheduler``) at the same level
(a flat folder, like google/ddpm-cifar10-32), and ``training.json`` (command settings, time, losses). Training is
seeded; it reproduces the quality of the shipped weights, not their bits (float32 kernels differ across CPUs).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dpmbench.errors import DpmbenchError, bad_value

TRAINABLE = ("digits-unet", "digits-flow")
HELD_OUT_EVERY = 5  # image i is held out when i % 5 == 4 (a fixed ~20% split, no RNG)
NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # the "no label" embedding used for the unconditional branch of CFG


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a ``digits-unet`` training run (all recorded in ``training.json``)."""

    steps: int = 5000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    seed: int = 0
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


def split_indices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices) of the fixed split of ``n`` digits images."""
    idx = torch.arange(n)
    held = idx % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return idx[~held], idx[held]


def digits_split(part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float64, n x 64, in [-1, 1]) and labels of the ``train`` or ``held-out`` split."""
    from dpmbench.models.registry import digits_data

    allowed = ("train", "held-out", "all")
    if part not in allowed:
        raise bad_value("split", part, allowed)
    x, y = digits_data()
    if part == "all":
        return x, y
    tr, ho = split_indices(len(x))
    idx = tr if part == "train" else ho
    return x[idx], y[idx]


def build_unet(cfg: TrainConfig) -> Any:
    """The ``UNet2DModel`` of ``digits-unet``: 8x8 -> 4x4, no attention, 11 class embeddings (10 + null)."""
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=cfg.layers_per_block,
        block_out_channels=cfg.block_out_channels, down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n, add_attention=False, norm_num_groups=16,
        num_class_embeds=NUM_CLASSES + 1,
    )


def scheduler_config(cfg: TrainConfig, model: str = "digits-unet") -> Any:
    """The scheduler saved beside the network: ``DDPMScheduler`` for ``digits-unet`` (google/ddpm-cifar10-32's betas,
    epsilon prediction), ``FlowMatchEulerDiscreteScheduler`` (shift 1) for ``digits-flow``."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    if model == "digits-flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=cfg.num_train_timesteps, shift=1.0)
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule="linear", prediction_type="epsilon",
                         clip_sample=True)


def _lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of ``cfg.lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _save(unet: Any, cfg: TrainConfig, out: Path, log: dict[str, Any]) -> None:
    """Write the folder next to ``out`` and rename it into place (never a partial checkpoint)."""
    import shutil

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp, safe_serialization=True)
    scheduler_config(cfg, log["model"]).save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(log, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def train_digits_unet(out: str | Path, cfg: TrainConfig = TrainConfig(), progress: bool = True,
                      device: str = "cpu", model: str = "digits-unet") -> dict[str, Any]:
    """Train ``digits-unet`` (or, ``model="digits-flow"``, its flow-matching twin) and write its EMA weights to
    ``out``; returns the training log.

    ``digits-unet``: epsilon-prediction loss ``|| eps - eps_theta(sqrt(abar_n) x0 + sqrt(1 - abar_n) eps, n, c) ||^2``
    with n uniform in 0..N-1 (Ho et al. 2020, Algorithm 1). ``digits-flow``: the rectified-flow / conditional
    flow-matching loss ``|| (eps - x0) - v_theta((1 - t) x0 + t eps, N t, c) ||^2`` (Lipman et al. 2023, eq. 23 with
    the path x_t = (1 - t) x0 + t eps; Liu et al. 2023), t logit-normal (sigmoid of a standard normal: SD3's
    ``logit_normal`` sampling with m = 0, s = 1, Esser et al. 2024, Sec. 3.1), the timestep input N t as diffusers'
    flow schedulers feed it. Both: c is the label, replaced by the null class with probability ``label_dropout``
    (Ho & Salimans 2022, Algorithm 1); the same network, optimizer, schedule and EMA.
    """
    if model not in TRAINABLE:
        raise bad_value("model", model, TRAINABLE)
    flow = model == "digits-flow"
    from tqdm import tqdm

    from dpmbench.schedules import VPDiscrete

    if cfg.steps < 1:
        raise bad_value("--steps", cfg.steps, "an integer >= 1")
    out = Path(out)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y = digits_split("train")
    x = x.to(torch.float32).reshape(-1, 1, 8, 8)
    abar = VPDiscrete(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                      beta_end=cfg.beta_end).alphas_cumprod.to(torch.float32)
    unet = build_unet(cfg).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"train {model}", disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        x0, labels = x[idx], y[idx].clone()
        labels[torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout] = NULL_CLASS
        if flow:
            t = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen))  # logit-normal(0, 1)
            eps = torch.randn(x0.shape, generator=gen)
            tt = t.view(-1, 1, 1, 1)
            xt, target, timestep = (1 - tt) * x0 + tt * eps, eps - x0, t * cfg.num_train_timesteps
        else:
            n = torch.randint(cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            a = abar[n].view(-1, 1, 1, 1)
            xt, target, timestep = a.sqrt() * x0 + (1 - a).sqrt() * eps, eps, n
        pred = unet(xt.to(device), timestep.to(device), class_labels=labels.to(device)).sample
        loss = F.mse_loss(pred, target.to(device))
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # EMA warm-up
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if step % 100 == 99:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / 100:.4f}")
    if not all(math.isfinite(v) for v in losses):
        raise DpmbenchError("training diverged: a non-finite loss (lower --lr)")
    tail = losses[-min(len(losses), 500):]
    log = {"model": model, "config": asdict(cfg), "device": device, "torch_threads": torch.get_num_threads(),
           "wall_s": round(time.perf_counter() - start, 1), "final_loss": sum(tail) / len(tail),
           "final_loss_window": len(tail), "train_images": len(x),
           "loss_every_100": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 5)
                              for i in range(0, len(losses), 100)]}
    _save(ema.cpu(), cfg, out, log)
    return log


CHECKPOINT_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json")


def manifest_entry(folder: str | Path, source: str | None = None) -> dict[str, Any]:
    """The checkpoint-manifest entry (``config/checkpoints.yaml`` format) of a trained ``digits-unet`` or
    ``digits-flow`` folder (which one: its scheduler config, as the adapter reads it): a local source (``source``,
    default the folder itself) and the sha256 and size of every file it loads."""
    from dpmbench.download import sha256_file

    folder = Path(folder)
    files = [{"path": f, "sha256": sha256_file(folder / f), "size": (folder / f).stat().st_size}
             for f in CHECKPOINT_FILES]
    from dpmbench.models.adapters.diffusers_unet import is_flow_config

    flow = is_flow_config(json.loads((folder / "scheduler_config.json").read_text()))
    model = "digits-flow" if flow else "digits-unet"
    return {"adapter": "diffusers-unet", "source": {"local": source or str(folder.resolve())}, "files": files,
            "license": "apache-2.0", "schedule": "flow" if flow else "vp-discrete",
            "parameterization": "flow" if flow else "eps", "resolution": 8,
            "conditioning": "class", "num_classes": NUM_CLASSES, "options": {"subfolder": "", "null_class": NULL_CLASS},
            "paper": f"trained by dpmbench (dpmbench train {model}) on scikit-learn's digits, training split"}


# -- quality floor of a trained digits network -------------------------------------------------------------
QUALITY_SOLVER = "dpm-solver++:order=2,method=multistep"
QUALITY_NFE = 50
FLOW_QUALITY_START = 0.999


def digits_fdd(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Frechet digits distance (the ``fdd`` metric's features and formula) between two image sets in [-1, 1]."""
    from evaluators.frechet import frechet_distance
    from evaluators.images import digits_features, feature_moments, to_uint8

    f1 = digits_features(to_uint8(x.reshape(-1, 1, 8, 8)))
    f2 = digits_features(to_uint8(ref.reshape(-1, 1, 8, 8)))
    return float(frechet_distance(*feature_moments(f1), *feature_moments(f2)))


def quality_floor(model: Any, num_conditional: int = 1000, num_unconditional: int | None = None, seed: int = 0,
                  guidance: tuple[float, ...] = (1.0, 3.0)) -> dict[str, Any]:
    """The quality floor of a class-conditional digits network, sampled with DPM-Solver++ 2M at NFE 50:
    digits-CNN accuracy of class-conditional samples at each ``guidance`` scale (labels i mod 10), and the
    unguided FDD to the held-out split next to the FDD between the training and held-out splits. The unguided
    sample has the training split's size by default (1,438), so both FDDs have the same finite-sample bias."""
    from dpmbench.sampling import sample
    from evaluators.images import digits_logits, to_uint8

    # a flow model starts at pure noise, where DPM-Solver++ cannot: from 1 - 1/1000, as diffusers' flow DPM-Solver
    start = FLOW_QUALITY_START if model.schedule.kind == "flow" else None
    out: dict[str, Any] = {"solver": QUALITY_SOLVER, "nfe": QUALITY_NFE, "seed": seed, "t_start": start}
    for g in guidance:
        x_T = model.prior(num_conditional, seed=seed)
        labels = model.labels(num_conditional)
        x = sample(model, QUALITY_SOLVER, QUALITY_NFE, x_T, guidance=g, cond=labels, t_start=start)
        pred = torch.from_numpy(digits_logits(to_uint8(x.reshape(-1, 1, 8, 8)))).argmax(1)
        out[f"cond_acc@{g:g}"] = float((pred == labels).double().mean())
    train_x, _ = digits_split("train")
    held_x, _ = digits_split("held-out")
    n = len(train_x) if num_unconditional is None else num_unconditional
    x = sample(model, QUALITY_SOLVER, QUALITY_NFE, model.prior(n, seed=seed), t_start=start)
    out.update(num_conditional=num_conditional, num_unconditional=n,
               fdd_samples_vs_held_out=digits_fdd(x, held_x),
               fdd_train_vs_held_out=digits_fdd(train_x[:n], held_x))
    out["fdd_ratio"] = out["fdd_samples_vs_held_out"] / out["fdd_train_vs_held_out"]
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="the quality floor of the shipped digits-unet (or of --model)")
    ap.add_argument("--model", default="digits-unet")
    ap.add_argument("--num-conditional", type=int, default=1000)
    ap.add_argument("--num-unconditional", type=int, default=None)
    a = ap.parse_args()
    from dpmbench.models.registry import load_model

    print(json.dumps(quality_floor(load_model(a.model), a.num_conditional, a.num_unconditional), indent=1))
