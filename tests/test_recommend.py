"""`dpmbench recommend` and the reports' Recommendation on constructed results: a clear winner, ties (listed, never
picked at random), wide marginal CIs that only the paired rule separates, a budget below the smallest NFE, the
diffusers line (and its refusals, as dpmbench.diffusers refuses), and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from dpmbench.cli import main
from dpmbench.errors import DpmbenchError
from dpmbench.report.leaderboard import leaderboard_markdown
from dpmbench.report.recommend import (
    answer_text,
    diffusers_line,
    load_results,
    recommend,
    recommendation_markdown,
    sentence,
)
from dpmbench.report.tables import COLUMNS, COST, collect

REPS = 200
Z = norm.ppf((np.arange(REPS) + 0.5) / REPS)  # evenly spread standard normal replicates: exact quantiles
SHARED = 0.5 * Z[::-1]  # the replicates' common part: every cell's metric moves with the same resampled x_T


def _cell(solver: str, nfe: int, value: float, sd: float, schedule: str = "logsnr", guidance: str = "none",
          model: str = "gmm-2d", metric: str = "sw2_true") -> dict:
    """A results row whose bootstrap replicates are value + SHARED + sd * Z (paired differences: sd's only); its
    marginal CI is that of value + SHARED (+-0.98: wide)."""
    boot = value + SHARED + sd * np.roll(Z, 37)
    return {"model": model, "solver": solver, "nfe": nfe, "schedule": schedule, "guidance": guidance,
            "metric": metric, "value": value, "ci_low": value - 0.98, "ci_high": value + 0.98, "n_samples": 100,
            "wall_s": nfe * 0.01, "seed": 0, "boot": list(boot), "boot_seed": 0, "s_per_sample": nfe * 1e-4,
            "device": "test CPU", "protocol": "", "protocol_label": "", "t_start": None}


def _df(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_clear_winner_by_the_paired_rule_although_the_marginal_cis_overlap() -> None:
    df = _df([_cell("ddim", 5, 3.0, 0.0), _cell("ddim", 10, 2.0, 0.0), _cell("unipc", 5, 2.5, 0.01),
              _cell("unipc", 10, 1.5, 0.01), _cell("heun", 10, 1.7, 0.01)])
    [a] = recommend(df, "gmm-2d", 10)
    assert (a.best.solver, a.best.schedule, a.best.nfe, a.best.value) == ("unipc", "logsnr", 10, 1.5)
    assert a.tied == () and a.paired and a.candidates == 5
    est, lo, hi = a.runner_up  # best minus the runner-up (heun at 1.7): negative, its CI excludes 0
    assert est == pytest.approx(-0.2) and hi < 0
    text = answer_text(a)
    assert "clear winner" in text and "best: unipc (logsnr, NFE 10): 1.5 [0.52, 2.48]" in text
    # the same numbers read back from a results.csv (no replicates): the marginal CIs overlap, so all are tied
    [m] = recommend(df.drop(columns=["boot", "boot_seed"]), "gmm-2d", 10)
    assert m.best.solver == "unipc" and not m.paired and {c.solver for c in m.tied} == {"ddim", "heun", "unipc"}
    assert "marginal 95% CIs" in answer_text(m)


def test_ties_are_listed_with_their_paired_difference_and_never_broken_at_random() -> None:
    df = _df([_cell("a", 10, 1.00, 0.0), _cell("b", 10, 1.01, 0.05), _cell("c", 10, 1.5, 0.01),
              _cell("d", 10, 1.00, 0.0, schedule="karras")])  # d: the same value as a: tied, listed after it
    first = recommend(df, "gmm-2d", 10)[0]
    again = recommend(df.iloc[::-1].reset_index(drop=True), "gmm-2d", 10)[0]
    assert first == again  # the order of the rows does not matter
    assert (first.best.solver, first.best.schedule) == ("a", "logsnr")  # equal values: by NFE, solver, schedule
    assert [(c.solver, c.schedule) for c in first.tied] == [("d", "karras"), ("b", "logsnr")]
    d_b = first.tied[1].diff
    assert d_b[1] < 0 < d_b[2] and d_b[0] == pytest.approx(0.01)  # b - a: its paired 95% CI includes 0
    assert "statistically tied with 2 other cells" in sentence(first)
    text = answer_text(first)
    assert "tied with the best (2 of 3 other cells" in text and "c (logsnr" not in text


def test_budget_is_at_most_n_and_a_budget_below_the_smallest_nfe_is_refused() -> None:
    df = _df([_cell("ddim", 5, 3.0, 0.0), _cell("ddim", 10, 1.0, 0.0), _cell("unipc", 5, 2.0, 0.0),
              _cell("unipc", 10, 0.5, 0.0, guidance="7.5"), _cell("ddim", 20, 0.6, 0.0, guidance="7.5")])
    none, guided = sorted(recommend(df, "gmm-2d", 5), key=lambda a: a.guidance)[::-1]
    assert none.guidance == "none" and none.best.solver == "unipc" and none.best.nfe == 5  # ddim at 10 excluded
    assert guided.best is None and guided.smallest_nfe == 10  # this setting has nothing at NFE <= 5
    assert "no sw2_true result at NFE <= 5; the smallest NFE in the results is 10" in sentence(guided)
    with pytest.raises(DpmbenchError, match=r"invalid --nfe 4: .*allowed: an integer >= 5 \(its NFEs: 5, 10, 20\)"):
        recommend(df, "gmm-2d", 4)
    with pytest.raises(DpmbenchError, match=r"invalid --model 'gmm2d'; allowed: gmm-2d; did you mean 'gmm-2d'\?"):
        recommend(df, "gmm2d", 10)
    with pytest.raises(DpmbenchError, match=r"invalid --metric 'fid'; allowed: sw2_true"):
        recommend(df, "gmm-2d", 10, "fid")


def test_diverged_cells_are_never_recommended() -> None:
    df = _df([_cell("ddim", 10, float("nan"), 0.0), _cell("unipc", 10, 2.0, 0.0)])
    [a] = recommend(df, "gmm-2d", 10)
    assert a.best.solver == "unipc" and a.candidates == 1 and "the only cell" in answer_text(a)


def test_diffusers_line_and_its_refusals_agree_with_the_scheduler() -> None:
    from dpmbench.diffusers import refusal
    from dpmbench.solvers.registry import get_solver

    line = diffusers_line("dpm-solver++:order=2", "karras", 8, "7.5")
    assert line == ("pipe.scheduler = dpmbench.diffusers.scheduler('dpm-solver++:order=2', pipe.scheduler.config, "
                    "schedule='karras'); pipe(..., num_inference_steps=8, guidance_scale=7.5)")
    assert "t_start=0.999" in diffusers_line("unipc:variant=bh2", "flow-shift:3", 8, t_start=0.999)
    assert "model=MODEL" in diffusers_line("dpm-solver-v3", "logsnr", 8)
    for spec in ("ddim", "dpm-solver:method=adaptive", "ts-ddim", "dpm-solver-v3", "heun"):
        refused = refusal(get_solver(spec)) is not None
        assert diffusers_line(spec, "logsnr", 8).startswith("no diffusers equivalent") == refused, spec
    assert diffusers_line("no-such-solver", "logsnr", 8).startswith("no diffusers line")


def test_recommendation_markdown_answers_each_present_budget() -> None:
    rows = [_cell(s, n, v + 1.0 / n, 0.0) for s, v in (("ddim", 1.0), ("unipc", 0.5)) for n in (5, 8, 10, 20)]
    md = recommendation_markdown(_df(rows))
    lines = [x for x in md.splitlines() if x.startswith("| gmm-2d")]
    assert [x.split(" | ")[3] for x in lines] == ["<= 5", "<= 10", "<= 20"]  # the budgets 5 / 10 / 20 present
    assert "`unipc` (logsnr, NFE 20)" in lines[-1] and "none: clear winner" in lines[-1]
    flow = recommendation_markdown(_df([_cell("ddim", n, 1.0 / n, 0.0) for n in (4, 6, 10)]))  # NFE 4 .. 10
    assert [x.split(" | ")[3] for x in flow.splitlines() if x.startswith("| gmm-2d")] == ["<= 5", "<= 10"]
    assert "`ddim` (logsnr, NFE 4)" in flow
    many = _df([_cell(f"s{i}", 10, 1.0 + 0.001 * i, 0.05 * (i > 0)) for i in range(6)])  # five ties: three named
    row = next(x for x in recommendation_markdown(many).splitlines() if x.startswith("| gmm-2d"))
    assert row.endswith("| 5: `s1` (logsnr, NFE 10); `s2` (logsnr, NFE 10); `s3` (logsnr, NFE 10); and 2 more "
                        "(dpmbench recommend --model gmm-2d --nfe 10 lists all) |")


def _write_run(root: Path) -> None:
    """Metric files of one run (two solvers, NFE 5 and 10) with paired bootstrap replicates."""
    for solver, vals in (("ddim", (3.0, 2.0)), ("unipc", (2.2, 1.0))):
        for nfe, v in zip((5, 10), vals, strict=True):
            d = root / "gmm-2d" / "gnone" / "seed0" / "logsnr" / solver
            d.mkdir(parents=True, exist_ok=True)
            boot = v + SHARED + (0.01 if solver == "unipc" else 0.0) * np.roll(Z, 37)
            (d / f"nfe{nfe}.json").write_text(json.dumps({
                "model": "gmm-2d", "solver": solver, "nfe": nfe, "schedule": "logsnr", "guidance": None,
                "n_samples": 100, "metrics": {"sw2_true": v}, "ci": {"sw2_true": [v - 0.98, v + 0.98]},
                "wall_s": 0.05 * nfe, "bootstrap_values": {"sw2_true": list(boot)}, "bootstrap_seed": 0,
                "provenance": {"sample_device_name": "test CPU", "date": "2026-01-01T00:00:00+00:00"}}))


def _exit_code(argv: list[str]) -> int:
    """``dpmbench ARGV``'s exit code (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_cli_recommend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "res")
    assert main(["recommend", "--model", "gmm-2d", "--nfe", "10", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "gmm-2d · guidance none · seed 0 · sw2_true (lower is better) · NFE <= 10 · n = 100"
    assert "best: unipc (logsnr, NFE 10): 1 [0.02, 1.98] · 0.005 s/sample on test CPU" in out
    assert "clear winner: separated from each of the 3 other cells by the paired bootstrap" in out
    assert "use solver `unipc` with the `logsnr` schedule at NFE 10" in out
    assert ("in diffusers: `pipe.scheduler = dpmbench.diffusers.scheduler('unipc', pipe.scheduler.config, "
            "schedule='logsnr'); pipe(..., num_inference_steps=10)`." in out)
    assert load_results(tmp_path / "res")["boot"].notna().all()  # a results directory: paired replicates
    for argv, message in (
            (["--model", "gmm", "--nfe", "10"], "invalid --model 'gmm'; allowed: gmm-2d"),
            (["--model", "gmm-2d", "--nfe", "4"], "invalid --nfe 4: model 'gmm-2d' has no sw2_true result at NFE <= 4"),
            (["--model", "gmm-2d", "--nfe", "10", "--metric", "fd"], "invalid --metric 'fd'; allowed: sw2_true"),
            (["--model", "gmm-2d", "--nfe", "0"], "invalid --nfe '0'; allowed: integers >= 1")):
        assert _exit_code(["recommend", *argv, str(tmp_path / "res")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_recommend_reads_a_results_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "res")
    df = collect(tmp_path / "res")
    (tmp_path / "rep").mkdir()
    df[[*COLUMNS[:-1], *COST]].to_csv(tmp_path / "rep" / "results.csv", index=False)  # as dpmbench report writes it
    assert main(["recommend", "--model", "gmm-2d", "--nfe", "5", str(tmp_path / "rep")]) == 0  # reads its results.csv
    out = capsys.readouterr().out
    assert "best: unipc (logsnr, NFE 5): 2.2" in out and "by the marginal 95% CIs" in out  # no replicates in a CSV
    assert "0.0025 s/sample on test CPU" in out  # wall_s 0.25 over 100 samples
    md = leaderboard_markdown(df)
    assert "## Recommendation" in md and "| gmm-2d | none | sw2_true | <= 10 | `unipc` (logsnr, NFE 10) |" in md
