"""The seed papers' claims, checked on a run's results: ``reports/claims.md`` (written by ``dpmbench report``).

Each claim pairs a solver A (the paper's) with a baseline B, in a setting (guidance scales, NFE range), on the
metric the claim is about: ``path`` claims (ODE-solver accuracy) use the error to the exact ODE solution
(``rmse_exact``, oracle models) or to the network's high-NFE reference (``mse_ref``, trained networks);
``quality`` claims use the distance to the data (``fdd`` on digits models with image features, else ``fd_true``,
``fid``). Every model of the results where both solvers ran in that setting is checked; nothing is hand-written.

Verdict of one (model, guidance, schedule, NFE) row, by the paired decision of the leaderboard
(:func:`~dpmbench.report.stats.separated`):
both solvers start from the same x_T and their metric's bootstrap replicates use
the same resampling indices, so the replicate-wise difference A - B is a paired bootstrap of the difference. ``holds``
when A is better and the 95% CI of that difference excludes 0, ``fails`` when B is better and it excludes 0,
``within noise`` when it contains 0. Rows without pairable replicates (a results.csv read back, metric files written
before replicates were stored, different sample counts or bootstrap seeds) fall back to the conservative marginal
rule: separated only when the two 95% CIs are disjoint. A diverged run (NaN) loses to a finite one. The paired rule
separates more often than the marginal one: two solvers whose errors move together over the samples can differ
significantly although their marginal CIs overlap. The verdict of a (model, guidance, schedule) is ``holds`` /
``fails`` when that row verdict is the majority and the other never occurs, ``within noise`` when no row separates,
else ``mixed``. Several schedules or seeds in the results are judged separately.

A *schedule claim* (``Claim.schedule`` set) compares two time-step schedules instead of two solvers: ``solver`` on
the claimant's ``schedule`` against ``baseline`` on ``baseline_schedule``, within one (guidance, seed). Its
``schedule`` may name a search kind, ``searched:KIND``: it matches a results schedule ``searched:NAME`` only when the
named artifact NAME was produced by the ``KIND`` search, which the caller says through ``searches`` (schedule ->
producing search; :func:`dpmbench.report.write_report` reads it from the saved artifacts). A schedule whose producing
search is unknown matches no search kind, so an Align-Your-Steps grid is never judged as an AutoDiffusion one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dpmbench.report.stats import paired_replicates, separated
from evaluators.bootstrap import percentile_ci

PATH_METRICS = ("rmse_exact", "mse_ref")
QUALITY_METRICS = ("sw2_true", "fdd", "fid")  # never fd_true: two moments only (see the module doc)
ALPHA = 0.05  # family-wise error rate of one claim table (Holm over its NFE columns)
DEFAULT_MIN_GAIN = 0.05  # the smallest relative gain counted as an improvement where the paper states none
DEFAULT_MARGIN = 0.05  # equivalence margin of the "matches" claims, relative to the baseline's value
UNIPC = "unipc:variant=bh1,order=2"  # UniPC's official default (bh1, order 2)
DPMPP_2M = "dpm-solver++:order=2,method=multistep"
D_ODE = "Kim, Tang & Yu, CVPR 2024, arXiv:2309.16421, abstract and experiments (FID)"
AUTODIFFUSION = ("Li et al., ICCV 2023, arXiv:2309.10438v2, abstract (ImageNet 64x64, 4 steps: FID 17.86 "
                 "with the searched steps vs 138.66 with DDIM's uniform ones) and Sec. 3.2-3.3 (the search)")
PARADIGMS = "Shih et al., NeurIPS 2023, arXiv:2305.16317, abstract ('no measurable degradation of ... FID score')"
SD3_SHIFT = ("Esser et al., ICML 2024 (Stable Diffusion 3), arXiv:2403.03206v1, Sec. 5.3.2 (resolution-dependent "
             "shifting of the timestep schedule, t' = s t / (1 + (s - 1) t); s = 3.0 chosen at 1024^2)")
DIFFUSERS_DPM = ("diffusers documentation v0.35.1, api/schedulers/multistep_dpm_solver, overview ('quite good samples "
                 "even in 10 steps'; solver_order=2 for guided sampling); the flow form: use_flow_sigmas")
DIFFUSERS_UNIPC = ("diffusers documentation v0.35.1, api/schedulers/unipc, overview (fast sampling; the UniPC "
                   "abstract it quotes: better samples where fewer steps, e.g. < 10, are favored); the flow form: "
                   "use_flow_sigmas")
RECTIFIED = ("Liu, Gong & Liu, ICLR 2023, arXiv:2209.03003v1, abstract and Sec. 2 (rectified flow's straight paths are "
             "simulated with few Euler steps); Esser et al. 2024, arXiv:2403.03206v1, Sec. 2 (the same argument)")
UNIPC_DIFFUSERS = "unipc:variant=bh2"  # diffusers' UniPCMultistepScheduler defaults: bh2, solver_order 2


@dataclass(frozen=True)
class Claim:
    """A paper's claim: ``solver`` beats ``baseline`` on a ``kind`` metric in a setting. With ``schedule`` set, a
    schedule claim: ``solver`` on ``schedule`` (a schedule name, or ``searched:KIND``: a grid that the ``KIND`` search
    produced) beats ``baseline`` on ``baseline_schedule`` (see the module doc)."""

    key: str
    text: str
    source: str
    kind: str  # "path" or "quality"
    solver: str
    baseline: str
    guidance: tuple[str, ...] | None = None  # None: every guidance of the results
    nfe: tuple[int, int] = (1, 10**9)  # inclusive range
    schedule: str | None = None  # None: both solvers on each schedule of the results, judged per schedule
    baseline_schedule: str | None = None  # the baseline's schedule of a schedule claim
    min_gain: float = DEFAULT_MIN_GAIN  # relative gain a column needs to count as "holds"
    gain_basis: str = "default: the source states no gain the claim could be held to"
    margin: float | None = None  # equivalence claims ("matches"): relative margin of the TOST; None: a gain claim
    model: str | None = None  # None: every model of the results; a cross-model claim names A's model
    baseline_model: str | None = None  # a cross-model claim: B runs on this model (same guidance, seed and NFE)


CLAIMS: tuple[Claim, ...] = (
    Claim("time-shift-ddim", "the Time-Shift sampler improves sample quality over its base solver (DDIM), by "
          "alleviating exposure bias", "Li et al., ICLR 2024, arXiv:2305.15583, Sec. 5 (Tables 1-2, FID)",
          "quality", "ts-ddim", "ddim", ("none",)),
    Claim("time-shift-dpm-solver", "the Time-Shift sampler improves sample quality over its base solver "
          "(DPM-Solver, multistep order 2)", "Li et al., ICLR 2024, arXiv:2305.15583, Sec. 5 (Table 3, FID)",
          "quality", "ts-dpm-solver", "dpm-solver:order=2,method=multistep", ("none",)),
    Claim("dpm-solver-v3-vs-2m", "DPM-Solver-v3 (empirical model statistics) is more accurate than "
          "DPM-Solver++(2M) at NFE 5-10", "Zheng et al., NeurIPS 2023, arXiv:2310.13268v3, Sec. 5 (Tables 1-3, Fig. 4)",
          "path", "dpm-solver-v3", DPMPP_2M, None, (5, 10)),
    Claim("dpm-solver-v3-vs-unipc", "DPM-Solver-v3 (empirical model statistics) is more accurate than UniPC at "
          "NFE 5-10", "Zheng et al., NeurIPS 2023, arXiv:2310.13268v3, Sec. 5 (Tables 1-3, Fig. 4)",
          "path", "dpm-solver-v3", UNIPC, None, (5, 10)),
    Claim("dc-solver-vs-unipc-cfg", "DC-Solver (dynamic compensation) is more accurate than UniPC under "
          "classifier-free guidance 7.5",
          "Zhao et al., ECCV 2024, arXiv:2409.03755v1, abstract and Sec. 4 (SD, CFG 7.5)",
          "path", "dc-solver", UNIPC, ("7.5",)),
    Claim("dpm-solver++-vs-dpm-solver-cfg", "data-prediction DPM-Solver++ is more accurate than noise-prediction "
          "DPM-Solver under large guidance (7.5): the singlestep pairing (2S vs DPM-Solver-2)",
          "Lu et al. 2022, arXiv:2211.01095v2, Sec. 3 (Fig. 1-2)",
          "path", "dpm-solver++:order=2,method=singlestep", "dpm-solver:order=2", ("7.5",)),
    Claim("dpm-solver++-vs-dpm-solver-cfg-multistep", "data-prediction DPM-Solver++ is more accurate than "
          "noise-prediction DPM-Solver under large guidance (7.5): the multistep pairing (2M vs multistep "
          "DPM-Solver-2)", "Lu et al. 2022, arXiv:2211.01095v2, Sec. 3-4 (Fig. 1-2; multistep solvers, Sec. 4)",
          "path", DPMPP_2M, "dpm-solver:order=2,method=multistep", ("7.5",)),
    # The accelerated, parallel, distilled and aligned samplers (config/samplers.yaml runs each beside its base).
    Claim("accel-ddim-vs-base", "the provably accelerated deterministic sampler is more accurate than its DDIM-type "
          "base (claimed error O(1/T^2) vs O(1/T) in the number of steps T)",
          "Li et al., ICML 2024, arXiv:2403.03852v1, Sec. 3.1 (the accelerated ODE sampler's rate)",
          "path", "accel-ddim", "accel-ddim:accelerated=false"),
    Claim("accel-ddpm-vs-base", "the provably accelerated stochastic sampler gives samples closer to the data than "
          "its DDPM-type base (claimed O(1/T) vs O(1/sqrt(T)))",
          "Li et al., ICML 2024, arXiv:2403.03852v1, Sec. 3.2 (the accelerated SDE sampler's rate)",
          "quality", "accel-ddpm", "accel-ddpm:split=0"),
    Claim("picard-matches-ddim", "Picard iterations converge to the sequential solver's result: samples as good as "
          "DDIM's (equivalence within the margin, shown by its CI)",
          f"{PARADIGMS}, Table 5 (DDIM)",
          "quality", "picard", "ddim", margin=DEFAULT_MARGIN),
    Claim("picard-matches-dpm-solver++", "Picard iterations over DPM-Solver++ give samples as good as the sequential "
          "solver's (equivalence within the margin, shown by its CI)",
          f"{PARADIGMS} (compatible with DPMSolver)",
          "quality", "picard:base=dpm-solver++", "dpm-solver++:order=2,method=multistep", margin=DEFAULT_MARGIN),
    Claim("picard-matches-ddpm", "Picard iterations over DDPM give samples as good as sequential DDPM's "
          "(equivalence within the margin, shown by its CI)",
          f"{PARADIGMS}, Table 5 (DDPM)",
          "quality", "picard:base=ddpm", "ddpm", margin=DEFAULT_MARGIN),
    Claim("d-ode-ddim", "D-ODE (one distilled scalar per step) improves sample quality over DDIM at few steps",
          D_ODE, "quality", "d-ode", "ddim"),
    Claim("d-ode-dpm-solver++", "D-ODE improves sample quality over DPM-Solver++(2M) at few steps",
          D_ODE,
          "quality", "d-ode:base=dpm-solver++", DPMPP_2M),
    Claim("d-ode-ipndm", "D-ODE improves sample quality over iPNDM at few steps",
          D_ODE, "quality", "d-ode:base=ipndm", "ipndm"),
    Claim("d-ode-deis", "D-ODE improves sample quality over DEIS at few steps",
          D_ODE, "quality", "d-ode:base=deis", "deis"),
    Claim("d-ode-heun", "D-ODE improves sample quality over EDM's Heun at few steps",
          D_ODE, "quality", "d-ode:base=heun", "heun"),
    Claim("timestep-aligner-ddim", "conditioning the network on aligned timesteps improves DDIM's sample quality, "
          "especially with few steps", "Xia et al., CVPR 2024, arXiv:2310.09469 (v1: Timestep Aligner, v2: Tuner), "
          "abstract (LSUN Bedroom, 10 steps: DDIM FID 9.65 -> 6.07)", "quality", "ta-ddim", "ddim",
          min_gain=0.09, gain_basis="a quarter of the paper's 37% (FID 9.65 -> 6.07)"),
    # Schedule claims: one solver, the searched time steps against a handcrafted grid.
    Claim("autodiffusion-vs-logsnr", "time steps searched by AutoDiffusion improve DDIM's few-step sample quality "
          "over the handcrafted grid (here logSNR-uniform, the suite's default)", AUTODIFFUSION,
          "quality", "ddim", "ddim", schedule="searched:autodiffusion", baseline_schedule="logsnr",
          min_gain=0.22, gain_basis="a quarter of the paper's 87% (FID 138.66 -> 17.86)"),
    Claim("autodiffusion-vs-time-uniform", "time steps searched by AutoDiffusion improve DDIM's few-step sample "
          "quality over uniform time steps (the paper's baseline)", AUTODIFFUSION,
          "quality", "ddim", "ddim", schedule="searched:autodiffusion", baseline_schedule="time-uniform",
          min_gain=0.22, gain_basis="a quarter of the paper's 87% (FID 138.66 -> 17.86)"),
    # Flow-matching models (the flow schedule): the shift of SD3's time grid, diffusers' flow solvers against Euler,
    # and the straight-path argument across models (digits-flow against digits-unet: same architecture and data).
    Claim("flow-shift-euler", "SD3's timestep shift (s = 3) improves few-step Euler sampling of a flow model over the "
          "unshifted grid (s = 1)", SD3_SHIFT, "quality", "flow-euler", "flow-euler", schedule="flow-shift:3",
          baseline_schedule="flow-shift:1"),
    Claim("flow-shift-dpm-solver++", "SD3's timestep shift (s = 3) improves few-step DPM-Solver++(2M) sampling of a "
          "flow model over the unshifted grid", SD3_SHIFT, "quality", DPMPP_2M, DPMPP_2M, schedule="flow-shift:3",
          baseline_schedule="flow-shift:1"),
    Claim("flow-dpm-solver++-vs-euler", "the flow form of DPM-Solver++(2M) gives better samples than Euler at "
          "NFE <= 10", DIFFUSERS_DPM, "quality", DPMPP_2M, "flow-euler", nfe=(1, 10)),
    Claim("flow-unipc-vs-euler", "the flow form of UniPC (diffusers' bh2, order 2) gives better samples than Euler at "
          "NFE <= 10", DIFFUSERS_UNIPC, "quality", UNIPC_DIFFUSERS, "flow-euler", nfe=(1, 10)),
    Claim("rectified-flow-fewer-steps", "a flow-matching network needs fewer steps than a diffusion network for the "
          "same sample quality (straighter paths): digits-flow with Euler (s = 1) has a lower FDD than digits-unet "
          "with DDIM (its Euler step) at the same NFE; both networks share architecture, data, x_T and labels",
          RECTIFIED, "quality", "flow-euler", "ddim", schedule="flow-shift:1", baseline_schedule="logsnr",
          model="digits-flow", baseline_model="digits-unet"),
    Claim("rectified-flow-straighter-paths", "a flow-matching network's ODE is solved more accurately in few steps "
          "(straighter paths): digits-flow with Euler is closer to its own converged ODE solution (mse_ref: the "
          "config's high-NFE reference run) than digits-unet with DDIM is to its own, at the same NFE",
          RECTIFIED, "path", "flow-euler", "ddim", schedule="flow-shift:1",
          baseline_schedule="logsnr", model="digits-flow", baseline_model="digits-unet"),
)


def _metric(df: pd.DataFrame, model: str, kind: str) -> str | None:
    have = set(df.loc[df["model"] == model, "metric"])
    return next((m for m in (PATH_METRICS if kind == "path" else QUALITY_METRICS) if m in have), None)


def _ran_as(g: pd.DataFrame, spec: str) -> str:
    """The solver string of ``spec`` in these results: itself, or for an option-less name (``dpm-solver-v3``) the one
    run of it with options of its preparation only (``dpm-solver-v3:ems_samples=64``), if there is exactly one."""
    solvers = set(g["solver"])
    if spec in solvers or ":" in spec:
        return spec
    runs = [s for s in solvers if s.startswith(spec + ":")]
    return runs[0] if len(runs) == 1 else spec


def _row_verdict(a: Any, b: Any, lower: bool) -> tuple[str, tuple[float, float, float] | None]:
    """holds / fails / within noise for one pair of result rows (value, ci_low, ci_high, boot, boot_seed, n_samples),
    and the paired CI (estimate, lo, hi) of a - b when the rows carry pairable replicates (see the module doc). One
    column alone, without the claim's minimum gain or the correction for several columns (:func:`judge`)."""
    if any(isinstance(v, float) and math.isnan(v) for v in (a.value, b.value)):
        return ("fails" if not math.isnan(b.value) else ("holds" if not math.isnan(a.value) else "within noise")), None
    sep, diff = separated(a, b)
    if not sep or a.value == b.value:
        return "within noise", diff
    better_a = a.value < b.value if lower else a.value > b.value
    return ("holds" if better_a else "fails"), diff


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _p_value(est: float, d: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference: twice the smaller share of the bias-shifted replicates
    (as :func:`evaluators.bootstrap.percentile_ci` shifts them) on either side of 0."""
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return 1.0
    c = d - (d.mean() - est)
    return float(min(1.0, 2 * min(np.mean(c <= 0), np.mean(c >= 0))))


def _gain(a: float, b: float, lower: bool) -> float:
    """A's relative gain over B: (B - A) / |B| for a lower-is-better metric, (A - B) / |B| else."""
    d = (b - a) if lower else (a - b)
    return d / abs(b) if b != 0 else (math.inf if d > 0 else (-math.inf if d < 0 else 0.0))


def judge(pairs: list[tuple[Any, Any]], lower: bool, min_gain: float = 0.0, margin: float | None = None
          ) -> list[tuple[str, tuple[float, float, float] | None]]:
    """The verdict and paired 95% CI (None: marginal fallback) of every column (A's row, B's row) of one claim
    table, by the rules of the module doc: Holm's step-down over the columns with paired replicates, the claim's
    minimum relative gain; with ``margin``, the equivalence test (TOST) instead."""
    out: list[tuple[str, tuple[float, float, float] | None]] = [("", None)] * len(pairs)
    paired: list[tuple[float, int, float, np.ndarray]] = []  # (p, column, estimate, differences)
    for i, (a, b) in enumerate(pairs):
        if _nan(a.value) or _nan(b.value):
            out[i] = _row_verdict(a, b, lower)
            if margin is not None and out[i][0] != "fails":
                out[i] = ("inconclusive", None)
            continue
        pr = paired_replicates(a, b)
        diff = _row_verdict(a, b, lower)[1]
        if pr is None or diff is None:  # marginal fallback: two disjoint 95% CIs (p < 0.006 at equal SEs)
            v, _ = _row_verdict(a, b, lower)
            if margin is not None:
                v = "fails" if v == "fails" else "inconclusive"
            elif v == "holds" and _gain(float(a.value), float(b.value), lower) < min_gain:
                v = "too small"
            out[i] = (v, diff)
            continue
        paired.append((_p_value(pr[0], pr[1]), i, pr[0], pr[1]))
        out[i] = ("", diff)
    significant: set[int] = set()
    m = len(paired)
    for k, (_, i, est, d) in enumerate(sorted(paired, key=lambda t: (t[0], t[1]))):  # Holm: alpha / (m - k)
        lo, hi = percentile_ci(est, d, level=1 - ALPHA / (m - k))
        if not (lo > 0 or hi < 0):
            break
        significant.add(i)
    for _, i, est, d in paired:
        a, b = pairs[i]
        better = (est < 0) if lower else (est > 0)
        if margin is not None:  # TOST: the 90% CI of A - B inside +-margin |B|, each one-sided test at ALPHA
            lo, hi = percentile_ci(est, d, level=1 - 2 * ALPHA)
            bound = margin * abs(float(b.value))
            v = ("equivalent" if -bound < lo and hi < bound else
                 "fails" if i in significant and not better else "inconclusive")
        elif i not in significant or est == 0:
            v = "within noise"
        elif not better:
            v = "fails"
        else:
            v = "holds" if _gain(float(a.value), float(b.value), lower) >= min_gain else "too small"
        out[i] = (v, out[i][1])
    return out


def summary_verdict(rows: list[str]) -> str:
    """The verdict of a (model, guidance) from its per-NFE row verdicts (see the module doc): ``holds`` needs a
    strict majority of holding columns and no failing one."""
    h, f = rows.count("holds"), rows.count("fails")
    if h == 0 and f == 0:
        return "too small" if "too small" in rows else "within noise"
    if f == 0 and 2 * h > len(rows):
        return "holds"
    if h == 0 and 2 * f >= len(rows):
        return "fails"
    return "mixed"


def _legacy_verdict(rows: list[str]) -> str:
    """The summary rule before the stated rules (a tie held, no minimum gain, no correction, "within noise" taken as
    a match), kept only to say why a verdict changed (:func:`changes`)."""
    h, f = rows.count("holds"), rows.count("fails")
    if h == 0 and f == 0:
        return "within noise"
    if f == 0 and 2 * h >= len(rows):
        return "holds"
    if h == 0 and 2 * f >= len(rows):
        return "fails"
    return "mixed"


def _summary_rows(md: str) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(claim, model, setting) -> (metric, verdict) of a claims.md's summary table."""
    keys = {c.key for c in CLAIMS}
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) >= 5 and cells[0] in keys:
            out[(cells[0], cells[1], cells[2])] = (cells[3], cells[4])
    return out


