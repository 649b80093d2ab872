"""Coverage of the bootstrap intervals in two simulations (docs/metrics.md "Uncertainty"); CPU, about a minute.

1. A distance near 0: the Frechet distance of n = 100 draws of N(shift, 1) to N(0, 1) (1-D: m^2 + (s - 1)^2), 200
   trials of 200 replicates; the share of trials whose interval holds the true distance shift^2, for the clipped
   bias-shifted interval (``evaluators.bootstrap.percentile_ci`` with ``NONNEGATIVE``), the same unclipped, and the
   plain percentile interval of the replicates.
2. Recall and coverage (``evaluators.knn``; k = 3 and 5): 200 samples of N(shift, scale^2 I) in 8-D against 500
   fixed reference points of N(0, I); the true value is the mean over 2,000 fresh sample sets (it depends on the set
   sizes); 200 trials of 100 replicates, bias-shifted interval, replicates on the resample as drawn (duplicates
   kept) or on its distinct samples only.

    python benchmarks/ci_coverage.py
"""

from __future__ import annotations

import numpy as np

from evaluators.bootstrap import NONNEGATIVE, percentile_ci
from evaluators.knn import DC_K, PRC_K, knn_radii


def distance_near_zero(n: int = 100, trials: int = 200, reps: int = 200, seed: int = 6) -> None:
    """Simulation 1."""
    rng = np.random.default_rng(seed)
    for shift in (0.0, 0.1, 0.3):
        truth, hits = shift**2, {"clipped": 0, "unclipped": 0, "plain percentile": 0}
        for _ in range(trials):
            y = rng.standard_normal(n) + shift
            boot = y[rng.integers(0, n, (reps, n))]
            b = boot.mean(1) ** 2 + (boot.std(1, ddof=1) - 1) ** 2
            est = y.mean() ** 2 + (y.std(ddof=1) - 1) ** 2
            for name, (lo, hi) in (("clipped", percentile_ci(est, b, bounds=NONNEGATIVE)),
                                   ("unclipped", percentile_ci(est, b)),
                                   ("plain percentile", tuple(np.quantile(b, [0.025, 0.975])))):
                hits[name] += lo <= truth <= hi
        print(f"distance {truth:.2f}: " + ", ".join(f"{k} {v / trials:.3f}" for k, v in hits.items()))


def recall_coverage(d: int = 8, n_ref: int = 500, n: int = 200, trials: int = 200, reps: int = 100,
                    seed: int = 0) -> None:
    """Simulation 2 (our own vectorized recall/coverage; tests/test_evaluators_knn.py checks the definitions)."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_ref, d))
    r_real = knn_radii(real, DC_K)

    def stats(f: np.ndarray) -> np.ndarray:
        dist = cdist(real, f)
        return np.array([(dist <= knn_radii(f, PRC_K)[None]).any(1).mean(), (dist.min(1) < r_real).mean()])

    for shift, scale in ((0.0, 1.0), (0.5, 0.8)):
        def draw(shift: float = shift, scale: float = scale) -> np.ndarray:
            return rng.standard_normal((n, d)) * scale + shift
        truth = np.mean([stats(draw()) for _ in range(2000)], axis=0)
        hits = {"as drawn": np.zeros(2), "distinct only": np.zeros(2)}
        for _ in range(trials):
            f = draw()
            est = stats(f)
            idx = rng.integers(0, n, (reps, n))
            for name, reps_ in (("as drawn", [stats(f[i]) for i in idx]),
                                ("distinct only", [stats(f[np.unique(i)]) for i in idx])):
                r = np.array(reps_)
                for j in range(2):
                    lo, hi = percentile_ci(est[j], r[:, j])
                    hits[name][j] += lo <= truth[j] <= hi
        print(f"shift {shift}, scale {scale} (true recall {truth[0]:.3f}, coverage {truth[1]:.3f}): " + ", ".join(
            f"{k}: recall {v[0] / trials:.3f}, coverage {v[1] / trials:.3f}" for k, v in hits.items()))


if __name__ == "__main__":
    distance_near_zero()
    recall_coverage()
