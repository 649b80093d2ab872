"""``edm-pickle``: NVlabs/edm network pickles (``*.pkl``: a dict whose ``"ema"`` entry is the network).

The pickle holds the preconditioned denoiser ``D(x; sigma)`` (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond;
Karras et al. 2022, Table 1 and eq. 7): called as ``net(x, sigma, class_labels)`` with ``x = x0 + sigma * n`` it
returns the x0 prediction, so the parameterization is ``x0`` and the network's noise input is sigma.
Two schedules (the entry's ``schedule``), both as in EDM's generalized sampler (``generate.py``, eq. 4 with
scaling s(t) and noise level sigma(t)):

* ``edm``: alpha = 1, sigma = t; the network gets (x, t). Sigma range as ``generate.py``:
  sigma_min = max(0.002, net.sigma_min), sigma_max = min(80, net.sigma_max) (options ``sigma_min`` /
  ``sigma_max`` override).
* ``vp-linear`` (the VP-EDM variants, e.g. edm-cifar10-32x32-uncond-vp.pkl): x_t = alpha(t) x0 + sigma(t) eps
  with log alpha(t) = -beta_d t^2 / 4 - beta_min t / 2 (the net's ``beta_d``/``beta_min``: 19.9, 0.1; options
  override); the network gets ``(x / alpha, sigma / alpha)``, i.e. EDM's ``--scaling=vp``, where
  sigma_edm(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1). t in [1e-3, 1] (``epsilon_s`` of the VP sampler).

Both describe the same probability-flow ODE up to a change of variables; solvers that work in lambda (DPM-Solver,
UniPC, ...) give identical results on either. Class-conditional nets (``label_dim > 0``) get one-hot
``class_labels``; ``cond=None`` passes None (the net then uses an all-zero label, as EDMPrecond does).

Safety: EDM pickles embed source code (``torch_utils.persistence``) that runs when unpickled, so the file is
unpickled only after its sha256 matches the manifest entry (``verified_file``). The EDM repository must be
importable (``torch_utils``, ``dnnlib``): option ``code_path`` or env ``DPMBENCH_EDM_CODE`` is put on
``sys.path``. The file is option ``file`` or the entry's one ``.pkl`` file.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.adapters.common import (
    add_code_path,
    check_entry_field,
    checkpoint_file,
    entry_digest,
    options,
    time_column,
    verified_file,
)
from dpmbench.models.base import Model
from dpmbench.schedules import EDM, NoiseSchedule, VPLinear

EDM_OPTIONS = ("file", "code_path", "key", "sigma_min", "sigma_max", "beta_min", "beta_d")
CODE_ENV = "DPMBENCH_EDM_CODE"
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # NVlabs/edm generate.py defaults


class EDMNetwork(Model):
    """An EDM preconditioned denoiser D(x; sigma) as a dpmbench model (x0 prediction; ``edm`` or ``vp-linear``)."""

    parameterization = "x0"

    def __init__(self, net: torch.nn.Module, name: str, schedule: NoiseSchedule, shape: tuple[int, ...],
                 num_classes: int | None, digest: str = ""):
        self.net, self.name, self.schedule, self.shape = net, name, schedule, tuple(shape)
        self.num_classes, self.digest = num_classes, digest
        self.vp = schedule.kind != "edm"

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.vp:  # EDM --scaling=vp: D(x / alpha; sigma / alpha)
            a, s = self.schedule.alpha(t), self.schedule.sigma(t)
            sigma = time_column(s / a, x)
            a = a.to(x.device).reshape(-1, *([1] * (x.ndim - 1))) if isinstance(a, torch.Tensor) else a
            x = x / a
        else:
            sigma = time_column(t, x)  # the network's noise input is sigma = t (float64 as generate.py)
        labels = None
        if cond is not None:
            if not self.num_classes:
                raise DpmbenchError(f"invalid cond for model {self.name!r}: it is unconditional")
            cond = torch.as_tensor(cond).to(x.device)
            if cond.ndim == 1:  # class indices -> one-hot, as EDM's generate.py builds class_labels
                cond = torch.nn.functional.one_hot(cond.long(), self.num_classes)
            labels = cond.to(torch.float32).expand(x.shape[0], self.num_classes)
        return self.net(x, sigma, labels).to(x.dtype)

    def cache_key(self) -> str:
        return f"{self.name}|{self.digest}|x0|{self.schedule.key()}"


def _schedule(entry: Mapping[str, Any], opts: Mapping[str, Any], net: torch.nn.Module) -> NoiseSchedule:
    kind = entry.get("schedule") or "edm"
    if kind == "edm":
        sigma_min = float(opts.get("sigma_min", max(EDM_SIGMA_MIN, float(getattr(net, "sigma_min", 0.0)))))
        sigma_max = float(opts.get("sigma_max", min(EDM_SIGMA_MAX, float(getattr(net, "sigma_max", float("inf"))))))
        return EDM(sigma_max=sigma_max, sigma_min=sigma_min)
    if kind == "vp-linear":
        beta_min = float(opts.get("beta_min", getattr(net, "beta_min", 0.1)))
        beta_d = float(opts.get("beta_d", getattr(net, "beta_d", 19.9)))
        return VPLinear(beta_0=beta_min, beta_1=beta_min + beta_d)
    raise bad_value("schedule of an edm-pickle entry", kind, ("edm", "vp-linear"))


def load_edm_pickle(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> EDMNetwork:
    """Load an ``edm-pickle`` entry: sha256 gate, then ``pickle.load`` with the EDM code on the path."""
    opts = options(entry, EDM_OPTIONS)
    check_entry_field(entry, "parameterization", "x0", "the edm-pickle adapter (D(x; sigma))")
    if entry.get("schedule") not in (None, "edm", "vp-linear"):
        raise bad_value("schedule of an edm-pickle entry", entry.get("schedule"), ("edm", "vp-linear"))
    path = verified_file(entry, root, checkpoint_file(entry, opts, (".pkl", ".pickle")))  # before any unpickling
    add_code_path(opts, "edm-pickle", CODE_ENV, "NVlabs/edm")
    with open(path, "rb") as f:
        data = pickle.load(f)  # noqa: S301  (sha256-verified above)
    key = opts.get("key", "ema")
    if isinstance(data, dict) and key not in data:
        raise DpmbenchError(f"invalid option key {key!r}: the pickle has {sorted(data)}")
    net = data[key] if isinstance(data, dict) else data
    net = net.eval().requires_grad_(False).to(device)
    res = entry.get("resolution") or net.img_resolution
    shape = (int(net.img_channels), int(res), int(res))
    label_dim = int(getattr(net, "label_dim", 0) or 0)
    return EDMNetwork(net, str(entry.get("id", path.stem)), _schedule(entry, opts, net), shape, label_dim or None,
                      digest=entry_digest(entry))
