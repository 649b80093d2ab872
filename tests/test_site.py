"""Provenance, merging runs and the static leaderboard site, checked in headless Chromium.

Two small runs (gmm-2d and gmm-digits, a few solvers, tens of samples) are written through the CLI in the layout of
the workflow; the site of their merge is opened in Debian's chromium (installed with apt-get where missing), driven
over the DevTools pipe (tests/browser.py): every page loads without console error, every image decodes with a
non-zero size, sorting a table reorders it, a model page opens with its ranking, every leaderboard row links to
its diagnostics, the papers page holds tables and no literal markdown, and a screenshot of the index is written to
reports/site_index.png. The rankings, the paper-shaped tables and the per-sample errors are also checked on small
frames, without a browser.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dpmbench.cli import main
from dpmbench.errors import DpmbenchError
from dpmbench.report import write_report
from dpmbench.report.stats import column_marks, mean_ranks
from evaluators.bootstrap import bootstrap_indices
from evaluators.registry import per_sample_summary

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "reports" / "site_index.png"


def _run(root: Path, model: str, solvers: list[str], nfes: list[int], n: int, guidance: str | None = None) -> None:
    """One run in the workflow's layout: reference, one shard per cell, a metrics file per cell."""
    seed_dir = root / model / f"g{guidance or 'none'}" / "seed0"
    ref = seed_dir / "reference.npz"
    g = ["--guidance", guidance] if guidance else []
    if not ref.is_file():
        assert main(["reference", "--model", model, "--num-samples", str(n), "--seed", "0", *g,
                     "--out", str(ref)]) == 0
    for solver in solvers:
        for nfe in nfes:
            shard = seed_dir / "logsnr" / solver.replace(":", "_") / f"nfe{nfe}" / f"0-{n}.npz"
            assert main(["sample", "--model", model, "--solver", solver, "--nfe", str(nfe), "--num-samples", str(n),
                         "--seed", "0", *g, "--out", str(shard)]) == 0
            assert main(["evaluate", "--samples", str(shard), "--reference", str(ref), "--metrics",
                         "rmse_exact,fd_true", "--out", str(shard.parent.parent / f"nfe{nfe}.json")]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("runs")
    a, b, c = base / "run-a", base / "run-b", base / "run-c"
    _run(a, "gmm-2d", ["ddim", "dpm-solver++"], [4, 8], 64)
    _run(a, "gmm-digits", ["ddim", "dpm-solver++"], [5], 24)
    _run(b, "gmm-2d", ["ddim", "unipc"], [4, 8], 64)  # ddim again: the same cells, which must agree
    _run(c, "gmm-2d", ["heun"], [4, 8], 48)  # another sample count: another protocol
    return SimpleNamespace(a=a, b=b, c=c, base=base)


@pytest.fixture(scope="module")
def merged(runs: SimpleNamespace) -> SimpleNamespace:
    """The report and site of runs a and b, written once through the CLI."""
    out, site = runs.base / "merged", runs.base / "site"
    assert main(["report", str(runs.a), str(runs.b), "--out", str(out), "--site", str(site)]) == 0
    return SimpleNamespace(out=out, site=site, df=pd.read_csv(out / "results.csv"))


def _metrics_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("nfe*.json"))


