"""``reports/claims.md``: the seed papers' claims checked on a run's results (dpmbench.claims)."""

from __future__ import annotations

import pandas as pd

from dpmbench.claims import CLAIMS, check_claims, claims_markdown, summary_verdict


def _rows(model: str, metric: str, guidance: str, values: dict[str, list[tuple[float, float, float]]]) -> list[dict]:
    out = []
    for solver, cells in values.items():
        for nfe, (v, lo, hi) in zip([5, 6, 8, 10], cells, strict=False):
            out.append({"model": model, "solver": solver, "nfe": nfe, "schedule": "logsnr", "guidance": guidance,
                        "metric": metric, "value": v, "ci_low": lo, "ci_high": hi, "n_samples": 100,
                        "wall_s": 1.0, "seed": 0})
    return out


def test_verdicts_follow_the_paired_cis() -> None:
    v3, pp = "dpm-solver-v3", "dpm-solver++:order=2,method=multistep"
    df = pd.DataFrame(
        _rows("gmm-2d", "rmse_exact", "none", {v3: [(0.1, 0.09, 0.11)] * 4, pp: [(0.2, 0.19, 0.21)] * 4})
        + _rows("digits-unet", "mse_ref", "7.5", {v3: [(0.3, 0.2, 0.4)] * 4, pp: [(0.1, 0.09, 0.11)] * 4})
        + _rows("gmm-digits", "rmse_exact", "none", {v3: [(0.1, 0.05, 0.15)] * 4, pp: [(0.11, 0.06, 0.16)] * 4})
        + _rows("digits-unet", "fdd", "none", {v3: [(1.0, 0.5, 1.5)] * 4, pp: [(1.0, 0.5, 1.5)] * 4}))
    got = {(r["claim"].key, r["model"], r["guidance"]): r["verdict"] for r in check_claims(df)}
    assert got == {("dpm-solver-v3-vs-2m", "gmm-2d", "none"): "holds",
                   ("dpm-solver-v3-vs-2m", "digits-unet", "7.5"): "fails",
                   ("dpm-solver-v3-vs-2m", "gmm-digits", "none"): "within noise"}
    md = claims_markdown(df)
    assert "| dpm-solver-v3-vs-2m | digits-unet | 7.5 | mse_ref | fails |" in md
    assert "arXiv:2310.13268v3" in md and "0.3 [0.2, 0.4]" in md


def test_summary_verdict() -> None:
    assert summary_verdict(["holds", "holds", "within noise"]) == "holds"
    assert summary_verdict(["holds", "fails"]) == "mixed"
    assert summary_verdict(["within noise"] * 3) == "within noise"
    assert summary_verdict(["fails", "fails", "within noise", "within noise"]) == "fails"
    assert summary_verdict(["holds", "within noise", "within noise"]) == "mixed"


def test_every_claim_names_its_source_and_a_known_metric_kind() -> None:
    assert len({c.key for c in CLAIMS}) == len(CLAIMS)
    assert all(c.kind in ("path", "quality") and "arXiv:" in c.source for c in CLAIMS)
    assert claims_markdown(pd.DataFrame(columns=["model", "metric"])).endswith("_No claim applies to these results._\n")
