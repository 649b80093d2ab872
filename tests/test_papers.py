"""The published numbers (papers/*.yaml) and the paper reproductions (config/reproductions/*.yaml).

Every entry has its source fields with the right types, names only dpmbench metrics, solvers, schedules and model ids,
is listed by `dpmbench report`, and (for implemented solvers) is reproduced by a cell of a paper configuration.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpmbench.cli import main
from dpmbench.errors import DpmbenchError
from dpmbench.grid import build_grid, guidance_key, load_manifests
from dpmbench.report import load_papers, write_report
from dpmbench.report.coverage import config_cells
from dpmbench.solvers.registry import get_solver, list_solvers
from dpmbench.timesteps import ALL_KINDS
from dpmbench.yamlfile import read_yaml

ROOT = Path(__file__).parents[1]
PAPERS = ROOT / "papers"
PAPER_CONFIGS = sorted((ROOT / "config" / "reproductions").glob("*.yaml"))
# published solvers not implemented in dpmbench yet (dpm-solver-v3-singlestep: DPM-Solver-v3's Alg. 3, Table 12 (S))
# (deis-rho3kutta / deis-rho4rk: the Runge-Kutta columns of DEIS's table; edm-stochastic: EDM's Alg. 2, S_churn > 0)
PENDING_SOLVERS = {"dpm-solver-v3", "dpm-solver-v3-singlestep", "dc-solver", "usf", "deis-rho3kutta", "deis-rho4rk",
                   "edm-stochastic", "unipc-half-corrector"}


@functools.lru_cache(maxsize=1)
def _docs() -> list[tuple[Path, dict[str, Any]]]:
    """Every papers file, parsed once per test process (by dpmbench's reader, libyaml's parser: the test below
    checks that it gives yaml.safe_load's documents). Callers must not modify the documents."""
    return [(p, read_yaml(p)) for p in sorted(PAPERS.glob("*.yaml"))]


def test_the_papers_reader_gives_safe_load_s_documents() -> None:
    """dpmbench.yamlfile (libyaml's parser when PyYAML has it) reads every papers file as yaml.safe_load does."""
    for path, doc in _docs():
        assert doc == yaml.safe_load(path.read_text()), path.name


def _all_rows() -> list[tuple[str, str, dict[str, Any]]]:
    """(file, 'entries'|'unpinned', row) of every published number."""
    return [(p.name, part, e) for p, doc in _docs() for part in ("entries", "unpinned") for e in doc.get(part) or []]


def _solver_name(spec: str) -> str:
    return spec.split(":", 1)[0]


def _implemented(spec: str) -> bool:
    return _solver_name(spec) in list_solvers()


def test_there_are_published_numbers() -> None:
    assert _docs(), "papers/*.yaml is empty"
    assert load_papers(PAPERS), "no pinned entry in papers/*.yaml"


# an arXiv version; "(every version)" only for text that is the same in all of them (papers/unipc.yaml's abstract)
ARXIV_VERSION = re.compile(r"arXiv:\d{4}\.\d{4,5}(v\d+| \(every version\))")
REPO_SOURCE = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}:\S+")  # owner/repo@commit:path


def source_problem(e: dict[str, Any]) -> str:
    """The source rule (docs/papers.md): the document and its version, and where in it the number stands: an arXiv
    version and the table/figure id, or owner/repo@commit:path plus the table's heading. Empty when satisfied."""
    src = e.get("source")
    if not isinstance(src, str) or not src:
        return "no source"
    if REPO_SOURCE.search(src):
        return "" if re.search(r"heading|table|image|figure", src, re.IGNORECASE) else "no table heading in source"
    if not ARXIV_VERSION.search(src):
        return f"source names neither an arXiv version nor owner/repo@commit:path: {src!r}"
    return "" if str(e.get("table", "")).strip() else "no table id"


