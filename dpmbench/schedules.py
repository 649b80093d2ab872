"""Noise schedules ``x_t = alpha(t) x_0 + sigma(t) eps`` in continuous time ``t in [t_end, T]``.

Every schedule answers ``alpha``, ``sigma``, ``lambda_`` (half log-SNR, ``log(alpha / sigma)``) and its
inverse ``t_of_lambda``. Methods take a Python float (and return one) or a tensor (and return a float64
tensor on the same device); everything is computed in float64.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import torch

from dpmbench.errors import bad_value

TimeLike = TypeVar("TimeLike", float, torch.Tensor)


_SCALAR_CACHE_SIZE = 1 << 16


def _float_or_tensor(fn: Callable[[Any, torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
    """Run ``fn`` on a float64 tensor; give a float back when a float came in.

    Float results are memoized per schedule instance: a sampler asks for the same few time points over and
    over (plan, model-output conversion, the model itself), and a cached float costs a dict look-up instead
    of several small tensor operations.
    """
    name = fn.__name__

    @wraps(fn)
    def wrapper(self: Any, t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            return fn(self, t.to(torch.float64))
        key = (name, float(t))
        cache = self.__dict__.setdefault("_scalar_cache", {})
        value = cache.get(key)
        if value is None:
            if len(cache) > _SCALAR_CACHE_SIZE:
                cache.clear()
            value = cache[key] = float(fn(self, torch.tensor(key[1], dtype=torch.float64)))
        return value

    return wrapper


class NoiseSchedule(ABC):
    """Base class: a VP/VE/flow noise schedule in continuous time."""

    kind: str = ""
    T: float = 1.0
    t_end_default: float = 1e-3

    @abstractmethod
    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _log_sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor: ...

    @_float_or_tensor
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log alpha(t)."""
        return self._log_alpha(t)

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self._log_alpha(t))

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self._log_sigma(t))

    @_float_or_tensor
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Signal scale alpha(t)."""
        return self._alpha(t)

    @_float_or_tensor
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise scale sigma(t)."""
        return self._sigma(t)

    @_float_or_tensor
    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR lambda(t) = log(alpha(t) / sigma(t)), decreasing in t."""
        return self._log_alpha(t) - self._log_sigma(t)

    @_float_or_tensor
    def t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        """Inverse of ``lambda_``."""
        return self._t_of_lambda(lam)

    @property
    def prior_std(self) -> float:
        """Standard deviation of the Gaussian prior x_T is drawn from."""
        return 1.0

    def values(self, t: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
        """lambda, alpha and sigma at every time of ``t`` as floats, computed in one vectorized pass and shared
        with the scalar methods' cache. The first value computed for a time wins, so within a process a time
        always maps to the same floats, whichever path asked first."""
        t = t.to(torch.float64)
        cache = self.__dict__.setdefault("_scalar_cache", {})
        times = t.tolist()
        names = ("lambda_", "alpha", "sigma")
        if all((name, ti) in cache for ti in times for name in names):  # the same grid again: no tensor work
            return tuple([cache[(name, ti)] for ti in times] for name in names)  # type: ignore[return-value]
        fresh = zip(self.lambda_(t).tolist(), self.alpha(t).tolist(), self.sigma(t).tolist(), strict=True)
        out: list[list[float]] = [[], [], []]
        for ti, new in zip(times, fresh, strict=True):
            for k, (name, v) in enumerate(zip(names, new, strict=True)):
                out[k].append(cache.setdefault((name, ti), v))
        return out[0], out[1], out[2]

    def key(self) -> str:
        """A string identifying the schedule and its parameters (for cache keys and reports)."""
        return self.kind

    def fingerprint(self) -> tuple[Any, ...]:
        """Everything the schedule's values depend on, exactly (hashable; for in-process caches whose entries
        must be bit-identical to a fresh computation): the class and every scalar or tensor attribute, a tensor by
        its dtype, shape and the sha256 of its bytes. ``key()`` is the readable form; it may round."""
        parts: list[Any] = [type(self).__module__, type(self).__qualname__]
        for name, value in sorted(vars(self).items()):
            if isinstance(value, torch.Tensor):
                data = value.detach().cpu().contiguous()
                value = (str(data.dtype), tuple(data.shape), hashlib.sha256(data.numpy().tobytes()).hexdigest())
            elif not isinstance(value, (bool, int, float, str)):
                continue  # caches (dicts) are derived, not parameters
            parts.append((name, value))
        return tuple(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key()})"


class _VP(NoiseSchedule):
    """Variance-preserving: sigma = sqrt(1 - alpha^2); lambda inverts through log alpha."""

    def _log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self._log_alpha(t)))

    @staticmethod
    def _log_alpha_of_lambda(lam: torch.Tensor) -> torch.Tensor:
        # alpha^2 = sigmoid(2 lambda)  =>  log alpha = -0.5 log(1 + e^{-2 lambda})
        return -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)


class VPLinear(_VP):
    """ScoreSDE VP with linear beta(t) = beta_0 + t (beta_1 - beta_0) (Song et al. 2021, eq. 33)."""

    kind = "vp-linear"

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, T: float = 1.0, t_end: float = 1e-3):
        self.beta_0, self.beta_1, self.T, self.t_end_default = beta_0, beta_1, T, t_end

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def _t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        # Closed-form inverse of the quadratic log alpha (DPM-Solver, Lu et al. 2022, App. D).
        db = self.beta_1 - self.beta_0
        tmp = 2.0 * db * torch.logaddexp(-2.0 * lam, torch.zeros_like(lam))
        delta = self.beta_0**2 + tmp
        return tmp / (torch.sqrt(delta) + self.beta_0) / db

    def key(self) -> str:
        return f"vp-linear(b0={self.beta_0},b1={self.beta_1},T={self.T})"


class VPCosine(_VP):
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17), s = 0.008."""

    kind = "vp-cosine"

    def __init__(self, s: float = 0.008, beta_max: float = 999.0, t_end: float = 1e-3):
        self.s = s
        # T where beta(t) reaches beta_max, as in the official DPM-Solver code (T ~= 0.9946).
        self.T = math.atan(beta_max * (1.0 + s) / math.pi) * 2.0 * (1.0 + s) / math.pi - s
        self.t_end_default = t_end
        self._log_alpha_0 = math.log(math.cos(s / (1.0 + s) * math.pi / 2.0))

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cos((t + self.s) / (1.0 + self.s) * math.pi / 2.0)) - self._log_alpha_0

    def _t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = self._log_alpha_of_lambda(lam)
        return torch.arccos(torch.exp(log_alpha + self._log_alpha_0)) * 2.0 * (1.0 + self.s) / math.pi - self.s

    def key(self) -> str:
        return f"vp-cosine(s={self.s})"


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x, extrapolating linearly (xp increasing)."""
    xp, fp = xp.to(x.device), fp.to(x.device)
    idx = torch.searchsorted(xp, x.reshape(-1).contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    out = f0 + (x.reshape(-1) - x0) * (f1 - f0) / (x1 - x0)
    return out.reshape(x.shape)


def _cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine betas, beta_i = min(1 - abar((i+1)/n) / abar(i/n), 0.999) with
    abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2 (Nichol & Dhariwal 2021, eq. 17; diffusers' ``squaredcos_cap_v2``,
    ``betas_for_alpha_bar``), in float64."""

    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], dtype=torch.float64)


