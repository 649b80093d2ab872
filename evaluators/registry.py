"""The metric registry: every metric takes the samples, their metadata and (optionally) a reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError, bad_value
from evaluators.bootstrap import bootstrap_ci
from evaluators.oracle import frechet_to, rmse


@dataclass
class Context:
    """What a metric sees: samples ``x``, their metadata (model, guidance, labels, ...) and a reference."""

    x: np.ndarray
    meta: dict[str, Any]
    reference: np.ndarray | None = None

    def require_reference(self, metric: str) -> np.ndarray:
        """The reference array, or a one-line error naming the metric that needs it."""
        if self.reference is None:
            raise DpmbenchError(f"invalid metrics: {metric!r} needs --reference (the exact solutions)")
        if self.reference.shape[0] != self.x.shape[0]:
            raise DpmbenchError(
                f"invalid reference: {self.reference.shape[0]} samples for {self.x.shape[0]} samples"
            )
        return self.reference


@dataclass(frozen=True)
class Metric:
    """A metric: ``stat(ctx, idx)`` evaluated on the samples selected by ``idx`` (None: all)."""

    stat: Callable[[Context, np.ndarray | None], float]
    doc: str
    lower_is_better: bool = True
    deterministic_only: bool = False  # meaningless for samples of stochastic solvers (skipped for them)


def _rmse_exact(ctx: Context, idx: np.ndarray | None) -> float:
    return rmse(ctx.x, ctx.require_reference("rmse_exact"), idx)


def _guidance(meta: dict[str, Any]) -> float | None:
    g = meta.get("guidance")
    return None if g is None or (isinstance(g, float) and math.isnan(g)) else float(g)


def _fd_target(ctx: Context) -> tuple[np.ndarray, np.ndarray, str]:
    cached = ctx.meta.get("_fd_target")
    if cached is not None:
        return cached
    g = _guidance(ctx.meta)
    if ctx.meta.get("target_moments") is not None:  # stored with the reference by `dpmbench reference`
        mu, cov = ctx.meta["target_moments"]
        what = "data distribution" if g is None or g == 1.0 else "exact guided ODE solutions"
        ctx.meta["_fd_target"] = (np.asarray(mu, np.float64), np.asarray(cov, np.float64), what)
        return ctx.meta["_fd_target"]
    labels = ctx.meta.get("labels")
    labels = None if labels is None or len(labels) == 0 else np.asarray(labels)
    if g is None or g == 1.0:
        from dpmbench.models.registry import load_model

        model = load_model(str(ctx.meta["model"]))
        if not hasattr(model, "data_moments"):
            raise DpmbenchError(f"invalid metrics: 'fd_true' needs an oracle model, not {ctx.meta['model']!r}")
        t_end = ctx.meta.get("t_end")
        mu, cov = model.data_moments(None if labels is None else labels, t=None if t_end is None else float(t_end))
        target = (mu.numpy(), cov.numpy(), "data distribution" + (" (class-conditional)" if labels is not None else ""))
    else:  # guided sampling: the target is the pushforward of the prior by the exact guided ODE
        ref = np.asarray(ctx.require_reference("fd_true (with guidance != 1)"), np.float64).reshape(len(ctx.x), -1)
        target = (ref.mean(0), np.atleast_2d(np.cov(ref, rowvar=False)), "exact guided ODE solutions")
    ctx.meta["_fd_target"] = target
    return target


def _fd_true(ctx: Context, idx: np.ndarray | None) -> float:
    mu, cov, _ = _fd_target(ctx)
    return frechet_to(ctx.x, mu, cov, idx)


METRICS: dict[str, Metric] = {
    "rmse_exact": Metric(_rmse_exact, "RMSE to the exact probability-flow ODE solution from the same x_T "
                         "(oracle models; needs the reference file; not computed for stochastic solvers, whose "
                         "samples do not follow the ODE)", deterministic_only=True),
    "fd_true": Metric(_fd_true, "Frechet distance of the samples' moments to the true target distribution "
                      "(the data distribution; under guidance != 1 the exact guided ODE solutions)"),
}


def list_metrics() -> list[str]:
    """Names of the available metrics."""
    return list(METRICS)


def evaluate(
    names: list[str], x: np.ndarray, meta: dict[str, Any], reference: np.ndarray | None = None,
    bootstraps: int = 200, seed: int = 0,
) -> tuple[dict[str, float | None], dict[str, list[float | None]], dict[str, Any]]:
    """Compute ``names`` on samples ``x``: values, 95% bootstrap CIs (paired: indices depend on n only),
    and info (``status``: ``ok`` or ``diverged`` when a sample is not finite; the FD target)."""
    for name in names:
        if name not in METRICS:
            raise bad_value("metric", name, list_metrics())
    ctx = Context(np.asarray(x), dict(meta), None if reference is None else np.asarray(reference))
    info: dict[str, Any] = {"status": "ok"}
    if bool(meta.get("stochastic", False)):  # samples of an SDE solver: no pathwise comparison with the ODE
        skipped = [n for n in names if METRICS[n].deterministic_only]
        names = [n for n in names if not METRICS[n].deterministic_only]
        if skipped:
            info["not_applicable"] = skipped
    if not np.isfinite(ctx.x).all():
        info["status"] = "diverged"
        return {n: None for n in names}, {n: [None, None] for n in names}, info
    values: dict[str, float | None] = {}
    cis: dict[str, list[float | None]] = {}
    n = len(ctx.x)
    for name in names:
        metric = METRICS[name]
        values[name] = metric.stat(ctx, None)
        lo, hi = bootstrap_ci(lambda idx, m=metric: m.stat(ctx, idx), n, bootstraps, seed=seed,
                              estimate=values[name])
        cis[name] = [lo, hi]
    if "_fd_target" in ctx.meta:
        info["fd_target"] = ctx.meta["_fd_target"][2]
    return values, cis, info