# -- provenance ---------------------------------------------------------------------------------------------
def test_metrics_files_record_provenance_and_protocol(runs: SimpleNamespace) -> None:
    rec = json.loads(_metrics_files(runs.a)[0].read_text())
    prov, proto = rec["provenance"], rec["protocol"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit and a dirty flag are recorded
        assert prov["git_commit"] == head.stdout.strip() and isinstance(prov["git_dirty"], bool)
    assert prov["dpmbench"] and prov["versions"]["python"] and prov["versions"]["torch"]
    assert {"diffusers", "torch-fidelity", "clean-fid"} <= set(prov["versions"])
    assert prov["device_name"] and prov["sample_device_name"] and prov["sample_dtype"] == "float32"
    # what the cell's sampling time was measured under: the device, the batch (one batch of all samples) and threads
    assert prov["sample_device"] == "cpu" and prov["sample_batch_size"] == rec["n_samples"]
    assert isinstance(prov["sample_torch_threads"], int) and prov["sample_torch_threads"] >= 1
    assert prov["date"].startswith("20") and "config_sha256" in prov
    ref = runs.a / rec["model"] / "gnone" / "seed0" / "reference.npz"
    import hashlib

    assert proto == {"n_samples": rec["n_samples"], "t_end": 0.001, "reference": "exact ODE solutions",
                     "reference_sha256": hashlib.sha256(ref.read_bytes()).hexdigest()}
    assert len(rec["bootstrap_values"]["rmse_exact"]) == rec["bootstraps"]["rmse_exact"] == 200


def test_every_results_row_traces_to_its_provenance(runs: SimpleNamespace, merged: SimpleNamespace) -> None:
    results = merged.df
    side = pd.read_csv(merged.out / "provenance.csv", dtype={"provenance": str})  # a hex digest: all digits at times
    records = json.loads((merged.out / "provenance.json").read_text())
    assert list(results.columns) == ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low",
                                     "ci_high", "n_samples", "wall_s",  # DESIGN.md's contract unchanged
                                     "s_per_sample", "device"]  # then the cost columns, last
    assert np.allclose(results["s_per_sample"], results["wall_s"] / results["n_samples"])
    assert (results["device"] == json.loads(_metrics_files(runs.a)[0].read_text())["provenance"][
        "sample_device_name"]).all()
    key = ["model", "solver", "nfe", "schedule", "guidance", "metric"]
    assert len(side) == len(results) and (side[key].astype(str).values == results[key].astype(str).values).all()
    assert side["provenance"].notna().all() and set(side["provenance"]) <= set(records)
    assert set(side["run"]) == {str(runs.a), str(runs.b)}
    assert (side["reference_sha256"].str.len() == 64).all() and (side["t_end"] == 0.001).all()


def test_config_hash_is_passed_to_metrics_jobs(runs: SimpleNamespace, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from dpmbench.provenance import CONFIG_ENV, config_sha256

    digest = config_sha256({"models": {"gmm-2d": {"num_samples": 64}}, "seed": 0})
    assert digest == config_sha256({"seed": 0, "models": {"gmm-2d": {"num_samples": 64}}})  # key order free
    monkeypatch.setenv(CONFIG_ENV, digest)
    shard = next(runs.a.rglob("nfe4/0-64.npz"))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--samples", str(shard), "--metrics", "fd_true", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["provenance"]["config_sha256"] == digest


# -- per-sample summaries, paired marks, ranks ----------------------------------------------------------------
def test_per_sample_median_and_diverged_share() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 4))
    x = ref + 0.01 * rng.standard_normal((100, 4))
    x[:7] *= 1e3  # seven samples blow up
    x[7] = np.nan  # one is not finite
    s = per_sample_summary("rmse_exact", x, ref)
    assert s["diverged_share"] == pytest.approx(0.08) and s["median"] < 0.02
    assert s["threshold"] == pytest.approx(float(np.sqrt(np.mean(ref ** 2))))
    assert per_sample_summary("fd_true", x, ref) is None


def test_cells_show_median_and_diverged_share_only_where_samples_diverged() -> None:
    from dpmbench.report.tables import spread_text

    def cell(metric: str, value: float, median: float | None, share: float) -> str:
        return spread_text(SimpleNamespace(metric=metric, value=value, median=median, diverged_share=share))

    assert cell("rmse_exact", 5.0, 0.1, 0.07) == "median 0.1, 7% samples diverged"
    assert cell("rmse_exact", 5.0, None, 0.6) == "median diverged, 60% samples diverged"
    assert cell("fd_true", 5.0, None, 0.07) == "7% samples diverged"  # no per-sample value of a distance
    assert cell("rmse_exact", 0.1, 0.1, 0.0) == "" and cell("rmse_exact", float("nan"), None, 1.0) == ""


def _row(solver: str, value: float, boot: list[float] | None, lo: float, hi: float) -> SimpleNamespace:
    return SimpleNamespace(solver=solver, value=value, ci_low=lo, ci_high=hi, boot=boot, boot_seed=0, n_samples=500)


