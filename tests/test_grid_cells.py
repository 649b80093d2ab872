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
# The paper reproductions run the official scripts' protocols (tests/test_papers.py checks them): DPM-Solver-v3's rows
# and the EDM Heun row of config/reproductions/dpm-solver-v3.yaml (settings per NFE, Heun on the rho = 7 grid), and
# diff-sampler's DPM-Solver++ / UniPC rows (data predictions thresholded): those cells are replaced. The EDM VP
# networks' cells end at EDM's sigma = 0.002 in the vp-linear time of their checkpoints (t = 3.98e-5) instead of
# t = 0.002. Every other cell of those grids stays as it was.
OFFICIAL_PROTOCOLS = {"results/papers/dpm-solver-v3": ("dpm-solver-v3", "heun"),
                      "results/papers/diff-sampler": ("dpm-solver++", "unipc")}
VP_EDM = ("edm-cifar10-uncond-vp", "edm-ffhq64-uncond-vp")
SIGMA_RANGE = {"results/papers/dpm-solver-v3": VP_EDM[:1], "results/papers/edm": VP_EDM,
               "results/papers/diff-sampler": VP_EDM}
SIGMA_MIN_VP_TIME = "3.9841975391405537e-05"  # t_end of the VP networks: sigma = 0.002 in their vp-linear time
# Every paper reproduction states the FID implementation of its published numbers (`fid_implementation`, passed to
# the metrics job as --fid-implementation), and the models whose papers used ScoreSDE's statistics file use it
# (cifar10-train-32-scoresde) instead of EDM's CIFAR-10 statistics. Nothing else of their jobs changes.
SCORESDE_STATS = {"results/papers/dpm-solver": ("scoresde-cifar10-ddpmpp-deep-continuous",),
                  "results/papers/unipc": ("scoresde-cifar10-ddpmpp-deep-continuous",),
                  "results/papers/dpm-solver-v3": ("scoresde-cifar10-ddpmpp-deep-continuous", "edm-cifar10-uncond-vp")}
# Checkpoints that were named only and are now loadable (an adapter and files in config/checkpoints.yaml): the
# guided-diffusion ADM of DPM-Solver-v3's Table 6 and of DPM-Solver++'s guided example. Their jobs then pull and load
# the checkpoint (job field "checkpoint": "loadable" instead of "named"); nothing else of them changes.
NOW_LOADABLE = ("adm-imagenet256-classifier-guided",)


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
    for results_dir in sorted(set(OFFICIAL_PROTOCOLS) | set(SIGMA_RANGE)):
        names, models = OFFICIAL_PROTOCOLS.get(results_dir, ()), SIGMA_RANGE.get(results_dir, ())

        def changed(cells: list[str], names: tuple[str, ...] = names, models: tuple[str, ...] = models) -> set[str]:
            return {c for c in cells if c.split("|")[4].partition(":")[0] in names or c.split("|")[0] in models}

        def specs(cells: set[str], names: tuple[str, ...] = names) -> set[str]:
            return {c.split("|")[4] for c in cells if c.split("|")[4].partition(":")[0] in names}

        def t_ends(cells: set[str], models: tuple[str, ...] = models) -> set[str]:
            return {c.split("|")[7] for c in cells if c.split("|")[0] in models}

        old, new = changed(out[results_dir]["cells"]), changed(now[results_dir]["cells"])
        assert old and new and not specs(old) & specs(new)  # every spec of those rows changed
        assert {c.split("|")[0] for c in new} >= set(models)
        assert not models or (t_ends(old) == {"0.002"} and t_ends(new) == {SIGMA_MIN_VP_TIME})
        out[results_dir]["cells"] = sorted(set(out[results_dir]["cells"]) - old | new)
    results_dir, model, head, added_metrics = KNN_METRICS
    records = out[results_dir][f"model:{model}"]
    assert records and all(head in r for r in records)
    out[results_dir][f"model:{model}"] = [r.replace(head, head + added_metrics) for r in records]
    for results_dir in ADDED_GRIDS:
        assert results_dir not in out and results_dir in now
        out[results_dir] = now[results_dir]
    for results_dir in out:
        for model in NOW_LOADABLE:
            if f"model:{model}" in out[results_dir]:
                out[results_dir][f"model:{model}"] = [
                    r.replace('"checkpoint": "named"', '"checkpoint": "loadable"')
                    for r in out[results_dir][f"model:{model}"]]
    for results_dir in (d for d in out if d.startswith("results/papers/")):
        for key, records in out[results_dir].items():
            if key.startswith("model:"):
                out[results_dir][key] = [_fid_protocol(r, results_dir, key[len("model:"):], now[results_dir][key])
                                         for r in records]
    return out


def _fid_protocol(record: str, results_dir: str, model: str, now: list[str]) -> str:
    """A paper model's job record with its FID statistics (ScoreSDE's where its paper used them) and the published
    numbers' FID implementation, as now configured (checked: a known implementation, the same statistics otherwise)."""
    from dpmbench.grid.registry import fid_implementation_names

    old = json.loads(record)["fid_stats"]
    if not old:
        return record
    stats = old.split()[1]
    if model in SCORESDE_STATS.get(results_dir, ()):
        assert stats == "cifar10-train-32-edm"
        stats = "cifar10-train-32-scoresde"
    impl = json.loads(now[0])["fid_stats"].partition("--fid-implementation ")[2]
    assert impl in fid_implementation_names(), (results_dir, model)
    return record.replace(f'"fid_stats": "{old}"', f'"fid_stats": "--fid-stats {stats} --fid-implementation {impl}"')


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


