"""Every config expands to the cells it expanded to before the config diet (per-model solver_options, nfe_overrides,
merged reproduction configs, one checkpoint manifest): tests/data/grid_cells.json holds the cells and every job
setting of each results directory, dumped by tests/grid_cells.py from the configs of commit a0e31b9; the configs'
deliberate changes since then are listed below and applied to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grid_cells import by_results_dir, expand, run_configs

from dpmbench.errors import DpmbenchError
from dpmbench.grid import build_grid

FIXTURE = Path(__file__).parent / "data" / "grid_cells.json"


# The configs' deliberate changes since a0e31b9 (verdicts a reviewer would sign): the oracle quality claims judge
# sw2_true, so the oracle models of these grids compute it; the default grid runs DPM-Solver-2 multistep, the
# multistep pairing of DPM-Solver++'s guidance claim. Nothing else may change.
SW2_GRIDS = ("results", "results/samplers", "results/searched")
ADDED_SOLVER = ("results", "dpm-solver:order=2,method=multistep")
# The flow-matching models added to the default grid (issue 25): their cells and job settings are new; every cell of
# the other models stays as it was.
ADDED_MODELS = {"results": ("gmm-2d-flow", "gmm-digits-flow", "digits-flow")}
# The k-NN manifold metrics added to digits-unet's metric list in the default grid (digits-flow, added above, lists
# them too); every other setting of its jobs stays as it was.
KNN_METRICS = ("results", "digits-unet", '"metrics": ["fdd", "kdd", "is_digits", "cond_acc", ',
               '"precision", "recall", "density", "coverage", ')
# Configs added since a0e31b9 (their own results directories; each has its own expansion test): config/flow.yaml
# (tests/test_flow_adapters.py).
ADDED_GRIDS = ("results/flow",)


def _with_deliberate_changes(before: dict[str, dict[str, list[str]]], now: dict[str, dict[str, list[str]]]
                             ) -> dict[str, dict[str, list[str]]]:
    out = json.loads(json.dumps(before))
    for results_dir in SW2_GRIDS:
        for key, records in out[results_dir].items():
            if key.startswith("model:"):
                out[results_dir][key] = sorted(r.replace('"metrics": ["rmse_exact", "fd_true"]',
                                                         '"metrics": ["rmse_exact", "fd_true", "sw2_true"]')
                                               for r in records)
    results_dir, spec = ADDED_SOLVER
    added = [c for c in now[results_dir]["cells"] if c.split("|")[4] == spec]
    assert added and not any(c.split("|")[4] == spec for c in before[results_dir]["cells"])
    out[results_dir]["cells"] = sorted(out[results_dir]["cells"] + added)
    for results_dir, models in ADDED_MODELS.items():
        new = [c for c in now[results_dir]["cells"] if c.split("|")[0] in models]
        assert new and not any(c.split("|")[0] in models for c in before[results_dir]["cells"])
        out[results_dir]["cells"] = sorted(out[results_dir]["cells"] + new)
        for m in models:
            assert f"model:{m}" not in out[results_dir]
            out[results_dir][f"model:{m}"] = now[results_dir][f"model:{m}"]
        out[results_dir] = dict(sorted(out[results_dir].items()))
    results_dir, model, head, added_metrics = KNN_METRICS
    records = out[results_dir][f"model:{model}"]
    assert records and all(head in r for r in records)
    out[results_dir][f"model:{model}"] = [r.replace(head, head + added_metrics) for r in records]
    for results_dir in ADDED_GRIDS:
        assert results_dir not in out and results_dir in now
        out[results_dir] = now[results_dir]
    return out


def test_every_config_expands_to_the_same_cells() -> None:
    now = by_results_dir(run_configs())
    before = _with_deliberate_changes(json.loads(FIXTURE.read_text()), now)
    assert sorted(now) == sorted(before)
    for results_dir, grid in before.items():
        assert now[results_dir] == grid, results_dir


BASE = {"metrics": ["fd_true"], "nfe": [5, 10, 15], "solvers": ["ddim", "dpm-solver-v3:order=2"], "t_end": 0.001,
        "samples_per_shard": 4}


def test_solver_options_set_every_spec_of_the_solver() -> None:
    g = build_grid({**BASE, "models": {"gmm-digits": {"num_samples": 4, "solver_options": {
        "dpm-solver-v3": {"ems_samples": 64, "order": 3}, "ddim": {"denoise_to_zero": True}}}}})
    assert sorted(g.specs.values()) == ["ddim:denoise_to_zero=true", "dpm-solver-v3:order=3,ems_samples=64"]
    with pytest.raises(DpmbenchError, match=r"'models.gmm-digits.solver_options.heun': the model runs no solver"):
        build_grid({**BASE, "models": {"gmm-digits": {"num_samples": 4, "solver_options": {"heun": {"x": 1}}}}})


def test_nfe_overrides_group_the_nfes_of_a_model() -> None:
    cfg = {**BASE, "models": {"edm-cifar10-uncond-vp": {"num_samples": 4, "nfe_overrides": [
        {"nfe": [10, 15], "t_end": 0.0001}]}}}
    g = build_grid(cfg)
    m = "edm-cifar10-uncond-vp"
    assert g.nfe_groups(m) == [[5], [10, 15]]
    assert [g.t_end_of(m, grp) for grp in g.nfe_groups(m)] == [0.001, 0.0001]
    assert [(s, n) for s, n, _ in g.nfe_sets()] == [("", [5]), ("_1", [10, 15])]
    assert {c["nfe"] for c in g.cells()} == {5, 10, 15}
    with pytest.raises(DpmbenchError, match=r"'models.edm-cifar10-uncond-vp.nfe_overrides\[0\].nfe': 20 is not an nfe"):
        build_grid({**cfg, "models": {m: {"num_samples": 4, "nfe_overrides": [{"nfe": [20], "t_end": 0.1}]}}})
    with pytest.raises(DpmbenchError, match=r"'nfe_overrides': model 'gmm-2d' has a reference file"):
        build_grid({**BASE, "nfe_overrides": [{"nfe": [15], "t_end": 0.01}], "models": {"gmm-2d": {"num_samples": 4}}})


def test_one_config_expands_like_the_fixture_of_its_results_dir() -> None:
    from dpmbench.yamlfile import read_yaml

    root = Path(__file__).parents[1]
    e = expand(read_yaml(root / "config" / "reproductions" / "dpm-solver.yaml"))
    before = json.loads(FIXTURE.read_text())[e["results_dir"]]
    assert sorted(e["cells"]) == before["cells"]  # NFE 10, 12 at 1e-3 and 15, 20 at 1e-4: once two files