def test_best_needs_the_paired_difference_to_exclude_zero() -> None:
    rng = np.random.default_rng(1)
    err = rng.gamma(2.0, 0.05, 500)  # per-sample errors shared by both solvers (common random numbers)
    idx = bootstrap_indices(500, 200, 0)
    a_boot = [float((err[i]).mean()) for i in idx]
    b_boot = [float((1.02 * err[i]).mean()) for i in idx]  # 2% worse on every sample
    a, b = float(err.mean()), float(1.02 * err.mean())
    a_ci, b_ci = np.quantile(a_boot, [0.025, 0.975]), np.quantile(b_boot, [0.025, 0.975])
    assert a_ci[1] > b_ci[0]  # the marginal CIs overlap ...
    marks = column_marks([_row("a", a, a_boot, *a_ci), _row("b", b, b_boot, *b_ci)])
    assert marks["a"].kind == "best" and "b" not in marks  # ... yet the paired difference is significant
    lo, hi = marks["a"].diff[1:]
    assert hi < 0
    noisy = [float((err[i] * (1 + 0.3 * rng.standard_normal(500))[i]).mean()) for i in idx]  # not paired at all
    c = float(np.mean(noisy))
    marks = column_marks([_row("a", a, a_boot, *a_ci), _row("c", c, noisy, *np.quantile(noisy, [0.025, 0.975]))])
    assert {marks["a"].kind, marks["c"].kind} == {"tied"}
    # without replicates: tied when the marginal CIs overlap, best when they do not
    assert column_marks([_row("a", 1.0, None, 0.9, 1.1), _row("b", 1.05, None, 1.0, 1.1)])["a"].kind == "tied"
    assert column_marks([_row("a", 1.0, None, 0.9, 1.1), _row("b", 2.0, None, 1.9, 2.1)])["a"].kind == "best"


def test_mean_rank_over_nfe_puts_diverged_last() -> None:
    g = pd.DataFrame({"solver": ["a", "b", "c"] * 2, "nfe": [5] * 3 + [10] * 3,
                      "value": [1.0, 2.0, float("nan"), 0.5, 0.4, 0.3], "ci_low": [np.nan] * 6,
                      "ci_high": [np.nan] * 6, "boot": [None] * 6, "boot_seed": [0] * 6, "n_samples": [10] * 6})
    r = mean_ranks(g).set_index("solver")["mean_rank"]
    assert r.to_dict() == {"a": 2.0, "b": 2.0, "c": 2.0}  # a: 1, 3; b: 2, 2; c: 3 (diverged), 1
    assert mean_ranks(g, higher_is_better=True).set_index("solver")["mean_rank"]["c"] == 3.0  # last both times


# -- merging ------------------------------------------------------------------------------------------------
def test_identical_cells_of_two_runs_agree_and_are_kept_once(merged: SimpleNamespace) -> None:
    df = merged.df
    ddim = df[(df["model"] == "gmm-2d") & (df["solver"] == "ddim")]
    assert len(ddim) == 4 and set(df[df["model"] == "gmm-2d"]["solver"]) == {"ddim", "dpm-solver++", "unipc"}


