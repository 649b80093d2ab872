"""Oracle diffusion models: data distributions whose optimal denoiser is closed-form and exact.

A mixture ``p_0 = sum_k w_k N(mu_k, S_k)`` diffuses to ``p_t = sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I)``,
so the posterior mean ``E[x_0 | x_t]`` (the optimal x0-prediction) is exact. A point-mass mixture
(``S_k = 0``) is the empirical optimal denoiser of a finite data set. Class conditioning restricts the
mixture to the components of the class. Internals run in float64; outputs come in the input's dtype.

``FlowOracle`` is the same mixture as a flow-matching model (``flow`` schedule, x_t = (1 - t) x_0 + t eps): it
predicts the velocity v = eps - x_0 of the exact denoiser, as SD3 / FLUX-style networks do.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model
from dpmbench.schedules import NoiseSchedule


class MixtureOracle(Model):
    """Exact x0-prediction of a (class-labelled) Gaussian or point-mass mixture."""

    parameterization = "x0"

    def __init__(
        self,
        name: str,
        schedule: NoiseSchedule,
        means: torch.Tensor,
        weights: torch.Tensor,
        covs: torch.Tensor | None = None,
        classes: torch.Tensor | None = None,
        shape: tuple[int, ...] | None = None,
        description: str = "",
    ):
        self.name, self.schedule, self.description = name, schedule, description
        self.means = means.to(torch.float64)
        self.dim = self.means.shape[1]
        self.shape = shape or (self.dim,)
        self.log_w = torch.log(weights.to(torch.float64) / weights.sum())
        self.classes = classes
        self.num_classes = int(classes.max()) + 1 if classes is not None else None
        self.covs = None if covs is None else covs.to(torch.float64)
        if self.covs is not None:
            evals, evecs = torch.linalg.eigh(self.covs)
            self.evals, self.evecs = evals.clamp_min(0.0), evecs
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    # -- parameters on the evaluation device ---------------------------------------------------------
    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._device_cache:
            p = {"means": self.means, "log_w": self.log_w, "sq": (self.means**2).sum(1)}
            if self.covs is not None:
                p.update(evals=self.evals, evecs=self.evecs)
            if self.classes is not None:
                p["classes"] = self.classes
            self._device_cache[device] = {k: v.to(device) for k, v in p.items()}
        return self._device_cache[device]

    def _class_mask(self, p: dict[str, torch.Tensor], cond: Any, n: int) -> torch.Tensor | None:
        if cond is None:
            return None
        if self.classes is None:
            raise DpmbenchError(f"invalid cond for model {self.name!r}: it is unconditional")
        c = torch.as_tensor(cond, device=p["means"].device).reshape(-1)
        if c.numel() == 1:
            c = c.expand(n)
        if c.numel() != n:
            raise DpmbenchError(f"invalid cond: {c.numel()} labels for {n} samples")
        if bool((c < 0).any()) or bool((c >= self.num_classes).any()):
            raise DpmbenchError(f"invalid cond: labels must be in 0..{self.num_classes - 1}")
        return p["classes"][None, :] == c[:, None]

    def _alpha_sigma(self, t: float | torch.Tensor, n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """alpha(t), sigma(t) as (n, 1) columns, or (1, 1) when every sample is at the same time (the usual
        case): then the per-time terms below are computed once instead of once per sample."""
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        a = torch.as_tensor(a, dtype=torch.float64, device=device).reshape(-1, 1)
        s = torch.as_tensor(s, dtype=torch.float64, device=device).reshape(-1, 1)
        if a.shape[0] != 1 or s.shape[0] != 1:
            a, s = a.expand(n, 1), s.expand(n, 1)
        return a, s

    # -- the exact denoiser -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        """E[x_0 | x_t = x] under the mixture (restricted to class ``cond`` if given)."""
        n = x.shape[0]
        p = self._on(x.device)
        xf = x.reshape(n, -1).to(torch.float64)
        a, s = self._alpha_sigma(t, n, x.device)
        if self.covs is None:
            logits, comp_mean = self._point_mass_terms(p, xf, a, s)
        else:
            logits, comp_mean = self._gaussian_terms(p, xf, a, s)
        mask = self._class_mask(p, cond, n)
        if mask is not None:
            logits = logits.masked_fill(~mask, -math.inf)
        r = torch.softmax(logits, dim=1)
        # point masses: the posterior mean of component k is mu_k
        out = r @ p["means"] if comp_mean is None else torch.einsum("nk,nkd->nd", r, comp_mean)
        return out.reshape(x.shape).to(x.dtype)

    def _point_mass_terms(
        self, p: dict[str, torch.Tensor], x: torch.Tensor, a: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        # log N(x; a mu_k, s^2 I) up to a constant: -|x - a mu_k|^2 / (2 s^2)
        d2 = (x**2).sum(1, keepdim=True) - 2.0 * a * (x @ p["means"].T) + a**2 * p["sq"][None, :]
        return p["log_w"][None, :] - d2 / (2.0 * s**2), None

    def _gaussian_terms(
        self, p: dict[str, torch.Tensor], x: torch.Tensor, a: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # In each component's eigenbasis S_k = U diag(d) U^T: cov_t = U diag(a^2 d + s^2) U^T.
        U, d = p["evecs"], p["evals"]  # (K, D, D), (K, D)
        z = torch.einsum("nkd,kde->nke", x[:, None, :] - a[:, :, None] * p["means"][None], U)
        v = a[:, :, None] ** 2 * d[None] + s[:, :, None] ** 2  # (n or 1, K, D)
        logn = -0.5 * (z**2 / v).sum(2) - 0.5 * torch.log(v).sum(2) - 0.5 * self.dim * math.log(2 * math.pi)
        # posterior mean of component k: mu_k + U diag(a d / v) z
        comp_mean = p["means"][None] + torch.einsum("nke,kde->nkd", a[:, :, None] * d[None] / v * z, U)
        return p["log_w"][None, :] + logn, comp_mean

    # -- ground truth -------------------------------------------------------------------------------
    def data_moments(self, cond: Any = None, t: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance (float64) of the data distribution; with ``cond`` (labels), of the mixture
        of the class-conditionals in the proportions the labels occur. With ``t``, of the diffused
        distribution p_t (mean alpha mu, covariance alpha^2 S + sigma^2 I): the distribution that exact ODE
        solutions ending at t_end follow."""
        w = torch.exp(self.log_w)
        if cond is not None:
            labels = torch.as_tensor(cond).reshape(-1)
            freq = torch.bincount(labels, minlength=self.num_classes).to(torch.float64) / labels.numel()
            w_class = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, self.classes, w)
            w = w * freq[self.classes] / w_class[self.classes]
        mu = w @ self.means
        second = torch.einsum("k,kd,ke->de", w, self.means, self.means)
        if self.covs is not None:
            second = second + torch.einsum("k,kde->de", w, self.covs)
        cov = second - torch.outer(mu, mu)
        if t is not None:
            a, s = self.schedule.alpha(float(t)), self.schedule.sigma(float(t))
            mu, cov = a * mu, a**2 * cov + s**2 * torch.eye(self.dim, dtype=torch.float64)
        return mu, cov

    def exact_solution(self, x_T: torch.Tensor, t_end: float | None = None, **kwargs: Any) -> torch.Tensor:
        """The exact probability-flow ODE solution from ``x_T`` (see ``dpmbench.models.exact``)."""
        from dpmbench.models.exact import exact_solution

        return exact_solution(self, x_T, t_end=t_end, **kwargs)

    def cache_key(self) -> str:
        h = float(self.means.sum()) + (0.0 if self.covs is None else float(self.covs.sum()))
        return f"{self.name}|{self.schedule.key()}|K={len(self.means)}|{h:.15g}"


class FlowOracle(MixtureOracle):
    """A mixture oracle predicting the flow-matching velocity ``v = eps - x0`` (Lipman et al. 2023; Liu et al. 2023):
    the exact posterior mean x0 and eps = (x - alpha x0) / sigma, in float64. Meant for the ``flow`` schedule, where
    ``x = x0 + t v`` and, at t = 1 (alpha = 0, pure noise), eps = x exactly."""

    parameterization = "flow"

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        """v(x, t) = eps - x0 of the exact denoiser (restricted to class ``cond`` if given)."""
        x64 = x.to(torch.float64)
        x0 = super().forward(x64, t, cond)
        n = x.shape[0]
        a, s = self._alpha_sigma(t, n, x.device)
        shape = (-1, *([1] * (x.ndim - 1)))
        eps = (x64 - a.reshape(shape) * x0) / s.reshape(shape)
        return (eps - x0).to(x.dtype)
