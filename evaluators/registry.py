"""The metric registry: every metric takes the samples, their metadata and (optionally) a reference."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpmbench.errors import DpmbenchError, bad_value
from evaluators.bootstrap import bootstrap_replicates, percentile_ci
from evaluators.frechet import psd_sqrt
from evaluators.oracle import (
    frechet_to,
    mixture_at,
    mixture_logpdf,
    mixture_sample,
    mse_ref,
    per_sample_mse,
    rmse,
    sliced_w2,
    sliced_w2_setup,
)

DEFAULT_OPTIONS: dict[str, Any] = {
    "fid_backend": "torch-fidelity",   # or "clean-fid"
    "cleanfid_mode": "clean",          # or "legacy_tensorflow" (clean-fid backend)
    "fid_stats": None,                 # reference stats: a reference_stats/manifest.yaml name or an .npz path
    "kid_reference": None,             # .npz of reference features (key "feats" or "features") for kid
    "reference_images": None,          # .npz of reference images (key "x"): features computed once, cached
    "inception_weights": None,         # local override (else env DPMBENCH_INCEPTION_WEIGHTS / _CLEANFID_INCEPTION)
    "clip_model": "ViT-L-14",
    "clip_pretrained": "openai",
    "clip_weights": None,              # local override (else env DPMBENCH_CLIP_WEIGHTS)
    "batch_size": 64,
    "device": "cpu",
    "sw2_projections": 256,
    "model_error_oracle": "digits-empirical",  # the exact model of the data a trained network learned (model_error)
}


@dataclass
class Context:
    """What a metric sees: samples ``x``, their metadata (model, guidance, labels, ...) and a reference."""

    x: np.ndarray
    meta: dict[str, Any]
    reference: np.ndarray | None = None
    options: dict[str, Any] | None = None

    def opt(self, key: str) -> Any:
        """An evaluation option (``DEFAULT_OPTIONS`` overridden by the caller's)."""
        return (self.options or {}).get(key, DEFAULT_OPTIONS.get(key))

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """A per-evaluation cache (features, targets) shared by the metrics and their bootstrap replicates."""
        store = self.meta.setdefault("_cache", {})
        if key not in store:
            store[key] = compute()
        return store[key]

    def require_reference(self, metric: str, exact: bool = True) -> np.ndarray:
        """The reference array, or a one-line error naming the metric that needs it (``exact``: the reference
        must hold exact ODE solutions, not a high-NFE solver run)."""
        if self.reference is None:
            what = "the exact solutions" if exact else "a reference run"
            raise DpmbenchError(f"invalid metrics: {metric!r} needs --reference ({what})")
        solver = str(self.meta.get("reference_solver", "exact"))
        if exact and solver != "exact":
            raise DpmbenchError(f"invalid --reference for {metric!r}: it holds a {solver!r} run, not exact solutions; "
                                "use mse_ref with solver references")
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
    max_bootstraps: int | None = None  # cap for costly statistics (2048-D FID, KID)
    deterministic_only: bool = False  # meaningless for samples of stochastic solvers (skipped for them)
    needs_labels: bool = False  # class-conditional samples only (skipped for unconditional ones)


def _rmse_exact(ctx: Context, idx: np.ndarray | None) -> float:
    return rmse(ctx.x, ctx.require_reference("rmse_exact"), idx)


def _guidance(meta: dict[str, Any]) -> float | None:
    g = meta.get("guidance")
    return None if g is None or (isinstance(g, float) and math.isnan(g)) else float(g)


def _fd_target(ctx: Context) -> tuple[np.ndarray, np.ndarray, str]:
    return ctx.cached("fd_target", lambda: _compute_fd_target(ctx))


def _compute_fd_target(ctx: Context) -> tuple[np.ndarray, np.ndarray, str]:
    g = _guidance(ctx.meta)
    if ctx.meta.get("target_moments") is not None:  # stored with the reference by `dpmbench reference`
        mu, cov = ctx.meta["target_moments"]
        what = "data distribution" if g is None or g == 1.0 else "exact guided ODE solutions"
        return np.asarray(mu, np.float64), np.asarray(cov, np.float64), what
    if g is None or g == 1.0:
        labels, t_end = _labels(ctx), ctx.meta.get("t_end")
        mu, cov = _oracle(ctx, "fd_true").data_moments(labels, t=None if t_end is None else float(t_end))
        return mu.numpy(), cov.numpy(), "data distribution" + (" (class-conditional)" if labels is not None else "")
    # guided sampling: the target is the pushforward of the prior by the exact guided ODE
    ref = np.asarray(ctx.require_reference("fd_true (with guidance != 1)"), np.float64).reshape(len(ctx.x), -1)
    return ref.mean(0), np.atleast_2d(np.cov(ref, rowvar=False)), "exact guided ODE solutions"


def _fd_true(ctx: Context, idx: np.ndarray | None) -> float:
    mu, cov, _ = _fd_target(ctx)
    return frechet_to(ctx.x, mu, cov, idx, cov_sqrt=ctx.cached("fd_target_sqrt", lambda: psd_sqrt(cov)))


def _mse_ref(ctx: Context, idx: np.ndarray | None) -> float:
    return mse_ref(ctx.x, ctx.require_reference("mse_ref", exact=False), idx)


def _oracle(ctx: Context, metric: str) -> Any:
    from dpmbench.models.registry import load_model

    model = load_model(str(ctx.meta["model"]))
    if not hasattr(model, "data_moments"):
        raise DpmbenchError(f"invalid metrics: {metric!r} needs an oracle model, not {ctx.meta['model']!r}")
    return model


def _labels(ctx: Context) -> np.ndarray | None:
    labels = ctx.meta.get("labels")
    return None if labels is None or np.size(labels) == 0 else np.asarray(labels)


def _t_end(ctx: Context) -> float:
    t = ctx.meta.get("t_end")
    if t is None:
        raise DpmbenchError("invalid samples: metadata 't_end' is missing (needed for the true distribution)")
    return float(t)


def _true_mixture(ctx: Context, metric: str) -> dict[str, np.ndarray]:
    return ctx.cached("true_mixture", lambda: mixture_at(_oracle(ctx, metric), _labels(ctx), _t_end(ctx)))


def _sw2_target(ctx: Context) -> np.ndarray:
    def compute() -> np.ndarray:
        g = _guidance(ctx.meta)
        if g is None or g == 1.0:  # p_{t_end}: a large sample of the true mixture
            m = int(min(max(10 * len(ctx.x), 20000), 100000))
            return mixture_sample(_true_mixture(ctx, "sw2_true"), m, seed=12345)
        return ctx.require_reference("sw2_true (with guidance != 1)")  # exact guided ODE solutions
    return ctx.cached("sw2_target", compute)


def _sw2_true(ctx: Context, idx: np.ndarray | None) -> float:
    x = ctx.x.reshape(len(ctx.x), -1)
    setup = ctx.cached("sw2_setup", lambda: sliced_w2_setup(_sw2_target(ctx), len(x), x.shape[1],
                                                             int(ctx.opt("sw2_projections"))))
    return sliced_w2(x, idx=idx, setup=setup)


def _loglik_true(ctx: Context, idx: np.ndarray | None) -> float:
    ll = ctx.cached("loglik", lambda: mixture_logpdf(_true_mixture(ctx, "loglik_true"), ctx.x))
    return float(ll.mean() if idx is None else ll[idx].mean())


# -- image metrics ----------------------------------------------------------------------------------------
def _images(ctx: Context) -> Any:
    from evaluators.images import to_uint8

    if "images" in ctx.meta:  # latent models: the decoded images (x holds the latents)
        return ctx.cached("uint8", lambda: to_uint8(np.asarray(ctx.meta["images"], dtype=np.uint8)))
    return ctx.cached("uint8", lambda: to_uint8(ctx.x))


def _backend(ctx: Context) -> str:
    from evaluators.images import BACKENDS

    b = str(ctx.opt("fid_backend"))
    if b not in BACKENDS:
        raise bad_value("fid backend", b, list(BACKENDS))
    return b


def _require_digits(ctx: Context, metric: str) -> None:
    """A one-line error unless the samples are 8x8 digits, the digits CNN's input."""
    from evaluators.images import DIGITS_SHAPE

    if tuple(ctx.x.shape[1:]) != DIGITS_SHAPE:
        raise DpmbenchError(f"invalid metrics: {metric!r} needs 8x8 digits samples (n, 1, 8, 8), "
                            f"not shape {tuple(ctx.x.shape)}")


def _digits_feats(ctx: Context, metric: str) -> tuple[np.ndarray, np.ndarray]:
    from evaluators.images import digits_features, digits_reference_features

    _require_digits(ctx, metric)
    b = _backend(ctx)
    return ctx.cached(f"digits:{b}", lambda: (digits_features(_images(ctx), b), digits_reference_features(b)))


def _frechet_value(ctx: Context, f: np.ndarray, mu2: np.ndarray, s2: np.ndarray, idx: np.ndarray | None,
                   key: str) -> float:
    """The estimate with the backend library's own Frechet formula; bootstrap replicates with ours (they agree
    to ~1e-9 relative, tested), which is safe on singular covariances and faster: the reference covariance's
    square root (``key``: its cache entry) is computed once, so a replicate costs one eigenvalue problem."""
    from evaluators.frechet import frechet_distance, moments, psd_sqrt
    from evaluators.images import feature_moments

    if idx is not None:
        mu1, s1 = moments(f[idx])
        return frechet_distance(mu1, s1, mu2, s2, sqrt2=ctx.cached(key, lambda: psd_sqrt(s2)))
    mu1, s1 = feature_moments(f)
    if _backend(ctx) == "clean-fid":
        from cleanfid.fid import frechet_distance as cf_frechet

        with np.errstate(all="ignore"):
            return float(cf_frechet(mu1, s1, mu2, s2))
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)[KEY_METRIC_FID])