def test_disagreeing_duplicate_cells_are_refused(runs: SimpleNamespace, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "run-bad"
    shutil.copytree(runs.b, bad)
    f = next(p for p in _metrics_files(bad) if "/ddim/" in str(p) and p.name == "nfe4.json")
    rec = json.loads(f.read_text())
    rec["metrics"]["rmse_exact"] *= 1.1
    f.write_text(json.dumps(rec))
    assert main(["report", str(runs.a), str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disagree on the same cell" in err and "solver ddim, nfe 4" in err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_runs_with_other_reference_statistics_or_sample_count_are_shown_apart(
        runs: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "run-other-stats"
    shutil.copytree(runs.a / "gmm-digits", other / "gmm-digits")
    for f in _metrics_files(other):  # the same cells, measured against other reference statistics
        rec = json.loads(f.read_text())
        rec["protocol"].update(reference_stats="digits-test", reference_stats_sha256="ab" * 32)
        f.write_text(json.dumps(rec))
    write_report([runs.a, other, runs.c], tmp_path / "out", papers_dir=None)
    err = capsys.readouterr().err
    assert "differ in reference_stats, reference_stats_sha256; shown as separate tables" in err
    assert "differ in n_samples; shown as separate tables" in err
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "### rmse_exact · guidance none · schedule logsnr · n_samples 64 (n=64)" in md
    assert "### rmse_exact · guidance none · schedule logsnr · n_samples 48 (n=48)" in md
    assert "reference_stats digits-test, reference_stats_sha256 abababababab" in md
    with pytest.raises(DpmbenchError, match="RESULTS_DIR"):
        write_report([], tmp_path / "none")


# -- the site in a browser ------------------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def chromium() -> str:
    from browser import install_chromium

    return install_chromium()  # a missing browser is installed (apt-get), never skipped


def test_merged_site_in_headless_chromium(merged: SimpleNamespace, chromium: str) -> None:
    from browser import Browser

    site = merged.site
    pages = sorted(site.glob("*.html"))
    assert {p.name for p in pages} == {"index.html", "model-gmm-2d.html", "model-gmm-digits.html", "papers.html",
                                       "diag-gmm-2d.html", "diag-gmm-digits.html"}
    for p in site.rglob("*"):
        if p.is_file():
            assert p.stat().st_mode & 0o044 == 0o044, p  # world-readable
            if p.suffix in (".html", ".css", ".js"):  # no external resource (papers are cited as text)
                text = p.read_text()
                assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""",
                                     text), p
    browser = Browser(chromium)
    try:
        for page in pages:
            browser.open(page.as_uri())
            images = browser.evaluate(
                "Promise.all([...document.images].map(i => i.complete ? 1 : new Promise(r => {i.onload = i.onerror "
                "= r}))).then(() => [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth, "
                "i.naturalHeight]))")
            assert browser.errors() == [], (page.name, browser.errors())
            loaded = browser.evaluate("[...document.querySelectorAll('link[href], script[src], img[src]')].map("
                                      "e => e.href || e.src)")
            assert len(loaded) >= 2 and all(u.startswith("file://") for u in loaded), (page.name, loaded)
            assert all(w > 0 and h > 0 for _, w, h in images), (page.name, images)
            if page.name.startswith("model-"):
                assert len(images) >= 2, page.name  # figures (and, for gmm-digits, the sample grid)
        browser.open((site / "model-gmm-2d.html").as_uri())
        column = ("(() => { const t = document.querySelector('table.metric'); return [...t.tBodies[0].rows].map("
                  "r => parseFloat(r.cells[1].dataset.v)); })()")
        click = "document.querySelector('table.metric thead th:nth-child(2)').click()"
        before = browser.evaluate(column)
        browser.evaluate(click)
        up = browser.evaluate(column)
        browser.evaluate(click)
        down = browser.evaluate(column)
        assert sorted(before) == up and up == sorted(up) and down == sorted(up, reverse=True) and len(up) == 3
        assert browser.evaluate("document.querySelectorAll('td.best, td.tied').length") > 0
        assert browser.evaluate("document.querySelectorAll('table.ranking tbody tr').length") == 3
        # the page opens with its answer (which solver at each NFE budget), then the ranking: both before any
        # table of values or figure of the sections
        assert browser.evaluate("document.querySelector('main h2').textContent").startswith("Which solver? (")
        assert browser.evaluate("document.querySelector('main section').id") == "ranking"
        assert browser.evaluate("[...document.querySelectorAll('main h2')].map(e => e.textContent).slice(1, 2)") == [
            "Ranking"]
        assert browser.evaluate("[...document.querySelectorAll('main > *')].findIndex(e => e.id === 'ranking') < "
                                "[...document.querySelectorAll('main > *')].findIndex(e => !e.matches('.top-blocks')"
                                " && e.querySelector('table.metric, img'))")
        # every leaderboard row links to its per-sample errors, and the target exists
        rows = browser.evaluate("[...document.querySelectorAll('table.ranking tbody tr, table.metric tbody tr')].map("
                                "r => [r.cells[0].textContent, [...r.querySelectorAll('a.diag')].map(a => "
                                "a.getAttribute('href'))])")
        assert len(rows) >= 3 + 6 and all(any(h.startswith("diag-gmm-2d.html#") and h.endswith("-errors")
                                             for h in links) for _, links in rows), rows
        targets = {h.split("#")[1] for _, links in rows for h in links}
        browser.open((site / "diag-gmm-2d.html").as_uri())
        ids = set(browser.evaluate("[...document.querySelectorAll('[id]')].map(e => e.id)"))
        assert targets <= ids, targets - ids
        assert browser.evaluate("document.querySelectorAll('table.errors tbody tr').length") == 3 * 2  # solver x NFE
        browser.open((site / "diag-gmm-digits.html").as_uri())  # image samples: every NFE and the worst
        assert browser.evaluate("[...document.querySelectorAll('img.pixel')].every(i => i.naturalWidth > 0)")
        assert browser.evaluate("document.querySelectorAll('img.pixel').length") == 2 * 2
        # papers: tables, no literal markdown, every reason stated once per table
        browser.open((site / "papers.html").as_uri())
        text = browser.evaluate("document.body.innerText")
        assert "**" not in text and "<details>" not in text and "<summary>" not in text
        tables = browser.evaluate("document.querySelectorAll('table.paper').length")
        assert tables > 10 and text.count("needs checkpoint") <= tables  # once per table
        assert browser.evaluate("getComputedStyle(document.querySelector('td.spec')).overflowWrap") == "anywhere"
        browser.open((site / "index.html").as_uri())
        assert browser.evaluate("getComputedStyle(document.querySelector('.card li')).overflowWrap") == "anywhere"
        shot = browser.screenshot(SCREENSHOT)
        assert browser.errors() == []
    finally:
        browser.close()
    assert _png_size(shot) == (1400, 1000) and shot.stat().st_size > 10_000


# -- rankings, paper tables, per-sample errors, top blocks (no browser) ----------------------------------------
def _table(metric: str, values: dict[str, list[float]], nfes: tuple[int, ...] = (4, 8)) -> pd.DataFrame:
    rows = [{"model": "m", "guidance": "none", "schedule": "logsnr", "seed": 0, "metric": metric, "solver": s,
             "nfe": n, "value": v, "ci_low": np.nan, "ci_high": np.nan, "boot": None, "boot_seed": 0,
             "n_samples": 10} for s, vs in values.items() for n, v in zip(nfes, vs, strict=True)]
    return pd.DataFrame(rows)


def test_ranking_is_per_metric_sorted_by_the_primary_one_and_leaves_out_solver_independent_metrics() -> None:
    from dpmbench.report.ranking import ranking

    tables = [(("m", "none", "logsnr", 0, "fd_true"), _table("fd_true", {"a": [1, 1], "b": [2, 2], "c": [3, 3]})),
              (("m", "none", "logsnr", 0, "rmse_exact"), _table("rmse_exact", {"a": [3, 3], "b": [1, 2], "c": [2, 1]})),
              (("m", "none", "logsnr", 0, "model_error"), _table("model_error", {s: [0.3, 0.3] for s in "abc"}))]
    rank, metrics, constant = ranking(tables)
    assert metrics == ["rmse_exact", "fd_true"] and constant == ["model_error"]  # the solver's own error first
    assert list(rank.index) == ["b", "c", "a"]  # by rmse_exact (b, c tie at 1.5: then by fd_true), never averaged
    assert rank.loc["a", "fd_true:mean_rank"] == 1.0 and rank.loc["a", "rmse_exact:mean_rank"] == 3.0
    assert not [c for c in rank.columns if not c.startswith(("rmse_exact:", "fd_true:"))]  # no overall column


def _entry(**kw: object) -> dict[str, object]:
    return {"paper": "P", "url": "", "version": "", "file": "p.yaml", "table": 2, "metric": "rmse_exact",
            "schedule": "logsnr", "guidance": "none", **kw}


def test_papers_render_as_solver_by_nfe_tables_with_reasons_stated_once() -> None:
    from dpmbench.report.paper_tables import papers_html

    df = _table("rmse_exact", {"ddim": [0.5, 0.2]}).assign(ci_low=0.4, ci_high=0.6)
    entries = [_entry(model="m", solver="ddim", nfe=4, value=0.5), _entry(model="m", solver="ddim", nfe=8, value=0.1),
               _entry(model="m", solver="heun", nfe=8, value=0.3)]
    entries += [_entry(model="big", solver="ddim", nfe=n, value=1.0, checkpoint="big.ckpt") for n in (4, 8, 16)]
    page = papers_html(df, entries)
    assert "**" not in page and "<details" not in page and "not run:" not in page
    assert page.count("<table class=\"paper\">") == 2 and page.count("needs checkpoint big.ckpt") == 1
    assert "<th>NFE 4</th><th>NFE 8</th><th>NFE 16</th>" in page  # the big model's table: NFE columns
    assert "ours 0.5" in page and "Δ +0" in page and "class=\"ours yes\"" in page  # within 0.5's rounding
    assert "Δ +0.1" in page and "class=\"ours no\"" in page  # 0.2 beside 0.1: outside
    assert page.count("1 number(s) without a result of ours") == 1  # heun at NFE 8: one footnote, one dash


def test_per_sample_errors_of_the_diagnostics_are_the_metric_files_own(runs: SimpleNamespace) -> None:
    from dpmbench.report.persample import collect_per_sample

    ps = collect_per_sample([runs.a])
    files = _metrics_files(runs.a)
    assert len(files) == 2 * 2 + 2
    for f in files:
        rec = json.loads(f.read_text())
        cell = ps.of(rec["model"], "none", "logsnr", 0, rec["solver"])[rec["nfe"]]
        errors = cell.errors["rmse_exact"]
        assert cell.n == rec["n_samples"] == len(errors.errors)
        assert errors.quantiles()["median"] == pytest.approx(rec["per_sample"]["rmse_exact"]["median"], rel=1e-9)
        assert errors.diverged_share() == rec["per_sample"]["rmse_exact"]["diverged_share"]
        assert float(np.sqrt(np.mean(errors.errors ** 2))) == pytest.approx(rec["metrics"]["rmse_exact"], rel=1e-6)
        worst = errors.worst(3)
        assert list(errors.errors[worst]) == sorted(errors.errors, reverse=True)[:3]
        assert (cell.first is not None) == (rec["model"] == "gmm-digits")  # images only


def test_model_page_puts_its_answer_and_top_blocks_first_then_the_ranking(merged: SimpleNamespace) -> None:
    from dpmbench.report.merge import merge_runs
    from dpmbench.report.site import model_page
    from dpmbench.report.tables import collect

    df = merge_runs([collect(d) for d in sorted({*pd.read_csv(merged.out / "provenance.csv")["run"]})])
    page = model_page("gmm-2d", df, {}, {}, [], top_blocks=["<div id=extra>use X</div>"])
    body = page[page.index("<main>"):]
    assert body.index("<h2 id=answer>Which solver?") < body.index("id=extra") < body.index("<section id=ranking>") \
        < body.index("table class=\"sortable metric")
    assert "top blocks" in body and "<th>mean rank</th>" not in body


def test_a_cell_whose_shards_changed_since_its_metrics_is_left_out_of_the_diagnostics(
        runs: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpmbench.report.persample import CellErrors, collect_per_sample

    changed = tmp_path / "run"
    shutil.copytree(runs.a / "gmm-2d", changed / "gmm-2d")
    f = next(p for p in _metrics_files(changed) if "/ddim/" in str(p) and p.name == "nfe4.json")
    rec = json.loads(f.read_text())
    rec["per_sample"]["rmse_exact"]["median"] *= 1.01
    f.write_text(json.dumps(rec))
    ps = collect_per_sample([changed])
    assert "rmse_exact" not in ps.of("gmm-2d", "none", "logsnr", 0, "ddim")[4].errors
    assert "rmse_exact" in ps.of("gmm-2d", "none", "logsnr", 0, "ddim")[8].errors
    err = capsys.readouterr().err
    assert "not the recorded one" in err and str(f) in err
    blown = CellErrors("rmse_exact", np.array([0.1, 0.2, 0.3, np.inf, np.inf]), threshold=1.0)
    q = blown.quantiles()
    assert q["median"] == 0.3 and q["max"] == np.inf and q["min"] == 0.1 and blown.diverged_share() == 0.4
    assert list(blown.worst(2)) == [3, 4]
