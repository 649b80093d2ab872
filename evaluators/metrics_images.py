"""Metrics on image features: FID, IS and KID (Inception), FD_DINOv2, CMMD (CLIP), CLIP score, their digits-CNN
analogues (fdd, kdd, is_digits, cond_acc) for the embedded digits models, and the k-NN manifold metrics (precision,
recall, density, coverage) on either extractor's features."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from dpmbench.errors import DpmbenchError
from evaluators.context import Context, backend_of, images_of, labels_of, load_input_npz

if TYPE_CHECKING:
    import torch

    from evaluators.knn import ManifoldTerms


def _require_digits(ctx: Context, metric: str) -> None:
    """A one-line error unless the samples are 8x8 digits, the digits CNN's input."""
    from evaluators.images import DIGITS_SHAPE

    if tuple(ctx.x.shape[1:]) != DIGITS_SHAPE:
        raise DpmbenchError(f"invalid metrics: {metric!r} needs 8x8 digits samples (n, 1, 8, 8), "
                            f"not shape {tuple(ctx.x.shape)}")


def _digits_feats(ctx: Context, metric: str) -> tuple[np.ndarray, np.ndarray]:
    from evaluators.images import digits_features, digits_reference_features

    _require_digits(ctx, metric)
    b = backend_of(ctx)
    return ctx.cached(f"digits:{b}", lambda: (digits_features(images_of(ctx), b), digits_reference_features(b)))


def _frechet_value(ctx: Context, f: np.ndarray, mu2: np.ndarray, s2: np.ndarray, idx: np.ndarray | None,
                   key: str) -> float:
    """The estimate with the backend library's own Frechet formula; bootstrap replicates with ours (they agree
    to ~1e-9 relative, tested), which is safe on singular covariances and faster: the reference covariance's
    square root (``key``: its cache entry) is computed once, so a replicate costs one eigenvalue problem. With no more
    samples than feature dimensions (n <= d: a rank n - 1 sample covariance, as in a few-sample smoke run; no
    published protocol), the estimate and the replicates use ``frechet_distance_rows``, the same distance through
    an n x n eigenvalue problem instead of the libraries' d x d one (seconds per call at d = 2048)."""
    from evaluators.frechet import frechet_distance, frechet_distance_rows, moments, psd_sqrt
    from evaluators.images import feature_moments

    rows = f if idx is None else f[idx]
    if len(rows) <= f.shape[1]:  # fewer samples than dimensions: the n x n form, the same value
        return frechet_distance_rows(rows, mu2, s2)
    if idx is not None:
        mu1, s1 = moments(f[idx])
        return frechet_distance(mu1, s1, mu2, s2, sqrt2=ctx.cached(key, lambda: psd_sqrt(s2)))
    mu1, s1 = feature_moments(f)
    if backend_of(ctx) == "clean-fid":
        from cleanfid.fid import frechet_distance as cf_frechet

        with np.errstate(all="ignore"):
            return float(cf_frechet(mu1, s1, mu2, s2))
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)[KEY_METRIC_FID])