def changes(results: list[dict[str, Any]], previous: str) -> list[str]:
    """The closing note's lines: every verdict that differs from the ``previous`` claims.md, before -> after, with
    the reason (the metric, the rules judged on the same rows, new or dropped entries, or changed numbers)."""
    before = _summary_rows(previous)
    lines = []
    now = {(r["claim"].key, r["model"], r["setting"]): r for r in results}
    for key, r in now.items():
        old = before.get(key)
        where = f"{key[0]} on {key[1]}, guidance {key[2]}"
        if old is None:
            lines.append(f"- {where}: new -> **{r['verdict']}** ({r['metric']}): a claim, pairing or setting the "
                         "previous ledger did not judge")
            continue
        if old == (r["metric"], r["verdict"]):
            continue
        if old[0] != r["metric"]:
            why = (f"judged on {r['metric']} instead of {old[0]}" + (" (fd_true sees two moments only)"
                                                                      if old[0] == "fd_true" else ""))
        elif old[1] == r["verdict_legacy"]:  # the previous rule on these numbers gave the previous verdict
            rows = [x[3] for x in r["rows"]]
            parts = []
            if r["claim"].margin is not None:
                parts.append(f"a match needs the 90% CI inside the {r['claim'].margin:.0%} margin (TOST)")
            if "too small" in rows:
                parts.append(f"gains under the stated {r['claim'].min_gain:.0%} minimum")
            h = rows.count("holds")
            if r["verdict_legacy"] == "holds" and 2 * h == len(rows):
                parts.append("a tie of columns no longer holds")
            if not parts:
                parts.append("Holm's correction over the NFE columns")
            why = "the stated rules on the same numbers: " + "; ".join(parts)
        else:
            why = "the numbers changed (e.g. fits and searches now held out from the evaluated x_T)"
        lines.append(f"- {where}: {old[1]} ({old[0]}) -> **{r['verdict']}** ({r['metric']}): {why}")
    for key, (metric, verdict) in before.items():
        if key not in now:
            lines.append(f"- {key[0]} on {key[1]}, guidance {key[2]}: {verdict} ({metric}) -> not judged: no "
                         "applicable metric or solver in these results (quality claims no longer use fd_true)")
    return lines


