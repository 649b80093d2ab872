"""The model interface every solver sees: a network, its noise schedule and its parameterization.

``model.eps(x, t, cond)`` and ``model.x0(x, t, cond)`` are the only two ways solvers query a model;
the conversion from the native output (``eps``, ``x0``, ``v``, ``flow``) happens once, in
``convert_prediction``. Classifier-free guidance is a wrapper (``guided``) and the NFE counter is a
wrapper (``NFECounter``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.schedules import NoiseSchedule

PARAMETERIZATIONS = ("eps", "x0", "v", "flow")
PRIOR_BLOCK = 1024  # noise is drawn in blocks of up to this many samples, each block from its own generator
BLOCK_NUMEL = 1 << 22  # ... and of at most this many numbers (32 MiB of float64)


def _bcast(c: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """Make a per-sample coefficient broadcast against ``x`` (shape (n,) -> (n, 1, ..., 1))."""
    if isinstance(c, torch.Tensor):
        c = c.to(device=x.device, dtype=x.dtype)
        if c.ndim == 1:
            c = c.reshape(-1, *([1] * (x.ndim - 1)))
    return c


def convert_prediction(
    out: torch.Tensor, src: str, dst: str, x: torch.Tensor, alpha: Any, sigma: Any
) -> torch.Tensor:
    """Convert a model output from parameterization ``src`` to ``dst`` (``eps``, ``x0``, or the flow velocity
    ``flow``, which flow samplers step with).

    With ``x = alpha x0 + sigma eps``: ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, VP schedules) and
    the flow velocity ``u = eps - x0`` (alpha = 1 - t, sigma = t).
    """
    if src == dst:
        return out
    a, s = _bcast(alpha, x), _bcast(sigma, x)
    if src == "eps":
        eps = out
        x0 = (x - s * eps) / a
    elif src == "x0":
        x0 = out
        eps = (x - a * x0) / s
    elif src == "v":
        x0 = a * x - s * out
        eps = s * x + a * out
    elif src == "flow":
        x0 = x - s * out
        eps = x + a * out
    else:
        raise bad_value("parameterization", src, PARAMETERIZATIONS)
    if dst == "eps":
        return eps
    if dst == "x0":
        return x0
    if dst == "flow":
        return eps - x0
    raise bad_value("parameterization", dst, ("eps", "x0", "flow"))


@functools.lru_cache(maxsize=1 << 14)
def _block_seed(seed: int, stream: int, block: int) -> int:
    h = hashlib.sha256(f"dpmbench-noise:{int(seed)}:{int(stream)}:{int(block)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


FIT_START = 1 << 32
"""First sample index of every search's and fit's draws (x_T, data, step noise, probes of a stream). An evaluation run
draws samples ``0 .. num_samples - 1`` (shards: ``start .. start + K - 1``) of its seed's stream, and the command line
refuses any run that would reach this index, so no search or fit ever sees an evaluated x_T, whatever the seeds."""


def fit_prior(model: Model, n: int, seed: int, dtype: torch.dtype = torch.float64,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """The x_T of a search's or fit's own set: samples ``FIT_START .. FIT_START + n - 1`` of stream ``seed``
    (disjoint from every evaluation run's x_T of any seed: see ``FIT_START``)."""
    return model.prior(n, seed=seed, dtype=dtype, device=device, start=FIT_START)


def fit_stream(seed: int, n: int) -> dict[str, int]:
    """How a search or fit drew its set, for its artifact: the seed and the sample index range (``FIT_START ..``)."""
    return {"seed": int(seed), "start": FIT_START, "samples": int(n)}


def prior_noise(n: int, shape: tuple[int, ...], seed: int, start: int = 0, stream: int = 0,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal noise for samples ``start .. start + n - 1`` of (seed, stream), drawn in ``dtype`` (float64 or
    float32; CPU).

    Sample i always gets the same values, however the samples are batched or sharded: the stream is cut
    into blocks of a fixed number of samples (a function of ``shape`` only), each drawn from a generator
    seeded by (seed, stream, block). Stream 0 is x_T (float64 in every run); stochastic solvers draw step k from
    stream k + 1 (see ``NoiseSource``).
    """
    if n < 0 or start < 0:
        raise DpmbenchError(f"invalid num_samples {n} / start {start}: must be >= 0")
    if dtype not in (torch.float64, torch.float32):
        raise bad_value("noise dtype", dtype, ("torch.float64", "torch.float32"))
    numel = max(1, math.prod(shape))
    size = max(1, min(PRIOR_BLOCK, BLOCK_NUMEL // numel))
    first, last = start // size, (start + n - 1) // size
    out: torch.Tensor | None = None  # allocated only when several blocks (or part of one) are copied into it
    pos = 0
    for block in range(first, last + 1) if n else ():
        gen = torch.Generator().manual_seed(_block_seed(int(seed), int(stream), block))
        lo = max(start, block * size) - block * size
        hi = min(start + n, (block + 1) * size) - block * size
        rows = hi if _prefix_is_exact(hi * numel, size * numel, dtype) else size  # draw only what is needed
        z = torch.randn((rows, *shape), generator=gen, dtype=dtype)
        if first == last and lo == 0 and rows == n:  # one block, drawn exactly: no copy (batch 1 per step)
            return z
        if out is None:
            out = torch.empty((n, *shape), dtype=dtype)
        out[pos : pos + hi - lo] = z[lo:hi]
        pos += hi - lo
    return torch.empty((0, *shape), dtype=dtype) if out is None else out


_PREFIX_OK: dict[torch.dtype, bool] = {}


def _prefix_is_exact(n: int, full: int, dtype: torch.dtype = torch.float64) -> bool:
    """Whether the first ``n`` of ``full`` normals drawn from one generator equal ``n`` normals drawn alone.

    torch's CPU normal sampler (float64, and float32 in its vectorized and scalar forms) draws all uniforms in
    order, then applies Box-Muller to blocks of 16 and redraws the last 16 values when the size is not a multiple
    of 16; so a prefix of a multiple of 16 values that stops before that tail is exact. This is checked once per
    process and dtype against the full draw (and the shortcut is not used if it does not hold), so a different torch
    cannot change the numbers, only the speed.
    """
    if n == full:
        return True
    if n % 16 or (full % 16 and n > full - 16):
        return False
    if dtype not in _PREFIX_OK:
        ok = True
        for size, total in ((16, 48), (16, 40), (64, 1024)):  # (16, 40): the tail of 40 is 24..39
            a = torch.randn(total, generator=torch.Generator().manual_seed(1234), dtype=dtype)[:size]
            b = torch.randn(size, generator=torch.Generator().manual_seed(1234), dtype=dtype)
            ok = ok and bool(torch.equal(a, b))
        _PREFIX_OK[dtype] = ok
    return _PREFIX_OK[dtype]


def noise_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision per-step noise is drawn in for samples of ``dtype``: float64 for float64 runs, float32 for
    every lower precision (float32, float16, bfloat16)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class NoiseSource:
    """Per-step Gaussian noise for stochastic solvers: step k of sample i depends only on (seed, i, k) and the run's
    precision. It is drawn in the precision of the samples (``noise_dtype``), as samplers' reference codes draw it
    (``randn_like(x)``): a float64 draw costs a float32 run 3x the time of the float32 one (torch's float64 normals
    use scalar Box-Muller), the per-step cost that stochastic solvers have over deterministic ones."""

    def __init__(self, seed: int, start: int, like: torch.Tensor):
        self.seed, self.start, self.like = int(seed), int(start), like
        self.dtype = noise_dtype(like.dtype)

    def __call__(self, step: int) -> torch.Tensor:
        """Standard normal noise shaped like the batch, for step ``step`` (0-based)."""
        z = prior_noise(self.like.shape[0], tuple(self.like.shape[1:]), self.seed, self.start, stream=step + 1,
                        dtype=self.dtype)
        return z.to(dtype=self.like.dtype, device=self.like.device)


class Model(ABC):
    """A diffusion model: native prediction ``forward`` + ``schedule`` + ``parameterization``."""

    name: str = "model"
    parameterization: str = "eps"
    shape: tuple[int, ...] = ()
    num_classes: int | None = None
    schedule: NoiseSchedule

    @abstractmethod
    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The network's native output at (x, t) given conditioning ``cond``."""

    def predict(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any, kind: str) -> torch.Tensor:
        """The prediction of type ``kind`` (``eps``, ``x0``, or the velocity ``flow``) at (x, t)."""
        out = self.forward(x, t, cond)
        if self.parameterization == kind:
            return out
        return convert_prediction(
            out, self.parameterization, kind, x, self.schedule.alpha(t), self.schedule.sigma(t)
        )

    def eps(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        """Noise prediction eps(x_t, t)."""
        return self.predict(x, t, cond, "eps")

    def x0(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        """Data prediction x0(x_t, t)."""
        return self.predict(x, t, cond, "x0")

    def prior(
        self,
        num_samples: int,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        start: int = 0,
    ) -> torch.Tensor:
        """x_T ~ N(0, prior_std^2 I) for samples ``start..start+num_samples-1`` of stream ``seed``."""
        z = prior_noise(num_samples, self.shape, seed, start) * self.schedule.prior_std
        return z.to(dtype=dtype, device=device)

    def labels(self, num_samples: int, start: int = 0) -> torch.Tensor:
        """Class labels for conditional sampling: sample i gets class i mod num_classes (balanced)."""
        if not self.num_classes:
            raise DpmbenchError(f"invalid guidance/cond for model {self.name!r}: it is unconditional")
        return torch.arange(start, start + num_samples) % self.num_classes

    def cache_key(self) -> str:
        """Everything the model's predictions depend on, as a string."""
        return f"{self.name}|{self.schedule.key()}"

    @contextlib.contextmanager
    def fixed_batch(self) -> Iterator[None]:
        """A block in which every evaluation comes in batches of one size fixed by the caller (a search's own set,
        never a sampled batch), so a row's result need not be independent of the batch it comes in: a network that
        otherwise evaluates batch-invariant chunks (the diffusers adapters' ``micro_batch``) evaluates each batch
        in one call. Results stay deterministic (the same batch gives the same bits); nothing changes for models
        without chunks."""
        yield


class Guided(Model):
    """Classifier-free guidance: eps = eps(x, t) + w (eps(x, t | c) - eps(x, t)) (Ho & Salimans 2022, eq. 6).

    One guided evaluation counts as one NFE (the papers' convention). ``w = 1`` is plain conditional
    sampling. A flow model is guided on its velocity, v = v(x, t) + w (v(x, t | c) - v(x, t)), as SD3's and FLUX's
    pipelines do: the same combination wherever alpha > 0 (eps = x + alpha v is affine in v), and at t = 1 (pure
    noise, alpha = 0), where eps = x carries nothing of x0, the only one that does.
    """

    parameterization = "eps"

    def __init__(self, base: Model, scale: float):
        self.base, self.scale = base, float(scale)
        self.name, self.shape = base.name, base.shape
        self.num_classes, self.schedule = base.num_classes, base.schedule
        if base.parameterization == "flow":
            self.parameterization = "flow"

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is None:
            raise DpmbenchError("invalid cond None: guided sampling needs class labels or prompts")
        if self.parameterization == "flow":
            if self.scale == 1.0:
                return self.base.predict(x, t, cond, "flow")
            pair = getattr(self.base, "native_cond_uncond", None)  # checkpoint adapters: one batched call
            if pair is not None:
                v_c, v_u = pair(x, t, cond)
            else:
                v_c, v_u = self.base.predict(x, t, cond, "flow"), self.base.predict(x, t, None, "flow")
            return v_u + self.scale * (v_c - v_u)
        if self.scale == 1.0:
            return self.base.eps(x, t, cond)
        pair = getattr(self.base, "eps_cond_uncond", None)  # checkpoint adapters: one batched [cond; uncond] call
        if pair is not None:
            e_c, e_u = pair(x, t, cond)
        else:
            e_c, e_u = self.base.eps(x, t, cond), self.base.eps(x, t, None)
        return e_u + self.scale * (e_c - e_u)

    def exact_solution(self, x_T: torch.Tensor, t_end: float | None = None, **kwargs: Any) -> torch.Tensor:
        """Exact solution of the guided probability-flow ODE (oracle base models only)."""
        if not hasattr(self.base, "exact_solution"):
            raise DpmbenchError(f"invalid model {self.name!r} for exact_solution: not an oracle model")
        from dpmbench.models.exact import exact_solution

        return exact_solution(self, x_T, t_end=t_end, **kwargs)

    def cache_key(self) -> str:
        return f"{self.base.cache_key()}|cfg={self.scale!r}"

    @contextlib.contextmanager
    def fixed_batch(self) -> Iterator[None]:
        with self.base.fixed_batch():
            yield


def guided(model: Model, scale: float | None) -> Model:
    """Wrap ``model`` with classifier-free guidance of scale ``scale`` (None: no wrapper). A model whose guidance is
    an input of its network (guidance-distilled, e.g. FLUX.1 [dev]) has a ``with_guidance(scale)`` method: it gives
    the guided model itself (or refuses), and no classifier-free guidance is wrapped around it."""
    if scale is None:
        return model
    own = getattr(model, "with_guidance", None)
    if own is not None:
        return own(scale)
    if not model.num_classes and not getattr(model, "text_conditional", False):
        raise DpmbenchError(f"invalid guidance {scale} for model {model.name!r}: it is unconditional")
    return Guided(model, scale)


def has_exact_solution(model: Model) -> bool:
    """Whether the (possibly guided) model has an exact ODE solution (oracle models; a guided network has none)."""
    base = model.base if isinstance(model, Guided) else model
    return hasattr(base, "exact_solution")


class NFECounter:
    """Counts every evaluation a solver makes (``eps`` or ``x0``), with the condition bound once.

    It also carries the per-step ``noise`` source of stochastic solvers (None for deterministic runs).
    """

    def __init__(self, model: Model, cond: Any = None, noise: NoiseSource | None = None):
        self.model, self.cond, self.count, self.noise = model, cond, 0, noise
        self.schedule = model.schedule

    def eps(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Noise prediction (1 NFE)."""
        self.count += 1
        return self.model.eps(x, t, self.cond)

    def x0(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Data prediction (1 NFE)."""
        self.count += 1
        return self.model.x0(x, t, self.cond)

    def predict(self, x: torch.Tensor, t: float | torch.Tensor, kind: str) -> torch.Tensor:
        """Prediction of type ``kind`` (1 NFE)."""
        self.count += 1
        return self.model.predict(x, t, self.cond, kind)