@pytest.mark.parametrize(("path", "doc"), _docs(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_paper_file_fields_and_types(path: Path, doc: dict[str, Any]) -> None:
    assert isinstance(doc.get("paper"), str) and doc["paper"], path
    url, version = doc.get("url", ""), doc.get("version", "")
    assert re.fullmatch(r"https://(arxiv\.org/abs/\d{4}\.\d{4,5}|github\.com/[\w.-]+/[\w.-]+)", url), path
    assert re.fullmatch(r"arXiv:\d{4}\.\d{4,5}(v\d+)?|[\w.-]+/[\w.-]+@[0-9a-f]{40}", version), path
    for part in ("entries", "unpinned"):
        for i, e in enumerate(doc.get(part) or []):
            where = f"{path.name} {part}[{i}]"
            assert isinstance(e["table"], (int, str)) and not isinstance(e["table"], bool), where
            assert isinstance(e["value"], (int, float)) and not isinstance(e["value"], bool), where
            assert isinstance(e["nfe"], int) and e["nfe"] >= 1, where
            assert not source_problem(e), f"{where}: {source_problem(e)}"
            if "page" in e:  # optional
                assert isinstance(e["page"], int) and not isinstance(e["page"], bool) and e["page"] >= 1, where
            if part == "unpinned":
                assert isinstance(e["why"], str) and e["why"], where
            assert isinstance(e.get("printed"), str) and float(e["printed"]) == e["value"], where  # as printed
            if "n_samples" in e:
                assert isinstance(e["n_samples"], int) and e["n_samples"] > 0, where


def test_known_differences_cite_their_source_and_cover_the_stated_statistics() -> None:
    """Every `known_differences` item of this repository's files cites where the source states its setting (an arXiv
    version, or owner/repo@commit:path), and every FID entry whose note says the source used other reference
    statistics (ScoreSDE's cifar10_stats, pytorch-fid's CIFAR-10 file) carries a reference-statistics difference, or a
    fid-implementation one where ours reads the same file (ScoreSDE's statistics: cifar10-train-32-scoresde)."""
    declared = 0
    for path, doc in _docs():
        for j, d in enumerate(doc.get("known_differences") or []):
            declared += 1
            assert REPO_SOURCE.search(d["source"]) or ARXIV_VERSION.search(d["source"]), f"{path.name} [{j}]"
    assert declared
    stated = re.compile(r"ScoreSDE's statistic|cifar10_stats|fid_stats_cifar10_train_pytorch")
    for e in load_papers(PAPERS):
        if e["metric"] == "fid" and stated.search(e.get("note", "")):
            kinds = {d["kind"] for d in e["differences"]}
            same_file = re.search(r"ScoreSDE's statistic|cifar10_stats", e.get("note", "")) is not None
            assert ("fid-implementation" if same_file else "reference-statistics") in kinds, (
                e["file"], e["table"], e["nfe"], kinds)


def test_names_are_dpmbench_names() -> None:
    from evaluators.registry import list_metrics

    metrics = set(list_metrics())
    known_models = set(load_manifests({}))
    from dpmbench.models.registry import list_models

    known_models |= set(list_models())
    for name, part, e in _all_rows():
        where = f"{name} {part}: {e['table']} {e['solver']} NFE {e['nfe']}"
        assert e["metric"] in metrics, where
        assert e["model"] in known_models, where
        if _implemented(e["solver"]):
            get_solver(e["solver"]).check_nfe(e["nfe"])  # raises DpmbenchError on a bad spec or budget
        else:
            assert _solver_name(e["solver"]) in PENDING_SOLVERS, where
        if "schedule" in e:
            assert e["schedule"] in ALL_KINDS, where
        if "guidance" in e:
            assert e["guidance"] == "none" or (isinstance(e["guidance"], (int, float)) and e["guidance"] > 0), where


def test_no_number_is_listed_twice() -> None:
    seen: dict[tuple[Any, ...], str] = {}
    for name, part, e in _all_rows():
        key = (name, str(e["table"]), e["model"], e["metric"], get_solver(e["solver"]).spec if _implemented(
            e["solver"]) else e["solver"], e["nfe"], e.get("schedule"), str(e.get("guidance")))
        assert key not in seen, f"{key} in {part} and {seen[key]}"
        seen[key] = part


def test_no_row_of_one_model_is_copied_onto_another() -> None:
    """A table row (one solver, four or more NFEs) whose published values repeat, digit for digit, a row published for a
    different model is a transcription slip (two checkpoints do not share a whole row of FIDs): each row is read from
    its own table."""
    rows: dict[tuple[str, str, str, str], list[tuple[int, str]]] = {}
    for name, _part, e in _all_rows():
        rows.setdefault((name, str(e["table"]), e["model"], e["solver"]), []).append((e["nfe"], e["printed"]))
    seen: dict[tuple[str, tuple[tuple[int, str], ...]], tuple[str, str, str, str]] = {}
    for key, cells in rows.items():
        if len(cells) < 4:
            continue
        values = (key[0], tuple(sorted(cells)))
        other = seen.setdefault(values, key)
        assert other[2] == key[2], f"{key} repeats the values of {other}"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_validate(path: Path) -> None:
    grid = build_grid(yaml.safe_load(path.read_text()))
    assert grid.cells()
    assert grid.results_dir.startswith("results/papers/") and grid.report_dir.startswith("reports/papers/")


def test_every_published_number_of_an_implemented_solver_has_a_config_cell() -> None:
    cells = config_cells()
    missing = []
    for name, part, e in _all_rows():
        if not _implemented(e["solver"]) or "not_in_config" in e:
            continue
        key = (e["model"], get_solver(e["solver"]).spec, e["metric"], e["nfe"], e["schedule"],
               guidance_key(e.get("guidance", "none")))
        protocols = cells.get(key, set())
        if "t_end" in e:
            protocols = {p for p in protocols if p[0] == float(e["t_end"])}
        if "n_samples" in e:  # the sample count behind the published number
            protocols = {p for p in protocols if p[1] == e["n_samples"]}
        if not protocols:
            missing.append(f"{name} {part} table {e['table']}: {key}, t_end {e.get('t_end')}, n_samples "
                           f"{e.get('n_samples')} (configs: {cells.get(key)})")
    assert not missing, ("published numbers without a config/reproductions/*.yaml cell (when a pending solver becomes "
                         "implemented, add it to its paper's config with the paper's options, or give the entry "
                         f"`not_in_config`): {missing}")


def test_paper_config_settings_match_the_papers() -> None:
    """The per-model settings the paper states (App. D of DPM-Solver-v3) are the ones configured."""
    cfg = yaml.safe_load((ROOT / "config" / "reproductions" / "dpm-solver-v3.yaml").read_text())
    grid = build_grid(cfg)
    scoresde = "scoresde-cifar10-ddpmpp-deep-continuous"
    assert grid.t_end_of(scoresde) == 1e-3
    for group in grid.nfe_groups(scoresde):  # eps = 1e-3 for NFE <= 10, 1e-4 above (nfe_overrides)
        assert grid.t_end_of(scoresde, group) == (1e-3 if max(group) <= 10 else 1e-4)
        assert max(group) <= 10 or min(group) > 10
    edm = build_manifest_schedule("edm-cifar10-uncond-vp")  # vp-linear: EDM's sigma is sigma / alpha of its time
    t_start = float(cfg["models"]["edm-cifar10-uncond-vp"]["t_start"])
    for t, sigma in ((t_start, 80.0), (grid.t_end_of("edm-cifar10-uncond-vp"), 0.002)):  # App. D.2, edm/sample.py:78-79
        assert math.isclose(edm.sigma(t) / edm.alpha(t), sigma, rel_tol=1e-12)
    assert grid.num_samples("edm-cifar10-uncond-vp") == 50000 and grid.num_samples("sd14") == 10000
    assert grid.reference_args("sd14").startswith("--solver dpm-solver++:order=2,method=multistep --nfe 200 ")
    assert grid.has_reference("sd14") and not grid.has_reference("edm-cifar10-uncond-vp")
    assert grid.fid_stats_arg("ldm-lsun-bedroom256") == ("--fid-stats lsun-bedroom-256-adm-ref "
                                                         "--fid-implementation pytorch-fid")
    for model in (scoresde, "edm-cifar10-uncond-vp"):  # "their own statistic file and code", "borrow ... from ScoreSDE"
        assert grid.fid_stats_arg(model) == ("--fid-stats cifar10-train-32-scoresde "
                                             "--fid-implementation scoresde-tfgan")  # App. D.1, D.2


def _protocol(grid: Any, model: str, name: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(guidance, schedule, NFE) -> the options of solver ``name`` run there (every option, defaults included)."""
    out = {}
    for c in grid.cells():
        spec = grid.spec(c["solver"], model, [c["nfe"]])
        if c["model"] == model and spec.partition(":")[0] == name:
            sol = get_solver(spec)
            out[(c["guidance"], c["schedule"], c["nfe"], sol.spec)] = dict(sol.opts)
    return out


def build_manifest_schedule(model: str, kinds: tuple[str, ...] = ("vp-linear",)) -> Any:
    """The noise schedule of an EDM network of config/checkpoints.yaml (its entry's kind, one of ``kinds``): the
    edm-pickle VP nets' vp-linear with beta_min = 0.1, beta_d = 19.9 (as the adapter reads them from the network), or
    ``edm`` (t = sigma, T = 80)."""
    from dpmbench.schedules import EDM, VPLinear

    kind = load_manifests({})[model]["schedule"]  # pinned and named-only entries alike
    assert kind in kinds, (model, kind)
    return VPLinear(beta_0=0.1, beta_1=0.1 + 19.9) if kind == "vp-linear" else EDM()


def test_edm_networks_sample_edm_s_sigma_range_in_their_own_time() -> None:
    """Every reproduction cell of an EDM network (edm-* checkpoints) samples sigma 80 -> 0.002, the range of the
    official scripts (NVlabs/edm@008a4e5:generate.py:27, zju-pi/diff-sampler@68d5ce4:diff-solvers-main/sample.py:83-84,
    thu-ml/DPM-Solver-v3@ba16871:codebases/edm/sample.py:78-79), in the time of its checkpoint's schedule: t = sigma on
    `edm`, t = 0.9335 .. 3.98e-5 on the VP networks' vp-linear (t = 1 .. 0.002 there is sigma 152 .. 0.0155)."""
    seen = set()
    for path in PAPER_CONFIGS:
        cfg = yaml.safe_load(path.read_text())
        grid = build_grid(cfg)
        for model, mc in cfg["models"].items():
            if not model.startswith("edm-"):
                continue
            sch = build_manifest_schedule(model, ("vp-linear", "edm"))
            t_start = float((mc or {}).get("t_start", sch.T))
            for group in grid.nfe_groups(model):
                for t, sigma in ((t_start, 80.0), (grid.t_end_of(model, group), 0.002)):
                    assert math.isclose(sch.sigma(t) / sch.alpha(t), sigma, rel_tol=1e-12), (path.name, model, t)
            seen.add((path.stem, sch.kind))
    assert {k for _, k in seen} == {"vp-linear", "edm"}
    assert {n for n, _ in seen} >= {"dpm-solver-v3", "edm", "diff-sampler-logsnr", "diff-sampler-polynomial",
                                    "diff-sampler-polynomial-even"}


def test_diff_sampler_s_data_prediction_solvers_threshold_as_its_code_does() -> None:
    """diff-sampler's DPM-Solver++ and UniPC threshold every data prediction (zju-pi/diff-sampler@68d5ce4:
    diff-solvers-main/solver_utils.py:77-86, p = 0.995, s >= 1, no upper cap; applied at solvers.py:685, 786 and
    solver_utils.py:261); its Euler / Heun / DPM-Solver-2 / iPNDM rows do not."""
    grid = build_grid(yaml.safe_load((ROOT / "config" / "reproductions" / "diff-sampler-logsnr.yaml").read_text()))
    specs = {grid.spec(c["solver"], c["model"], [c["nfe"]]) for c in grid.cells()}
    assert {_solver_name(s) for s in specs} == {"dpm-solver++", "unipc"}
    from dpmbench.schedules import VPLinear

    for spec in specs:
        sol = get_solver(spec)
        opts = sol.opts
        assert (opts["thresholding"], opts["thresholding_ratio"], opts["sample_max_value"]) == (True, 0.995, math.inf)
        assert opts["lower_order_final"] and opts["order"] == 3
        for nfe in range(3, 13):  # solvers.py:687-688 (num_steps = steps + 1 time points), UniPC's :800 likewise
            official = [i + 1 if i + 1 < 3 else min(3, (nfe + 1) - (i + 1)) for i in range(nfe)]
            assert sol.plan(nfe, VPLinear(), "logsnr", None, 1e-3).orders == official, (spec, nfe)
    for name in ("diff-sampler-polynomial", "diff-sampler-polynomial-even"):
        grid = build_grid(yaml.safe_load((ROOT / "config" / "reproductions" / f"{name}.yaml").read_text()))
        assert not any(get_solver(grid.spec(c["solver"], c["model"], [c["nfe"]])).opts["thresholding"]
                       for c in grid.cells())


def test_dpm_solver_v3_rows_run_the_official_scripts_settings() -> None:
    """DPM-Solver-v3's rows and the EDM Heun row run what thu-ml/DPM-Solver-v3@ba16871's scripts run at each model and
    NFE (the settings as read from codebases/{score_sde,edm,guided-diffusion,stable-diffusion}; the citations are in
    the config)."""
    grid = build_grid(yaml.safe_load((ROOT / "config" / "reproductions" / "dpm-solver-v3.yaml").read_text()))
    keys = ("predictor_pseudo", "corrector", "corrector_pseudo", "corrector_half", "lower_order_final", "ems_samples",
            "ems_steps")

    def settings(model: str) -> dict[tuple[str, int], tuple[Any, ...]]:
        """The settings of the paper's default rows (full corrector, order auto, the pseudo corrector of the guided /
        latent models, ScoreSDE's default EMS sizes): the ablation rows of Tables 8-10 are checked apart."""
        rows = [((g, n), o) for (g, _, n, _), o in _protocol(grid, model, "dpm-solver-v3").items()
                if o["corrector_half"] == "off" and o["order"] == "auto"]
        if model == "scoresde-cifar10-ddpmpp-deep-continuous":
            rows = [(k, o) for k, o in rows if (o["ems_samples"], o["ems_steps"]) == (4096, 1200)]
        if model in ("ldm-lsun-bedroom256", "sd14", "adm-imagenet256-classifier-guided"):
            rows = [(k, o) for k, o in rows if o["corrector_pseudo"]]
        out = {k: tuple(o[x] for x in keys) for k, o in rows}
        assert len(out) == len(rows)  # one row per (guidance, NFE)
        return out

    # score_sde/sample.sh:5-35: p_pseudo at <= 5 steps (auto), lower_order_final off at 5, corrector off at 9-10
    sde = settings("scoresde-cifar10-ddpmpp-deep-continuous")
    sde_nfes = (5, 6, 8, 10, 12, 15, 20, 25)
    assert sde == {("none", n): ("auto", n != 10, False, "off", n != 5, 4096, 1200) for n in sde_nfes}
    # Table 8 (App. G.1): the EMS sizes (N, K) vary, every other setting is the default row's
    ablation = {(g, n, o["ems_samples"], o["ems_steps"]): tuple(o[k] for k in keys[:5]) for (g, _, n, _), o in
                _protocol(grid, "scoresde-cifar10-ddpmpp-deep-continuous", "dpm-solver-v3").items()
                if o["order"] == "auto"}
    assert ablation == {("none", n, k, m): ("auto", n != 10, False, "off", n != 5) for n in sde_nfes
                        for k, m in ((512, 1200), (1024, 1200), (4096, 120), (4096, 250), (4096, 1200))}
    # Table 9: DPM-Solver-v3-1, no corrector (App. G.2)
    first = {(n, o["corrector"], o["ems_samples"], o["ems_steps"]) for (_, _, n, _), o in
             _protocol(grid, "scoresde-cifar10-ddpmpp-deep-continuous", "dpm-solver-v3").items() if o["order"] == "1"}
    assert first == {(n, False, 4096, 1200) for n in sde_nfes}
    # edm/sample.py:166-174, edm/sample.sh:5-9: corrector at <= 6 steps; statistics 1200 x 1024 below 10, 120 x 4096
    edm = settings("edm-cifar10-uncond-vp")
    assert edm == {("none", n): ("auto", n <= 6, False, "off", True, 1024 if n < 10 else 4096, 1200 if n < 10 else 120)
                   for n in (5, 6, 8, 10, 12, 15, 20, 25)}
    nfes = (5, 6, 8, 10, 12, 15, 20)
    # stable-diffusion sampler.py:84-93 (p_pseudo False, c_pseudo True), txt2img.py:250, sample.sh:11 / 22
    assert settings("ldm-lsun-bedroom256") == {("none", n): ("false", True, True, "off", True, 1024, 120) for n in nfes}
    assert settings("sd14") == {(g, n): ("false", True, True, "off", True, 1024, 250) for g in ("1.5", "7.5")
                                for n in nfes}
    halves = {(g, n) for (g, _, n, _), o in _protocol(grid, "sd14", "dpm-solver-v3").items()
              if o["corrector_half"] == "low-noise"}
    assert halves == {("7.5", n) for n in nfes}  # the paper's half-corrector (Sec. 3.3, 4.1) beside the full one
    # guided-diffusion runners/diffusion.py:424-432, sample.sh:3
    assert settings("adm-imagenet256-classifier-guided") == {("2.0", n): ("false", True, True, "off", True, 1024, 500)
                                                             for n in nfes}
    # Table 10: the non-pseudo corrector (c_pseudo False) beside the default, on LSUN, ImageNet and SD at s = 1.5
    for model, g, n_steps in (("ldm-lsun-bedroom256", "none", 120), ("adm-imagenet256-classifier-guided", "2.0", 500),
                              ("sd14", "1.5", 250)):
        true_order = {(g2, n): tuple(o[k] for k in keys) for (g2, _, n, _), o in _protocol(grid, model,
                      "dpm-solver-v3").items() if not o["corrector_pseudo"]}
        assert true_order == {(g, n): ("false", True, False, "off", True, 1024, n_steps) for n in nfes}, model
    heun = _protocol(grid, "edm-cifar10-uncond-vp", "heun")  # edm/sample.sh:11, edm/samplers/heun.py:77-101
    assert {(s, n, o["odd_nfe"]) for (_, s, n, _), o in heun.items()} == {
        ("karras", n, "to-zero") for n in (5, 6, 8, 10, 12, 15, 20, 25)}


def _comparison_rows(md: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| table ")]


def test_report_lists_every_entry_on_empty_results(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--papers", str(PAPERS)]) == 0
    md = (tmp_path / "out" / "paper_comparison.md").read_text()
    entries = load_papers(PAPERS)
    rows = _comparison_rows(md)
    assert len(rows) == len(entries)
    for e in entries:
        assert f"## {e['paper']}" in md
    assert all("not run: needs checkpoint" in r for r in rows)


def test_report_puts_ours_beside_a_published_number(tmp_path: Path) -> None:
    entries = load_papers(PAPERS)
    e = next(x for x in entries if _implemented(x["solver"]))
    res = tmp_path / "results"
    d = res / e["model"] / f"g{guidance_key(e['guidance'])}" / "seed0" / e["schedule"] / "x"
    d.mkdir(parents=True)
    ours = float(e["value"]) + 0.25  # a made-up value of ours: this tests the matching, not a result
    (d / f"nfe{e['nfe']}.json").write_text(json.dumps({
        "model": e["model"], "solver": get_solver(e["solver"]).spec, "nfe": e["nfe"], "schedule": e["schedule"],
        "guidance": None if e["guidance"] == "none" else e["guidance"], "n_samples": 4,
        "metrics": {e["metric"]: ours}, "ci": {}, "wall_s": 0.0}))
    write_report(res, tmp_path / "out", papers_dir=PAPERS)
    rows = _comparison_rows((tmp_path / "out" / "paper_comparison.md").read_text())
    assert len(rows) == len(entries)
    matched = [r for r in rows if "+0.25 |" in r]
    assert len(matched) == 1 and f"| {e['solver']} | {e['nfe']} |" in matched[0]
    # the other entries of the same model now say which cell is missing, not which checkpoint
    same_model = [x for x in entries if x["model"] == e["model"]]
    assert sum("not run: no " in r for r in rows) == len(same_model) - 1


@pytest.mark.parametrize(("change", "message"), [
    ({"page": "7"}, "entries[0] has page='7'; allowed: the PDF page, an integer >= 1"),
    ({"page": 0}, "entries[0] has page=0"),
    ({"nfe": 2.5}, "entries[0] has nfe=2.5; allowed: an integer >= 1"),
    ({"value": "4.7"}, "entries[0] has value='4.7'; allowed: a number"),
    ({"guidance": -1}, "entries[0] has guidance=-1; allowed: none or a number > 0"),
    ({"source": ""}, "entries[0] has source=''; allowed: a non-empty string"),
    ({"printed": "4.71", "value": 4.7}, "entries[0] has printed='4.71'; allowed: the value as printed"),
])
def test_bad_entry_types_name_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    entry = {"table": 1, "page": 3, "model": "gmm-2d", "metric": "fd_true", "solver": "ddim", "nfe": 5,
             "value": 0.1, "source": "x", **change}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"paper": "X", "entries": [entry]}))
    with pytest.raises(DpmbenchError) as err:
        load_papers(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unpinned_rows_need_a_reason_and_are_not_compared(tmp_path: Path) -> None:
    row = {"table": 1, "model": "gmm-2d", "metric": "fd_true", "solver": "ddim", "nfe": 5, "value": 0.1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"paper": "X", "entries": [], "unpinned": [row]}))
    with pytest.raises(DpmbenchError, match=r"unpinned\[0\] lacks 'why'"):
        load_papers(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"paper": "X", "entries": [], "unpinned": [{**row, "why": "w"}]}))
    assert load_papers(tmp_path) == []