def equivalence_verdict(rows: list[str]) -> str:
    """The verdict of an equivalence claim from its per-NFE rows: ``holds`` only when every column is shown
    equivalent (an intersection-union test: no correction needed), ``fails`` when half or more fail, ``mixed`` when
    some fail, else ``inconclusive`` (no evidence of a difference is not evidence of equivalence)."""
    f = rows.count("fails")
    if rows and rows.count("equivalent") == len(rows):
        return "holds"
    if f and 2 * f >= len(rows):
        return "fails"
    return "mixed" if f else "inconclusive"


def _strongest(g: pd.DataFrame, nfe: int, a_row: Any, lower: bool) -> Any | None:
    """The best other (solver, schedule) row of the setting table at ``nfe`` (by value; finite ones only): the
    strongest comparable solver in the grid beside the claimant."""
    col = [r for r in g[g["nfe"] == nfe].itertuples()
           if not (r.solver == a_row.solver and r.schedule == a_row.schedule) and not _nan(r.value)]
    if not col:
        return None
    return (min if lower else max)(col, key=lambda r: float(r.value))


def _settings(d: pd.DataFrame, by_schedule: bool = True) -> list[tuple[str, pd.DataFrame]]:
    """The (guidance, schedule, seed) tables of one model's metric rows (without ``by_schedule``: the (guidance,
    seed) tables), labelled by guidance; schedule and seed are named in the label only where the results hold
    several of them."""
    keys = [k for k in ("guidance", "schedule", "seed") if k in d.columns and (by_schedule or k != "schedule")]
    many = {k: d[k].nunique() > 1 for k in keys}
    out = []
    for key, g in d.groupby(keys, sort=False, dropna=False):
        vals = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        extra = [f"{vals['schedule']}" if k == "schedule" else f"seed {vals['seed']}" for k in keys[1:] if many[k]]
        out.append((", ".join([str(vals["guidance"]), *extra]), g))
    return out


