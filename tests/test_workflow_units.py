"""Pieces of the workflow without Snakemake: shard invariance, the grid, config validation, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dpmbench.cli import main
from dpmbench.errors import DpmbenchError
from dpmbench.grid import build_grid
from dpmbench.report import write_report
from evaluators.job import merge_shards, run_evaluate

BASE = {"metrics": ["rmse_exact"], "nfe": [4], "solvers": ["ddim"], "models": {"gmm-2d": {"num_samples": 8}}}


def _shards(tmp: Path, tag: str, per: int, n: int, *args: str) -> list[str]:
    files = []
    for lo in range(0, n, per):
        hi = min(lo + per, n)
        out = tmp / tag / str(per) / f"{lo}-{hi}.npz"
        assert main(["sample", "--num-samples", str(hi - lo), "--start", str(lo), "--seed", "5", "--nfe", "4",
                     "--out", str(out), *args]) == 0
        files.append(str(out))
    return files


@pytest.mark.parametrize("args", [
    ("--model", "gmm-2d", "--solver", "dpm-solver++:order=3", "--guidance", "3.0"),
    ("--model", "gmm-digits", "--solver", "heun"),
    ("--model", "digits-empirical", "--solver", "dpm-solver:order=2", "--batch-size", "3"),
])
def test_shard_size_invariance_is_bit_identical(tmp_path: Path, args: tuple[str, ...]) -> None:
    merged = {per: merge_shards(_shards(tmp_path, "a", per, 8, *args)) for per in (1, 2, 4, 8)}
    for per in (1, 2, 4):
        assert merged[per]["x"].tobytes() == merged[8]["x"].tobytes()  # bit-identical, not just close
        assert np.array_equal(merged[per]["labels"], merged[8]["labels"])
        assert merged[per]["num_samples"] == 8 and merged[per]["num_shards"] == 8 // per


def test_merge_rejects_a_gap(tmp_path: Path) -> None:
    files = _shards(tmp_path, "b", 2, 6, "--model", "gmm-2d", "--solver", "ddim")
    with pytest.raises(DpmbenchError, match="starts at 4, expected 2"):
        merge_shards([files[0], files[2]])


def test_metrics_job_over_shards_equals_unsharded(tmp_path: Path) -> None:
    common = ("--model", "gmm-2d", "--solver", "ddim")
    ref = tmp_path / "ref.npz"
    assert main(["reference", "--model", "gmm-2d", "--num-samples", "8", "--seed", "5", "--out", str(ref)]) == 0
    outs = [str(tmp_path / "sharded.json"), str(tmp_path / "whole.json")]
    cells = [",".join(_shards(tmp_path, "c", 3, 8, *common)), ",".join(_shards(tmp_path, "c", 8, 8, *common))]
    assert run_evaluate(cells, outs, "rmse_exact,fd_true", str(ref), seed=5) == 0
    a, b = (json.loads(Path(p).read_text()) for p in outs)
    assert a["metrics"] == b["metrics"] and a["ci"] == b["ci"] and a["n_samples"] == 8
    assert (a["num_shards"], b["num_shards"], a["seed"]) == (3, 1, 5)
    assert not list(tmp_path.glob(".merge-*"))


def test_grid_overrides_and_shards() -> None:
    cfg = {**BASE, "nfe": [5, 4], "samples_per_shard": 3, "seeds": [0, 1],
           "models": {"gmm-2d": {"num_samples": 8, "guidance": ["none", 2]},
                      "gmm-digits": {"num_samples": 4, "nfe": [6], "solvers": ["ddim", "heun"], "seeds": [0]}}}
    grid = build_grid(cfg)
    assert grid.models["gmm-2d"].shards == [(0, 3), (3, 6), (6, 8)]
    assert grid.shards_of("gmm-digits") == ["0-3", "3-4"]
    assert grid.nfe_sets() == [("", [4, 5], ["gmm-2d"]), ("_1", [6], ["gmm-digits"])]
    # gmm-2d: 2 guidance x 2 seeds x 1 solver x 2 nfe; gmm-digits: 1 x 1 x 2 solvers x 1 nfe
    assert len(grid.cells()) == 8 + 2
    assert len(grid.all_shard_files()) == 8 * 3 + 2 * 2
    assert "results/gmm-2d/g2.0/seed1/reference.npz" in grid.all_reference_files()


@pytest.mark.parametrize(("change", "message"), [
    ({"solvers": ["ddim", "dpm-solver++:order=7"]},
     "invalid config key 'solvers[1]': invalid option 'order' of solver 'dpm-solver++' '7'; allowed: 1, 2, 3"),
    ({"nfe": [0]}, "invalid config key 'nfe[0]': 0; allowed: a number >= 1"),
    ({"metrics": ["fid_typo"]}, "invalid config key 'metrics[0]': unknown metric 'fid_typo'"),
    ({"schedules": ["logsnr", "linear"]}, "invalid config key 'schedules[1]': unknown schedule 'linear'"),
    ({"seeds": [1], "seed": 2}, "invalid config key 'seed': give either 'seed' or 'seeds'"),
    ({"models": {"gmm-2d": {"num_samples": 8, "guidance": ["none", -1]}}},
     "invalid config key 'models.gmm-2d.guidance[1]': -1; allowed: none or a number > 0"),
    ({"models": {"gmm-2d": {"num_samples": 8, "nfe": [1], "solvers": ["heun", "dpm-solver:order=3"]}}},
     "invalid config key 'models.gmm-2d.nfe': invalid nfe 1 for solver"),
    ({"solver": ["ddim"]}, "invalid config key 'solver': unknown key; did you mean 'solvers'?"),
    ({"resources": {"sample": {"mem": 3}}}, "invalid config key 'resources.sample.mem': unknown key; did you mean"),
])
def test_bad_config_names_the_key(change: dict, message: str) -> None:
    with pytest.raises(DpmbenchError) as err:
        build_grid({**BASE, **change})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_refused_config_keeps_the_registry_facts_it_computed(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid's registry facts computed while checking a config are saved even when the config is refused, so
    that checking it again (a corrected config, `snakemake -n` after `dpmbench validate`) starts warm."""
    from dpmbench.grid.registry import Registry

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))
    with pytest.raises(DpmbenchError, match="solvers\\[1\\]"):
        build_grid({**BASE, "solvers": ["ddim", "no-such-solver"]})
    facts = json.loads(Registry().path.read_text())
    assert facts["solver:ddim|"] == "" and facts["solver:no-such-solver|"].startswith("invalid solver")


