"""k-nearest-neighbour manifold metrics on features: improved precision and recall (Kynkäänniemi et al. 2019,
"Improved Precision and Recall Metric for Assessing Generative Models", NeurIPS, Sec. 2) through torch-fidelity's
``prc``, and density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models",
ICML, Sec. 3) through the authors' ``prdc`` package.

Every sample's k-NN ball is the ball around it whose radius is the distance to its k-th nearest neighbour in its
own set (itself excluded). With generated features Y (M rows) and real features X (N rows):

- precision: share of generated samples inside at least one real sample's ball (k = 3);
- recall: share of real samples inside at least one generated sample's ball (k = 3);
- density: (1 / kM) sum_j sum_i 1[Y_j in ball(X_i)], the mean number of real balls holding a generated sample,
  divided by k (k = 5); 1 in expectation for identical distributions, above 1 where samples crowd;
- coverage: share of real balls holding at least one generated sample (k = 5).

Defaults, from the sources: k = 3 for precision/recall (the value Kynkäänniemi et al. 2019 use; torch-fidelity
0.4.0 ``torch_fidelity/defaults.py:35`` ``"prc_neighborhood": 3``); k = 5 for density/coverage (the value Naeem et al.
2020 recommend; clovaai/generative-evaluation-prdc@e320c1d:README.md:93,102 "Set the nearest neighbour k=5",
``nearest_k = 5``; ``compute_prdc`` itself has no default). Conventions of the libraries, kept: torch-fidelity counts
a point on a ball's boundary as inside (``<=``, ``torch_fidelity/metric_prc.py:32,42``, the batched path used here),
prdc does not (``<``, clovaai/generative-evaluation-prdc@e320c1d:prdc/prdc.py:76-94, identical to PyPI's prdc 0.2);
the k-th neighbour excludes the point itself in both (``kthvalue(k + 1)`` / ``get_kth_value(k + 1)``).

Precision and density are means over the generated samples of a term that depends on that sample and the fixed
real set only (:class:`ManifoldTerms`), so their bootstrap replicates are plain resamples of those terms. Recall
and coverage are statistics of the generated *set* (its samples' k-NN radii; whether at least one of them falls
in a ball): a resample with replacement repeats some samples (zero or shrunken radii) and drops about 37% of
them, so its replicates do not mimic a fresh sample set (docs/metrics.md).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from dpmbench.errors import DpmbenchError

PRC_K = 3  # Kynkäänniemi et al. 2019; torch_fidelity/defaults.py:35 (prc_neighborhood)
DC_K = 5  # Naeem et al. 2020; clovaai/generative-evaluation-prdc@e320c1d:README.md:102 (nearest_k)
CHUNK = 1024  # rows of a distance block (memory: CHUNK x N float64)


def _check(fake: np.ndarray, real: np.ndarray, k: int, need: int, what: str) -> None:
    """A one-line error unless both feature sets are (rows, same dimension) with at least ``need`` rows."""
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != real.shape[1]:
        raise DpmbenchError(f"invalid features for {what}: shapes {fake.shape} and {real.shape}; allowed: (n, d) "
                            "and (m, d)")
    if min(len(fake), len(real)) < need:
        raise DpmbenchError(f"invalid metrics: {what} (k = {k}) needs at least {need} samples and reference samples, "
                            f"not {len(fake)} and {len(real)}")


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = PRC_K) -> tuple[float, float]:
    """(precision, recall) of generated features ``fake`` against real features ``real``: torch-fidelity's
    ``prc_features_to_metric`` (its memory-saving batched path; float64)."""
    import torch
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    _check(fake, real, k, k + 1, "precision/recall")  # kthvalue(k + 1) of each row
    out = prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=k,
                                 prc_batch_size=CHUNK, save_cpu_ram=True, verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def density_coverage(fake: np.ndarray, real: np.ndarray, k: int = DC_K) -> tuple[float, float]:
    """(density, coverage) of generated features ``fake`` against real features ``real``: the authors'
    ``prdc.compute_prdc`` (its progress line on stdout swallowed)."""
    from prdc import compute_prdc

    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    _check(fake, real, k, k + 2, "density/coverage")  # prdc's np.argpartition(row, k + 1): k + 2 entries
    with contextlib.redirect_stdout(io.StringIO()):
        out = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return float(out["density"]), float(out["coverage"])


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (float64)."""
    from scipy.spatial.distance import cdist

    return cdist(a, b)


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of every row of ``x`` to its k-th nearest other row (itself excluded), computed in blocks."""
    x = np.asarray(x, np.float64)
    out = np.empty(len(x))
    for i in range(0, len(x), CHUNK):
        d = _distances(x[i:i + CHUNK], x)
        out[i:i + CHUNK] = np.partition(d, k, axis=1)[:, k]  # index 0: the row itself (distance 0)
    return out


class ManifoldTerms:
    """The per-generated-sample terms of precision and density against a fixed real set, computed once, so that a
    bootstrap replicate costs an index: ``in_ball[j]`` = 1 if generated sample j lies in some real sample's
    ``PRC_K``-NN ball (``<=``, torch-fidelity's convention), ``balls[j]`` = the number of real ``DC_K``-NN balls that
    hold it (``<``, prdc's). ``precision(idx)`` and ``density(idx)`` of all rows equal the libraries' values (tested).
    """

    def __init__(self, fake: np.ndarray, real: np.ndarray, k_pr: int = PRC_K, k_dc: int = DC_K):
        fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
        _check(fake, real, max(k_pr, k_dc), max(k_pr, k_dc) + 1, "precision/density")
        r_pr, r_dc = knn_radii(real, k_pr), knn_radii(real, k_dc)
        self.k_dc = k_dc
        self.in_ball = np.empty(len(fake))
        self.balls = np.empty(len(fake))
        for j in range(0, len(fake), CHUNK):
            d = _distances(fake[j:j + CHUNK], real)
            self.in_ball[j:j + CHUNK] = (d <= r_pr).any(axis=1)
            self.balls[j:j + CHUNK] = (d < r_dc).sum(axis=1)

    def precision(self, idx: np.ndarray | None = None) -> float:
        """Precision of the generated rows ``idx`` (None: all)."""
        return float(self.in_ball.mean() if idx is None else self.in_ball[idx].mean())

    def density(self, idx: np.ndarray | None = None) -> float:
        """Density of the generated rows ``idx`` (None: all)."""
        return float((self.balls.mean() if idx is None else self.balls[idx].mean()) / self.k_dc)