def test_checkpoint_ids_validate_without_loading_and_unknown_ids_are_named() -> None:
    base = {"metrics": ["fid"], "nfe": [5], "solvers": ["ddim"],
            "checkpoints_manifest": "config/checkpoints.yaml"}
    grid = build_grid({**base, "models": {"sd14": {"num_samples": 4, "guidance": [7.5], "t_end": 0.002}}})
    assert grid.t_end_of("sd14") == 0.002 and not grid.has_reference("sd14")
    with pytest.raises(DpmbenchError, match="invalid config key 'models.sd15-typo': unknown model; allowed: gmm-2d"):
        build_grid({**base, "models": {"sd15-typo": {"num_samples": 4}}})
    with pytest.raises(DpmbenchError, match="'models.edm-cifar10-uncond-vp.guidance': model 'edm-cifar10-uncond-vp' "
                                           "is unconditional"):
        build_grid({**base, "models": {"edm-cifar10-uncond-vp": {"num_samples": 4, "guidance": [2.0]}}})
    with pytest.raises(DpmbenchError, match="invalid config key 'checkpoints_manifest': no manifest file 'nope.yaml'"):
        build_grid({**base, "checkpoints_manifest": "nope.yaml", "models": {"gmm-2d": {"num_samples": 4}}})
    with pytest.raises(DpmbenchError, match="'models.ldm-lsun-bedroom256.reference_stats': unknown reference "
                                           "statistics 'lsun-typo'"):
        build_grid({**base, "models": {"ldm-lsun-bedroom256": {"num_samples": 4, "reference_stats": "lsun-typo"}}})
    with pytest.raises(DpmbenchError, match="'models.sd14.reference_solver'"):
        build_grid({**base, "models": {"sd14": {"num_samples": 4, "reference_solver": {"solver": "nope", "nfe": 9}}}})