def test_default_config_is_valid() -> None:
    root = Path(__file__).parents[1]
    grid = build_grid(yaml.safe_load((root / "config" / "default.yaml").read_text()))
    assert grid.cells()


def _metric_file(root: Path, model: str, solver: str, nfe: int, value: float, **extra: object) -> None:
    d = root / model / "gnone" / "seed0" / "logsnr" / solver.replace(":", "__")
    d.mkdir(parents=True, exist_ok=True)
    (d / f"nfe{nfe}.json").write_text(json.dumps({
        "model": model, "solver": solver, "nfe": nfe, "schedule": "logsnr", "guidance": None, "n_samples": 10,
        "metrics": {"fd_true": value}, "ci": {"fd_true": [value * 0.9, value * 1.1]}, "wall_s": 0.1, **extra}))


def test_a_metrics_file_s_ci_is_read_within_its_metric_s_range(tmp_path: Path) -> None:
    """A metrics file written before the metrics job clipped CIs (a distance's lower bound below 0, a share's upper
    bound above 1) reads as a new one: clipped to the metric's range; a metric of unbounded range is left alone."""
    from dpmbench.report.tables import collect

    _metric_file(tmp_path, "gmm-digits", "ddim", 5, 0.01, metrics={"fd_true": 0.01, "precision": 0.9, "kdd": -0.1},
                 ci={"fd_true": [-0.02, 0.05], "precision": [0.8, 1.03], "kdd": [-0.3, 0.2]})
    df = collect(tmp_path).set_index("metric")
    assert df.loc["fd_true", ["ci_low", "ci_high"]].tolist() == [0.0, 0.05]
    assert df.loc["precision", ["ci_low", "ci_high"]].tolist() == [0.8, 1.0]
    assert df.loc["kdd", ["ci_low", "ci_high"]].tolist() == [-0.3, 0.2]  # unbiased MMD^2: negative is an estimate


