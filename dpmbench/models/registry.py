"""Named models: the embedded oracle models (no download) and the checkpoints of the manifest
(``config/checkpoints.yaml``, loaded through ``dpmbench.models.adapters``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.models.base import Model
from dpmbench.models.oracle import FlowOracle, MixtureOracle
from dpmbench.schedules import NoiseSchedule, make_schedule

GMM_DIGITS_EIG_FLOOR = 1e-3  # covariance eigenvalue floor (pixels in [-1, 1]); digits has constant pixels


@lru_cache(maxsize=1)
def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits, scaled from 0..16 to [-1, 1] (float64), and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float64) / 8.0 - 1.0
    return x, torch.tensor(d.target, dtype=torch.long)


def _gmm_2d(schedule: NoiseSchedule, cls: type[MixtureOracle] = MixtureOracle) -> MixtureOracle:
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
    return cls("gmm-2d", schedule, means, weights, covs, classes=(k % 4).long(),
               description="8 anisotropic Gaussians on the unit circle, 4 classes (2-D)")


def _gmm_digits(schedule: NoiseSchedule, cls: type[MixtureOracle] = MixtureOracle) -> MixtureOracle:
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
    return cls("gmm-digits", schedule, torch.stack(means), torch.tensor(weights),
               torch.stack(covs), classes=torch.arange(10), shape=(1, 8, 8),
               description="one Gaussian per class fitted to scikit-learn's digits (64-D)")


def _digits_empirical(schedule: NoiseSchedule, cls: type[MixtureOracle] = MixtureOracle) -> MixtureOracle:
    x, y = digits_data()
    return cls("digits-empirical", schedule, x, torch.ones(len(x), dtype=torch.float64),
               covs=None, classes=y, shape=(1, 8, 8),
               description="exact optimal denoiser of the 1,797 digits images (64-D)")


ORACLES: dict[str, Callable[..., MixtureOracle]] = {
    "gmm-2d": _gmm_2d,
    "gmm-digits": _gmm_digits,
    "digits-empirical": _digits_empirical,
}
DEFAULT_ORACLE_SCHEDULE = "vp-linear"
# The same oracles on DDPM's discrete-time schedule (1000 linear betas 1e-4 .. 0.02: diffusers' defaults, the
# google/ddpm-* checkpoints): discrete-time questions (diffusers' timestep spacings, ``diffusers-*`` schedules) with
# an exact solution. ``NAME-ddpm`` is ``load_model(NAME, schedule="vp-discrete")`` under its own name.
DISCRETE_SUFFIX = "-ddpm"
ORACLE_SCHEDULES: dict[str, str] = {}


def _renamed(build: Callable[[NoiseSchedule], MixtureOracle], name: str) -> Callable[[NoiseSchedule], MixtureOracle]:
    def make(schedule: NoiseSchedule) -> MixtureOracle:
        model = build(schedule)
        model.name = name
        return model

    return make


# The same oracles as flow-matching models (``flow`` schedule: x_t = (1 - t) x0 + t eps, t from 1 to t_end),
# predicting the velocity v = eps - x0 as SD3 / FLUX do: ``NAME-flow``. Same data, so their exact solutions are the
# VP oracles' ones mapped through the change of schedule (in x / sigma against log-SNR the two ODEs are one).
FLOW_SUFFIX = "-flow"


def _as_flow(build: Callable[..., MixtureOracle], name: str) -> Callable[[NoiseSchedule], MixtureOracle]:
    def make(schedule: NoiseSchedule) -> MixtureOracle:
        model = build(schedule, FlowOracle)
        model.name = name
        model.description += "; flow matching, predicts the velocity"
        return model

    return make


for _base in list(ORACLES):
    ORACLES[_base + DISCRETE_SUFFIX] = _renamed(ORACLES[_base], _base + DISCRETE_SUFFIX)
    ORACLE_SCHEDULES[_base + DISCRETE_SUFFIX] = "vp-discrete"
for _base in [b for b in ORACLES if not b.endswith(DISCRETE_SUFFIX)]:
    ORACLES[_base + FLOW_SUFFIX] = _as_flow(ORACLES[_base], _base + FLOW_SUFFIX)
    ORACLE_SCHEDULES[_base + FLOW_SUFFIX] = "flow"


def list_models() -> list[str]:
    """Names accepted by ``load_model``: the oracle models, then the checkpoint ids of the manifest."""
    from dpmbench.models.manifest import load_manifest

    return [*ORACLES, *(k for k in load_manifest() if k not in ORACLES)]


def _load_adapter(entry: dict[str, Any], root: Path, device: str | torch.device) -> Model:
    """``dpmbench.models.adapters.load_adapter`` (imported here, so that a missing package is one clear error)."""
    try:
        from dpmbench.models.adapters import load_adapter
    except ImportError as exc:
        if exc.name is not None and not exc.name.startswith("dpmbench.models.adapters"):
            raise  # the adapters package exists but one of its dependencies is missing: show that
        raise DpmbenchError(f"checkpoint model {entry['id']!r} needs adapter {entry['adapter']!r}, but the package "
                            "dpmbench.models.adapters is not installed in this dpmbench") from None
    return load_adapter(entry, root, device)


def load_model(
    name: str, schedule: str | NoiseSchedule | None = None, device: str | torch.device = "cpu", **kw: Any
) -> Model:
    """Load a model by name; oracle models accept any noise schedule (default ``vp-linear``; ``vp-discrete`` for
    the ``-ddpm`` variants, ``flow`` for the ``-flow`` ones).

    A checkpoint id of the manifest is verified (sha256; a missing file is an error naming where to place it, it
    is never downloaded here: ``dpmbench pull ID``) and loaded by its adapter with the schedule it was trained
    with.
    """
    if name in ORACLES:
        if schedule is None:
            schedule = ORACLE_SCHEDULES.get(name, DEFAULT_ORACLE_SCHEDULE)
        sch = make_schedule(schedule, **kw) if isinstance(schedule, str) else schedule
        return ORACLES[name](sch)
    from dpmbench.models.manifest import load_manifest
    from dpmbench.models.store import seen_hashes, verify

    manifest = load_manifest()
    if name not in manifest:
        raise bad_value("model", name, list_models())
    if schedule is not None or kw:
        raise DpmbenchError(f"invalid schedule for checkpoint model {name!r}: it uses the schedule it was trained "
                            f"with ({manifest[name].schedule}); allowed: none")
    entry = manifest[name]
    root = verify(entry)  # unpinned files only under the per-run opt-in (--trust-unpinned); their hashes recorded
    data, seen = entry.as_dict(), seen_hashes(entry)
    data["files"] = [{**f, "sha256": f["sha256"] or seen.get(f["path"])} for f in data["files"]]
    return _load_adapter(data, root, device)