def _fdd(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import feature_moments

    f, ref = _digits_feats(ctx, "fdd")
    mu2, s2 = ctx.cached("digits_ref_moments", lambda: feature_moments(ref))
    return _frechet_value(ctx, f, mu2, s2, idx, "digits_ref_sqrt")


def _kdd(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import KernelBlocks, kernel_distance

    f, ref = _digits_feats(ctx, "kdd")
    if idx is None:
        return kernel_distance(f, ref)
    return ctx.cached("kdd_blocks", lambda: KernelBlocks(f, ref)).mmd2(idx)


def _digits_logits(ctx: Context, metric: str) -> np.ndarray:
    """The shipped digits CNN's logits of the (quantized) samples, shape (n, 10)."""
    from evaluators.images import digits_logits

    _require_digits(ctx, metric)
    return ctx.cached("digits_logits", lambda: digits_logits(_images(ctx)))


def _is_digits(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import ScoreBlocks, inception_score

    logits = _digits_logits(ctx, "is_digits")
    if idx is None:
        return inception_score(logits, None, splits=1)
    return ctx.cached("is_digits_blocks", lambda: ScoreBlocks(logits)).score(idx)


def _cond_acc(ctx: Context, idx: np.ndarray | None) -> float:
    labels = _labels(ctx)
    if labels is None or labels.size != len(ctx.x):
        raise DpmbenchError("invalid metrics: 'cond_acc' needs one class label per sample (class-conditional "
                            "samples: --guidance)")
    hit = _digits_logits(ctx, "cond_acc").argmax(1) == labels.reshape(-1)
    return float(hit.mean() if idx is None else hit[idx].mean())


def _model_error(ctx: Context, idx: np.ndarray | None) -> float:
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
    labels = _labels(ctx)
    cond = None if labels is None else torch.as_tensor(labels.reshape(-1), dtype=torch.long)
    exact = guided(oracle, _guidance(ctx.meta)).exact_solution(x_T, t_end=_t_end(ctx), cond=cond)
    return exact.numpy()


def _inception(ctx: Context) -> dict[str, np.ndarray]:
    from evaluators.images import cleanfid_features, fidelity_features

    def compute() -> dict[str, np.ndarray]:
        bs, dev, w = int(ctx.opt("batch_size")), str(ctx.opt("device")), ctx.opt("inception_weights")
        if _backend(ctx) == "clean-fid":
            return {"2048": cleanfid_features(_images(ctx), str(ctx.opt("cleanfid_mode")), bs, w, dev)}
        return fidelity_features(_images(ctx), features=("2048", "logits_unbiased"), batch_size=bs, weights=w,
                                 device=dev)
    return ctx.cached(f"inception:{_backend(ctx)}:{ctx.opt('cleanfid_mode')}", compute)


def _reference_image_features(ctx: Context) -> np.ndarray:
    """Inception features of the reference images (option reference_images), cached on disk by the file's
    sha256, the backend/mode and the weights: computed once for all solvers."""
    from dpmbench.download import sha256_file
    from evaluators.images import cached_features, cleanfid_features, fidelity_features, to_uint8

    path = str(ctx.opt("reference_images"))

    def compute() -> dict[str, np.ndarray]:
        f = _load_input_npz(path, "reference images")
        if "x" not in f:
            raise DpmbenchError(f"invalid reference images {path!r}: need npz key 'x'")
        images = to_uint8(f["x"])
        bs, dev, w = int(ctx.opt("batch_size")), str(ctx.opt("device")), ctx.opt("inception_weights")
        if _backend(ctx) == "clean-fid":
            return {"2048": cleanfid_features(images, str(ctx.opt("cleanfid_mode")), bs, w, dev)}
        return {"2048": fidelity_features(images, batch_size=bs, weights=w, device=dev)["2048"]}

    weights = ctx.opt("inception_weights")
    key = ("reference-images", sha256_file(path), _backend(ctx), ctx.opt("cleanfid_mode"),
           None if weights is None else sha256_file(weights))
    return ctx.cached("ref_images", lambda: cached_features(key, compute)["2048"])


def _load_input_npz(path: str, what: str) -> dict[str, np.ndarray]:
    """A user-given ``.npz`` (verified if it carries dpmbench's checksum); a missing, truncated or corrupted file
    is a one-line error naming it."""
    from dpmbench.io import load_npz

    try:
        return load_npz(path, what)
    except FileNotFoundError:
        raise DpmbenchError(f"invalid {what} {path!r}: no such file") from None


def _fid(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import feature_moments
    from evaluators.refstats import reference_stats

    spec, images = ctx.opt("fid_stats"), ctx.opt("reference_images")
    if not spec and not images:
        raise DpmbenchError("invalid metrics: 'fid' needs reference statistics (option fid_stats: a name in "
                            "reference_stats/manifest.yaml or an .npz with mu/sigma) or reference_images")
    if spec:
        mu2, s2, what = ctx.cached("fid_stats", lambda: reference_stats(str(spec)))
    else:
        mu2, s2 = ctx.cached("ref_moments", lambda: feature_moments(_reference_image_features(ctx)))
        what = f"images {images}"
    ctx.meta["_fid_reference"] = what
    return _frechet_value(ctx, _inception(ctx)["2048"], mu2, s2, idx, "fid_ref_sqrt")


def _is(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import inception_score

    if _backend(ctx) != "torch-fidelity":
        raise DpmbenchError("invalid metrics: 'is' is computed with torch-fidelity only (fid_backend torch-fidelity)")
    return inception_score(_inception(ctx)["logits_unbiased"], idx)


def _kid(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import KernelBlocks, kernel_distance

    path = ctx.opt("kid_reference")
    if not path and not ctx.opt("reference_images"):
        raise DpmbenchError("invalid metrics: 'kid' needs reference features (option kid_reference: an .npz with "
                            "key 'feats' or 'features', e.g. clean-fid's *_kid.npz) or reference_images")

    def load() -> np.ndarray:
        if not path:
            return _reference_image_features(ctx)
        f = _load_input_npz(path, "kid reference")
        key = "feats" if "feats" in f else "features"
        if key not in f:
            raise DpmbenchError(f"invalid kid reference {path!r}: need npz key 'feats' or 'features'")
        return np.asarray(f[key], np.float64)
    f, ref = _inception(ctx)["2048"], ctx.cached("kid_ref", load)
    if idx is None:
        return kernel_distance(f, ref)
    return ctx.cached("kid_blocks", lambda: KernelBlocks(f, ref)).mmd2(idx)


def _clip_score(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.clip import clip_embeddings, clip_score, load_clip

    def compute() -> tuple[np.ndarray, np.ndarray]:
        prompts = ctx.meta.get("prompts")
        if prompts is None or np.size(prompts) != len(ctx.x):
            raise DpmbenchError("invalid metrics: 'clip_score' needs one prompt per sample (samples key 'prompts')")
        dev = str(ctx.opt("device"))
        model, pre, tok = load_clip(str(ctx.opt("clip_model")), ctx.opt("clip_pretrained"), ctx.opt("clip_weights"),
                                    None, dev)
        return clip_embeddings(model, pre, tok, _images(ctx), [str(p) for p in np.asarray(prompts).reshape(-1)],
                               device=dev)
    im, tx = ctx.cached("clip", compute)
    return clip_score(im, tx, idx)


METRICS: dict[str, Metric] = {
    "rmse_exact": Metric(_rmse_exact, "RMSE to the exact probability-flow ODE solution from the same x_T "
                         "(oracle models; needs the reference file; not computed for stochastic solvers, whose "
                         "samples do not follow the ODE)", deterministic_only=True),
    "fd_true": Metric(_fd_true, "Frechet distance of the samples' moments to the true target distribution "
                      "(the data distribution; under guidance != 1 the exact guided ODE solutions)"),
    "mse_ref": Metric(_mse_ref, "mean squared error (over samples and dimensions, pixel or latent) to a high-NFE "
                      "reference run from the same x_T (`dpmbench reference --solver SPEC --nfe N`); not computed for "
                      "stochastic solvers", deterministic_only=True),
    "sw2_true": Metric(_sw2_true, "sliced 2-Wasserstein distance (256 random directions) to the true distribution "
                       "p_{t_end} (a large sample of it; under guidance != 1 the exact guided ODE solutions)"),
    "loglik_true": Metric(_loglik_true, "mean log-density (nats per sample) of the samples under the true "
                          "p_{t_end} (class-conditional mixture when labels are used)", lower_is_better=False),
    "fdd": Metric(_fdd, "Frechet digits distance: FID's formula on the 64-D features of the shipped digits CNN, "
                  "against the 1,797 digits (digits models; torch-fidelity custom extractor 'digits-cnn')"),
    "kdd": Metric(_kdd, "kernel digits distance: torch-fidelity's KID on the digits-CNN features", max_bootstraps=100),
    "is_digits": Metric(_is_digits, "Inception score's formula exp(E_x KL(p(y|x) || p(y))) on the shipped digits "
                        "CNN's class probabilities, one split over all samples (torch-fidelity's isc); 1..10",
                        lower_is_better=False),
    "cond_acc": Metric(_cond_acc, "share of class-conditional samples the digits CNN assigns to their label "
                       "(the CLIP-score analogue: does the sample follow its condition?); guided samples only",
                       lower_is_better=False, needs_labels=True),
    "model_error": Metric(_model_error, "RMSE between the network's converged ODE solution (its high-NFE reference "
                          "run) and the exact ODE solution of the data's optimal denoiser (option "
                          "model_error_oracle, default digits-empirical) from the same x_T: the floor under which a "
                          "better solver no longer shows in sample quality (trained networks of the digits data)"),
    "fid": Metric(_fid, "Frechet Inception distance to reference statistics (option fid_stats) through "
                  "torch-fidelity or clean-fid (clean / legacy_tensorflow)", max_bootstraps=50),
    "is": Metric(_is, "Inception score (torch-fidelity, 10 splits)", lower_is_better=False, max_bootstraps=50),
    "kid": Metric(_kid, "kernel Inception distance to reference features (option kid_reference)", max_bootstraps=100),
    "clip_score": Metric(_clip_score, "CLIP score 100*max(cos,0) (open_clip, default ViT-L-14/openai), mean over "
                         "prompts", lower_is_better=False),
}


def list_metrics() -> list[str]:
    """Names of the available metrics."""
    return list(METRICS)


def evaluate(
    names: list[str], x: np.ndarray, meta: dict[str, Any], reference: np.ndarray | None = None,
    bootstraps: int = 200, seed: int = 0, options: dict[str, Any] | None = None,
) -> tuple[dict[str, float | None], dict[str, list[float | None]], dict[str, Any]]:
    """Compute ``names`` on samples ``x``: values, 95% bootstrap CIs (paired: indices depend on n only),
    and info (``status``: ``ok`` or ``diverged`` when a sample is not finite; the FD target; per metric the
    number of samples and of bootstrap replicates). ``options`` override ``DEFAULT_OPTIONS``."""
    for key in options or {}:
        if key not in DEFAULT_OPTIONS:
            raise bad_value("evaluation option", key, list(DEFAULT_OPTIONS))
    for name in names:
        if name not in METRICS:
            raise bad_value("metric", name, list_metrics())
    ctx = Context(np.asarray(x), dict(meta), None if reference is None else np.asarray(reference), options)
    info: dict[str, Any] = {"status": "ok"}
    if bool(meta.get("stochastic", False)):  # samples of an SDE solver: no pathwise comparison with the ODE
        skipped = [n for n in names if METRICS[n].deterministic_only]
        names = [n for n in names if not METRICS[n].deterministic_only]
        if skipped:
            info["not_applicable"] = skipped
    if _labels(ctx) is None:  # unconditional samples: no condition to follow
        skipped = [n for n in names if METRICS[n].needs_labels]
        names = [n for n in names if not METRICS[n].needs_labels]
        if skipped:
            info["not_applicable"] = [*info.get("not_applicable", []), *skipped]
    per_sample = {name: summary for name in names
                  if (summary := per_sample_summary(name, ctx.x, ctx.reference)) is not None}
    if per_sample:
        info["per_sample"] = per_sample
    if not np.isfinite(ctx.x).all():
        info["status"] = "diverged"
        return {n: None for n in names}, {n: [None, None] for n in names}, info
    values: dict[str, float | None] = {}
    cis: dict[str, list[float | None]] = {}
    n = len(ctx.x)
    for name in names:
        metric = METRICS[name]
        values[name] = metric.stat(ctx, None)
        reps = bootstraps if metric.max_bootstraps is None else min(bootstraps, metric.max_bootstraps)
        replicates = bootstrap_replicates(lambda idx, m=metric: m.stat(ctx, idx), n, reps, seed=seed)
        lo, hi = percentile_ci(values[name], replicates) if len(replicates) else (float("nan"), float("nan"))
        cis[name] = [lo, hi]
        info.setdefault("bootstraps", {})[name] = reps
        # kept so that a report can compute paired CIs of differences between solvers (same indices: same n,
        # reps and seed); NaN replicates are stored as null
        info.setdefault("bootstrap_values", {})[name] = [float(v) if np.isfinite(v) else None for v in replicates]
    info["bootstrap_seed"] = int(seed)
    if "fd_target" in ctx.meta.get("_cache", {}):
        info["fd_target"] = ctx.meta["_cache"]["fd_target"][2]
    if "_fid_reference" in ctx.meta:
        info["fid_reference"] = ctx.meta["_fid_reference"]
    if any(nm in ("fid", "is", "kid", "fdd", "kdd", "is_digits", "cond_acc") for nm in names):
        from evaluators.images import QUANTIZATION

        info["quantization"] = QUANTIZATION
        info["fid_backend"] = _backend(ctx) + (f"/{ctx.opt('cleanfid_mode')}" if _backend(ctx) == "clean-fid" else "")
    if "clip_score" in names:
        from evaluators.clip import CONVENTION

        info["clip"] = {"model": ctx.opt("clip_model"), "pretrained": ctx.opt("clip_pretrained"),
                        "convention": CONVENTION}
    info["protocol"] = protocol(names, ctx)
    return values, cis, info


# -- per-sample summaries and protocol ----------------------------------------------------------------------
PER_SAMPLE_METRICS = ("rmse_exact", "mse_ref")


def per_sample_summary(name: str, x: np.ndarray, reference: np.ndarray | None) -> dict[str, Any] | None:
    """Median over samples of a per-sample metric (``rmse_exact``: each sample's RMSE to its exact solution;
    ``mse_ref``: its MSE to the reference run) and the share of *diverged* samples: not finite, or an error
    larger than the reference's own root-mean-square magnitude (``threshold``, in the metric's unit), i.e. a
    sample that no longer resembles its target. None for other metrics or without a matching reference."""
    if name not in PER_SAMPLE_METRICS or reference is None or len(reference) != len(x):
        return None
    with np.errstate(all="ignore"):
        err = per_sample_mse(x, reference)
        ref_ms = float(np.mean(np.asarray(reference, np.float64) ** 2))
    if name == "rmse_exact":
        err, threshold = np.sqrt(err), float(np.sqrt(ref_ms))
    else:
        threshold = ref_ms
    err = np.where(np.isfinite(err), err, np.inf)
    median = float(np.median(err))
    return {"median": median if np.isfinite(median) else None,
            "diverged_share": float(np.mean(err > threshold)), "threshold": threshold}


IMAGE_METRICS = ("fid", "is", "kid")


def protocol(names: list[str], ctx: Context) -> dict[str, Any]:
    """The metric protocol of one evaluation: feature extractor (with its weights' sha256 where the weights are
    local) and reference statistics (name or file, with sha256). Fields absent when no metric uses them."""
    from dpmbench.download import sha256_file

    out: dict[str, Any] = {}
    if any(n in ("fdd", "kdd") for n in names):
        from evaluators.digits_cnn import WEIGHTS, weights_sha256

        out["extractor"] = f"dpmbench/digits-cnn ({WEIGHTS.name}) via {_backend(ctx)}"
        out["extractor_sha256"] = weights_sha256()
        out["reference_stats"] = "sklearn digits (1,797 images)"
    if any(n in IMAGE_METRICS for n in names):
        weights = ctx.opt("inception_weights")
        mode = f"/{ctx.opt('cleanfid_mode')}" if _backend(ctx) == "clean-fid" else ""
        out["extractor"] = f"inception-v3 via {_backend(ctx)}{mode}"
        out["extractor_sha256"] = sha256_file(weights) if weights else None
        spec, images = ctx.opt("fid_stats"), ctx.opt("reference_images")
        if spec:
            out["reference_stats"], out["reference_stats_sha256"] = _stats_identity(str(spec))
        elif images:
            out["reference_stats"], out["reference_stats_sha256"] = f"images {images}", sha256_file(images)
    if "clip_score" in names:
        out["extractor"] = f"open_clip {ctx.opt('clip_model')}/{ctx.opt('clip_pretrained')}"
    return out


def _stats_identity(spec: str) -> tuple[str, str | None]:
    """(name, sha256) of reference statistics: a manifest name (its pinned, verified sha256) or an .npz path."""
    from pathlib import Path

    from dpmbench.download import sha256_file
    from evaluators.refstats import load_manifest

    if Path(spec).is_file():
        return spec, sha256_file(spec)
    entry = load_manifest().get(spec)
    return spec, None if entry is None else entry.sha256