def test_report_renders_any_results_dir_with_papers(tmp_path: Path) -> None:
    res = tmp_path / "results"
    for nfe, (a, b) in {5: (0.5, 0.2), 10: (0.1, 0.15)}.items():
        _metric_file(res, "gmm-digits", "ddim", nfe, a)
        _metric_file(res, "gmm-digits", "dpm-solver++", nfe, b)
    shard_dir = res / "gmm-digits" / "gnone" / "seed0" / "logsnr" / "ddim" / "nfe5"
    assert main(["sample", "--model", "gmm-digits", "--solver", "ddim", "--nfe", "5", "--num-samples", "4",
                 "--seed", "0", "--out", str(shard_dir / "0-4.npz")]) == 0
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "lu2022.yaml").write_text(yaml.safe_dump({
        "paper": "DPM-Solver++ (Lu et al. 2022)", "url": "https://arxiv.org/abs/2211.01095",
        "entries": [
            {"table": 1, "page": 7, "model": "gmm-digits", "metric": "fd_true", "solver": "dpm-solver++:order=2",
             "nfe": 10, "value": 0.1},
            {"table": 3, "page": 9, "model": "ldm-imagenet256", "checkpoint": "CompVis/ldm-celebahq-256",
             "metric": "fid", "solver": "dpm-solver++", "nfe": 10, "value": 4.2},
            {"table": 1, "page": 7, "model": "gmm-digits", "metric": "fd_true", "solver": "heun", "nfe": 10,
             "value": 0.3},
        ]}))
    out = tmp_path / "reports"
    assert main(["report", str(res), "--out", str(out), "--papers", str(papers)]) == 0
    md = (out / "leaderboard.md").read_text()
    assert "| ddim | 0.5 [0.45, 0.55] | **0.1 [0.09, 0.11]** |" in md
    assert "| dpm-solver++ | **0.2 [0.18, 0.22]** | 0.15 [0.135, 0.165] |" in md
    cmp = (out / "paper_comparison.md").read_text()
    # dpm-solver++ and dpm-solver++:order=2 are the same solver (canonical specs match)
    assert "| 1 | 7 | gmm-digits | fd_true | dpm-solver++:order=2 | 10 | any | any | 0.1 | 0.15 [0.135, 0.165]" in cmp
    assert "+0.05 |" in cmp
    assert "not run: needs checkpoint CompVis/ldm-celebahq-256" in cmp
    assert "not run: no fd_true at NFE 10 for heun in the results" in cmp
    assert (out / "figures" / "samples_gmm-digits_gnone_seed0_logsnr_nfe5.png").is_file()
    assert (out / "figures" / "gmm-digits_gnone_logsnr_fd_true.png").is_file()
    assert (out / "results.csv").read_text().startswith(  # one seed: no seed column
        "model,solver,nfe,schedule,guidance,metric,value,ci_low,ci_high,n_samples,wall_s,s_per_sample,device\n")
    two = tmp_path / "reports-2"  # the figures drawn by two worker processes: the same files, byte for byte
    assert main(["report", str(res), "--out", str(two), "--papers", str(papers), "--jobs", "2"]) == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (two / f).read_bytes() for f in files)
    assert write_report(res, tmp_path / "again", papers_dir=None).shape[0] == 4


