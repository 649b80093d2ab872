"""Named searches and solver preparation in the workflow: run once, before the sample jobs, as DAG outputs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import support
import yaml
from test_workflow import TINY, _env, table

PLUGIN = textwrap.dedent('''
    """A plugin registering a toy search (time grid t = T u^p) and a solver with a prepare step."""
    import torch

    from dpmbench.artifacts import cached
    from dpmbench.search import register_search
    from dpmbench.solvers.base import Option, register
    from dpmbench.solvers.ddim import DDIM

    @register_search("toy-power", "t_end + (T - t_end) u^p", "test", produces="timesteps",
                     options={"p": Option(float, 2.0, "exponent")})
    def toy_power(ctx, solver, seed, opts):
        u = torch.linspace(1, 0, ctx.nfe + 1, dtype=torch.float64) ** opts["p"]
        return {"grids": {str(ctx.nfe): (ctx.end + (ctx.start - ctx.end) * u).tolist()}}

    @register
    class PreparedDDIM(DDIM):
        name = "prepared-ddim"
        needs_prepare = True

        def prepare(self, ctx):
            x = ctx.model.prior(8, seed=0, dtype=torch.float64)
            stat = cached("toy-stat", ctx.key(), lambda: float(ctx.model.eps(x, 0.5, ctx.cond(8)).pow(2).mean()))
            return {"stat": stat}
''')


def test_named_search_and_prepare_are_dag_outputs(tmp_path: Path) -> None:
    (support.PLUGIN_DIR / "toy_plugin.py").write_text(PLUGIN)  # on the jobs' PYTHONPATH (support.py)
    config = {**TINY, "solvers": ["ddim", "prepared-ddim"], "schedules": ["logsnr", "searched:quad"],
              "samples_per_shard": TINY["models"]["gmm-2d"]["num_samples"],  # one shard (job) per cell
              "searches": {"quad": {"search": "toy-power", "model": "gmm-2d", "nfe": [3, 5], "set": "p=2"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = _env(tmp_path)
    env["DPMBENCH_PLUGINS"] = "toy_plugin"

    def run(*args: str):  # noqa: ANN202
        from test_workflow import _cmd

        return support.run_snakemake(_cmd(tmp_path, *args)[1:], env, timeout=900)

    proc = run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    named = tmp_path / "results" / "artifacts" / "named" / "quad.json"
    grids = json.loads(named.read_text())["data"]["grids"]
    assert sorted(grids) == ["3", "5"] and abs(grids["5"][-1] - 1e-3) < 1e-15
    prepared = list((tmp_path / "results").rglob("prepared.json"))
    assert len(prepared) == 2  # prepared-ddim x (logsnr, searched:quad); plain ddim needs none
    rows = table(tmp_path / "reports" / "results.csv")
    assert {r["schedule"] for r in rows} == {"logsnr", "searched:quad"}
    # prepared-ddim is ddim plus an (unused) statistic: identical numbers in every cell
    by = {(r["schedule"], r["nfe"], r["metric"], r["solver"]): r["value"] for r in rows}
    assert all(by[(s, n, m, "prepared-ddim")] == v for (s, n, m, k), v in by.items() if k == "ddim")
    # the searched grid differs from logsnr, so the results do too
    assert by[("searched:quad", "5", "rmse_exact", "ddim")] != by[("logsnr", "5", "rmse_exact", "ddim")]
    dry = run("-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # a prepare job on a searched schedule waits for that search (a scheduler may start it first otherwise)
    plan = run("-n", "--forceall").stdout
    block = next(b for b in plan.split("rule ") if b.startswith("prepare:") and "searched__quad" in b)
    assert "artifacts/named/quad.json" in block.split("output:")[0], block
    # a searched schedule must name a search of the config
    bad = {**config, "schedules": ["searched:nope"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    proc = run()
    assert proc.returncode == 2 and "invalid config key 'schedules[0]': unknown searched schedule" in proc.stderr


def test_shipped_searched_config_plans_its_searches_once(tmp_path: Path) -> None:
    """config/searched.yaml: four named searches, each one job that every sample job on its grid waits for."""
    from test_workflow import ROOT

    env = _env(tmp_path)
    proc = support.run_snakemake(["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                                  "--configfile", str(ROOT / "config" / "searched.yaml"), "-n", "--quiet", "rules"],
                                 env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = dict(line.split()[:2] for line in (proc.stdout + proc.stderr).splitlines()
                if len(line.split()) == 2 and line.split()[1].isdigit())
    assert jobs["search"] == "4" and jobs["prepare"] == "5"  # dpm-solver-v3 on each of the 5 schedules


HELD_OUT = {  # a searched grid (AYS's KLUB) and a fitted solver (DPM-Solver-v3's EMS) beside plain solvers
    "results_dir": "results", "report_dir": "reports", "seed": 0, "t_end": 0.001, "device": "cpu",
    "metrics": ["rmse_exact", "fd_true"], "nfe": [3, 5], "samples_per_shard": 20,
    "schedules": ["logsnr", "searched:klub"],
    "solvers": ["ddim", "dpm-solver++:order=2,method=multistep", "dpm-solver-v3:ems_samples=8,ems_steps=8"],
    "models": {"gmm-2d": {"num_samples": 40, "guidance": ["none"]}},
    "searches": {"klub": {"search": "ays", "model": "gmm-2d", "nfe": [3, 5],
                          "set": "objective=klub,samples=8,iterations=1,candidates=3,levels=1,subdivide=false"}},
}


def test_workflow_fits_are_held_out_and_results_are_recomputed_in_process(tmp_path: Path) -> None:
    """End to end: the search and the fit of a workflow run drew their sets from samples no sample job drew (their
    artifacts say so, and regenerating those sets finds no evaluated x_T among them); and a handful of results.csv
    cells equal an independent in-process computation from the same x_T (dpmbench.sample, RMSE to the exact
    solution, FD from moments)."""

    import numpy as np
    import scipy.linalg
    import torch
    from test_workflow import _cmd

    from dpmbench import load_model, sample
    from dpmbench.models.base import FIT_START

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(HELD_OUT))
    proc = support.run_snakemake(_cmd(tmp_path)[1:], _env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_model("gmm-2d")
    x_T64 = model.prior(40, seed=0, dtype=torch.float64)
    # held out: every stored search / fit artifact records a stream from FIT_START on, beyond every sample job
    metas = [json.loads(p.read_text()).get("meta", {}) for p in (tmp_path / "results").rglob("*.json")
             if "artifacts" in p.parts]
    streams = [m["stream"] for m in metas if "stream" in m]
    assert len(streams) >= 2 and all(s["start"] == FIT_START for s in streams)  # the AYS search, the EMS fit
    starts = [int(np.load(p)["start"]) + int(np.load(p)["num_samples"])
              for p in (tmp_path / "results").rglob("*.npz") if "start" in np.load(p).files]
    assert starts and max(starts) <= 40 < FIT_START
    for s in streams:
        fit = model.prior(s.get("samples", 8), seed=s["seed"], dtype=torch.float64, start=s["start"])
        assert not (torch.cdist(fit, x_T64) == 0).any()
    # values: recompute cells of results.csv independently
    rows = {(r["solver"], r["nfe"], r["schedule"], r["metric"]): float(r["value"])
            for r in table(tmp_path / "reports" / "results.csv")}
    ref = model.exact_solution(x_T64, t_end=0.001).numpy()
    mu, cov = (a.numpy() for a in model.data_moments(None, t=0.001))
    grids = {"logsnr": "logsnr"}
    klub = json.loads((tmp_path / "results" / "artifacts" / "named" / "klub.json").read_text())["data"]
    checked = 0
    for solver in ("ddim", "dpm-solver++:order=2,method=multistep"):
        for nfe in (3, 5):
            for sched in ("logsnr", "searched:klub"):
                kind = grids.get(sched) or torch.tensor(klub["grids"][str(nfe)], dtype=torch.float64)
                x = sample(model, solver, nfe, model.prior(40, seed=0), schedule=kind, t_end=0.001)
                x = x.to(torch.float32).numpy().astype(np.float64)
                rmse = float(np.sqrt(((x - ref) ** 2).mean()))
                m, c = x.mean(0), np.cov(x, rowvar=False)
                fd = float(((m - mu) ** 2).sum() + np.trace(c + cov - 2 * scipy.linalg.sqrtm(c @ cov).real))
                assert rows[(solver, str(nfe), sched, "rmse_exact")] == pytest.approx(rmse, rel=1e-6)
                assert rows[(solver, str(nfe), sched, "fd_true")] == pytest.approx(fd, rel=1e-6, abs=1e-12)
                checked += 1
    assert checked == 8