def test_snakemake_dry_run_of_a_paper_config_builds_the_dag() -> None:
    """The workflow (not just the validator) accepts a paper config: checkpoint ids, per-model end times, FID
    statistics and the GPU reference run of mse_ref reach the jobs' command lines."""
    import os

    from support import run_snakemake

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = run_snakemake(["-n", "-p", "--nolock", "--cores", "1", "--configfile",
                         "config/reproductions/dpm-solver-v3.yaml"], env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert re.search(r"reference_run\s+2\b", log)  # sd14 at guidance 1.5 and 7.5
    assert "--model sd14" in log and "--solver dpm-solver++:order=2,method=multistep --nfe 200" in log
    assert "--fid-stats lsun-bedroom-256-adm-ref" in log and "--fid-stats imagenet-256-adm-ref" in log
    assert re.search(r"--model edm-cifar10-uncond-vp .*--t-end 3\.984197539140\d*e-05 --t-start 0\.933511143240", log)
    assert re.search(r"--model scoresde-cifar10-ddpmpp-deep-continuous .*--t-end 0\.001", log)
    # a solver entry's per-NFE options reach the jobs of its NFE groups (sample and prepare), its own schedule too
    edm = "dpmbench (sample|prepare) --model edm-cifar10-uncond-vp --solver"
    assert re.search(rf"{edm} dpm-solver-v3:ems_samples=1024,ems_steps=1200 --nfe 5,6 ", log)
    assert re.search(rf"{edm} dpm-solver-v3:ems_samples=1024,ems_steps=1200,corrector=false --nfe 8 ", log)
    assert re.search(rf"{edm} dpm-solver-v3:ems_samples=4096,ems_steps=120,corrector=false --nfe 10,12,15,20,25 ", log)
    assert re.search(rf"{edm} heun:odd_nfe=to-zero --nfe 5,6 .*--schedule karras ", log)


def test_page_is_optional_and_the_report_opens_with_coverage(tmp_path: Path) -> None:
    base = {"model": "gmm-2d", "metric": "fd_true", "solver": "ddim", "nfe": 5, "schedule": "logsnr",
            "guidance": "none", "source": "x"}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"paper": "A", "entries": [
        {**base, "table": 1, "value": 0.10, "printed": "0.10"}, {**base, "table": 2, "page": 4, "value": 0.12},
        {**base, "table": 2, "page": 4, "nfe": 10, "value": 0.05},
        {**base, "table": 3, "model": "sd14", "checkpoint": "CompVis/sd-v1-4", "value": 1.0}]}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"paper": "B", "entries": [
        {**base, "table": 7, "value": 0.20, "printed": "0.20"}]}))
    entries = load_papers(tmp_path)
    assert len(entries) == 5 and "page" not in entries[0]
    res = tmp_path / "results"
    d = res / "gmm-2d" / "gnone" / "seed0" / "logsnr" / "ddim"
    d.mkdir(parents=True)
    for nfe, ours in ((5, 0.15), (10, 0.06)):  # made-up values of ours: this tests the spread logic, not a result
        (d / f"nfe{nfe}.json").write_text(json.dumps({
            "model": "gmm-2d", "solver": "ddim", "nfe": nfe, "schedule": "logsnr", "guidance": None, "n_samples": 4,
            "metrics": {"fd_true": ours}, "ci": {}, "wall_s": 0.0}))
    write_report(res, tmp_path / "out", papers_dir=tmp_path)
    md = (tmp_path / "out" / "paper_comparison.md").read_text()
    head, _, body = md.partition("<details>")
    assert "## Coverage" in head and "| table |" not in head  # the summary comes first, the tables after
    assert "- **A**: 4 numbers, 3 with a result here; not run, checkpoint needed: sd14: 1" in head
    assert "- **B**: 1 numbers, 1 with a result here" in head
    rows = _comparison_rows(md)
    # NFE 5 is published three times (0.10, 0.12, 0.20, printed to 2 decimals): 0.15 lies in [0.095, 0.205]
    assert sum(r.startswith("| 1 | – |") and "| 0.1 .. 0.2 (3 values); band 0.095 .. 0.205 | within |" in r
               for r in rows) == 1
    # NFE 10 is published once (0.05): its band is its rounding, [0.045, 0.055], and 0.06 (no CI) lies outside
    assert sum("| 0.06 | +0.01 | one source; band 0.045 .. 0.055 | outside |" in r for r in rows) == 1


