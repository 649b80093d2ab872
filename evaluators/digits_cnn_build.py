"""Rebuild the digits CNN's shipped files: ``python -m evaluators.digits_cnn_build [--train] [--stats]``.

``--train`` retrains the network (deterministic, CPU, about a minute) and overwrites ``evaluators/digits_cnn.pt``;
``--stats`` writes ``reference_stats/digits-cnn-digits.npz`` (mu, sigma of the digits' features). Update the printed
sha256 in ``evaluators/digits_cnn.py`` / ``reference_stats/manifest.yaml`` afterwards.
"""

from __future__ import annotations

import argparse

from evaluators.digits_cnn import WEIGHTS, train, weights_sha256


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and rebuild what they ask for."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", action="store_true", help="retrain and overwrite the shipped weights")
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--stats", action="store_true", help="write reference_stats/digits-cnn-digits.npz (mu, sigma)")
    a = ap.parse_args(argv)
    if a.train:
        print(f"train accuracy {train(a.out):.4f}; sha256 {weights_sha256(a.out)}")
    if a.stats:
        import numpy as np

        from dpmbench.download import sha256_file
        from evaluators.images import digits_reference_features, feature_moments
        from evaluators.refstats import STATS_DIR

        mu, sigma = feature_moments(digits_reference_features())
        path = STATS_DIR / "digits-cnn-digits.npz"
        np.savez(path, mu=mu, sigma=sigma)
        print(f"{path}: sha256 {sha256_file(path)}")


if __name__ == "__main__":
    main()
