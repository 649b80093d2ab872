"""The claims of the accelerated, parallel, distilled and aligned samplers can be judged from a run of
config/samplers.yaml: both solvers of each claim run there, and the ledger pairs them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from dpmbench.report.claims import CLAIMS, check_claims
from dpmbench.solvers.registry import get_solver

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("accel-ddim-vs-base", "accel-ddpm-vs-base", "picard-matches-ddim", "picard-matches-dpm-solver++",
        "picard-matches-ddpm", "d-ode-ddim", "d-ode-dpm-solver++", "d-ode-ipndm", "d-ode-deis", "d-ode-heun",
        "timestep-aligner-ddim")


def test_every_sampler_claim_is_judged_on_a_samplers_run() -> None:
    solvers = yaml.safe_load((ROOT / "config" / "samplers.yaml").read_text())["solvers"]
    claims = {c.key: c for c in CLAIMS}
    assert set(KEYS) <= set(claims)
    rows = []
    for key in KEYS:
        c = claims[key]
        assert c.solver in solvers and c.baseline in solvers, key
        get_solver(c.solver), get_solver(c.baseline)  # valid specs
        metric = "rmse_exact" if c.kind == "path" else "sw2_true"  # quality claims: the whole distribution
        for spec, v in ((c.solver, 0.1), (c.baseline, 0.2)):  # the paper's solver better, CIs disjoint
            rows.append({"model": "gmm-2d", "solver": spec, "nfe": 5, "schedule": "logsnr", "guidance": "none",
                         "metric": metric, "value": v, "ci_low": v - 0.01, "ci_high": v + 0.01, "n_samples": 100,
                         "wall_s": 1.0})
    got = {r["claim"].key: (r["ran"], r["verdict"]) for r in check_claims(pd.DataFrame(rows).drop_duplicates(
        subset=["solver", "metric"]))}
    for key in KEYS:
        assert got[key][0] == (claims[key].solver, claims[key].baseline), key