def test_a_solver_entry_sets_options_per_nfe_and_its_own_schedules_and_guidance() -> None:
    entry = {"solver": "dpm-solver-v3:order=2", "nfe_options": [{"nfe": [10], "options": {"corrector": False}}]}
    g = build_grid({**BASE, "solvers": ["ddim", entry, {"solver": "heun", "schedules": ["karras"], "guidance": [2.0]}],
                    "models": {"gmm-2d": {"num_samples": 4}}})
    assert g.nfe_groups("gmm-2d") == [[5, 15], [10]]  # NFEs whose specs differ are run by different jobs
    specs = {(c["solver"], c["schedule"], c["guidance"], c["nfe"]): g.spec(c["solver"], "gmm-2d", [c["nfe"]])
             for c in g.cells()}
    v3 = "dpm-solver-v3__order-2"  # the cell keeps the entry's name
    assert {n: specs[(v3, "logsnr", "none", n)] for n in (5, 10, 15)} == {
        5: "dpm-solver-v3:order=2", 10: "dpm-solver-v3:order=2,corrector=false", 15: "dpm-solver-v3:order=2"}
    assert {k for k in specs if k[0] == "heun"} == {("heun", "karras", "2.0", n) for n in (5, 10, 15)}
    assert {k[1:3] for k in specs if k[0] != "heun"} == {("logsnr", "none")}
    assert g.spec(v3) == "dpm-solver-v3:order=2"


@pytest.mark.parametrize("entry,message", [
    ({"solver": "heun", "nfe_options": [{"nfe": [7], "options": {"odd_nfe": "to-zero"}}]},
     r"'solvers\[1\].nfe_options\[0\].nfe': 7 is not an nfe of the model; its nfe: \[5, 10, 15\]"),
    ({"solver": "heun", "nfe_options": [{"nfe": [5], "options": {"odd": "to-zero"}}]},
     r"'solvers\[1\].nfe_options': at nfe 5: invalid option of solver 'heun' 'odd'; .*did you mean 'odd_nfe'\?"),
    ({"solver": "heun", "nfe_options": [{"nfe": [5], "options": {"odd_nfe": "x"}}]},
     r"'solvers\[1\].nfe_options': at nfe 5: .*allowed: last-step, to-zero"),
    ({"solver": "heun", "nfe_options": [{"nfe": [5], "options": {"odd_nfe": "to-zero"}},
                                        {"nfe": [5], "options": {"odd_nfe": "last-step"}}]},
     r"'solvers\[1\].nfe_options\[1\].nfe': 5 is also in solvers\[1\].nfe_options\[0\]"),
    ({"solver": "heun", "nfe_options": [{"nfe": [5]}]}, r"'solvers\[1\].nfe_options\[0\]': 'options' is a required"),
    ({"solver": "heun", "grid": 1}, r"'solvers\[1\].grid': unknown key"),
    ({"solver": "heun", "schedules": ["karas"]}, r"'solvers\[1\].schedules\[0\]': unknown schedule 'karas'.*karras"),
    ({"solver": "ddim"}, r"'solvers\[1\]': solver 'ddim' is listed twice"),
])
def test_bad_solver_entries_name_the_key(entry: dict, message: str) -> None:
    with pytest.raises(DpmbenchError, match=message):
        build_grid({**BASE, "solvers": ["ddim", entry], "models": {"gmm-2d": {"num_samples": 4}}})


def test_a_solver_entry_guidance_is_refused_on_an_unconditional_model() -> None:
    with pytest.raises(DpmbenchError, match=r"'solvers\[1\].guidance': model 'edm-cifar10-uncond-vp' is uncond"):
        build_grid({**BASE, "solvers": ["ddim", {"solver": "heun", "guidance": [2.0]}],
                    "models": {"edm-cifar10-uncond-vp": {"num_samples": 4}}})


def test_a_named_search_set_at_some_nfe_is_an_input_of_the_cell() -> None:
    from types import SimpleNamespace

    entry = {"solver": "ddim", "nfe_options": [{"nfe": [10], "options": {"denoise_to_zero": True}}]}
    cfg = {**BASE, "solvers": [entry], "models": {"gmm-digits": {"num_samples": 4}}}
    g = build_grid(cfg)
    g.searches = {"true": {}}  # a search named like the option's value (checked by value, as usf's schedule_name)
    wc = SimpleNamespace(model="gmm-digits", solver="ddim", schedule="logsnr")
    assert g.solver_search_inputs(wc) == [f"{g.artifacts_dir()}/named/true.json"]
    assert g.spec("ddim", "gmm-digits", [10]) == "ddim:denoise_to_zero=true"
    assert g.spec("ddim", "gmm-digits", [5]) == "ddim"
