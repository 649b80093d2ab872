"""Time grids of flow-matching models (``flow`` schedule, where the time t is diffusers' ``sigma``).

Two families, as timestep schedules:

* ``flow-shift:S`` — SD3's static shift (Esser et al. 2024, "Scaling Rectified Flow Transformers", Sec. 5.3.2,
  eq. 23): t' = S t / (1 + (S - 1) t), applied to a grid uniform in t whose end points are mapped back so that the
  shifted grid spans the run's [t_end, t_start]. S = 1 is ``time-uniform``; S > 1 spends more steps near the noise.
  ``flux-shift:L`` is FLUX.1's resolution-dependent shift for an image of L latent tokens (L = (H / 16) (W / 16)):
  exponential time shift with mu linear in L, through (256, 0.5) and (4096, 1.15) (black-forest-labs/flux
  ``get_schedule``; the published FLUX.1-dev scheduler config), which is the static shift S = e^mu.
* ``diffusers-flow-MODEL[-SIGMAS][:L]`` — exactly where diffusers' ``FlowMatchEulerDiscreteScheduler`` (0.42.1)
  evaluates in MODEL's pipeline under MODEL's published scheduler config (``FLOW_CONFIGS``; ``L`` = image tokens for
  FLUX.1-dev, default 4096 = a 1024 x 1024 image), optionally with ``use_karras_sigmas`` / ``use_exponential_sigmas``
  / ``use_beta_sigmas``. Like the ``diffusers-*-zero`` grids of ``dpmbench.spacing``, such a grid holds diffusers'
  ``steps + 1`` sigmas and ends at the last nonzero one: run it with ``denoise_to_zero=true`` for diffusers' final
  jump to sigma = 0 (on the flow schedule that Euler step is the data prediction, exactly), so ``N`` evaluations
  equal diffusers' ``N`` inference steps.

Formulas re-implemented from diffusers 0.42.1 ``scheduling_flow_match_euler_discrete.py`` (``__init__``,
``set_timesteps``, ``time_shift``, ``stretch_shift_to_terminal``, ``_convert_to_karras`` / ``_exponential`` /
``_beta``) and ``pipeline_flux.py`` / ``pipeline_stable_diffusion_3.py`` (``calculate_shift``, the sigmas each
passes), with diffusers' arithmetic: the default path in float64, the pipeline-passed sigmas (FLUX) in float32.
Two conventions a reader may not expect, both diffusers' (and the SD3 reference code's) and kept here: with a
static shift and no sigmas passed (SD3), the grid runs from shift(1) = 1 to shift(shift(1/1000)) — the training
table's shifted minimum is shifted again (0.00893 instead of 0.00299 at shift 3); FLUX passes linspace(1, 1/n, n).
This module is torch-free (numpy; scipy for the beta quantiles).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError, bad_value

SHIFT_PREFIX, FLUX_PREFIX, DIFFUSERS_PREFIX = "flow-shift:", "flux-shift:", "diffusers-flow-"
KARRAS_RHO = 7.0  # diffusers _convert_to_karras
BETA_AB = (0.6, 0.6)  # diffusers _convert_to_beta defaults alpha = beta = 0.6
FLUX_DEFAULT_TOKENS = 4096  # a 1024 x 1024 image: (1024 / 16)^2 packed latent tokens

# The published scheduler/scheduler_config.json of each model (keys absent there take diffusers 0.42.1's defaults):
# SD3-medium / SD3.5-medium / SD3.5-large: {"num_train_timesteps": 1000, "shift": 3.0} (identical 141-byte files,
#   read from public re-uploads of the gated repos: huggingface.co/ckpt/stable-diffusion-3-medium-diffusers,
#   frankjoshua/stable-diffusion-3.5-medium@9e007422, frankjoshua/stable-diffusion-3.5-large@fed9c89d);
# FLUX.1-dev: shift 3.0, use_dynamic_shifting true, base_shift 0.5, max_shift 1.15, base_image_seq_len 256,
#   max_image_seq_len 4096 (re-uploads of the BFL commit "Add diffusers format weights (#3)": AITRADER/MFLUXUI.1-dev
#   @0ef5fff7, sayakpaul/FLUX.1-merged);
# FLUX.1-schnell: the same keys with shift 1.0, use_dynamic_shifting false (black-forest-labs/FLUX.1-schnell,
#   refs/pr/24, commit 768d12a "Add diffusers weights and configs (#7)").
# Which pipeline path each takes: SD3 passes no sigmas (and no mu with these configs); FLUX passes
# sigmas = linspace(1, 1/n, n) and mu from the image's token count.
_FLUX_KEYS = {"base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
FLOW_CONFIGS: dict[str, dict[str, Any]] = {
    "sd3": {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False, "pipeline": "sd3"},
    "flux-dev": {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, **_FLUX_KEYS,
                 "pipeline": "flux"},
    "flux-schnell": {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, **_FLUX_KEYS,
                     "pipeline": "flux"},
}
# FlowMatchEulerDiscreteScheduler.__init__'s defaults (diffusers 0.42.1): what a config without the key means
FLOW_MATCH_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5, "max_shift": 1.15,
    "base_image_seq_len": 256, "max_image_seq_len": 4096, "invert_sigmas": False, "shift_terminal": None,
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "time_shift_type": "exponential", "stochastic_sampling": False}
SIGMA_KINDS = ("", "-karras", "-exponential", "-beta")
DIFFUSERS_FLOW_KINDS = [f"{DIFFUSERS_PREFIX}{m}{s}" for m in FLOW_CONFIGS for s in SIGMA_KINDS]
PARAMETERIZED = (f"{SHIFT_PREFIX}S", f"{FLUX_PREFIX}L", f"{DIFFUSERS_PREFIX}flux-dev[-SIGMAS]:L")


def static_shift(t: Any, shift: float) -> Any:
    """SD3's shift t' = s t / (1 + (s - 1) t) (Esser et al. 2024, eq. 23)."""
    return shift * t / (1 + (shift - 1) * t)


def flux_mu(tokens: float, base_seq: float = 256, max_seq: float = 4096, base_shift: float = 0.5,
            max_shift: float = 1.15) -> float:
    """FLUX.1's mu for an image of ``tokens`` latent tokens: linear through (base_seq, base_shift) and (max_seq,
    max_shift) (diffusers pipeline_flux.py ``calculate_shift``; black-forest-labs/flux sampling.py
    ``get_lin_function``)."""
    m = (max_shift - base_shift) / (max_seq - base_seq)
    return tokens * m + (base_shift - m * base_seq)


def karras_sigmas(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` noise levels from ``hi`` down to ``lo``, uniform in sigma^(1/rho), rho = 7 (Karras et al. 2022, eq. 5),
    in float64 as diffusers' ``_convert_to_karras`` computes them."""
    ramp = np.linspace(0, 1, n)
    inv = 1 / KARRAS_RHO
    return (hi**inv + ramp * (lo**inv - hi**inv)) ** KARRAS_RHO


