"""Timestep schedules: where a sampler evaluates between t_start (noise) and t_end (data).

``timesteps(kind, steps, schedule, t_start, t_end)`` returns ``steps + 1`` decreasing float64 times,
first ``t_start``, last ``t_end``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from dpmbench import flowgrids
from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.schedules import NoiseSchedule
from dpmbench.spacing import KINDS as DIFFUSERS_KINDS
from dpmbench.spacing import PREFIX as DIFFUSERS
from dpmbench.spacing import diffusers_grid

KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5 and Table 1
GRID_CACHE_SIZE = 1024  # time grids memoized per noise-schedule instance (cleared when full)


def _time_uniform(steps: int, sch: NoiseSchedule, t0: float, t1: float) -> torch.Tensor:
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64)


def _logsnr(steps: int, sch: NoiseSchedule, t0: float, t1: float) -> torch.Tensor:
    # Uniform in lambda (DPM-Solver, Lu et al. 2022, Sec. 3.3 "logSNR").
    lam = torch.linspace(sch.lambda_(t0), sch.lambda_(t1), steps + 1, dtype=torch.float64)
    return sch.t_of_lambda(lam)


def _time_quadratic(steps: int, sch: NoiseSchedule, t0: float, t1: float) -> torch.Tensor:
    # Uniform in sqrt(t) (DDIM, Song et al. 2021, App. D.2; DPM-Solver's "time_quadratic").
    return torch.linspace(math.sqrt(t0), math.sqrt(t1), steps + 1, dtype=torch.float64) ** 2


def _karras(steps: int, sch: NoiseSchedule, t0: float, t1: float) -> torch.Tensor:
    # Karras et al. 2022, eq. 5, rho = 7, applied to the scale-free noise level sigma/alpha = e^{-lambda}.
    s_max, s_min = math.exp(-sch.lambda_(t0)), math.exp(-sch.lambda_(t1))
    ramp = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    inv = 1.0 / KARRAS_RHO
    sig = (s_max**inv + ramp * (s_min**inv - s_max**inv)) ** KARRAS_RHO
    t = sch.t_of_lambda(-torch.log(sig))
    t[0], t[-1] = t0, t1  # exact end points, free of round-off of the inverse
    return t


# Align Your Steps (Sabour, Fidler & Kreis 2024): the published 10-step schedules, as noise levels
# sigma = sigma/alpha of the model family (AYS project page, "How to use"; the same values ship in diffusers'
# AysSchedules). The last value is the family's sigma_min (diffusers writes 0.0 there for sigma = 0 denoising).
AYS_SIGMAS: dict[str, list[float]] = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


def ays_sigmas(family: str, steps: int) -> torch.Tensor:
    """The family's AYS noise levels for ``steps`` steps: the 10-step table itself, or its log-linear
    interpolation (the AYS authors' recipe for other step counts)."""
    table = torch.tensor(AYS_SIGMAS[family], dtype=torch.float64)
    if steps == len(table) - 1:
        return table
    xs = torch.linspace(0.0, 1.0, len(table), dtype=torch.float64)
    new = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    idx = torch.searchsorted(xs, new).clamp(1, len(xs) - 1)
    w = (new - xs[idx - 1]) / (xs[idx] - xs[idx - 1])
    logs = torch.log(table)
    out = torch.exp(logs[idx - 1] + w * (logs[idx] - logs[idx - 1]))
    out[0], out[-1] = table[0], table[-1]
    return out


def _ays(family: str) -> Callable[[int, NoiseSchedule, float, float], torch.Tensor]:
    def grid(steps: int, sch: NoiseSchedule, t0: float, t1: float) -> torch.Tensor:
        # The table's interior noise levels; the end points are the run's t_start and t_end, so that a run on
        # the family's own model (sigma range 14.6 .. 0.029 for SD) uses exactly the published schedule.
        t = sch.t_of_lambda(-torch.log(ays_sigmas(family, steps)))
        if not bool((t[1:-1] < t0).all() and (t[1:-1] > t1).all()):
            raise DpmbenchError(
                f"invalid schedule 'ays-{family}' for t in [{t1}, {t0}]: its noise levels "
                f"{AYS_SIGMAS[family][1]}..{AYS_SIGMAS[family][-2]} fall outside the run's range")
        return t

    return grid


TIMESTEP_SCHEDULES: dict[str, Callable[[int, NoiseSchedule, float, float], torch.Tensor]] = {
    "time-uniform": _time_uniform,
    "logsnr": _logsnr,
    "time-quadratic": _time_quadratic,
    "karras": _karras,
    **{f"ays-{family}": _ays(family) for family in AYS_SIGMAS},
}
# diffusers' conventions (dpmbench.spacing) set their own end points, so they are kept apart from the kinds above
# (which span the run's [t_end, t_start] and which searches start from)
ALL_KINDS = [*TIMESTEP_SCHEDULES, *DIFFUSERS_KINDS, *flowgrids.DIFFUSERS_FLOW_KINDS, "custom"]
# flow grids with a parameter (dpmbench.flowgrids): flow-shift:S, flux-shift:L, diffusers-flow-flux-dev[-SIGMAS]:L
PARAMETERIZED_KINDS = list(flowgrids.PARAMETERIZED)
SEARCHED = "searched:"


def searched_grid(name: str, steps: int, t0: float, t1: float) -> torch.Tensor:
    """The time grid of ``steps`` steps saved by a search as the named artifact ``name`` (``searched:NAME``).

    The artifact holds ``{"grids": {"<steps>": [t_0, ..., t_steps]}}``; its end points must be the run's
    ``t_start`` and ``t_end`` (a grid searched for other end points is not silently stretched).
    """
    from dpmbench.artifacts import load_named

    data = load_named(name, "timesteps")
    grids = data.get("grids", {}) if isinstance(data, dict) else {}
    if str(steps) not in grids:
        raise DpmbenchError(f"invalid schedule searched:{name} for {steps} steps: it has grids for steps "
                            f"{', '.join(sorted(grids, key=int)) or 'none'}")
    t = torch.tensor(grids[str(steps)], dtype=torch.float64)
    if not (math.isclose(float(t[0]), t0, rel_tol=1e-9) and math.isclose(float(t[-1]), t1, rel_tol=1e-9)):
        raise DpmbenchError(f"invalid schedule searched:{name}: it spans t {float(t[0])}..{float(t[-1])}, the run "
                            f"needs {t0}..{t1} (search it with the same t_start/t_end)")
    if not bool((t[1:] < t[:-1]).all()):
        raise DpmbenchError(f"invalid schedule searched:{name}: times must be strictly decreasing")
    return t


def timesteps(
    kind: str | Sequence[float] | torch.Tensor,
    steps: int,
    schedule: NoiseSchedule,
    t_start: float | None = None,
    t_end: float | None = None,
) -> torch.Tensor:
    """``steps + 1`` decreasing times from ``t_start`` (default ``schedule.T``) to ``t_end``.

    ``kind`` is a schedule name (``diffusers-*`` kinds start where diffusers does, see ``dpmbench.spacing``), or
    an explicit sequence of times (``custom``), which must hold exactly
    ``steps + 1`` strictly decreasing values, or a function of ``steps`` returning one.
    """
    if callable(kind):  # a grid as a function of the step count (dpmbench.diffusers' flow pipeline grids)
        kind = kind(steps)
    if not isinstance(kind, str):
        t = torch.as_tensor(kind, dtype=torch.float64).flatten()
        if len(t) != steps + 1:
            raise DpmbenchError(f"invalid custom timesteps: need {steps + 1} times for {steps} steps, got {len(t)}")
        if not bool((t[1:] < t[:-1]).all()):
            raise DpmbenchError("invalid custom timesteps: times must be strictly decreasing")
        return t
    t0 = float(schedule.T if t_start is None else t_start)
    t1 = float(schedule.t_end_default if t_end is None else t_end)
    if not 0 < t1 < t0:  # NaN fails too
        raise DpmbenchError(f"invalid t_end {t1}: must be in (0, t_start={t0})")
    if kind.startswith(SEARCHED):
        return searched_grid(kind[len(SEARCHED):], steps, t0, t1)
    flow = flowgrids.parse_kind(kind)
    if flow is not None:
        return _flow_grid(kind, flow, steps, schedule, t0, t1)
    if kind.startswith(DIFFUSERS):
        return diffusers_grid(kind, steps, schedule, t1)
    if kind not in TIMESTEP_SCHEDULES:
        raise bad_value("schedule", kind, [*ALL_KINDS, *PARAMETERIZED_KINDS, "searched:NAME"])
    if steps < 1:
        raise DpmbenchError(f"invalid steps {steps}: must be >= 1")
    if (kind in ("logsnr", "karras") or kind.startswith("ays")) and not math.isfinite(schedule.lambda_(t0)):
        raise DpmbenchError(f"invalid t_start {t0} for schedule {kind}: log-SNR is infinite there")
    # A grid is a pure function of the schedule (whose parameters are fixed once built; its scalar values are
    # memoized on the instance the same way) and of (kind, steps, t0, t1): computed once per instance, so that a
    # plan built again (the next batch, shard or sample() call) costs no tensor work. A copy is returned.
    cache = schedule.__dict__.setdefault("_grid_cache", {})
    key = (kind, steps, t0, t1)
    t = cache.get(key)
    if t is None:
        if len(cache) >= GRID_CACHE_SIZE:
            cache.clear()
        t = TIMESTEP_SCHEDULES[kind](steps, schedule, t0, t1)
        t[0], t[-1] = t0, t1
        cache[key] = t
    return t.clone()


def _flow_grid(kind: str, flow: tuple[str, object], steps: int, schedule: NoiseSchedule, t0: float,
               t1: float) -> torch.Tensor:
    """A grid of ``dpmbench.flowgrids``: times of the ``flow`` schedule (diffusers' sigmas)."""
    if schedule.kind != "flow":
        raise DpmbenchError(f"invalid schedule {kind!r} for noise schedule {schedule.kind}: its times are those of "
                            "the flow schedule (flow-matching models: the -flow oracles, SD3, FLUX)")
    if steps < 1:
        raise DpmbenchError(f"invalid steps {steps}: must be >= 1")
    family, param = flow
    if family == "diffusers":  # diffusers' own start and end (see dpmbench.flowgrids)
        return torch.from_numpy(flowgrids.diffusers_flow_grid(param, steps))  # type: ignore[arg-type]
    t = torch.from_numpy(flowgrids.shifted_grid(steps, float(param), t0, t1))  # type: ignore[arg-type]
    t[0], t[-1] = t0, t1
    return t
