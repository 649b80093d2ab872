"""``diffusers-unet``: a diffusers pixel-space UNet (``UNet2DModel``) with its DDPM-family scheduler config.

Time convention (DPM-Solver official ``model_wrapper``, ``noise_schedule='discrete'``; dpmbench ``vp-discrete``):
the training step ``n = 0 .. N-1`` sits at continuous time ``t_n = (n + 1) / N`` with
``alpha(t_n)^2 = alphas_cumprod[n]``, log alpha piecewise linear in between. The network is fed the continuous
timestep ``N * t - 1`` (so ``t_n`` feeds exactly ``n``; a fractional value between steps). The official code
feeds ``(t - 1/N) * 1000``, identical for the usual ``N = 1000``; for other N we keep the UNet's own index range
``0 .. N-1``, which is what diffusers' schedulers feed it. Timesteps are passed as a float tensor (a Python
number would be truncated to ``long`` by diffusers).

A flow-matching scheduler config (``FlowMatchEulerDiscreteScheduler``'s, as ``digits-flow`` ships; entry
``schedule: flow``) gives the ``flow`` schedule (x_t = (1 - t) x0 + t eps) and a velocity-predicting network fed the
timestep ``N * t`` (diffusers' flow convention: its schedulers' timesteps are sigma * N).

Parameterization: the scheduler config's ``prediction_type`` (``epsilon`` -> eps, ``v_prediction`` -> v,
``sample`` -> x0). UNets with learned variance (``out_channels == 2 * in_channels``, e.g. improved DDPM) return
the mean part only (the first half of the channels, as diffusers' pipelines split it).

Folder layout (options name the components' folders, relative to the checkpoint root): a pipeline folder with
``unet/`` and ``scheduler/``; a flat repository (google/ddpm-cifar10-32: ``config.json``, weights and
``scheduler_config.json`` at the root; option ``subfolder: ""``, or found by itself); or a bare ``UNet2DModel``
folder without a scheduler config: then the betas come from the options ``num_train_timesteps``/``beta_start``/
``beta_end``/``beta_schedule`` (diffusers' defaults: 1000, 1e-4, 0.02, linear) and the parameterization from the
entry. Options ``unet`` (alias ``subfolder``) and ``scheduler`` override the folder names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.adapters.common import (
    PREDICTION_TYPES,
    MicroBatched,
    check_entry_field,
    entry_digest,
    in_chunks,
    model_dtype,
    options,
    set_micro_batch,
    time_column,
)
from dpmbench.models.base import Model, convert_prediction
from dpmbench.schedules import Flow, NoiseSchedule, VPDiscrete

SCHEDULE_OPTIONS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")
UNET_OPTIONS = ("dtype", "unet", "subfolder", "scheduler", "num_classes", "null_class", "micro_batch",
                *SCHEDULE_OPTIONS)
# diffusers' DDPMScheduler defaults (used where a scheduler config leaves a key out)
DIFFUSERS_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
                      "prediction_type": "epsilon"}


def is_flow_config(cfg: Mapping[str, Any]) -> bool:
    """Whether a scheduler config is a flow-matching one: a FlowMatch* scheduler's (``shift`` and no betas), or any
    with ``use_flow_sigmas`` or ``prediction_type="flow_prediction"``."""
    name = str(cfg.get("_class_name", ""))
    return (name.startswith("FlowMatch") or bool(cfg.get("use_flow_sigmas"))
            or cfg.get("prediction_type") == "flow_prediction"
            or ("shift" in cfg and "beta_start" not in cfg and "trained_betas" not in cfg))


def timestep_offset(flow: bool) -> float:
    """The network's timestep input is ``N t + offset``: -1 on the discrete VP schedule (DPM-Solver's convention, the
    module docstring), 0 on the flow schedule (diffusers' flow schedulers feed sigma * N)."""
    return 0.0 if flow else -1.0


def read_scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler's ``scheduler_config.json`` (diffusers' DDPM defaults filled in, unless a flow config)."""
    path = Path(folder) / "scheduler_config.json"
    if not path.is_file():
        raise DpmbenchError(f"invalid diffusers folder {str(folder)!r}: no scheduler_config.json")
    cfg = {k: v for k, v in json.loads(path.read_text()).items() if v is not None}
    return cfg if is_flow_config(cfg) else {**DIFFUSERS_DEFAULTS, **cfg}


def schedule_from_config(cfg: Mapping[str, Any]) -> VPDiscrete:
    """dpmbench's ``vp-discrete`` schedule of a diffusers scheduler config, betas rebuilt in float64.

    Supports ``trained_betas`` and ``beta_schedule`` linear / scaled_linear / squaredcos_cap_v2 (diffusers'
    formulas); ``rescale_betas_zero_snr`` (alpha-bar = 0 at the last step, infinite log-SNR) is refused.
    """
    if cfg.get("rescale_betas_zero_snr"):
        raise DpmbenchError("invalid scheduler rescale_betas_zero_snr=True: zero terminal SNR has no finite "
                            "log-SNR; allowed: false")
    n = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        return VPDiscrete(betas=torch.tensor(cfg["trained_betas"], dtype=torch.float64))
    kind = cfg.get("beta_schedule", "linear")
    allowed = ("linear", "scaled_linear", "squaredcos_cap_v2")
    if kind not in allowed:
        raise bad_value("scheduler beta_schedule", kind, allowed)
    return VPDiscrete(num_train_timesteps=n, beta_start=float(cfg.get("beta_start", 1e-4)),
                      beta_end=float(cfg.get("beta_end", 0.02)), beta_schedule=kind)


def parameterization_of(prediction_type: str) -> str:
    """dpmbench's parameterization of a diffusers ``prediction_type``."""
    if prediction_type not in PREDICTION_TYPES:
        raise bad_value("scheduler prediction_type", prediction_type, PREDICTION_TYPES)
    return PREDICTION_TYPES[prediction_type]


