"""``edm-pickle``: NVlabs/edm network pickles (``*.pkl``: a dict whose ``"ema"`` entry is the network).

The pickle holds the preconditioned denoiser ``D(x; sigma)`` (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond;
Karras et al. 2022, Table 1 and eq. 7): called as ``net(x, sigma, class_labels)`` with ``x = x0 + sigma * n`` it
returns the x0 prediction. Hence parameterization ``x0`` on the ``edm`` schedule (alpha = 1, sigma = t), and the
network's time input is sigma itself. This holds for every EDM preconditioning, the VP/VE variants included:
VPPrecond converts sigma to its own VP time internally, and EDM's ``generate.py`` samples them all in this sigma
form. Sigma range as ``generate.py``: sigma_min = max(0.002, net.sigma_min), sigma_max = min(80, net.sigma_max)
(options ``sigma_min`` / ``sigma_max`` override). Class-conditional nets (``label_dim > 0``) get one-hot
``class_labels``; ``cond=None`` passes None (the net then uses an all-zero label, as EDMPrecond does).

Safety: EDM pickles embed source code (``torch_utils.persistence``) that runs when unpickled, so the file is
unpickled only after its sha256 matches the manifest entry (``verified_file``). The EDM repository must be
importable (``torch_utils``, ``dnnlib``): option ``code_path`` is put on ``sys.path``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters.common import (
    add_code_path,
    check_entry_field,
    entry_digest,
    options,
    time_column,
    verified_file,
)
from dpmbench.models.base import Model
from dpmbench.schedules import EDM

EDM_OPTIONS = ("file", "code_path", "key", "sigma_min", "sigma_max")
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # NVlabs/edm generate.py defaults


class EDMNetwork(Model):
    """An EDM preconditioned denoiser D(x; sigma) as a dpmbench model (x0 prediction, ``edm`` schedule)."""

    parameterization = "x0"

    def __init__(self, net: torch.nn.Module, name: str, schedule: EDM, shape: tuple[int, ...],
                 num_classes: int | None, digest: str = ""):
        self.net, self.name, self.schedule, self.shape = net, name, schedule, tuple(shape)
        self.num_classes, self.digest = num_classes, digest

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        sigma = time_column(t, x)  # EDM: the network's noise input is sigma = t (float64 as generate.py)
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


def load_edm_pickle(entry: Mapping[str, Any], root: Path, device: str | torch.device = "cpu") -> EDMNetwork:
    """Load an ``edm-pickle`` entry: sha256 gate, then ``pickle.load`` with the EDM code on the path."""
    opts = options(entry, EDM_OPTIONS)
    if not opts.get("file"):
        raise DpmbenchError("invalid options of adapter 'edm-pickle': 'file' (the .pkl name) is required")
    check_entry_field(entry, "parameterization", "x0", "the edm-pickle adapter (D(x; sigma))")
    check_entry_field(entry, "schedule", "edm", "the edm-pickle adapter")
    path = verified_file(entry, root, str(opts["file"]))  # before anything is unpickled
    add_code_path(opts, "edm-pickle")
    with open(path, "rb") as f:
        data = pickle.load(f)  # noqa: S301  (sha256-verified above)
    key = opts.get("key", "ema")
    if isinstance(data, dict) and key not in data:
        raise DpmbenchError(f"invalid option key {key!r}: the pickle has {sorted(data)}")
    net = data[key] if isinstance(data, dict) else data
    net = net.eval().requires_grad_(False).to(device)
    sigma_min = float(opts.get("sigma_min", max(EDM_SIGMA_MIN, float(getattr(net, "sigma_min", 0.0)))))
    sigma_max = float(opts.get("sigma_max", min(EDM_SIGMA_MAX, float(getattr(net, "sigma_max", float("inf"))))))
    res = entry.get("resolution") or net.img_resolution
    shape = (int(net.img_channels), int(res), int(res))
    label_dim = int(getattr(net, "label_dim", 0) or 0)
    return EDMNetwork(net, str(entry.get("id", path.stem)), EDM(sigma_max=sigma_max, sigma_min=sigma_min), shape,
                      label_dim or None, digest=entry_digest(entry))