def fdd(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import feature_moments

    f, ref = _digits_feats(ctx, "fdd")
    mu2, s2 = ctx.cached("digits_ref_moments", lambda: feature_moments(ref))
    return _frechet_value(ctx, f, mu2, s2, idx, "digits_ref_sqrt")


def kdd(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import KernelBlocks, kernel_distance

    f, ref = _digits_feats(ctx, "kdd")
    if idx is None:
        return kernel_distance(f, ref)
    return ctx.cached("kdd_blocks", lambda: KernelBlocks(f, ref)).mmd2(idx)


def _digits_logits(ctx: Context, metric: str) -> np.ndarray:
    """The shipped digits CNN's logits of the (quantized) samples, shape (n, 10)."""
    from evaluators.images import digits_logits

    _require_digits(ctx, metric)
    return ctx.cached("digits_logits", lambda: digits_logits(images_of(ctx)))


def is_digits(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import ScoreBlocks, inception_score

    logits = _digits_logits(ctx, "is_digits")
    if idx is None:
        return inception_score(logits, None, splits=1)
    return ctx.cached("is_digits_blocks", lambda: ScoreBlocks(logits)).score(idx)


def cond_acc(ctx: Context, idx: np.ndarray | None) -> float:
    labels = labels_of(ctx)
    if labels is None or labels.size != len(ctx.x):
        raise DpmbenchError("invalid metrics: 'cond_acc' needs one class label per sample (class-conditional "
                            "samples: --guidance)")
    hit = _digits_logits(ctx, "cond_acc").argmax(1) == labels.reshape(-1)
    return float(hit.mean() if idx is None else hit[idx].mean())


def _inception(ctx: Context) -> dict[str, np.ndarray]:
    from evaluators.images import cleanfid_features, fidelity_features

    def compute() -> dict[str, np.ndarray]:
        bs, dev, w = int(ctx.opt("batch_size")), str(ctx.opt("device")), ctx.opt("inception_weights")
        if backend_of(ctx) == "clean-fid":
            return {"2048": cleanfid_features(images_of(ctx), str(ctx.opt("cleanfid_mode")), bs, w, dev)}
        return fidelity_features(images_of(ctx), features=("2048", "logits_unbiased"), batch_size=bs, weights=w,
                                 device=dev)
    return ctx.cached(f"inception:{backend_of(ctx)}:{ctx.opt('cleanfid_mode')}", compute)


def _reference_image_features(ctx: Context) -> np.ndarray:
    """Inception features of the reference images (option reference_images), cached on disk by the file's
    sha256, the backend/mode and the weights: computed once for all solvers."""
    from dpmbench.download import sha256_file
    from evaluators.images import cached_features, cleanfid_features, fidelity_features, to_uint8

    path = str(ctx.opt("reference_images"))

    def compute() -> dict[str, np.ndarray]:
        f = load_input_npz(path, "reference images")
        if "x" not in f:
            raise DpmbenchError(f"invalid reference images {path!r}: need npz key 'x'")
        images = to_uint8(f["x"])
        bs, dev, w = int(ctx.opt("batch_size")), str(ctx.opt("device")), ctx.opt("inception_weights")
        if backend_of(ctx) == "clean-fid":
            return {"2048": cleanfid_features(images, str(ctx.opt("cleanfid_mode")), bs, w, dev)}
        return {"2048": fidelity_features(images, batch_size=bs, weights=w, device=dev)["2048"]}

    weights = ctx.opt("inception_weights")
    key = ("reference-images", sha256_file(path), backend_of(ctx), ctx.opt("cleanfid_mode"),
           None if weights is None else sha256_file(weights))
    return ctx.cached("ref_images", lambda: cached_features(key, compute)["2048"])


def _reference_feature_file(path: str, what: str) -> np.ndarray:
    """Reference features from an .npz (key 'feats' or 'features', e.g. clean-fid's *kid.npz), float64."""
    f = load_input_npz(path, what)
    key = "feats" if "feats" in f else "features"
    if key not in f:
        raise DpmbenchError(f"invalid {what} {path!r}: need npz key 'feats' or 'features'")
    return np.asarray(f[key], np.float64)


def fid(ctx: Context, idx: np.ndarray | None) -> float:
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


def inception_score_stat(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import inception_score

    if backend_of(ctx) != "torch-fidelity":
        raise DpmbenchError("invalid metrics: 'is' is computed with torch-fidelity only (fid_backend torch-fidelity)")
    return inception_score(_inception(ctx)["logits_unbiased"], idx)


def kid(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import KernelBlocks, kernel_distance

    path = ctx.opt("kid_reference")
    if not path and not ctx.opt("reference_images"):
        raise DpmbenchError("invalid metrics: 'kid' needs reference features (option kid_reference: an .npz with "
                            "key 'feats' or 'features', e.g. clean-fid's *kid.npz) or reference_images")

    def load() -> np.ndarray:
        return _reference_feature_file(str(path), "kid reference") if path else _reference_image_features(ctx)
    f, ref = _inception(ctx)["2048"], ctx.cached("kid_ref", load)
    if idx is None:
        return kernel_distance(f, ref)
    return ctx.cached("kid_blocks", lambda: KernelBlocks(f, ref)).mmd2(idx)


def clip_score(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.clip import clip_embeddings, clip_score, load_clip

    def compute() -> tuple[np.ndarray, np.ndarray]:
        prompts = ctx.meta.get("prompts")
        if prompts is None or np.size(prompts) != len(ctx.x):
            raise DpmbenchError("invalid metrics: 'clip_score' needs one prompt per sample (samples key 'prompts')")
        dev = str(ctx.opt("device"))
        model, pre, tok = load_clip(str(ctx.opt("clip_model")), ctx.opt("clip_pretrained"), ctx.opt("clip_weights"),
                                    None, dev)
        return clip_embeddings(model, pre, tok, images_of(ctx), [str(p) for p in np.asarray(prompts).reshape(-1)],
                               device=dev)
    im, tx = ctx.cached("clip", compute)
    return clip_score(im, tx, idx)


def _reference_image_embeddings(ctx: Context, extractor: str, weights_id: str,
                                compute: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
    """Features of the reference images (option reference_images) through ``compute``, cached on disk by the file's
    sha256, the extractor and its weights: computed once for all solvers."""
    from dpmbench.download import sha256_file
    from evaluators.images import cached_features, to_uint8

    path = str(ctx.opt("reference_images"))

    def run() -> dict[str, np.ndarray]:
        f = load_input_npz(path, "reference images")
        if "x" not in f:
            raise DpmbenchError(f"invalid reference images {path!r}: need npz key 'x'")
        return {"f": compute(to_uint8(f["x"]))}
    key = ("reference-images", sha256_file(path), extractor, weights_id)
    return ctx.cached(f"ref_images:{extractor}", lambda: cached_features(key, run)["f"])


def _dinov2(ctx: Context) -> tuple[Callable[[torch.Tensor], np.ndarray], str]:
    """The DINOv2 feature function of this evaluation and the sha256 of its weights."""
    from evaluators.dinov2 import dinov2_features, load_dinov2

    w, dev, bs = ctx.opt("dinov2_weights"), str(ctx.opt("device")), int(ctx.opt("batch_size"))
    weights_id = ctx.cached("dinov2_sha256", lambda: load_dinov2(w, dev)[1])
    return (lambda images: dinov2_features(images, w, bs, dev)), weights_id


def fd_dinov2(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.images import feature_moments
    from evaluators.refstats import reference_stats

    spec, images = ctx.opt("fd_dinov2_stats"), ctx.opt("reference_images")
    if not spec and not images:
        raise DpmbenchError("invalid metrics: 'fd_dinov2' needs reference statistics (option fd_dinov2_stats: an .npz "
                            "with mu/sigma of DINOv2 features or a name in reference_stats/manifest.yaml) or "
                            "reference_images")
    extract, weights_id = _dinov2(ctx)
    if spec:
        mu2, s2, what = ctx.cached("fd_dinov2_stats", lambda: reference_stats(str(spec)))
    else:
        ref = _reference_image_embeddings(ctx, "dinov2", weights_id, extract)
        mu2, s2 = ctx.cached("dinov2_ref_moments", lambda: feature_moments(ref))
        what = f"images {images}"
    ctx.meta["_fd_dinov2_reference"] = what
    f = ctx.cached("dinov2", lambda: extract(images_of(ctx)))
    if np.shape(mu2) != f.shape[1:]:
        raise DpmbenchError(f"invalid fd_dinov2 reference {what}: {np.size(mu2)}-d statistics for {f.shape[1]}-d "
                            "DINOv2 features (statistics of another feature extractor?)")
    return _frechet_value(ctx, f, mu2, s2, idx, "dinov2_ref_sqrt")


def cmmd(ctx: Context, idx: np.ndarray | None) -> float:
    from evaluators.cmmd import CmmdBlocks, cmmd_distance, cmmd_embeddings, load_cmmd_clip

    path = ctx.opt("cmmd_reference")
    if not path and not ctx.opt("reference_images"):
        raise DpmbenchError("invalid metrics: 'cmmd' needs reference embeddings (option cmmd_reference: an .npz with "
                            "key 'feats' or 'features' of L2-normalized CLIP ViT-L/14@336 embeddings) or "
                            "reference_images")
    name, w, dev = str(ctx.opt("cmmd_clip_model")), ctx.opt("cmmd_weights"), str(ctx.opt("device"))
    bs = int(ctx.opt("batch_size"))

    def embed(images: torch.Tensor) -> np.ndarray:
        return cmmd_embeddings(images, name, w, bs, dev)

    def load() -> np.ndarray:
        if not path:
            weights_id = ctx.cached("cmmd_sha256", lambda: load_cmmd_clip(name, w, dev)[2])
            return _reference_image_embeddings(ctx, f"cmmd:{name}", weights_id, embed)
        f = load_input_npz(str(path), "cmmd reference")
        key = "feats" if "feats" in f else "features"
        if key not in f:
            raise DpmbenchError(f"invalid cmmd reference {path!r}: need npz key 'feats' or 'features'")
        return np.asarray(f[key], np.float64)
    x, ref = ctx.cached("cmmd_x", lambda: embed(images_of(ctx))), ctx.cached("cmmd_ref", load)
    if idx is None:
        return cmmd_distance(x, ref)
    return ctx.cached("cmmd_blocks", lambda: CmmdBlocks(x, ref)).value(idx)


# -- k-NN manifold metrics (precision, recall, density, coverage: evaluators.knn) ---------------------------------
def _manifold_features(ctx: Context, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(sample features, reference features) of a k-NN metric: the digits CNN's 64-D features against the 1,797
    digits for 8x8 digits samples (as ``fdd``), else Inception's 2048-D pool features (as ``fid``/``kid``) against
    option ``prdc_reference`` (an .npz of features, key 'feats' or 'features') or ``reference_images``."""
    from evaluators.images import DIGITS_SHAPE

    if tuple(ctx.x.shape[1:]) == DIGITS_SHAPE and "images" not in ctx.meta:
        return _digits_feats(ctx, metric)
    path = ctx.opt("prdc_reference")
    if not path and not ctx.opt("reference_images"):
        raise DpmbenchError(f"invalid metrics: {metric!r} needs reference features (option prdc_reference: an .npz "
                            "with key 'feats' or 'features') or reference_images (8x8 digits samples need neither)")

    def load() -> np.ndarray:
        return _reference_feature_file(str(path), "prdc reference") if path else _reference_image_features(ctx)
    ref = ctx.cached("prdc_ref", load)  # first: a bad reference file is refused before any Inception pass
    return _inception(ctx)["2048"], ref


def _manifold(ctx: Context, metric: str, which: str, idx: np.ndarray | None = None) -> tuple[float, float]:
    """The libraries' (precision, recall) (``which`` 'pr') or (density, coverage) ('dc') of all samples (computed
    once), or of the samples ``idx`` (duplicates kept, as given)."""
    from evaluators.knn import density_coverage, precision_recall

    f, ref = _manifold_features(ctx, metric)
    compute = precision_recall if which == "pr" else density_coverage
    return ctx.cached(f"knn_{which}", lambda: compute(f, ref)) if idx is None else compute(f[idx], ref)


def _manifold_terms(ctx: Context, metric: str) -> ManifoldTerms:
    from evaluators.knn import ManifoldTerms

    return ctx.cached("knn_terms", lambda: ManifoldTerms(*_manifold_features(ctx, metric)))


def precision(ctx: Context, idx: np.ndarray | None) -> float:
    """Improved precision (k = 3; torch-fidelity's ``prc``); replicates resample the per-sample terms."""
    return _manifold(ctx, "precision", "pr")[0] if idx is None else _manifold_terms(ctx, "precision").precision(idx)


def recall(ctx: Context, idx: np.ndarray | None) -> float:
    """Improved recall (k = 3; torch-fidelity's ``prc``) of the samples ``idx`` (duplicates kept, as given)."""
    return _manifold(ctx, "recall", "pr", idx)[1]


def density(ctx: Context, idx: np.ndarray | None) -> float:
    """Density (k = 5; the ``prdc`` package); replicates resample the per-sample terms."""
    return _manifold(ctx, "density", "dc")[0] if idx is None else _manifold_terms(ctx, "density").density(idx)


def coverage(ctx: Context, idx: np.ndarray | None) -> float:
    """Coverage (k = 5; the ``prdc`` package) of the samples ``idx`` (duplicates kept, as given)."""
    return _manifold(ctx, "coverage", "dc", idx)[1]
