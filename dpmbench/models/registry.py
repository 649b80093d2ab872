"""Named models: the embedded oracle models (no download) and, later, checkpoint manifests."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from dpmbench.errors import bad_value
from dpmbench.models.base import Model
from dpmbench.models.oracle import MixtureOracle
from dpmbench.schedules import NoiseSchedule, make_schedule

GMM_DIGITS_EIG_FLOOR = 1e-3  # covariance eigenvalue floor (pixels in [-1, 1]); digits has constant pixels


@lru_cache(maxsize=1)
def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits, scaled from 0..16 to [-1, 1] (float64), and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float64) / 8.0 - 1.0
    return x, torch.tensor(d.target, dtype=torch.long)


def _gmm_2d(schedule: NoiseSchedule) -> MixtureOracle:
    # 8 anisotropic Gaussians on the unit circle, tangential std 0.2, radial std 0.05; class = k mod 4,
    # so every class is bimodal (opposite components) and guidance has something to do.
    k = torch.arange(8, dtype=torch.float64)
    theta = 2 * math.pi * k / 8
    means = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    rot = torch.stack([torch.stack([torch.cos(theta), -torch.sin(theta)], 1),
                       torch.stack([torch.sin(theta), torch.cos(theta)], 1)], 1)  # (8, 2, 2) rows
    diag = torch.diag(torch.tensor([0.05**2, 0.2**2], dtype=torch.float64))
    covs = rot @ diag @ rot.transpose(1, 2)
    weights = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.5, 1.0, 1.5, 1.0], dtype=torch.float64)
    return MixtureOracle("gmm-2d", schedule, means, weights, covs, classes=(k % 4).long(),
                         description="8 anisotropic Gaussians on the unit circle, 4 classes (2-D)")


def _gmm_digits(schedule: NoiseSchedule) -> MixtureOracle:
    x, y = digits_data()
    means, covs, weights = [], [], []
    for c in range(10):
        xc = x[y == c]
        mu = xc.mean(0)
        cov = torch.cov(xc.T)
        evals, evecs = torch.linalg.eigh(cov)
        cov = evecs @ torch.diag(evals.clamp_min(GMM_DIGITS_EIG_FLOOR)) @ evecs.T
        means.append(mu)
        covs.append(0.5 * (cov + cov.T))
        weights.append(float(len(xc)))
    return MixtureOracle("gmm-digits", schedule, torch.stack(means), torch.tensor(weights),
                         torch.stack(covs), classes=torch.arange(10), shape=(1, 8, 8),
                         description="one Gaussian per class fitted to scikit-learn's digits (64-D)")


def _digits_empirical(schedule: NoiseSchedule) -> MixtureOracle:
    x, y = digits_data()
    return MixtureOracle("digits-empirical", schedule, x, torch.ones(len(x), dtype=torch.float64),
                         covs=None, classes=y, shape=(1, 8, 8),
                         description="exact optimal denoiser of the 1,797 digits images (64-D)")


ORACLES: dict[str, Callable[[NoiseSchedule], MixtureOracle]] = {
    "gmm-2d": _gmm_2d,
    "gmm-digits": _gmm_digits,
    "digits-empirical": _digits_empirical,
}
DEFAULT_ORACLE_SCHEDULE = "vp-linear"


def list_models() -> list[str]:
    """Names accepted by ``load_model``."""
    return list(ORACLES)


def load_model(
    name: str, schedule: str | NoiseSchedule | None = None, device: str | torch.device = "cpu", **kw: Any
) -> Model:
    """Load a model by name; oracle models accept any noise schedule (default ``vp-linear``)."""
    if name not in ORACLES:
        raise bad_value("model", name, list_models())
    if schedule is None:
        schedule = DEFAULT_ORACLE_SCHEDULE
    sch = make_schedule(schedule, **kw) if isinstance(schedule, str) else schedule
    return ORACLES[name](sch)
