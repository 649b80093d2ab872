"""The answer per model and budget: which solver and time-step schedule to use with at most N network evaluations.

For a model, a metric and an NFE budget N, the candidates are every (solver, schedule, NFE) cell of the results with
NFE <= N ("best at most N NFE"), within one setting (guidance scale, seed and protocol: results measured under
different protocols are never compared). The *best* is the candidate with the best value (lowest, or highest for a
higher-is-better metric). Every other candidate is compared with it by the leaderboard's rule
(:func:`dpmbench.report.stats.separated`): all cells of a setting start from the same x_T and their metric's
bootstrap replicates use the same resampling indices, so the replicate-wise difference of two cells is a paired
bootstrap of the difference; a candidate whose paired 95% CI of the difference to the best includes 0 is **tied**
with it, and all ties are listed (none is picked at random). With no tie the best is a clear winner: the paired CI of
its difference to every other candidate excludes 0 (an intersection-union test, so no multiplicity correction is
needed for that statement). Results without stored replicates (a results.csv read back, or metric files written
before replicates were stored) fall back to the conservative marginal rule: tied unless the two 95% CIs are disjoint.

The value's own CI is the metric file's 95% bootstrap CI over the samples. A cell's cost is its seconds of sampling
per sample (``s_per_sample``: the sample jobs' wall clock summed over shards, divided by the sample count, on the
device named beside it); times are comparable only between cells measured on one device.

The sentence a practitioner can copy names the solver spec, the schedule, the NFE and how to run it in a diffusers
pipeline through :mod:`dpmbench.diffusers` (``scheduler(spec, pipe.scheduler.config, schedule=...)``), or why that is
not possible: solvers whose evaluation times are not known before sampling (adaptive ones, per-sample times) have no
diffusers scheduler (the conditions of :func:`dpmbench.diffusers.refusal`, read here from the solver's flags so that
a report does not import diffusers; a test checks that they agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dpmbench.errors import DpmbenchError, bad_value
from dpmbench.report.claims import PATH_METRICS, QUALITY_METRICS
from dpmbench.report.stats import separated
from dpmbench.report.tables import fmt, fmt_ci, higher_is_better, is_nan

SHOWN_TIES = 3  # ties a table row names (the closest to the best first); `dpmbench recommend` lists every one
BUDGETS = (5, 10, 20)  # the budgets the leaderboard and the site answer for (those in a model's NFE range)
SETTING = ["guidance", "seed", "protocol"]


@dataclass(frozen=True)
class Choice:
    """One candidate cell: solver spec, schedule, NFE, value with its 95% CI, cost, and ``diff``: the paired CI
    (estimate, lo, hi) of its value minus the best's (None: the best itself, or decided by the marginal rule)."""

    solver: str
    schedule: str
    nfe: int
    value: float
    ci: tuple[float, float]
    s_per_sample: float
    device: str | None
    diff: tuple[float, float, float] | None = None
    t_start: float | None = None  # where the run started, where not the schedule's T (a flow model below noise)


@dataclass(frozen=True)
class Answer:
    """The answer for one setting (guidance, seed, protocol label) of a model, metric and budget: ``best`` (None:
    no finite result at NFE <= budget), the ``tied`` candidates (best first among them: by value), ``runner_up``:
    the paired CI of best minus the runner-up where the best is a clear winner, ``paired``: whether the pairs were
    decided on paired replicates (else the marginal rule), ``candidates``: the cells with a finite value compared."""

    model: str
    metric: str
    budget: int
    guidance: str
    seed: int
    label: str
    n_samples: int | None
    best: Choice | None
    tied: tuple[Choice, ...] = ()
    runner_up: tuple[float, float, float] | None = None
    paired: bool = True
    smallest_nfe: int | None = None
    candidates: int = 0


