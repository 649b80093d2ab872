"""The metric registry: every metric takes the samples, their metadata and (optionally) a reference (the metrics
themselves: ``metrics_oracle``, ``metrics_images``; what they see: ``context``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dpmbench.errors import bad_value
from evaluators import metrics_images as im
from evaluators import metrics_oracle as orc
from evaluators.bootstrap import NONNEGATIVE, UNIT, bootstrap_replicates, percentile_ci
from evaluators.context import DEFAULT_OPTIONS, Context, Metric, backend_of, labels_of
from evaluators.oracle import per_sample_mse

__all__ = ["DEFAULT_OPTIONS", "METRICS", "Context", "Metric", "evaluate", "list_metrics", "per_sample_errors",
           "per_sample_summary", "protocol"]


# bounds: the range of a metric's true value, to which its CI is clipped (evaluators.bootstrap.percentile_ci); kid and
# kdd are unbiased MMD^2 estimates: they, and their CIs, may go below 0 (docs/metrics.md)
METRICS: dict[str, Metric] = {
    "rmse_exact": Metric(orc.rmse_exact, "RMSE to the exact probability-flow ODE solution from the same x_T "
                         "(oracle models; needs the reference file; not computed for stochastic solvers, whose "
                         "samples do not follow the ODE)", deterministic_only=True, bounds=NONNEGATIVE),
    "fd_true": Metric(orc.fd_true, "Frechet distance of the samples' moments to the true target distribution "
                      "(the data distribution; under guidance != 1 the exact guided ODE solutions)",
                      bounds=NONNEGATIVE),
    "mse_ref": Metric(orc.mse_ref, "mean squared error (over samples and dimensions, pixel or latent) to a high-NFE "
                      "reference run from the same x_T (`dpmbench reference --solver SPEC --nfe N`); not computed for "
                      "stochastic solvers", deterministic_only=True, bounds=NONNEGATIVE),
    "sw2_true": Metric(orc.sw2_true, "sliced 2-Wasserstein distance (256 random directions) to the true distribution "
                       "p_{t_end} (a large sample of it; under guidance != 1 the exact guided ODE solutions)",
                       bounds=NONNEGATIVE),
    "loglik_true": Metric(orc.loglik_true, "mean log-density (nats per sample) of the samples under the true "
                          "p_{t_end} (class-conditional mixture when labels are used)", lower_is_better=False),
    "fdd": Metric(im.fdd, "Frechet digits distance: FID's formula on the 64-D features of the shipped digits CNN, "
                  "against the 1,797 digits (digits models; torch-fidelity custom extractor 'digits-cnn')",
                  bounds=NONNEGATIVE),
    "kdd": Metric(im.kdd, "kernel digits distance: torch-fidelity's KID on the digits-CNN features",
                  max_bootstraps=100),
    "is_digits": Metric(im.is_digits, "Inception score's formula exp(E_x KL(p(y|x) || p(y))) on the shipped digits "
                        "CNN's class probabilities, one split over all samples (torch-fidelity's isc); 1..10",
                        lower_is_better=False, bounds=(1.0, 10.0)),
    "cond_acc": Metric(im.cond_acc, "share of class-conditional samples the digits CNN assigns to their label "
                       "(the CLIP-score analogue: does the sample follow its condition?); guided samples only",
                       lower_is_better=False, needs_labels=True, bounds=UNIT),
    "precision": Metric(im.precision, "improved precision (Kynkaanniemi et al. 2019, k = 3, torch-fidelity's prc): "
                        "share of samples inside the reference's k-NN balls; digits-CNN features against the 1,797 "
                        "digits for digits samples, else Inception features (option prdc_reference or "
                        "reference_images)", lower_is_better=False, bounds=UNIT),
    "recall": Metric(im.recall, "improved recall (Kynkaanniemi et al. 2019, k = 3, torch-fidelity's prc): share of "
                     "reference samples inside the samples' k-NN balls (features as precision's); no bootstrap CI: a "
                     "statistic of the sample set, see docs/metrics.md", lower_is_better=False, max_bootstraps=0,
                     bounds=UNIT),
    "density": Metric(im.density, "density (Naeem et al. 2020, k = 5, the prdc package): mean number of reference "
                      "k-NN balls holding a sample, over k; about 1 when samples follow the reference (features as "
                      "precision's)", lower_is_better=False, bounds=NONNEGATIVE),
    "coverage": Metric(im.coverage, "coverage (Naeem et al. 2020, k = 5, the prdc package): share of reference k-NN "
                       "balls holding at least one sample (features as precision's); no bootstrap CI: a statistic of "
                       "the sample set, see docs/metrics.md", lower_is_better=False, max_bootstraps=0, bounds=UNIT),
    "model_error": Metric(orc.model_error, "RMSE between the network's converged ODE solution (its high-NFE reference "
                          "run) and the exact ODE solution of the data's optimal denoiser (option "
                          "model_error_oracle, default digits-empirical) from the same x_T: the floor under which a "
                          "better solver no longer shows in sample quality (trained networks of the digits data)",
                          bounds=NONNEGATIVE),
    "fid": Metric(im.fid, "Frechet Inception distance to reference statistics (option fid_stats) through "
                  "torch-fidelity or clean-fid (clean / legacy_tensorflow)", max_bootstraps=50, bounds=NONNEGATIVE),
    "is": Metric(im.inception_score_stat, "Inception score (torch-fidelity, 10 splits)", lower_is_better=False,
                 max_bootstraps=50),
    "kid": Metric(im.kid, "kernel Inception distance to reference features (option kid_reference)", max_bootstraps=100),
    "clip_score": Metric(im.clip_score, "CLIP score 100*max(cos,0) (open_clip, default ViT-L-14/openai), mean over "
                         "prompts", lower_is_better=False),
    "fd_dinov2": Metric(im.fd_dinov2, "Frechet distance on DINOv2 ViT-L/14 features (CLS token, dgm-eval's "
                        "preprocessing; transformers Dinov2Model) to reference statistics (option fd_dinov2_stats) "
                        "or reference_images", max_bootstraps=50, bounds=NONNEGATIVE),
    "cmmd": Metric(im.cmmd, "CMMD: 1000 x biased MMD^2 (Gaussian RBF, sigma 10) between CLIP ViT-L/14@336 image "
                   "embeddings (open_clip, OpenAI weights) of the samples and the reference (option cmmd_reference "
                   "or reference_images)", max_bootstraps=100, bounds=NONNEGATIVE),
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
    if labels_of(ctx) is None:  # unconditional samples: no condition to follow
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
        lo, hi = (percentile_ci(values[name], replicates, bounds=metric.bounds) if len(replicates)
                  else (float("nan"), float("nan")))
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
    if any(nm in ("fid", "is", "kid", "fdd", "kdd", "is_digits", "cond_acc", *KNN_METRICS) for nm in names):
        from evaluators.images import QUANTIZATION

        info["quantization"] = QUANTIZATION
        backend = backend_of(ctx)
        info["fid_backend"] = backend + (f"/{ctx.opt('cleanfid_mode')}" if backend == "clean-fid" else "")
    if any(nm in ("fd_dinov2", "cmmd") for nm in names):
        from evaluators.images import QUANTIZATION

        info["quantization"] = QUANTIZATION
    if "clip_score" in names:
        from evaluators.clip import CONVENTION

        info["clip"] = {"model": ctx.opt("clip_model"), "pretrained": ctx.opt("clip_pretrained"),
                        "convention": CONVENTION}
    if "fd_dinov2" in names:
        from evaluators.dinov2 import PREPROCESSING

        info["fd_dinov2"] = {"reference": ctx.meta.get("_fd_dinov2_reference"), "preprocessing": PREPROCESSING}
    if "cmmd" in names:
        from evaluators.cmmd import CONVENTION as CMMD_CONVENTION

        info["cmmd"] = {"model": ctx.opt("cmmd_clip_model"), "convention": CMMD_CONVENTION,
                        "reference": ctx.opt("cmmd_reference") or f"images {ctx.opt('reference_images')}"}
    info["protocol"] = protocol(names, ctx)
    return values, cis, info


PER_SAMPLE_METRICS = ("rmse_exact", "mse_ref")


def per_sample_errors(name: str, x: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float]:
    """Every sample's error under the per-sample metric ``name`` (``rmse_exact``: its RMSE to its exact solution;
    ``mse_ref``: its MSE to the reference run; float64, a non-finite error as inf) and the *divergence threshold*:
    the reference's own root-mean-square magnitude, in the metric's unit (a sample whose error exceeds it no longer
    resembles its target)."""
    if name not in PER_SAMPLE_METRICS:
        raise bad_value("per-sample metric", name, list(PER_SAMPLE_METRICS))
    with np.errstate(all="ignore"):
        err = per_sample_mse(x, reference)
        ref_ms = float(np.mean(np.asarray(reference, np.float64) ** 2))
    if name == "rmse_exact":
        err, threshold = np.sqrt(err), float(np.sqrt(ref_ms))
    else:
        threshold = ref_ms
    return np.where(np.isfinite(err), err, np.inf), threshold


def per_sample_summary(name: str, x: np.ndarray, reference: np.ndarray | None) -> dict[str, Any] | None:
    """Median over samples of a per-sample metric (:func:`per_sample_errors`) and the share of *diverged* samples:
    not finite, or an error larger than the reference's own root-mean-square magnitude (``threshold``, in the
    metric's unit), i.e. a sample that no longer resembles its target. None for other metrics or without a
    matching reference."""
    if name not in PER_SAMPLE_METRICS or reference is None or len(reference) != len(x):
        return None
    err, threshold = per_sample_errors(name, x, reference)
    median = float(np.median(err))
    return {"median": median if np.isfinite(median) else None,
            "diverged_share": float(np.mean(err > threshold)), "threshold": threshold}


IMAGE_METRICS = ("fid", "is", "kid")
KNN_METRICS = ("precision", "recall", "density", "coverage")  # digits-CNN or Inception features (by the samples)


def protocol(names: list[str], ctx: Context) -> dict[str, Any]:
    """The metric protocol of one evaluation: feature extractor (with its weights' sha256 where the weights are
    local) and reference statistics (name or file, with sha256). Fields absent when no metric uses them."""
    from dpmbench.download import sha256_file
    from evaluators.images import DIGITS_SHAPE

    out: dict[str, Any] = {}
    digits = tuple(ctx.x.shape[1:]) == DIGITS_SHAPE and "images" not in ctx.meta
    if any(n in ("fdd", "kdd") for n in names) or (digits and any(n in KNN_METRICS for n in names)):
        from evaluators.digits_cnn import WEIGHTS, weights_sha256

        out["extractor"] = f"dpmbench/digits-cnn ({WEIGHTS.name}) via {backend_of(ctx)}"
        out["extractor_sha256"] = weights_sha256()
        out["reference_stats"] = "sklearn digits (1,797 images)"
    if any(n in IMAGE_METRICS for n in names) or (not digits and any(n in KNN_METRICS for n in names)):
        weights = ctx.opt("inception_weights")
        mode = f"/{ctx.opt('cleanfid_mode')}" if backend_of(ctx) == "clean-fid" else ""
        out["extractor"] = f"inception-v3 via {backend_of(ctx)}{mode}"
        out["extractor_sha256"] = sha256_file(weights) if weights else None
        if not _record_reference(out, ctx, names, ctx.opt("fid_stats")) and ctx.opt("prdc_reference") and any(
                n in KNN_METRICS for n in names):
            path = str(ctx.opt("prdc_reference"))
            out["reference_stats"], out["reference_stats_sha256"] = f"features {path}", sha256_file(path)
    if "clip_score" in names:
        out["extractor"] = f"open_clip {ctx.opt('clip_model')}/{ctx.opt('clip_pretrained')}"
    cache = ctx.meta.get("_cache", {})
    if "fd_dinov2" in names:
        out["extractor"] = "dinov2 ViT-L/14 (CLS token) via transformers Dinov2Model"
        out["extractor_sha256"] = cache.get("dinov2_sha256")
        _record_reference(out, ctx, names, ctx.opt("fd_dinov2_stats"))
    if "cmmd" in names:
        from evaluators.cmmd import load_cmmd_clip

        name, w, dev = str(ctx.opt("cmmd_clip_model")), ctx.opt("cmmd_weights"), str(ctx.opt("device"))
        out["extractor"] = f"open_clip {name}/openai (CMMD)"
        out["extractor_sha256"] = ctx.cached("cmmd_sha256", lambda: load_cmmd_clip(name, w, dev)[2])
        ref = ctx.opt("cmmd_reference") or ctx.opt("reference_images")
        out["reference_stats"], out["reference_stats_sha256"] = str(ref), sha256_file(ref) if ref else None
    return out


def _record_reference(out: dict[str, Any], ctx: Context, names: list[str], spec: Any) -> bool:  # noqa: ANN401
    """Record the reference a Frechet distance is computed against: the statistics ``spec`` (with the published
    numbers' FID implementation, for fid) or else the option ``reference_images``; False when neither is given."""
    from dpmbench.download import sha256_file

    images = ctx.opt("reference_images")
    if spec:
        out["reference_stats"], out["reference_stats_sha256"] = _stats_identity(str(spec))
        if ctx.opt("fid_implementation") and "fid" in names:
            out["fid_implementation"] = str(ctx.opt("fid_implementation"))
    elif images:
        out["reference_stats"], out["reference_stats_sha256"] = f"images {images}", sha256_file(images)
    else:
        return False
    return True


def _stats_identity(spec: str) -> tuple[str, str | None]:
    """(name, sha256) of reference statistics: a manifest name (its pinned, verified sha256) or an .npz path."""
    from pathlib import Path

    from dpmbench.download import sha256_file
    from evaluators.refstats import load_manifest

    if Path(spec).is_file():
        return spec, sha256_file(spec)
    entry = load_manifest().get(spec)
    return spec, None if entry is None else entry.sha256