def _exponential(lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(np.linspace(math.log(hi), math.log(lo), n))


def _beta(lo: float, hi: float, n: int) -> np.ndarray:
    from scipy.stats import beta

    ppf = beta.ppf(1 - np.linspace(0, 1, n), *BETA_AB)
    return np.array([lo + p * (hi - lo) for p in ppf])


def pipeline_sigmas(config: Mapping[str, Any], n: int, sigmas: Any = None, mu: float | None = None) -> np.ndarray:
    """The ``n`` nonzero sigmas ``FlowMatchEulerDiscreteScheduler(**config).set_timesteps(n, sigmas=sigmas,
    mu=mu)`` computes (diffusers 0.42.1), before it appends 0 and casts to float32; float64 (float32 values on the
    path of passed sigmas, which diffusers computes in float32). ``config``: a FlowMatchEuler scheduler config
    (absent keys take diffusers' defaults)."""
    cfg = {**FLOW_MATCH_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    for key in ("invert_sigmas", "stochastic_sampling"):
        if cfg[key]:
            raise DpmbenchError(f"invalid scheduler {key}=True for dpmbench's flow grids: allowed: false")
    if sum(bool(cfg[k]) for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")) > 1:
        raise DpmbenchError("invalid scheduler config: at most one of use_karras_sigmas, use_exponential_sigmas, "
                            "use_beta_sigmas")
    if cfg["time_shift_type"] not in ("exponential", "linear"):
        raise bad_value("scheduler time_shift_type", cfg["time_shift_type"], ("exponential", "linear"))
    big_n, shift, dynamic = int(cfg["num_train_timesteps"]), float(cfg["shift"]), bool(cfg["use_dynamic_shifting"])
    if dynamic and mu is None:
        raise DpmbenchError("invalid scheduler call: use_dynamic_shifting needs mu (the pipeline passes it)")
    # __init__: the training table 1 .. 1/N (float32), shifted unless dynamic: its extremes bound the default grid
    table = np.linspace(1, big_n, big_n, dtype=np.float32)[::-1].copy() / np.float32(big_n)
    if not dynamic:
        table = (shift * table / (1 + (shift - 1) * table)).astype(np.float32)
    if sigmas is None:  # set_timesteps' default path, float64
        s = np.linspace(float(table[0]) * big_n, float(table[-1]) * big_n, n) / big_n
    else:  # passed sigmas: float32 from here on
        s = np.asarray(sigmas).astype(np.float32)
        if s.ndim != 1 or len(s) != n:
            raise DpmbenchError(f"invalid sigmas: need {n} values, got shape {tuple(s.shape)}")
    if dynamic:  # time_shift: e / (e + (1 / t - 1)), e = e^mu (exponential) or mu (linear), in the sigmas' dtype
        e = math.exp(mu) if cfg["time_shift_type"] == "exponential" else float(mu)
        e = np.float32(e) if s.dtype == np.float32 else e
        s = e / (e + (1 / s - 1))
    else:
        s = shift * s / (1 + (shift - 1) * s)
    if cfg["shift_terminal"]:
        one_minus = 1 - s
        s = 1 - one_minus / (one_minus[-1] / (1 - cfg["shift_terminal"]))
    for key, fn in (("use_karras_sigmas", karras_sigmas), ("use_exponential_sigmas", _exponential),
                    ("use_beta_sigmas", _beta)):
        if cfg[key]:
            s = fn(float(s[-1]), float(s[0]), n)
    return np.asarray(s, dtype=np.float64)


def flow_match_sigmas(model: str, n: int, sigma_kind: str = "", tokens: int = FLUX_DEFAULT_TOKENS) -> np.ndarray:
    """The ``n`` nonzero sigmas of diffusers' FlowMatchEulerDiscreteScheduler for ``n`` inference steps in
    ``model``'s pipeline under its published config (``FLOW_CONFIGS``): SD3 passes nothing, FLUX passes
    sigmas linspace(1, 1/n, n) and mu from the image's token count (``pipeline_sigmas``)."""
    cfg = {k: v for k, v in FLOW_CONFIGS[model].items() if k != "pipeline"}
    if sigma_kind:
        cfg[f"use_{sigma_kind[1:]}_sigmas"] = True
    if FLOW_CONFIGS[model]["pipeline"] == "flux":
        mu = flux_mu(tokens, cfg["base_image_seq_len"], cfg["max_image_seq_len"], cfg["base_shift"], cfg["max_shift"])
        return pipeline_sigmas(cfg, n, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
    return pipeline_sigmas(cfg, n)


def parse_kind(kind: str) -> tuple[str, Any] | None:
    """(family, parameter) of a flow kind, None if ``kind`` is not one; a one-line error for a bad parameter.
    Families: ``shift`` (S), ``diffusers`` ((model, sigma kind, tokens))."""
    if kind.startswith(SHIFT_PREFIX):
        return "shift", _positive(kind, kind[len(SHIFT_PREFIX):], float)
    if kind.startswith(FLUX_PREFIX):
        tokens = _positive(kind, kind[len(FLUX_PREFIX):], int)
        return "shift", math.exp(flux_mu(tokens))
    if kind.startswith(DIFFUSERS_PREFIX):
        name, _, raw = kind.partition(":")
        if name not in DIFFUSERS_FLOW_KINDS:
            raise bad_value("schedule", name, DIFFUSERS_FLOW_KINDS)
        rest = name[len(DIFFUSERS_PREFIX):]
        model = next(m for m in sorted(FLOW_CONFIGS, key=len, reverse=True) if rest.startswith(m))
        tokens = FLUX_DEFAULT_TOKENS
        if raw:
            if FLOW_CONFIGS[model]["pipeline"] != "flux" or not FLOW_CONFIGS[model]["use_dynamic_shifting"]:
                raise DpmbenchError(f"invalid schedule {kind!r}: only the dynamically shifted "
                                    f"{DIFFUSERS_PREFIX}flux-dev grids take an image token count (:L)")
            tokens = _positive(kind, raw, int)
        return "diffusers", (model, rest[len(model):], tokens)
    return None


def _positive(kind: str, raw: str, typ: type) -> Any:
    try:
        value = typ(raw)
    except ValueError:
        value = None
    if value is None or not value > 0 or (typ is float and not math.isfinite(value)):
        raise DpmbenchError(f"invalid schedule {kind!r}: the value after ':' must be a positive "
                            f"{'number' if typ is float else 'integer'}")
    return value


def is_flow_kind(kind: str) -> bool:
    """Whether ``kind`` names a flow grid (its parameter unchecked)."""
    return kind.startswith((SHIFT_PREFIX, FLUX_PREFIX, DIFFUSERS_PREFIX))


def shifted_grid(steps: int, shift: float, t0: float, t1: float) -> np.ndarray:
    """``steps + 1`` times from t0 to t1, uniform before SD3's shift by ``shift``: the unshifted end points are the
    inverse shift of t0 and t1, so the grid spans exactly [t1, t0]."""
    def unshift(t: float) -> float:
        return t / (shift - (shift - 1) * t)

    return static_shift(np.linspace(unshift(t0), unshift(t1), steps + 1), shift)


def diffusers_flow_grid(param: tuple[str, str, int], steps: int) -> np.ndarray:
    """diffusers' ``steps + 1`` nonzero sigmas for ``steps + 1`` inference steps (see the module docstring)."""
    model, sigma_kind, tokens = param
    return flow_match_sigmas(model, steps + 1, sigma_kind, tokens)