def test_bad_papers_file_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"paper": "X", "entries": [{"table": 1, "model": "m"}]}))
    (tmp_path / "r").mkdir()
    with pytest.raises(DpmbenchError, match="entries\\[0\\] lacks 'metric'"):
        write_report(tmp_path / "r", tmp_path / "out", papers_dir=tmp_path)


def test_validate_command_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpmbench.cli import main as cli_main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "models": {"gmm-2d": {"num_samples": 8, "guidance": [2.0]}},
                                   "solvers": ["ddim", "dpm-solver++:order=2,method=multistep", "ddim"]}))
    assert cli_main(["validate", str(cfg)]) == 2
    assert capsys.readouterr().err == "dpmbench: error: invalid config key 'solvers': an entry is listed twice\n"


def test_several_seeds_get_a_seed_column_and_their_own_tables(tmp_path: Path) -> None:
    res = tmp_path / "results"
    _metric_file(res, "gmm-2d", "ddim", 5, 0.3, seed=0)
    d = res / "gmm-2d" / "gnone" / "seed1"
    _metric_file(d, "gmm-2d", "ddim", 5, 0.4, seed=1)  # a different path, another seed
    write_report(res, tmp_path / "out")
    lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert lines[0].endswith(",wall_s,seed,s_per_sample,device") and len(lines) == 3
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "### fd_true · guidance none · schedule logsnr · seed 1 (n=10)" in md


def test_sample_grid_mosaic_places_every_tile() -> None:
    """The sample grid is one image: tile (i, j) is sample j of row i mapped from [-1, 1] to [0, 1] (grey as RGB),
    white gaps between tiles, short rows padded with white, and each row's label at its centre."""
    from dpmbench.report.figures import tile_mosaic

    rng = np.random.default_rng(0)
    grey = rng.uniform(-1, 1, (3, 1, 8, 8))
    short = rng.uniform(-1, 1, (2, 1, 8, 8))
    mosaic, centers = tile_mosaic([grey, short], 3)
    assert mosaic.shape == (2 * 9 - 1, 3 * 9 - 1, 3) and centers == [3.5, 12.5]
    for i, xs in enumerate([grey, short]):
        for j in range(3):
            tile = mosaic[i * 9:i * 9 + 8, j * 9:j * 9 + 8]
            want = (xs[j, 0] + 1) / 2 if j < len(xs) else np.ones((8, 8))
            assert np.array_equal(tile, np.repeat(want[:, :, None], 3, axis=2))
    assert (mosaic[8] == 1).all() and (mosaic[:, 8] == 1).all()  # the gaps
    rgb = rng.uniform(-2, 2, (1, 3, 4, 4))  # clipped to [0, 1]
    m, _ = tile_mosaic([rgb], 1)
    assert np.array_equal(m, np.clip((rgb[0] + 1) / 2, 0, 1).transpose(1, 2, 0))


def test_provenance_records_are_shared_not_copied() -> None:
    """pandas deep-copies a frame's attrs on every operation: the provenance records are shared instead."""
    import pandas as pd

    from dpmbench.report.merge import Records

    df = pd.DataFrame({"a": [1, 2]})
    df.attrs["provenance"] = Records({"p1": {"torch": "x"}})
    derived = df[df["a"] > 1].sort_values("a")
    assert derived.attrs["provenance"] is df.attrs["provenance"]
    assert derived.attrs["provenance"] == {"p1": {"torch": "x"}}


def test_validate_prints_one_line_on_success(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpmbench.cli import main as cli_main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "models": {"gmm-2d": {"num_samples": 8, "guidance": [2.0]}}}))
    assert cli_main(["validate", str(cfg)]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.count("\n") == 1
    cells = len(build_grid(yaml.safe_load(cfg.read_text())).cells())
    assert out.out == f"{cfg}: valid ({cells} cells: 1 model)\n"
    assert cli_main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err == f"dpmbench: error: invalid config {str(tmp_path / 'none.yaml')!r}: no such file\n"
