"""``score-sde``: yang-song/score_sde_pytorch VP checkpoints (``checkpoint_8.pth`` + the repository + a config).

Convention (score_sde_pytorch ``models/utils.py`` ``get_score_fn``, VPSDE, ``continuous=True``): the network is
called as ``model(x, labels)`` with ``labels = 999 t`` and the score is ``-model(x, labels) / std(t)``, so the
network's output is the noise prediction eps (DPM-Solver's official score_sde example: ``model_type='noise'``,
continuous time). Schedule ``vp-linear`` with the config's ``beta_min``/``beta_max`` (0.1, 20; Song et al. 2021,
eq. 33), t in [1e-3, 1]. Data are centered to [-1, 1] (``config.data.centered``). Only continuous-time VPSDE
checkpoints are supported (discrete-time, subVP and VE configs are refused).

Loading: the network is built from the repository's config module (option ``config``, e.g.
``vp/cifar10_ddpmpp_deep_continuous``; the repository is option ``code_path`` or env ``DPMBENCH_SCORE_SDE_CODE``,
put on ``sys.path``; the file is option ``file`` or the entry's one ``.pth``) through its model registry
(``models.utils.get_model(config.model.name)``, after importing ``models.<name>`` or the modules in option
``model_modules``), without ``DataParallel``. The checkpoint is sha256-verified and read with
``torch.load(weights_only=True)`` (a plain state dict); by default the EMA weights are used (``ema.copy_to`` as
the repository does for evaluation: ``shadow_params`` in the order of the trainable parameters).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters.common import (
    add_code_path,
    check_entry_field,
    checkpoint_file,
    entry_digest,
    load_fitting,
    options,
    time_column,
    verified_file,
)
from dpmbench.models.base import Model
from dpmbench.schedules import VPLinear

SCORE_SDE_OPTIONS = ("file", "code_path", "config", "model_modules", "ema")
CODE_ENV = "DPMBENCH_SCORE_SDE_CODE"
LABEL_SCALE = 999.0  # score_sde: labels = t * 999 for continuously trained VP models


class ScoreSDEVP(Model):
    """A continuous-time score_sde VP network as a noise-prediction model on ``vp-linear``."""

    parameterization = "eps"

    def __init__(self, net: torch.nn.Module, name: str, schedule: VPLinear, shape: tuple[int, ...], digest: str = ""):
        self.net, self.name, self.schedule, self.shape, self.digest = net, name, schedule, tuple(shape), digest
        self.dtype = next(net.parameters()).dtype

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is not None:
            raise DpmbenchError(f"invalid cond for model {self.name!r}: it is unconditional")
        labels = time_column(t, x, scale=LABEL_SCALE).to(self.dtype)
        return self.net(x.to(self.dtype), labels).to(x.dtype)

    def cache_key(self) -> str:
        return f"{self.name}|{self.digest}|eps|{self.schedule.key()}"


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` prefix from a state dict's keys."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def config_module(name: str) -> str:
    """The config's module: ``vp/cifar10_ddpmpp_continuous`` (a path under configs/, .py optional) or
    ``configs.vp.cifar10_ddpmpp_continuous``."""
    mod = name.removesuffix(".py").replace("/", ".")
    return mod if mod.startswith("configs.") else f"configs.{mod}"


def load_score_sde(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> ScoreSDEVP:
    """Load a ``score-sde`` entry: sha256 gate, config module, model registry, weights-only state dict, EMA."""
    opts = options(entry, SCORE_SDE_OPTIONS)
    if not opts.get("config"):
        raise DpmbenchError("invalid options of adapter 'score-sde': 'config' (e.g. vp/cifar10_ddpmpp_continuous) "
                            "is required")
    check_entry_field(entry, "parameterization", "eps", "the score-sde adapter (continuous VP: noise prediction)")
    check_entry_field(entry, "schedule", "vp-linear", "the score-sde adapter")
    path = verified_file(entry, root, checkpoint_file(entry, opts, (".pth", ".pt")))
    add_code_path(opts, "score-sde", CODE_ENV, "yang-song/score_sde_pytorch")
    config = importlib.import_module(config_module(str(opts["config"]))).get_config()
    if str(config.training.sde).lower() != "vpsde" or not config.training.continuous:
        raise DpmbenchError(f"invalid score-sde config {opts['config']!r}: sde={config.training.sde!r}, "
                            f"continuous={config.training.continuous!r}; allowed: vpsde, continuous=True")
    if not getattr(config.data, "centered", True):
        raise DpmbenchError(f"invalid score-sde config {opts['config']!r}: data not centered; allowed: centered")
    for module in opts.get("model_modules") or [f"models.{config.model.name}"]:
        importlib.import_module(str(module))
    mutils = importlib.import_module("models.utils")
    net = mutils.get_model(config.model.name)(config)
    state = torch.load(path, map_location="cpu", weights_only=True)
    misfit = load_fitting(net, _strip_module(state["model"]))
    if misfit:
        raise DpmbenchError(f"invalid score-sde checkpoint {str(path)!r}: state dict does not fit config "
                            f"{opts['config']!r} ({misfit})")
    if opts.get("ema", True):
        shadow = state["ema"]["shadow_params"]
        params = [p for p in net.parameters() if p.requires_grad]
        if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params, strict=False)):
            raise DpmbenchError(f"invalid score-sde checkpoint {str(path)!r}: EMA parameters do not fit the model")
        with torch.no_grad():
            for s, p in zip(shadow, params, strict=True):
                p.copy_(s)
    net = net.to(device).eval().requires_grad_(False)
    schedule = VPLinear(beta_0=float(config.model.beta_min), beta_1=float(config.model.beta_max))
    size = int(entry.get("resolution") or config.data.image_size)
    return ScoreSDEVP(net, str(entry.get("id", path.stem)), schedule, (int(config.data.num_channels), size, size),
                      digest=entry_digest(entry))