class VPDiscrete(_VP):
    """Discrete-time DDPM betas; t_n = (n + 1) / N and log alpha piecewise linear in t (DPM-Solver App. D)."""

    kind = "vp-discrete"

    def __init__(
        self,
        betas: Sequence[float] | torch.Tensor | None = None,
        alphas_cumprod: Sequence[float] | torch.Tensor | None = None,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
    ):
        if alphas_cumprod is None:
            if betas is None:
                n = num_train_timesteps
                if beta_schedule == "linear":
                    betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
                elif beta_schedule == "scaled_linear":
                    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
                elif beta_schedule == "squaredcos_cap_v2":
                    betas = _cosine_betas(n)
                else:
                    raise bad_value("beta_schedule", beta_schedule, ["linear", "scaled_linear", "squaredcos_cap_v2"])
            betas = torch.as_tensor(betas, dtype=torch.float64)
            log_alpha = 0.5 * torch.cumsum(torch.log1p(-betas), dim=0)
        else:
            log_alpha = 0.5 * torch.log(torch.as_tensor(alphas_cumprod, dtype=torch.float64))
        self.N = len(log_alpha)
        self.beta_schedule = beta_schedule
        self.log_alpha_array = log_alpha
        self.t_array = torch.linspace(0.0, 1.0, self.N + 1, dtype=torch.float64)[1:]
        self.T = 1.0
        self.t_end_default = 1.0 / self.N
        self._digest = float(log_alpha.sum())

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """The training schedule's alpha-bar_n, n = 0..N-1."""
        return torch.exp(2.0 * self.log_alpha_array)

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return _interp(t, self.t_array, self.log_alpha_array)

    def _t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = self._log_alpha_of_lambda(lam)
        return _interp(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))

    def t_of_index(self, n: int | torch.Tensor) -> Any:
        """Continuous time of the discrete training step n (0-based): (n + 1) / N (float64 for tensors)."""
        if isinstance(n, torch.Tensor):
            return (n.to(torch.float64) + 1.0) / self.N
        return (n + 1) / self.N

    def key(self) -> str:
        return f"vp-discrete(N={self.N},sum_log_alpha={self._digest:.12g})"


class EDM(NoiseSchedule):
    """Variance-exploding / EDM: alpha = 1, sigma = t (Karras et al. 2022, Table 1)."""

    kind = "edm"

    def __init__(self, sigma_max: float = 80.0, sigma_min: float = 0.002):
        self.T, self.t_end_default = sigma_max, sigma_min

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(t)

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    def _t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.exp(-lam)

    @property
    def prior_std(self) -> float:
        return self.T

    def key(self) -> str:
        return f"{self.kind}(T={self.T})"


class VE(EDM):
    """Alias of ``edm`` (alpha = 1, sigma = t)."""

    kind = "ve"


class Flow(NoiseSchedule):
    """Rectified flow / flow matching: alpha = 1 - t, sigma = t."""

    kind = "flow"

    def __init__(self, T: float = 1.0, t_end: float = 1e-3):
        self.T, self.t_end_default = T, t_end

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log1p(-t)

    def _log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(t)

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - t

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    def _t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-lam)


NOISE_SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "vp-discrete": VPDiscrete,
    "edm": EDM,
    "ve": VE,
    "flow": Flow,
}


def make_schedule(kind: str, **kwargs: Any) -> NoiseSchedule:
    """Build a noise schedule by kind name (``vp-linear``, ``vp-cosine``, ``vp-discrete``, ``edm``, ...)."""
    if kind not in NOISE_SCHEDULES:
        raise bad_value("noise schedule", kind, NOISE_SCHEDULES)
    return NOISE_SCHEDULES[kind](**kwargs)