def _is_schedule(sched: str, want: str, searches: Mapping[str, str]) -> bool:
    """Whether the results schedule ``sched`` is a claim's ``want``: the same name, or for ``searched:KIND`` a
    ``searched:NAME`` whose producing search (``searches``) is KIND; an unknown producer matches no kind."""
    if want.startswith("searched:"):
        return sched.startswith("searched:") and searches.get(sched) == want.split(":", 1)[1]
    return sched == want


def _pairs(claim: Claim, setting: str, g: pd.DataFrame, searches: Mapping[str, str], other: pd.DataFrame
           ) -> list[tuple[str, tuple[str, str] | None, pd.DataFrame, pd.DataFrame]]:
    """The (label, schedules, A's rows, B's rows) a claim compares in one setting table: the same table for both
    solvers, for a schedule claim each claimant schedule of the table against the baseline schedule, for a
    cross-model claim A's schedule of the table against the baseline model's rows (``other``) of the same guidance
    and seed on the baseline schedule."""
    if claim.baseline_model is not None:
        same = other["guidance"].astype(str) == str(g["guidance"].iloc[0])
        if "seed" in g.columns and "seed" in other.columns:
            same &= other["seed"].astype(str) == str(g["seed"].iloc[0])
        gb = other[same & (other["schedule"] == claim.baseline_schedule)]
        ga = g[g["schedule"] == claim.schedule]
        return [(f"{setting}, {claim.schedule} vs {claim.baseline_model} on {claim.baseline_schedule}",
                 (str(claim.schedule), f"{claim.baseline_model}, {claim.baseline_schedule}"), ga, gb)]
    if claim.schedule is None:
        return [(setting, None, g, g)]
    base = claim.baseline_schedule
    mine = [s for s in dict.fromkeys(g["schedule"]) if s != base and _is_schedule(str(s), claim.schedule, searches)]
    return [(f"{setting}, {s} vs {base}", (s, base), g[g["schedule"] == s], g[g["schedule"] == base]) for s in mine]


