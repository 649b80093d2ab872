"""``reports/claims.md``: the seed papers' claims checked on a run's results (dpmbench.report.claims)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dpmbench.report.claims import CLAIMS, check_claims, claims_markdown, summary_verdict


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
    assert all(c.kind in ("path", "quality") for c in CLAIMS)
    assert all("arXiv:" in c.source or "documentation v" in c.source for c in CLAIMS)  # a versioned document
    assert claims_markdown(pd.DataFrame(columns=["model", "metric"])).endswith("_No claim applies to these results._\n")


def _pair(boot: bool, seed_b: int = 0) -> pd.DataFrame:
    """v3 vs DPM-Solver++(2M) on gmm-2d at NFE 5 with overlapping marginal CIs but errors that move together over
    the bootstrap resamples: v3 is smaller by 0.01 +- 0.001 on every resample."""
    rng = np.random.default_rng(0)
    base = 0.11 + 0.02 * rng.standard_normal(200)
    shift = 0.01 + 0.001 * rng.standard_normal(200)
    rows = _rows("gmm-2d", "rmse_exact", "none", {"dpm-solver-v3": [(0.10, 0.065, 0.145)],
                                                   "dpm-solver++:order=2,method=multistep": [(0.11, 0.075, 0.155)]})
    if boot:
        rows[0].update(boot=list(base - shift), boot_seed=0)
        rows[1].update(boot=list(base), boot_seed=seed_b)
    return pd.DataFrame(rows)


def test_paired_verdict_separates_where_the_marginal_cis_overlap() -> None:
    marginal, paired = check_claims(_pair(False))[0], check_claims(_pair(True))[0]
    assert marginal["verdict"] == "within noise" and marginal["rows"][0][4] is None  # CIs [0.065, 0.145], [0.075, ..]
    assert paired["verdict"] == "holds"
    est, lo, hi = paired["rows"][0][4]
    assert est == pytest.approx(-0.01, abs=1e-12) and -0.013 < lo < hi < -0.007
    # replicates of different bootstrap seeds are not pairable: the marginal rule decides
    assert check_claims(_pair(True, seed_b=1))[0]["verdict"] == "within noise"
    md = claims_markdown(_pair(True))
    assert "| 5 | 0.1 [0.065, 0.145] | 0.11 [0.075, 0.155] | -0.01 [" in md and "| holds |" in md
    assert "| marginal CIs | within noise |" in claims_markdown(_pair(False))


def test_paired_verdict_is_the_leaderboards_decision() -> None:
    """The same pair of rows is *best* vs not on the leaderboard exactly when the claim row separates."""
    from dpmbench.report.stats import column_marks

    for boot, kind, verdict in ((False, "tied", "within noise"), (True, "best", "holds")):
        df = _pair(boot)
        df = df.assign(**{c: None for c in ("boot", "boot_seed") if c not in df})
        assert column_marks(list(df.itertuples()))["dpm-solver-v3"].kind == kind
        assert check_claims(df)[0]["verdict"] == verdict


# A tiny results.csv of a run with the oracle models and digits-unet: every claim's solvers (the prepared ones with
# the options the configs give them on the network), guidance none / 7.5 (digits-empirical: none only), NFE 5 / 10
# / 20, and each model's metrics (oracles: rmse_exact + fd_true; digits-unet: mse_ref + fdd).
SOLVERS = {"oracle": ["ddim", "ts-ddim", "dpm-solver:order=2,method=multistep", "ts-dpm-solver", "dpm-solver-v3",
                      "dpm-solver++:order=2,method=multistep", "unipc:variant=bh1,order=2", "dc-solver",
                      "dpm-solver++:order=2,method=singlestep", "dpm-solver:order=2"]}
SOLVERS["net"] = [s.replace("dpm-solver-v3", "dpm-solver-v3:ems_samples=64").replace("dc-solver", "dc-solver:"
                                                                                      "search_iters=10")
                  for s in SOLVERS["oracle"]]
MODELS = {"gmm-2d": ("oracle", ["none", "7.5"], ["rmse_exact", "fd_true", "sw2_true"]),
          "gmm-digits": ("oracle", ["none", "7.5"], ["rmse_exact", "fd_true", "sw2_true"]),
          "digits-empirical": ("oracle", ["none"], ["rmse_exact", "fd_true", "sw2_true"]),
          "digits-unet": ("net", ["none", "7.5"], ["mse_ref", "fdd"])}


@pytest.fixture
def run_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    lines = ["model,solver,nfe,schedule,guidance,metric,value,ci_low,ci_high,n_samples,wall_s"]
    for model, (kind, guidances, metrics) in MODELS.items():
        for g, metric, solver, nfe in itertools.product(guidances, metrics, SOLVERS[kind], (5, 10, 20)):
            v = float(rng.uniform(0.1, 1.0))
            lines.append(f"{model},\"{solver}\",{nfe},logsnr,{g},{metric},{v},{v * 0.9},{v * 1.1},64,0.5")
    (tmp_path / "results.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "results.csv"


def test_claims_md_lists_every_claim_on_every_model_where_it_applies(run_csv: Path) -> None:
    df = pd.read_csv(run_csv, dtype={"guidance": str})
    md = claims_markdown(df)
    summary = {tuple(c.strip() for c in line.split("|")[1:4]) + (line.split("|")[4].strip(),)
               for line in md.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in
               {c.key for c in CLAIMS}}
    oracles = ["gmm-2d", "gmm-digits", "digits-empirical"]
    want = set()
    for key in ("time-shift-ddim", "time-shift-dpm-solver"):  # quality, unguided, every NFE
        want |= {(key, m, "none", "sw2_true") for m in oracles} | {(key, "digits-unet", "none", "fdd")}
    for key in ("dpm-solver-v3-vs-2m", "dpm-solver-v3-vs-unipc"):  # path, every guidance, NFE 5-10
        want |= {(key, m, g, "rmse_exact") for m in oracles for g in MODELS[m][1]}
        want |= {(key, "digits-unet", g, "mse_ref") for g in ("none", "7.5")}
    for key in ("dc-solver-vs-unipc-cfg", "dpm-solver++-vs-dpm-solver-cfg",  # path, guidance 7.5 only
                "dpm-solver++-vs-dpm-solver-cfg-multistep"):
        want |= {(key, m, "7.5", "rmse_exact") for m in ("gmm-2d", "gmm-digits")} | {(key, "digits-unet", "7.5",
                                                                                    "mse_ref")}
    assert summary == want
    # every seed-paper claim has a model in this run; the newer samplers' claims (their solvers are not in the
    # default grid: config/samplers.yaml, tests/test_claims_samplers.py) have no row here
    seed_papers = {"time-shift-ddim", "time-shift-dpm-solver", "dpm-solver-v3-vs-2m", "dpm-solver-v3-vs-unipc",
                   "dc-solver-vs-unipc-cfg", "dpm-solver++-vs-dpm-solver-cfg",
                   "dpm-solver++-vs-dpm-solver-cfg-multistep"}
    assert {k for k, *_ in want} == seed_papers and seed_papers <= {c.key for c in CLAIMS}
    # the per-claim tables: the prepared solvers under their configured names, NFE limited to the claim's range
    v3 = md.split("## dpm-solver-v3-vs-2m")[1].split("\n## ")[0]
    assert "| NFE | A: dpm-solver-v3:ems_samples=64 | B: dpm-solver++:order=2,method=multistep |" in v3
    assert v3.count("| 5 |") == v3.count("| 10 |") == 7 and "| 20 |" not in v3  # 7 (model, guidance) tables
    dc = md.split("## dc-solver-vs-unipc-cfg")[1].split("\n## ")[0]
    assert "A: dc-solver:search_iters=10" in dc and dc.count("| 20 |") == 3
    assert md.count("| marginal CIs |") > 0 and "(n=64)" in md


def test_several_schedules_are_judged_separately() -> None:
    v3, pp = "dpm-solver-v3", "dpm-solver++:order=2,method=multistep"
    logsnr = pd.DataFrame(_rows("gmm-2d", "rmse_exact", "none", {v3: [(0.1, 0.09, 0.11)], pp: [(0.2, 0.19, 0.21)]}))
    uniform = logsnr.assign(schedule="time-uniform", value=logsnr["value"][::-1].to_numpy(),
                            ci_low=logsnr["ci_low"][::-1].to_numpy(), ci_high=logsnr["ci_high"][::-1].to_numpy())
    got = {(r["setting"], r["verdict"]) for r in check_claims(pd.concat([logsnr, uniform]))}
    assert got == {("none, logsnr", "holds"), ("none, time-uniform", "fails")}
    assert {r["setting"] for r in check_claims(logsnr)} == {"none"}  # one schedule: not named


def _ts_ddim_run(run: Path, metrics: str) -> None:
    """A run directory as the workflow lays it out: Time-Shift DDIM and DDIM on gmm-2d, NFE 5, 64 samples, seed 0,
    unguided, evaluated with ``metrics`` by ``dpmbench evaluate`` (bootstrap replicates stored)."""
    from dpmbench.cli import main

    cell = run / "gmm-2d" / "gnone" / "seed0"
    for solver in ("ts-ddim", "ddim"):
        shard = cell / "logsnr" / solver / "nfe5" / "0-64.npz"
        assert main(["sample", "--model", "gmm-2d", "--num-samples", "64", "--seed", "0", "--solver", solver,
                     "--nfe", "5", "--out", str(shard)]) == 0
        assert main(["evaluate", "--samples", str(shard), "--metrics", metrics,
                     "--out", str(shard.parent.parent / "nfe5.json")]) == 0


def test_report_judges_claims_on_the_stored_replicates(tmp_path: Path) -> None:
    """End to end: metric files written by ``dpmbench evaluate`` carry bootstrap replicates, so the claims.md of
    ``dpmbench report`` is decided on the paired CI; the same rows read back from results.csv (no replicates) fall
    back to the marginal rule. (Time-Shift vs DDIM on gmm-2d, unguided sw2_true: no reference run needed.)"""
    from dpmbench.cli import main
    from dpmbench.report import collect

    _ts_ddim_run(tmp_path / "run", "sw2_true")
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "run"), "--out", str(out), "--papers", str(tmp_path / "none")]) == 0
    md = (out / "claims.md").read_text()
    paired = check_claims(collect(tmp_path / "run"))
    assert [r["claim"].key for r in paired] == ["time-shift-ddim"]
    (_, a, b, verdict, diff), = paired[0]["rows"]
    assert diff is not None and diff[0] == pytest.approx(a.value - b.value, rel=1e-12)
    assert f"| 5 | {a.value:.4g} [{a.ci_low:.4g}, {a.ci_high:.4g}] | {b.value:.4g} [" in md
    assert f"| {diff[0]:+.4g} [{diff[1]:+.4g}, {diff[2]:+.4g}] | {verdict} |" in md
    back = claims_markdown(pd.read_csv(out / "results.csv", dtype={"guidance": str}))
    assert "| marginal CIs |" in back and f"| {diff[0]:+.4g} [" not in back


def test_report_closes_claims_md_with_the_changed_verdicts(tmp_path: Path) -> None:
    """``dpmbench report`` compares with the claims.md it replaces (the one in --out, or --previous-claims)."""
    from dpmbench.cli import main

    _ts_ddim_run(tmp_path / "run", "fd_true,sw2_true")
    out, none = tmp_path / "report", str(tmp_path / "none")
    assert main(["report", str(tmp_path / "run"), "--out", str(out), "--papers", none]) == 0
    assert "Verdicts changed" not in (out / "claims.md").read_text()  # nothing to compare with
    assert main(["report", str(tmp_path / "run"), "--out", str(out), "--papers", none]) == 0
    assert "_None: every verdict is the previous ledger's._" in (out / "claims.md").read_text()
    old = tmp_path / "old.md"
    old.write_text("| time-shift-ddim | gmm-2d | none | fd_true | holds |\n")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r2"), "--papers", none,
                 "--previous-claims", str(old)]) == 0
    note = (tmp_path / "r2" / "claims.md").read_text().split("## Verdicts changed since the previous ledger")[1]
    assert "- time-shift-ddim on gmm-2d, guidance none: holds (fd_true) -> **" in note
    assert "(sw2_true): judged on sw2_true instead of fd_true (fd_true sees two moments only)" in note
