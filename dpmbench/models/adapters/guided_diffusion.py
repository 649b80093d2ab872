"""``guided-diffusion``: openai/guided-diffusion (ADM) checkpoints, a diffusion ``*.pt`` and its noisy classifier.

The files are plain state dicts (``torch.save(model.state_dict())``): the diffusion UNet (``256x256_diffusion.pt``) and
the classifier (``256x256_classifier.pt``), read with ``torch.load(weights_only=True)`` after their sha256 check. The
networks are built by the repository's own ``guided_diffusion.script_util`` (``create_model``, ``create_classifier``)
from the flags its README gives each checkpoint (options ``model_flags`` / ``classifier_flags``, the README's names,
filled in from ``model_and_diffusion_defaults()`` / ``classifier_defaults()`` as its scripts do), so the state-dict
layout is the official one. The code is the checkout named by option ``code_path`` or env
``DPMBENCH_GUIDED_DIFFUSION_CODE``, else an installed ``guided_diffusion`` package (the extra ``guided-diffusion``:
the PyPI ``guided-diffusion-sdk`` 1.0.0, whose ``unet.py`` and ``script_util.py`` are openai/guided-diffusion@22e0df8's
but for a gradient-checkpoint flag that inference never uses). ``use_fp16`` / ``classifier_use_fp16`` convert the
networks' blocks to float16 as the official samplers do (``convert_to_fp16``).

Convention (DPM-Solver's official guided-diffusion example and DPM-Solver-v3's ``codebases/guided-diffusion``:
``model_wrapper(model_type="noise", guidance_type="classifier")``): schedule ``vp-discrete`` with the checkpoint's betas
(``noise_schedule`` linear or cosine, ``diffusion_steps`` N); the networks are fed the timestep ``N t - 1`` (the
official ``(t - 1/N) * 1000`` for N = 1000); with ``learn_sigma`` only the mean output (the first 3 channels) is used.

Classifier guidance (Dhariwal & Nichol 2021, Sec. 4; the official wrapper's ``cond_grad_fn``):
``eps'(x, t | y) = eps(x, t | y) - s sigma_t grad_x log p_phi(y | x_t, t)`` with ``log p_phi`` the classifier's
log-softmax at label y. ``guided(model, s)`` returns this model (``with_guidance``); one guided evaluation (a UNet call
and a classifier forward and backward) is one NFE, the papers' convention. ``s = 0`` samples the class-conditional
UNet without the classifier. Unguided (no scale), a class-conditional UNet has no labels and is refused in one line.

Every network call runs on fixed chunks of rows (option ``micro_batch``; ``common.in_chunks``), so a sample's bits do
not depend on its batch. Forward-mode derivatives (DPM-Solver-v3's statistics) are not taken through the classifier's
gradient (its reverse-mode pass detaches the tangent): a guided model says ``forward_ad = False`` and gets central
finite differences.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.adapters.common import (
    MicroBatched,
    check_entry_field,
    entry_digest,
    in_chunks,
    load_fitting,
    options,
    set_micro_batch,
    time_column,
    verified_file,
)
from dpmbench.models.base import Guided, Model
from dpmbench.schedules import VPDiscrete

GD_OPTIONS = ("model_file", "classifier_file", "model_flags", "classifier_flags", "code_path", "micro_batch")
CODE_ENV = "DPMBENCH_GUIDED_DIFFUSION_CODE"
NOISE_SCHEDULES = ("linear", "cosine")  # guided_diffusion.gaussian_diffusion.get_named_beta_schedule


def import_script_util(opts: Mapping[str, Any]) -> ModuleType:
    """``guided_diffusion.script_util`` of the checkout named by option ``code_path`` / env ``CODE_ENV`` (a copy already
    imported from elsewhere is forgotten first), else of the installed package."""
    import os

    raw = opts.get("code_path") or os.environ.get(CODE_ENV, "").strip()
    if raw:
        path = Path(raw).expanduser().resolve()
        if not (path / "guided_diffusion" / "script_util.py").is_file():
            raise DpmbenchError(f"invalid code_path {str(path)!r} (adapter 'guided-diffusion'): no "
                                "guided_diffusion/script_util.py in it; allowed: a checkout of openai/guided-diffusion")
        loaded = sys.modules.get("guided_diffusion")
        if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(path)):
            for name in [m for m in sys.modules if m == "guided_diffusion" or m.startswith("guided_diffusion.")]:
                del sys.modules[name]
        if str(path) in sys.path:
            sys.path.remove(str(path))
        sys.path.insert(0, str(path))
    try:
        with warnings.catch_warnings():  # its nn.py decorates with torch.cuda.amp.custom_fwd (deprecated)
            warnings.simplefilter("ignore", FutureWarning)
            return importlib.import_module("guided_diffusion.script_util")
    except ImportError as exc:
        raise DpmbenchError(f"invalid options of adapter 'guided-diffusion': cannot import guided_diffusion ({exc}); "
                            f"install the extra 'guided-diffusion' or set option code_path or {CODE_ENV} to a checkout "
                            "of openai/guided-diffusion") from None


def _flags(defaults: Mapping[str, Any], given: Any, what: str) -> dict[str, Any]:
    """``defaults`` updated with the ``given`` flags (a mapping of the README's flag names), unknown names refused."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise bad_value(f"option {what}", given, "a mapping of guided-diffusion flags (e.g. image_size: 256)")
    for k in given:
        if k not in defaults:
            raise bad_value(f"flag of option {what}", k, sorted(defaults))
    return {**defaults, **given}


def _call_args(fn: Any, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flags ``fn`` takes (as the scripts' ``args_to_dict(args, defaults.keys())``)."""
    import inspect

    return {k: flags[k] for k in inspect.signature(fn).parameters if k in flags}


def schedule_of(flags: Mapping[str, Any]) -> VPDiscrete:
    """The ``vp-discrete`` schedule of the flags' ``noise_schedule`` and ``diffusion_steps`` (guided-diffusion's
    ``get_named_beta_schedule``: linear betas scaled by 1000 / N, or the cosine schedule)."""
    n, kind = int(flags["diffusion_steps"]), flags["noise_schedule"]
    if kind not in NOISE_SCHEDULES:
        raise bad_value("flag noise_schedule of option model_flags", kind, NOISE_SCHEDULES)
    if kind == "cosine":
        return VPDiscrete(num_train_timesteps=n, beta_schedule="squaredcos_cap_v2")
    scale = 1000.0 / n
    return VPDiscrete(num_train_timesteps=n, beta_start=scale * 1e-4, beta_end=scale * 0.02)


class GuidedDiffusionUNet(MicroBatched, Model):
    """An ADM UNet (noise prediction on ``vp-discrete``) with its noisy classifier, guided through ``with_guidance``."""

    parameterization = "eps"

    def __init__(self, net: torch.nn.Module, classifier: torch.nn.Module | None, name: str, schedule: VPDiscrete,
                 shape: tuple[int, ...], num_classes: int, class_cond: bool, digest: str = ""):
        self.net, self.classifier, self.name, self.schedule = net, classifier, name, schedule
        self.shape, self.num_classes, self.class_cond = tuple(shape), num_classes, class_cond
        self.digest = digest

    def timesteps(self, t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The networks' timestep input ``N t - 1`` (float32, one per row)."""
        return time_column(t, x, scale=self.schedule.N, shift=-1.0).float()

    def _labels(self, cond: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(cond).to(device=x.device, dtype=torch.long).reshape(-1).expand(x.shape[0])

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.class_cond and cond is None:
            raise DpmbenchError(f"invalid guidance None for model {self.name!r}: its UNet is class-conditional; give "
                                "a classifier-guidance scale (0: the class-conditional UNet without the classifier)")
        ts = self.timesteps(t, x)
        y = self._labels(cond, x) if self.class_cond else None

        def call(xx: torch.Tensor, tt: torch.Tensor, yy: torch.Tensor | None) -> torch.Tensor:
            out = self.net(xx.float(), tt, y=yy) if yy is not None else self.net(xx.float(), tt)
            return out[:, : xx.shape[1]]  # learn_sigma: the mean output only (the official wrapper's split)

        return in_chunks(call, (x, ts, y), self.micro_batch, x.device).to(x.dtype)

    def log_prob_grad(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any) -> torch.Tensor:
        """grad_x log p_phi(y | x_t, t): the classifier's log-softmax at label y, differentiated by reverse mode
        (the official ``cond_grad_fn``), in x's dtype."""
        if self.classifier is None:
            raise DpmbenchError(f"invalid guidance for model {self.name!r}: its entry has no classifier_file")
        classifier = self.classifier

        def call(xx: torch.Tensor, tt: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                x_in = xx.detach().float().requires_grad_(True)
                logp = torch.log_softmax(classifier(x_in, tt).float(), dim=-1)
                picked = logp[torch.arange(len(yy), device=yy.device), yy]
                return torch.autograd.grad(picked.sum(), x_in)[0]

        return in_chunks(call, (x, self.timesteps(t, x), self._labels(cond, x)), self.micro_batch,
                         x.device).to(x.dtype)

    def with_guidance(self, scale: float) -> Model:
        """This model under classifier guidance of scale ``scale`` (what ``guided(model, scale)`` returns)."""
        return ClassifierGuided(self, scale)

    def cache_key(self) -> str:
        return f"{self.name}|{self.digest}|eps|{self.schedule.key()}"


class ClassifierGuided(Guided):
    """eps'(x, t | y) = eps(x, t | y) - s sigma_t grad_x log p(y | x_t, t) (Dhariwal & Nichol 2021, Sec. 4.2;
    DPM-Solver's ``model_wrapper``, guidance_type "classifier"); one evaluation is one NFE. A ``Guided`` model (its
    ``base`` and ``scale``; ``fixed_batch`` through the base) whose guidance is the classifier's, not
    classifier-free."""

    forward_ad = False  # the classifier's reverse-mode gradient drops a forward-mode tangent: finite differences

    def __init__(self, base: GuidedDiffusionUNet, scale: float):
        super().__init__(base, scale)
        self.base: GuidedDiffusionUNet = base

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is None:
            raise DpmbenchError("invalid cond None: classifier guidance needs class labels")
        eps = self.base.forward(x, t, cond)
        if self.scale == 0.0:
            return eps
        sigma = self.schedule.sigma(t)
        if isinstance(sigma, torch.Tensor) and sigma.ndim:
            sigma = sigma.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return eps - self.scale * sigma * self.base.log_prob_grad(x, t, cond)

    def cache_key(self) -> str:
        return f"{self.base.cache_key()}|classifier-guidance={self.scale!r}"


def _load_state(entry: Mapping[str, Any], root: Path, name: str, module: torch.nn.Module, what: str) -> None:
    path = verified_file(entry, root, name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise DpmbenchError(f"invalid guided-diffusion {what} {str(path)!r}: not a state dict")
    misfit = load_fitting(module, state)
    if misfit:
        raise DpmbenchError(f"invalid guided-diffusion {what} {str(path)!r}: its state dict does not fit the "
                            f"{what} flags ({misfit})")


def load_guided_diffusion(entry: Mapping[str, Any], root: Path,
                          device: str | torch.device = "cpu") -> GuidedDiffusionUNet:
    """Load a ``guided-diffusion`` entry: flags, the official constructors, sha256-gated state dicts, fp16."""
    opts = options(entry, GD_OPTIONS)
    if not opts.get("model_file"):
        raise DpmbenchError("invalid options of adapter 'guided-diffusion': 'model_file' (e.g. 256x256_diffusion.pt) "
                            "is required")
    check_entry_field(entry, "parameterization", "eps", "the guided-diffusion adapter (the mean output: eps)")
    check_entry_field(entry, "schedule", "vp-discrete", "the guided-diffusion adapter")
    su = import_script_util(opts)
    mflags = _flags(su.model_and_diffusion_defaults(), opts.get("model_flags"), "model_flags")
    if mflags.get("predict_xstart") or mflags.get("timestep_respacing") or mflags.get("rescale_timesteps"):
        raise DpmbenchError("invalid model_flags of adapter 'guided-diffusion': predict_xstart, timestep_respacing "
                            "and rescale_timesteps are not supported; allowed: their defaults (False, '', False)")
    schedule = schedule_of(mflags)
    net = su.create_model(**_call_args(su.create_model, mflags))
    _load_state(entry, root, str(opts["model_file"]), net, "model")
    classifier = None
    if opts.get("classifier_file"):
        cflags = _flags(su.classifier_defaults(), {"image_size": mflags["image_size"],
                                                   **(opts.get("classifier_flags") or {})}, "classifier_flags")
        classifier = su.create_classifier(**_call_args(su.create_classifier, cflags))
        _load_state(entry, root, str(opts["classifier_file"]), classifier, "classifier")
        if cflags["classifier_use_fp16"]:
            classifier.convert_to_fp16()
        classifier = classifier.to(device).eval().requires_grad_(False)
    if mflags["use_fp16"]:
        net.convert_to_fp16()
    net = net.to(device).eval().requires_grad_(False)
    size = int(mflags["image_size"])
    if entry.get("resolution") not in (None, size):
        raise DpmbenchError(f"invalid resolution {entry.get('resolution')!r} for checkpoint {entry.get('id')!r}: "
                            f"its model_flags say image_size {size}")
    class_cond = bool(mflags["class_cond"])
    ncls = int(entry.get("num_classes") or getattr(su, "NUM_CLASSES", 1000))
    return set_micro_batch(GuidedDiffusionUNet(net, classifier, str(entry.get("id", "guided-diffusion")), schedule,
                                               (3, size, size), ncls, class_cond, digest=entry_digest(entry)), opts)
