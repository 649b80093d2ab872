"""Metrics against the exact target of an oracle model: RMSE to the exact ODE solution, Frechet distance, sliced
Wasserstein distance and log-likelihood under the true distribution, MSE to a reference run, and the model error of a
trained network."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError, bad_value
from evaluators.context import Context, guidance_of, labels_of, t_end_of
from evaluators.frechet import psd_sqrt
from evaluators.oracle import (
    frechet_to,
    mixture_at,
    mixture_logpdf,
    mixture_sample,
    rmse,
    sliced_w2,
    sliced_w2_setup,
)
from evaluators.oracle import (
    mse_ref as mse_to_reference,
)


def rmse_exact(ctx: Context, idx: np.ndarray | None) -> float:
    return rmse(ctx.x, ctx.require_reference("rmse_exact"), idx)


def _fd_target(ctx: Context) -> tuple[np.ndarray, np.ndarray, str]:
    return ctx.cached("fd_target", lambda: _compute_fd_target(ctx))


def _compute_fd_target(ctx: Context) -> tuple[np.ndarray, np.ndarray, str]:
    g = guidance_of(ctx.meta)
    if ctx.meta.get("target_moments") is not None:  # stored with the reference by `dpmbench reference`
        mu, cov = ctx.meta["target_moments"]
        what = "data distribution" if g is None or g == 1.0 else "exact guided ODE solutions"
        return np.asarray(mu, np.float64), np.asarray(cov, np.float64), what
    if g is None or g == 1.0:
        labels, t_end = labels_of(ctx), ctx.meta.get("t_end")
        mu, cov = _oracle(ctx, "fd_true").data_moments(labels, t=None if t_end is None else float(t_end))
        return mu.numpy(), cov.numpy(), "data distribution" + (" (class-conditional)" if labels is not None else "")
    # guided sampling: the target is the pushforward of the prior by the exact guided ODE
    ref = np.asarray(ctx.require_reference("fd_true (with guidance != 1)"), np.float64).reshape(len(ctx.x), -1)
    return ref.mean(0), np.atleast_2d(np.cov(ref, rowvar=False)), "exact guided ODE solutions"


def fd_true(ctx: Context, idx: np.ndarray | None) -> float:
    mu, cov, _ = _fd_target(ctx)
    return frechet_to(ctx.x, mu, cov, idx, cov_sqrt=ctx.cached("fd_target_sqrt", lambda: psd_sqrt(cov)))


def mse_ref(ctx: Context, idx: np.ndarray | None) -> float:
    return mse_to_reference(ctx.x, ctx.require_reference("mse_ref", exact=False), idx)


def _oracle(ctx: Context, metric: str) -> Any:
    from dpmbench.models.registry import load_model

    model = load_model(str(ctx.meta["model"]))
    if not hasattr(model, "data_moments"):
        raise DpmbenchError(f"invalid metrics: {metric!r} needs an oracle model, not {ctx.meta['model']!r}")
    return model


def _true_mixture(ctx: Context, metric: str) -> dict[str, np.ndarray]:
    return ctx.cached("true_mixture", lambda: mixture_at(_oracle(ctx, metric), labels_of(ctx), t_end_of(ctx)))


def _sw2_target(ctx: Context) -> np.ndarray:
    def compute() -> np.ndarray:
        g = guidance_of(ctx.meta)
        if g is None or g == 1.0:  # p_{t_end}: a large sample of the true mixture
            m = int(min(max(10 * len(ctx.x), 20000), 100000))
            return mixture_sample(_true_mixture(ctx, "sw2_true"), m, seed=12345)
        return ctx.require_reference("sw2_true (with guidance != 1)")  # exact guided ODE solutions
    return ctx.cached("sw2_target", compute)


def sw2_true(ctx: Context, idx: np.ndarray | None) -> float:
    x = ctx.x.reshape(len(ctx.x), -1)
    setup = ctx.cached("sw2_setup", lambda: sliced_w2_setup(_sw2_target(ctx), len(x), x.shape[1],
                                                             int(ctx.opt("sw2_projections"))))
    return sliced_w2(x, idx=idx, setup=setup)


def loglik_true(ctx: Context, idx: np.ndarray | None) -> float:
    ll = ctx.cached("loglik", lambda: mixture_logpdf(_true_mixture(ctx, "loglik_true"), ctx.x))
    return float(ll.mean() if idx is None else ll[idx].mean())


def model_error(ctx: Context, idx: np.ndarray | None) -> float:
    ref = ctx.require_reference("model_error", exact=False)
    if str(ctx.meta.get("reference_solver", "exact")) == "exact":
        raise DpmbenchError("invalid --reference for 'model_error': it holds exact solutions (an oracle model has no "
                            "model error); give the network's high-NFE reference run")
    return rmse(ref, ctx.cached("model_error_exact", lambda: _oracle_solution(ctx, ref)), idx)


@functools.lru_cache(maxsize=4)
def _oracle_for(model: str, name: str) -> Any:
    """The oracle ``name`` under the network ``model``'s noise schedule (loaded once per process: every cell of a
    metrics job compares with the same one)."""
    from dpmbench.models.registry import load_model

    return load_model(name, schedule=load_model(model).schedule)


def _oracle_solution(ctx: Context, ref: np.ndarray) -> np.ndarray:
    """The exact probability-flow ODE solution of the data's oracle model (option ``model_error_oracle``) under the
    network's noise schedule, from the network's x_T (same seed and samples: ``prior_noise`` depends only on the
    seed, the sample index and the shape), with the same labels and guidance; cached on disk by the oracle."""
    import torch

    from dpmbench.models.base import guided
    from dpmbench.models.registry import ORACLES

    name = str(ctx.opt("model_error_oracle"))
    if name not in ORACLES:
        raise bad_value("option model_error_oracle", name, list(ORACLES))
    oracle = _oracle_for(str(ctx.meta["model"]), name)
    if tuple(oracle.shape) != tuple(ref.shape[1:]):
        raise DpmbenchError(f"invalid metrics: 'model_error' compares with {name!r}, whose samples have shape "
                            f"{tuple(oracle.shape)}, not {tuple(ref.shape[1:])}")
    start = int(ctx.meta.get("start", 0))
    x_T = oracle.prior(len(ref), seed=int(ctx.meta["seed"]), dtype=torch.float64, start=start)
    labels = labels_of(ctx)
    cond = None if labels is None else torch.as_tensor(labels.reshape(-1), dtype=torch.long)
    t_start = ctx.meta.get("t_start")  # where the samples' (and their reference run's) x_T started
    exact = guided(oracle, guidance_of(ctx.meta)).exact_solution(
        x_T, t_end=t_end_of(ctx), t_start=None if t_start is None else float(t_start), cond=cond)
    return exact.numpy()