def component_dir(root: Path, opts: Mapping[str, Any], keys: tuple[str, ...], defaults: tuple[str, ...],
                  marker: str) -> Path | None:
    """The folder of one pipeline component: ``root / opts[key]`` for the first option key given (``""`` is the
    root itself), else the first of ``root / default`` holding the file ``marker``; None when there is none."""
    for key in keys:
        if key in opts:
            path = Path(root) / str(opts[key])
            if not (path / marker).is_file():
                raise DpmbenchError(f"invalid option {key} {opts[key]!r}: no {marker} in {str(path)!r}")
            return path
    return next((Path(root) / d for d in defaults if (Path(root) / d / marker).is_file()), None)


class DiffusersUNet(MicroBatched, Model):
    """A diffusers UNet on a ``vp-discrete`` schedule (see the module docstring for the time convention).

    ``cond``: class labels (LongTensor, shape (n,)) for class-conditional ``UNet2DModel`` s
    (``num_class_embeds``); the unconditional branch of guidance uses the ``null_class`` option.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        schedule: NoiseSchedule,
        parameterization: str,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        num_classes: int | None = None,
        null_class: int | None = None,
        digest: str = "",
        num_train_timesteps: int | None = None,
    ):
        self.unet, self.schedule, self.parameterization = unet, schedule, parameterization
        self.name, self.shape, self.dtype = name, tuple(shape), dtype
        self.num_classes, self.null_class, self.digest = num_classes, null_class, digest
        self.N = num_train_timesteps or schedule.N
        self.flow = schedule.kind == "flow"

    # -- time and conditioning --------------------------------------------------------------------
    def timestep(self, t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The UNet's timestep input ``N t - 1`` (float32 vector on x's device; DPM-Solver discrete convention); on
        the flow schedule ``N t`` (diffusers' flow schedulers' sigma * N)."""
        return time_column(t, x, scale=float(self.N), shift=timestep_offset(self.flow)).to(torch.float32)

    def unet_kwargs(self, cond: Any, n: int, device: torch.device) -> dict[str, Any]:
        """Keyword arguments of the UNet call carrying ``cond`` for a batch of ``n``."""
        if not self.num_classes:
            if cond is not None:
                raise DpmbenchError(f"invalid cond for model {self.name!r}: it is unconditional")
            return {}
        if cond is None:
            if self.null_class is None:
                raise DpmbenchError(f"invalid cond None for model {self.name!r}: class-conditional and no "
                                    "'null_class' option for the unconditional branch")
            return {"class_labels": torch.full((n,), int(self.null_class), dtype=torch.long, device=device)}
        labels = torch.as_tensor(cond).to(device=device, dtype=torch.long).reshape(-1).expand(n)
        return {"class_labels": labels}

    # -- evaluation ---------------------------------------------------------------------------------

    def net(self, x: torch.Tensor, timestep: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The UNet on x (one evaluation): native output in x's dtype (learned-variance channels dropped), computed
        in chunks of ``micro_batch`` rows, the last padded by repeating its final row, so that every row's result
        is independent of the batch it came in."""
        return in_chunks(self._call, (x, timestep, kwargs), self.micro_batch, x.device)

    def _call(self, x: torch.Tensor, timestep: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out = self.unet(x.to(self.dtype), timestep, return_dict=False, **kwargs)[0]
        if out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.net(x, self.timestep(t, x), self.unet_kwargs(cond, x.shape[0], x.device))

    def batched_kwargs(self, cond: Any, n: int, device: torch.device) -> dict[str, Any]:
        """UNet keyword arguments for the batch ``[cond; uncond]`` of 2n rows (classifier-free guidance)."""
        kc, ku = self.unet_kwargs(cond, n, device), self.unet_kwargs(None, n, device)
        return {k: torch.cat([kc[k], ku[k]]) for k in kc}

    def native_cond_uncond(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any) -> tuple[torch.Tensor, ...]:
        """(out(x, t | cond), out(x, t)), the network's native outputs, from ONE network call on the concatenated
        batch, as diffusers' pipelines do for classifier-free guidance."""
        n = x.shape[0]
        ts = self.timestep(t, x)
        return tuple(self.net(torch.cat([x, x]), torch.cat([ts, ts]), self.batched_kwargs(cond, n, x.device)).split(n))

    def eps_cond_uncond(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any) -> tuple[torch.Tensor, ...]:
        """(eps(x, t | cond), eps(x, t)) from ONE network call (``native_cond_uncond``); used by ``Guided`` (one
        guided evaluation = 1 NFE either way)."""
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        return tuple(convert_prediction(o, self.parameterization, "eps", x, alpha, sigma)
                     for o in self.native_cond_uncond(x, t, cond))

    def cache_key(self) -> str:
        return f"{self.name}|{self.digest}|{self.parameterization}|{self.schedule.key()}|{self.dtype}"


def _unet_folder(root: Path, opts: Mapping[str, Any]) -> tuple[Path, Path | None]:
    """(UNet folder, scheduler-config folder or None): ``unet/`` + ``scheduler/``, or a flat repository."""
    unet_dir = component_dir(root, opts, ("unet", "subfolder"), ("unet", ""), "config.json")
    if unet_dir is None:
        raise DpmbenchError(f"invalid diffusers folder {str(root)!r}: neither unet/config.json nor config.json")
    sched_dir = component_dir(root, opts, ("scheduler",), ("scheduler", "", str(unet_dir.relative_to(root))),
                              "scheduler_config.json")
    return unet_dir, sched_dir


def schedule_and_parameterization(
    entry: Mapping[str, Any], sched_dir: Path | None, opts: Mapping[str, Any]
) -> tuple[NoiseSchedule, str, int]:
    """The noise schedule, parameterization and training step count from the scheduler config (or, without one, the
    options and the entry), cross-checked against the entry."""
    cfg = read_scheduler_config(sched_dir) if sched_dir is not None else None
    if cfg is not None and is_flow_config(cfg):
        check_entry_field(entry, "schedule", "flow", "the scheduler config (flow matching)")
        check_entry_field(entry, "parameterization", "flow", "the scheduler config (flow matching)")
        return Flow(), "flow", int(cfg.get("num_train_timesteps", 1000))
    check_entry_field(entry, "schedule", "vp-discrete", "the diffusers adapter")
    if cfg is not None:
        param = parameterization_of(cfg["prediction_type"])
        check_entry_field(entry, "parameterization", param, "the scheduler config's prediction_type")
    else:
        cfg = {**DIFFUSERS_DEFAULTS, **{k: opts[k] for k in SCHEDULE_OPTIONS if k in opts}}
        param = entry.get("parameterization") or "eps"
        if param not in ("eps", "x0", "v"):
            raise bad_value("parameterization", param, ("eps", "x0", "v"))
    sch = schedule_from_config(cfg)
    return sch, param, sch.N


def load_diffusers_unet(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> DiffusersUNet:
    """Load a ``diffusers-unet`` entry (``UNet2DModel``; pipeline folder or bare UNet folder)."""
    from diffusers import UNet2DModel

    opts = options(entry, UNET_OPTIONS)
    dtype = model_dtype(opts)
    unet_dir, sched_dir = _unet_folder(root, opts)
    schedule, param, big_n = schedule_and_parameterization(entry, sched_dir, opts)
    # low_cpu_mem_usage=False: what diffusers falls back to without `accelerate`, said explicitly (no warning per load)
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=dtype, low_cpu_mem_usage=False)
    unet = unet.to(device).eval().requires_grad_(False)
    size = entry.get("resolution") or unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    num_classes = opts.get("num_classes", entry.get("num_classes") or unet.config.num_class_embeds)
    model = DiffusersUNet(unet, schedule, param, str(entry.get("id", unet_dir.name)),
                          (unet.config.in_channels, *size), dtype=dtype, num_classes=num_classes,
                          null_class=opts.get("null_class"), digest=entry_digest(entry), num_train_timesteps=big_n)
    return set_micro_batch(model, opts)
