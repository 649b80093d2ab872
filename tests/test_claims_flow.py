"""The flow-matching claims of the ledger (dpmbench.report.claims), on constructed results: the shift claims are
schedule claims on one solver, the solver claims pair diffusers' flow forms with Euler on each grid, and the
cross-model claims pair digits-flow's Euler with digits-unet's DDIM at the same NFE, guidance and seed (never another
guidance, never the other model's other grids), without a "strongest in the grid" (they compare models)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dpmbench.report.claims import CLAIMS, check_claims, claims_markdown


def _row(model: str, solver: str, schedule: str, nfe: int, boot: np.ndarray, guidance: str = "none",
         metric: str = "fdd") -> dict:
    return {"model": model, "solver": solver, "nfe": nfe, "schedule": schedule, "guidance": guidance,
            "metric": metric, "value": float(boot.mean()), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975)), "n_samples": 64, "wall_s": 1.0, "seed": 0,
            "boot": list(boot), "boot_seed": 0}


def _frame() -> pd.DataFrame:
    """digits-flow's Euler (flow-shift:1) 20% below digits-unet's DDIM (logsnr) at NFE 6 and 10 on every paired
    replicate, unguided; at guidance 7.5 digits-unet is the better one; digits-unet's other grid (time-uniform) and
    digits-flow's shift 3 are far better still, so pairing with them would change the verdicts."""
    rng = np.random.default_rng(0)
    rows = []
    for nfe in (6, 10):
        base = 30 + rng.standard_normal(200)
        rows += [_row("digits-flow", "flow-euler", "flow-shift:1", nfe, 0.8 * base),
                 _row("digits-flow", "flow-euler", "flow-shift:3", nfe, 0.1 * base),
                 _row("digits-unet", "ddim", "logsnr", nfe, base),
                 _row("digits-unet", "ddim", "time-uniform", nfe, 0.1 * base),
                 _row("digits-flow", "flow-euler", "flow-shift:1", nfe, 1.3 * base, "7.5"),
                 _row("digits-unet", "ddim", "logsnr", nfe, base, "7.5")]
    return pd.DataFrame(rows)


def test_the_cross_model_claim_pairs_the_two_networks_at_the_same_setting() -> None:
    got = {(r["claim"].key, r["setting"]): r for r in check_claims(_frame())}
    unguided = got[("rectified-flow-fewer-steps", "none, flow-shift:1 vs digits-unet on logsnr")]
    assert unguided["verdict"] == "holds" and unguided["verdict_strongest"] == "n/a" and unguided["metric"] == "fdd"
    assert [(n, a.model, a.schedule, b.model, b.schedule) for n, a, b, _, _ in unguided["rows"]] == [
        (n, "digits-flow", "flow-shift:1", "digits-unet", "logsnr") for n in (6, 10)]
    assert got[("rectified-flow-fewer-steps", "7.5, flow-shift:1 vs digits-unet on logsnr")]["verdict"] == "fails"
    # judged once per setting of digits-flow, never with digits-unet as the claimant
    assert all(r["model"] == "digits-flow" for r in check_claims(_frame()) if r["claim"].baseline_model)
    # the shift claim on the same rows: shift 3 (0.1 x) beats shift 1 (0.8 x)
    assert got[("flow-shift-euler", "none, flow-shift:3 vs flow-shift:1")]["verdict"] == "holds"
    md = claims_markdown(_frame())
    section = md.split("## rectified-flow-fewer-steps")[1].split("\n## ")[0]
    assert "(digits-flow) vs `ddim` on `logsnr` (digits-unet)" in section and "strongest other S" not in section
    assert "| A: flow-euler (flow-shift:1) | B: ddim (digits-unet, logsnr) |" in section


def test_without_the_baseline_model_the_cross_model_claims_are_not_judged() -> None:
    df = _frame()
    got = check_claims(df[df["model"] != "digits-unet"])
    assert not [r for r in got if r["claim"].baseline_model]
    assert [r for r in got if r["claim"].key == "flow-shift-euler"]


def test_the_flow_solver_claims_pair_diffusers_flow_forms_with_euler_up_to_nfe_10() -> None:
    claims = {c.key: c for c in CLAIMS}
    assert (claims["flow-dpm-solver++-vs-euler"].baseline, claims["flow-dpm-solver++-vs-euler"].nfe) == (
        "flow-euler", (1, 10))
    assert claims["flow-unipc-vs-euler"].solver == "unipc:variant=bh2"  # diffusers' UniPC default
    rng = np.random.default_rng(1)
    rows = []
    for nfe in (4, 6, 10, 20):
        base = 0.1 + 0.01 * rng.standard_normal(200)
        rows += [_row("gmm-2d-flow", "flow-euler", "flow-shift:1", nfe, base, metric="sw2_true"),
                 _row("gmm-2d-flow", "dpm-solver++:order=2,method=multistep", "flow-shift:1", nfe,
                      base * (0.5 if nfe < 20 else 2.0), metric="sw2_true")]
    r, = [r for r in check_claims(pd.DataFrame(rows)) if r["claim"].key == "flow-dpm-solver++-vs-euler"]
    assert [n for n, *_ in r["rows"]] == [4, 6, 10] and r["verdict"] == "holds"  # NFE 20 is outside the claim