def check_claims(df: pd.DataFrame, searches: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every claim on every model, guidance (and schedule / seed, where several) of the results where both of its
    solvers ran: per NFE the pair of rows, the row verdict and the paired CI of A - B (None: marginal fallback), and
    the summary verdict. ``df``: results rows (the columns of results.csv; ``boot`` / ``boot_seed``, the bootstrap
    replicates, where the run stored them). ``searches``: the search that produced each ``searched:NAME`` schedule
    (schedule claims of a search kind match only those); schedule claims also give ``schedules`` (A's, B's)."""
    from evaluators.registry import METRICS

    df = df.assign(**{c: None for c in ("boot", "boot_seed", "n_samples") if c not in df.columns})
    out = []
    for claim in CLAIMS:
        for model in dict.fromkeys(df["model"]):
            metric = _metric(df, model, claim.kind)
            if metric is None or claim.model not in (None, model):
                continue
            d = df[(df["model"] == model) & (df["metric"] == metric)]
            d = d[(d["nfe"] >= claim.nfe[0]) & (d["nfe"] <= claim.nfe[1])]
            other = df[(df["model"] == claim.baseline_model) & (df["metric"] == metric)]  # cross-model claims' B
            for label, g in _settings(d, by_schedule=claim.schedule is None):
                guidance = str(g["guidance"].iloc[0])
                if claim.guidance is not None and guidance not in claim.guidance:
                    continue
                for setting, schedules, ga, gb in _pairs(claim, label, g, searches or {}, other):
                    ran = (_ran_as(ga, claim.solver), _ran_as(gb, claim.baseline))
                    a = {int(r.nfe): r for r in ga[ga["solver"] == ran[0]].itertuples()}
                    b = {int(r.nfe): r for r in gb[gb["solver"] == ran[1]].itertuples()}
                    nfes = sorted(set(a) & set(b))
                    if not nfes:
                        continue
                    lower = metric not in METRICS or METRICS[metric].lower_is_better
                    judged = judge([(a[n], b[n]) for n in nfes], lower, claim.min_gain, claim.margin)
                    rows = [(n, a[n], b[n], v, d) for n, (v, d) in zip(nfes, judged, strict=True)]
                    n_samples = a[nfes[0]].n_samples
                    verdict = (equivalence_verdict if claim.margin is not None else summary_verdict)(
                        [r[3] for r in rows])
                    strong: list[tuple[int, Any, str, tuple[float, float, float] | None]] = []
                    if claim.margin is None and claim.baseline_model is None:  # the fair baseline: the best
                        # other solver of the grid per NFE (a cross-model claim compares models, not solvers)
                        tops = {n: _strongest(g, n, a[n], lower) for n in nfes}
                        have = [n for n in nfes if tops[n] is not None]
                        vs = judge([(a[n], tops[n]) for n in have], lower, claim.min_gain)
                        strong = [(n, tops[n], v, d) for n, (v, d) in zip(have, vs, strict=True)]
                    legacy = _legacy_verdict([_row_verdict(a[n], b[n], lower)[0] for n in nfes])
                    out.append({"claim": claim, "model": model, "guidance": guidance, "setting": setting,
                                "metric": metric, "ran": ran, "rows": rows, "verdict_legacy": legacy,
                                "n_samples": None if pd.isna(n_samples) else int(n_samples),
                                "verdict": verdict, "strongest": strong,
                                "verdict_strongest": summary_verdict([r[2] for r in strong]) if strong else "n/a",
                                **({} if schedules is None else {"schedules": schedules})})
    return out


def _num(r: Any) -> str:
    """``value [lo, hi]`` with 4 significant digits (``nan``: a diverged run)."""
    if math.isnan(r.value):
        return "nan (diverged)"
    ci = "" if math.isnan(r.ci_low) or math.isnan(r.ci_high) else f" [{r.ci_low:.4g}, {r.ci_high:.4g}]"
    return f"{r.value:.4g}{ci}"


def _diff(d: tuple[float, float, float] | None) -> str:
    """The paired difference A - B ``estimate [lo, hi]``, or how the row was decided without one."""
    return "marginal CIs" if d is None else f"{d[0]:+.4g} [{d[1]:+.4g}, {d[2]:+.4g}]"


RULES = (
    "**Rules** (written once, in dpmbench/report/claims.py; the same for every claim). A row (one NFE) compares "
    "the paper's solver A with a baseline B on the claim's metric; both start from the same x_T and are resampled "
    "with the same bootstrap indices, so a row is judged on the paired bootstrap of the difference A - B. "
    f"(1) *Several NFE columns*: Holm's step-down correction over the columns of one table (family-wise error "
    f"{ALPHA:g}): the column with the k-th smallest bootstrap p-value of m counts as separated only when its "
    f"(1 - {ALPHA:g}/(m - k + 1)) paired CI excludes 0 and every column before it did. Rows without stored "
    "replicates fall back to the marginal rule, separated only when the two 95% CIs are disjoint (p < 0.006 for "
    "equal standard errors, stricter than Holm's first step up to 8 columns); the difference column then says "
    "`marginal CIs`. (2) *Minimum effect*: a separated row where A is better **holds** only when A's relative gain "
    "(B - A) / |B| (lower-is-better metrics) reaches the claim's stated minimum (a quarter of the paper's reported "
    f"gain where its source gives numbers, else {DEFAULT_MIN_GAIN:.0%}); below it the row is **too small**. A "
    "separated row where B is better **fails**; an unseparated one is **within noise**; a diverged run (NaN) loses "
    "to a finite one. (3) *Summary*: **holds** needs a strict majority of holding columns and no failing one (a tie "
    "does not hold); **fails** needs half or more failing columns and no holding one (the burden of proof is on the "
    "claim); **within noise** (or **too small**) when no column holds or fails; else **mixed**. (4) *Equivalence "
    "claims* (\"matches\"): a row is **equivalent** when the paired 90% CI of A - B lies inside +-margin x |B| "
    "(two one-sided tests at 5%, TOST); the claim **holds** only when every column is equivalent "
    "(intersection-union test); **inconclusive** when the CI is too wide to show it: no evidence of a difference is "
    "not evidence of equivalence. (5) *Fair baselines*: every gain claim is also judged, by the same rules, against "
    "the strongest other solver of the grid at the same NFE (the best value of the table beside A), shown beside the "
    "paper's baseline. (6) *Metrics*: path claims use the error to the exact ODE solution (`rmse_exact`, oracle "
    "models) or to the network's high-NFE reference (`mse_ref`, trained networks). Quality claims use a distance "
    "that sees the whole distribution: on oracle models `sw2_true`, the sliced 2-Wasserstein distance to the true "
    "distribution (every 1-D projection's whole law, not only two moments: a single Gaussian with the data's mean "
    "and covariance has `fd_true` near 0 but a large `sw2_true`; `loglik_true` is not used since a sampler that "
    "collapses onto the modes raises it), on digits models `fdd` (the field's FID on digits-CNN features).")


def claims_markdown(df: pd.DataFrame, searches: Mapping[str, str] | None = None, previous: str | None = None) -> str:
    """``claims.md``: the rules, then per claim its source, its stated minimum gain or margin, then per model and
    setting the paired numbers and the verdicts against the paper's baseline and the strongest solver of the grid
    (``searches``: see :func:`check_claims`); with ``previous`` (the claims.md this one replaces), a closing note of
    every verdict that changed, before -> after, with the reason."""
    results = check_claims(df, searches) if not df.empty else []
    lines = ["# The seed papers' claims on this run's models", "",
             "Generated by `dpmbench report` from this run's results (never edited by hand).", "", RULES, ""]
    if not results:
        return "\n".join([*lines, "_No claim applies to these results._", ""])
    lines += ["| claim | model | guidance | metric | verdict (paper's baseline) | vs strongest in grid |",
              "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['claim'].key} | {r['model']} | {r['setting']} | {r['metric']} | {r['verdict']} | "
                     f"{r['verdict_strongest']} |")
    lines.append("")
    for claim in CLAIMS:
        mine = [r for r in results if r["claim"] is claim]
        if not mine:
            continue
        nfe = "" if claim.nfe == (1, 10**9) else f", NFE {claim.nfe[0]}-{claim.nfe[1]}"
        guid = "every guidance" if claim.guidance is None else f"guidance {', '.join(claim.guidance)}"
        pair = f"`{claim.solver}` vs `{claim.baseline}`"
        if claim.schedule is not None:
            kind = claim.schedule.split(":", 1)[1] if claim.schedule.startswith("searched:") else None
            pair = (f"`{claim.solver}` on `{claim.schedule}` vs `{claim.baseline}` on `{claim.baseline_schedule}`"
                    + ("" if kind is None else f" (`searched:{kind}`: a `searched:NAME` grid saved by the `{kind}` "
                       "search)"))
        if claim.baseline_model is not None:
            pair = (f"`{claim.solver}` on `{claim.schedule}` ({claim.model}) vs `{claim.baseline}` on "
                    f"`{claim.baseline_schedule}` ({claim.baseline_model}), the same x_T, labels and bootstrap indices")
        rule = (f"Equivalence margin: +-{claim.margin:.0%} of the baseline's value (TOST, 90% CI)."
                if claim.margin is not None else f"Minimum gain: {claim.min_gain:.0%} ({claim.gain_basis}).")
        lines += [f"## {claim.key}: {claim.text}", "",
                  f"Source: {claim.source}. Setting: {pair}, {guid}{nfe}. {rule}", ""]
        for r in mine:
            sa, sb = (f" ({s})" for s in r["schedules"]) if "schedules" in r else ("", "")
            strong = {n: (top, v, d) for n, top, v, d in r["strongest"]}
            vs = ("" if claim.margin is not None or claim.baseline_model is not None
                  else f"; vs the strongest in the grid: **{r['verdict_strongest']}**")
            lines += [f"**{r['model']}**, guidance {r['setting']}, {r['metric']} (n={r['n_samples']}): "
                      f"**{r['verdict']}**{vs}", ""]
            head = f"| NFE | A: {r['ran'][0]}{sa} | B: {r['ran'][1]}{sb} | A - B (paired 95% CI) | verdict |"
            fair = claim.margin is None and claim.baseline_model is None  # with the strongest solver's columns
            if fair:
                lines += [head + " strongest other S | A - S (paired 95% CI) | vs S |", "|---" * 8 + "|"]
            else:
                lines += [head, "|---|---|---|---|---|"]
            for n, a, b, v, d in r["rows"]:
                row = f"| {n} | {_num(a)} | {_num(b)} | {_diff(d)} | {v} |"
                if fair:
                    top = strong.get(n)
                    row += (" - | - | - |" if top is None else
                            f" {_who(top[0], r)}: {_num(top[0])} | {_diff(top[2])} | {top[1]} |")
                lines.append(row)
            lines.append("")
    if previous is not None:
        note = changes(results, previous)
        lines += ["## Verdicts changed since the previous ledger", "",
                  *(note or ["_None: every verdict is the previous ledger's._"]), ""]
    return "\n".join(lines)


def _who(row: Any, r: dict[str, Any]) -> str:
    """A strongest row's solver (and its schedule, for schedule claims)."""
    return f"`{row.solver}`" + (f" ({row.schedule})" if "schedules" in r else "")