def test_numbers_at_other_end_times_are_other_settings() -> None:
    """The published band pools the sources of one setting only: DPM-Solver's Sec. 5.1 at NFE 12 (t_end 1e-3, 3.75)
    and DPM-Solver-v3's Table 12 (t_end 1e-4, 4.97) are two settings, not a spread of 3.75 .. 4.97; a number whose
    end time is unstated stays apart from both."""
    from dpmbench.report.papers import published_spread, setting_key

    entries = load_papers(PAPERS)
    twelve = [e for e in entries if e["model"] == "scoresde-cifar10-ddpmpp-deep-continuous" and e["nfe"] == 12
              and e["metric"] == "fid" and e["solver"] == "dpm-solver:order=3,method=singlestep"]
    by_end = {e["t_end"]: setting_key(e) for e in twelve}
    assert set(by_end) >= {0.001, 0.0001} and by_end[0.001] != by_end[0.0001]
    spread = published_spread(entries)
    assert 3.75 in spread[by_end[0.001]] and 4.97 not in spread[by_end[0.001]]
    base = {"model": "m", "metric": "fid", "solver": "ddim", "nfe": 5}
    assert setting_key(base) != setting_key({**base, "t_end": 1e-3}) == setting_key({**base, "t_end": 0.001})


def test_list_papers_prints_coverage_per_paper(capsys: pytest.CaptureFixture[str]) -> None:
    """`dpmbench list papers`: per file, its numbers, those of implemented solvers, those with a config cell of the same
    protocol (the protocol match counted here independently of paper_coverage.cell_for) and the checkpoints they
    need."""
    assert main(["list", "papers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(_docs())
    cells = config_cells()
    for (path, doc), line in zip(_docs(), lines, strict=True):
        rows = list(doc.get("entries") or []) + list(doc.get("unpinned") or [])
        implemented = [e for e in rows if _implemented(e["solver"])]
        with_cell = 0
        for e in implemented:
            key = (e["model"], get_solver(e["solver"]).spec, e["metric"], e["nfe"], e.get("schedule"),
                   guidance_key(e.get("guidance", "none")))
            ok = {p for p in cells.get(key, set()) if ("t_end" not in e or p[0] == float(e["t_end"]))
                  and ("n_samples" not in e or p[1] == e["n_samples"])}
            with_cell += bool(ok)
        assert f"[{path.name}]: {len(rows)} numbers ({len(doc.get('unpinned') or [])} unpinned), " \
               f"{len(implemented)} of implemented solvers, {with_cell} with a config cell; checkpoints: " in line
        for model in {e["model"] for e in rows}:
            assert f"{model} (" in line


def test_the_docs_name_only_reproduction_configs_that_exist() -> None:
    """Every `config/reproductions/NAME.yaml` named in README.md, docs/*.md or a papers file exists (a config merged
    into another must not stay named), and the brace form `diff-sampler-{a,b}.yaml` names existing files too."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(PAPERS.glob("*.yaml"))]
    named = set()
    for path in texts:
        for stem in re.findall(r"config/reproductions/([A-Za-z0-9_{},.-]+?)\.yaml", path.read_text()):
            m = re.fullmatch(r"(.*)\{(.*)\}(.*)", stem)
            parts = m.group(2).split(",") if m else [""]
            named.update(f"{m.group(1)}{part}{m.group(3)}" if m else stem for part in parts)
    assert "dpm-solver-v3" in named and "diff-sampler-logsnr" in named
    assert sorted(n for n in named if not (ROOT / "config" / "reproductions" / f"{n}.yaml").is_file()) == []