def load_results(path: str | Path) -> pd.DataFrame:
    """The results rows of a results directory (metric files: with their bootstrap replicates, so ties are judged
    on paired differences), a reports directory holding ``results.csv``, or a ``results.csv`` file (no replicates:
    the marginal rule)."""
    from dpmbench.report.merge import merge_runs
    from dpmbench.report.tables import collect

    p = Path(path)
    if p.is_dir():
        df = merge_runs([collect(p)])
        if not df.empty or not (p / "results.csv").is_file():
            return df
        p = p / "results.csv"
    if not p.is_file():
        raise DpmbenchError(f"invalid RESULTS {str(p)!r}: no such file or directory; allowed: a results directory "
                            "or a results.csv")
    try:
        df = pd.read_csv(p, dtype={"guidance": str, "solver": str, "schedule": str, "model": str, "metric": str,
                                   "device": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise DpmbenchError(f"invalid RESULTS {str(p)!r}: not a results CSV") from None
    need = ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low", "ci_high"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DpmbenchError(f"invalid RESULTS {str(p)!r}: missing columns {', '.join(missing)}")
    key = ["model", "solver", "nfe", "schedule", "guidance", "metric", *(["seed"] if "seed" in df.columns else [])]
    if df.duplicated(key).any():
        raise DpmbenchError(f"invalid RESULTS {str(p)!r}: duplicated cells (results of several protocols); give the "
                            "results directories instead")
    for c in ("value", "ci_low", "ci_high", "s_per_sample"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "s_per_sample" not in df.columns and {"wall_s", "n_samples"} <= set(df.columns):  # written before it was
        df["s_per_sample"] = pd.to_numeric(df["wall_s"], errors="coerce") / pd.to_numeric(df["n_samples"],
                                                                                           errors="coerce")
    defaults = {"seed": 0, "protocol": "", "protocol_label": "", "n_samples": None, "s_per_sample": math.nan,
                "device": None}
    return df.assign(**{c: v for c, v in defaults.items() if c not in df.columns})


def default_metric(df: pd.DataFrame, model: str) -> str:
    """The metric a model's answer is given on when none is named: the first of the claims' quality metrics it has
    (``sw2_true``, ``fdd``, ``fid``: distances that see the whole distribution), else of the path metrics
    (``rmse_exact``, ``mse_ref``), else its first metric in name order."""
    have = set(df.loc[df["model"] == model, "metric"])
    return next((m for m in (*QUALITY_METRICS, *PATH_METRICS) if m in have), min(have) if have else "")


def _choice(r: Any, diff: tuple[float, float, float] | None = None) -> Choice:
    device = getattr(r, "device", None)
    per = getattr(r, "s_per_sample", math.nan)
    t_start = getattr(r, "t_start", None)
    return Choice(str(r.solver), str(r.schedule), int(r.nfe), float(r.value), (float(r.ci_low), float(r.ci_high)),
                  math.nan if is_nan(per) else float(per), None if is_nan(device) else str(device), diff,
                  None if is_nan(t_start) else float(t_start))


def _answer(g: pd.DataFrame, model: str, metric: str, budget: int) -> Answer:
    """The answer of one setting's rows ``g`` (one model, metric, guidance, seed, protocol)."""
    first = g.iloc[0]
    n = first["n_samples"] if "n_samples" in g.columns else None
    base = {"model": model, "metric": metric, "budget": budget, "guidance": str(first["guidance"]),
            "seed": int(first["seed"]), "label": str(first.get("protocol_label", "") or ""),
            "n_samples": None if is_nan(n) else int(n), "smallest_nfe": int(g["nfe"].min())}
    rows = [r for r in g[g["nfe"] <= budget].itertuples() if not is_nan(r.value) and math.isfinite(float(r.value))]
    if not rows:
        return Answer(**base, best=None)
    sign = -1.0 if higher_is_better(metric) else 1.0
    rows.sort(key=lambda r: (sign * float(r.value), int(r.nfe), str(r.solver), str(r.schedule)))
    best, tied, paired, runner = rows[0], [], True, None
    for r in rows[1:]:
        sep, d = separated(r, best)
        paired &= d is not None
        if not sep:
            tied.append(_choice(r, d))
    if not tied and len(rows) > 1:
        _, runner = separated(best, rows[1])
    return Answer(**base, best=_choice(best), tied=tuple(tied), runner_up=runner, paired=paired,
                  candidates=len(rows))


def recommend(df: pd.DataFrame, model: str, nfe: int, metric: str | None = None) -> list[Answer]:
    """The answers for ``model`` at the budget ``nfe`` on ``metric`` (default :func:`default_metric`): one per
    setting (guidance, seed, protocol) of the results. Bad input is a one-line error naming the allowed values: an
    unknown model or metric, or a budget below every NFE of the model; a setting whose NFEs all exceed the budget
    gets an answer without ``best``."""
    models = sorted(set(df["model"])) if not df.empty else []
    if model not in models:
        raise bad_value("--model", model, models or "a model of the results (these results are empty)")
    d = df[df["model"] == model]
    metrics = sorted(set(d["metric"]))
    metric = metric or default_metric(df, model)
    if metric not in metrics:
        raise bad_value("--metric", metric, metrics)
    d = d[d["metric"] == metric]
    nfes = sorted(int(n) for n in d["nfe"].unique())
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < nfes[0]:
        raise DpmbenchError(f"invalid --nfe {nfe!r}: model {model!r} has no {metric} result at NFE <= {nfe}; "
                            f"allowed: an integer >= {nfes[0]} (its NFEs: {', '.join(map(str, nfes))})")
    d = d.assign(**{c: v for c, v in {"seed": 0, "protocol": "", "protocol_label": ""}.items() if c not in d.columns})
    return [_answer(g, model, metric, nfe) for _, g in d.groupby(SETTING, sort=True, dropna=False)]


# -- words ----------------------------------------------------------------------------------------------------
def diffusers_line(spec: str, schedule: str, nfe: int, guidance: str = "none", t_start: float | None = None) -> str:
    """How to run ``spec`` on ``schedule`` with ``nfe`` evaluations (``t_start``: where the run started, if not at
    the schedule's T) in a diffusers pipeline (``dpmbench.diffusers``), or why there is no diffusers equivalent (the
    conditions of :func:`dpmbench.diffusers.refusal`)."""
    from dpmbench.solvers.registry import get_solver

    try:
        sol = get_solver(spec)
    except DpmbenchError:
        return f"no diffusers line: solver {spec!r} is not registered in this installation"
    if sol.adaptive:
        return ("no diffusers equivalent: the solver is adaptive (its steps depend on error estimates of the "
                "samples, so scheduler.timesteps cannot be listed before sampling)")
    if not sol.times_known:
        return ("no diffusers equivalent: the solver evaluates each sample at its own time chosen from the sample, "
                "so scheduler.timesteps cannot be listed before sampling")
    model = (f", t_start={t_start!r}" if t_start is not None else "") + (
        ", model=MODEL" if sol.needs_prepare else "")  # prepare computes statistics from the network
    scale = "" if guidance in ("none", "", "nan") else f", guidance_scale={guidance}"
    return (f"pipe.scheduler = dpmbench.diffusers.scheduler({spec!r}, pipe.scheduler.config, schedule={schedule!r}"
            f"{model}); pipe(..., num_inference_steps={nfe}{scale})")


def _cost(c: Choice) -> str:
    if is_nan(c.s_per_sample):
        return "time unrecorded"
    return f"{fmt(c.s_per_sample)} s/sample" + (f" on {c.device}" if c.device else "")


def _diff(d: tuple[float, float, float] | None) -> str:
    return "marginal 95% CIs overlap" if d is None else f"difference {d[0]:+.3g} [{d[1]:+.3g}, {d[2]:+.3g}]"


def cell_text(c: Choice) -> str:
    """``solver (schedule, NFE n): value [lo, hi]``."""
    return f"{c.solver} ({c.schedule}, NFE {c.nfe}): {fmt(c.value)}{fmt_ci(*c.ci)}"


def sentence(a: Answer) -> str:
    """The one sentence of an answer a practitioner can copy (solver spec, schedule, NFE, the diffusers line)."""
    where = f"{a.model}" + ("" if a.guidance == "none" else f" at guidance {a.guidance}")
    if a.best is None:
        return (f"{where}: no {a.metric} result at NFE <= {a.budget}; the smallest NFE in the results is "
                f"{a.smallest_nfe}.")
    b = a.best
    ties = "" if not a.tied else (f", statistically tied with {len(a.tied)} other cell"
                                  f"{'s' if len(a.tied) > 1 else ''}")
    line = diffusers_line(b.solver, b.schedule, b.nfe, a.guidance, b.t_start)
    if line.startswith("pipe."):
        line = f"`{line}`" + (" (MODEL: the dpmbench model of the pipeline's network, for the solver's prepare step)"
                              if "model=MODEL" in line else "")
    return (f"For {where} with at most {a.budget} NFE, use solver `{b.solver}` with the `{b.schedule}` schedule at "
            f"NFE {b.nfe} ({a.metric} {fmt(b.value)}{fmt_ci(*b.ci)}{ties}); in diffusers: {line}.")


def answer_text(a: Answer) -> str:
    """The plain-text answer ``dpmbench recommend`` prints: the setting, the best with its CI and cost, the ties (or
    the paired CI to the runner-up), and the sentence."""
    lower = "higher" if higher_is_better(a.metric) else "lower"
    rule = ("paired bootstrap of the difference" if a.paired else
            "marginal 95% CIs (no bootstrap replicates in these results: give the results directory for the "
            "paired rule)")
    head = (f"{a.model} · guidance {a.guidance} · seed {a.seed}" + (f" · {a.label}" if a.label else "")
            + f" · {a.metric} ({lower} is better) · NFE <= {a.budget}"
            + (f" · n = {a.n_samples}" if a.n_samples else ""))
    lines = [head]
    if a.best is None:
        return "\n".join([*lines, sentence(a)])
    lines.append(f"best: {cell_text(a.best)} · {_cost(a.best)}")
    if a.tied:
        lines.append(f"tied with the best ({len(a.tied)} of {a.candidates - 1} other cells; the 95% CI of the "
                     f"difference includes 0, by the {rule}):")
        lines += [f"  {cell_text(c)} · {_cost(c)} · {_diff(c.diff)}" for c in a.tied]
    elif a.candidates == 1:
        lines.append(f"the only cell with a finite {a.metric} at NFE <= {a.budget}: nothing to compare it with")
    else:
        runner = "" if a.runner_up is None else f"; best minus the runner-up: {_diff(a.runner_up)}"
        lines.append(f"clear winner: separated from each of the {a.candidates - 1} other cells by the {rule}{runner}")
    lines.append(sentence(a))
    return "\n".join(lines)


def budgets(df: pd.DataFrame, model: str, metric: str) -> list[int]:
    """The budgets the reports answer for: those of :data:`BUDGETS` within the range of the model's NFEs on
    ``metric`` (a budget of 5 with NFEs 4, 6, ...: the best at NFE 4), else its smallest and largest NFE."""
    nfes = sorted(int(n) for n in df.loc[(df["model"] == model) & (df["metric"] == metric), "nfe"].unique())
    present = [b for b in BUDGETS if nfes and nfes[0] <= b <= nfes[-1]]
    return (present or sorted({nfes[0], nfes[-1]})) if nfes else []


def table_answers(df: pd.DataFrame) -> list[Answer]:
    """The answers the leaderboard and the site show: per model (on its default metric), budget and setting."""
    out: list[Answer] = []
    for model in dict.fromkeys(df["model"]):
        metric = default_metric(df, model)
        for n in budgets(df, model, metric):
            out += recommend(df, model, n, metric)
    return out


RULE = ("For each model (on its default metric: the first of sw2_true, fdd, fid, rmse_exact, mse_ref it has) and "
        "NFE budget N, the best (solver, schedule, NFE) cell with at most N NFE; every other such cell whose paired "
        "95% bootstrap CI of the difference to the best includes 0 is tied with it (same x_T, same resampling "
        "indices; the leaderboard's rule): their count and the closest ones are named. Brackets: the value's 95% "
        "bootstrap CI. s/sample: seconds of sampling per sample in its sample jobs (comparable on one device only). "
        "`dpmbench recommend --model M --nfe N RESULTS` prints the answer, every tie and the line to use it in "
        "diffusers.")


def ties_text(a: Answer, quote: str = "") -> str:
    """The ties of a table row: how many, the :data:`SHOWN_TIES` closest to the best, and where the rest are."""
    if not a.tied:
        return "none: clear winner" if a.candidates > 1 else "none: the only cell"
    shown = "; ".join(f"{quote}{c.solver}{quote} ({c.schedule}, NFE {c.nfe})" for c in a.tied[:SHOWN_TIES])
    rest = len(a.tied) - SHOWN_TIES
    more = f"; and {rest} more (dpmbench recommend --model {a.model} --nfe {a.budget} lists all)" if rest > 0 else ""
    return f"{len(a.tied)}: {shown}{more}"


def recommendation_markdown(df: pd.DataFrame) -> str:
    """The leaderboard's "Recommendation" section: one row per model, setting and budget."""
    lines = ["## Recommendation", "", RULE, ""]
    answers = table_answers(df) if not df.empty else []
    if not answers:
        return "\n".join([*lines, "_No results._", ""])
    lines += ["| model | guidance | metric | NFE budget | use | value [95% CI] | s/sample | tied with |",
              "|---|---|---|---|---|---|---|---|"]
    for a in answers:
        g = a.guidance + (f", seed {a.seed}" if df["seed"].nunique() > 1 else "") + (f", {a.label}" if a.label else "")
        if a.best is None:
            lines.append(f"| {a.model} | {g} | {a.metric} | <= {a.budget} | no result at NFE <= {a.budget} | | | |")
            continue
        b = a.best
        ties = ties_text(a, "`")
        per = "" if is_nan(b.s_per_sample) else fmt(b.s_per_sample)
        lines.append(f"| {a.model} | {g} | {a.metric} | <= {a.budget} | `{b.solver}` ({b.schedule}, NFE {b.nfe}) | "
                     f"{fmt(b.value)}{fmt_ci(*b.ci)} | {per} | {ties} |")
    return "\n".join([*lines, ""])


__all__ = ["Answer", "Choice", "answer_text", "budgets", "default_metric", "diffusers_line", "load_results",
           "recommend", "recommendation_markdown", "sentence", "table_answers", "ties_text"]
