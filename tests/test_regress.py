"""The regression gate: cell-by-cell comparison with tolerances, CI-aware for stochastic metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dpmbench.errors import DpmbenchError
from dpmbench.report.regress import Tolerance, load_tolerances, regress

COLS = ["model", "solver", "nfe", "schedule", "guidance", "metric", "value", "ci_low", "ci_high", "n_samples",
        "wall_s"]


def _csv(path: Path, rows: list[list]) -> Path:
    pd.DataFrame(rows, columns=COLS).to_csv(path, index=False)
    return path


BASE = [
    ["gmm-2d", "ddim", 10, "logsnr", "none", "rmse_exact", 0.10, 0.09, 0.11, 100, 1.0],
    ["gmm-2d", "ddim", 10, "logsnr", "none", "fd_true", 0.020, 0.010, 0.030, 100, 1.0],
    ["gmm-2d", "heun", 10, "logsnr", "7.5", "rmse_exact", 0.05, 0.04, 0.06, 100, 1.0],
]


def test_identical_results_pass(tmp_path: Path) -> None:
    b = _csv(tmp_path / "b.csv", BASE)
    ok, bad, summary = regress(b, b)
    assert ok and bad.empty and summary.startswith("3 cells compared, 0 worse")


def test_worse_cells_fail_with_a_table(tmp_path: Path) -> None:
    b = _csv(tmp_path / "b.csv", BASE)
    new = [r.copy() for r in BASE]
    new[0][6] = 0.12  # rmse 20% worse
    new[2][6] = float("nan")  # diverged
    r = _csv(tmp_path / "r.csv", new[:2] + [new[2]])
    ok, bad, summary = regress(b, r)
    assert not ok and list(bad["verdict"]) == ["worse", "diverged"]
    assert "| gmm-2d | ddim | 10 | logsnr | none | rmse_exact | 0.1 | 0.12 | worse |" in summary


def test_missing_cells_and_tolerances(tmp_path: Path) -> None:
    b = _csv(tmp_path / "b.csv", BASE)
    new = [r.copy() for r in BASE[:2]]
    new[0][6] = 0.1004  # within rtol 1%
    new[1][6] = 0.028  # 40% worse but inside the baseline CI: noise for a stochastic metric
    r = _csv(tmp_path / "r.csv", new)
    tol = {"rmse_exact": Tolerance(rtol=0.01), "fd_true": Tolerance(rtol=0.05, stochastic=True)}
    ok, bad, _ = regress(b, r, tol)
    assert not ok and list(bad["verdict"]) == ["missing"]
    new[1][6] = 0.031  # beyond the CI: a real regression
    ok, bad, _ = regress(b, _csv(tmp_path / "r2.csv", new + [BASE[2]]), tol)
    assert list(bad["verdict"]) == ["worse"] and bad.iloc[0]["metric"] == "fd_true"
    # the default tolerance is tight: 0.1004 vs 0.1 fails without the 1% rtol
    ok, bad, _ = regress(b, _csv(tmp_path / "r3.csv", [new[0], BASE[1], BASE[2]]))
    assert list(bad["verdict"]) == ["worse"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DpmbenchError, match="invalid --baseline '.*nope.csv': no such file"):
        regress(tmp_path / "nope.csv", tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DpmbenchError, match="missing columns model, solver"):
        regress(tmp_path / "x.csv", tmp_path / "x.csv")
    with pytest.raises(DpmbenchError, match="allowed: rtol, atol, stochastic"):
        load_tolerances({"regression": {"tolerances": {"fd_true": {"rtl": 0.1}}}})


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpmbench.cli import main

    b = _csv(tmp_path / "b.csv", BASE)
    worse = [r.copy() for r in BASE]
    worse[2][6] = 0.5
    r = _csv(tmp_path / "r.csv", worse)
    assert main(["regress", "--baseline", str(b), "--results", str(b)]) == 0
    assert main(["regress", "--baseline", str(b), "--results", str(r)]) == 1
    assert "| gmm-2d | heun | 10 | logsnr | 7.5 | rmse_exact | 0.05 | 0.5 | worse |" in capsys.readouterr().out
    cfg = tmp_path / "tol.yaml"
    cfg.write_text("regression:\n  tolerances:\n    rmse_exact: {rtol: 20.0}\n")
    assert main(["regress", "--baseline", str(b), "--results", str(r), "--config", str(cfg)]) == 0
    assert main(["regress", "--baseline", str(tmp_path / "none.csv"), "--results", str(r)]) == 2


def test_higher_is_better_metrics(tmp_path: Path) -> None:
    base = [["gmm-2d", "ddim", 10, "logsnr", "none", "loglik_true", -1.0, -1.1, -0.9, 100, 1.0]]
    b = _csv(tmp_path / "b.csv", base)
    better = [base[0][:6] + [-0.5] + base[0][7:]]
    worse = [base[0][:6] + [-2.0] + base[0][7:]]
    assert regress(b, _csv(tmp_path / "r1.csv", better))[0]
    ok, bad, _ = regress(b, _csv(tmp_path / "r2.csv", worse))
    assert not ok and list(bad["verdict"]) == ["worse"]


def test_the_gate_is_two_sided(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell better than the baseline beyond tolerance (a reference or metric bug that lowers errors, say) is
    reported, and fails the gate with --fail-on-improvement (exit 3; worse cells keep exit 1)."""
    from dpmbench.cli import main

    b = _csv(tmp_path / "b.csv", BASE)
    better = [r.copy() for r in BASE]
    better[0][6] = 0.05  # rmse halved
    r = _csv(tmp_path / "r.csv", better)
    ok, bad, summary = regress(b, r)
    assert ok and bad.empty and "1 better than the baseline beyond tolerance (not failing" in summary
    assert "| gmm-2d | ddim | 10 | logsnr | none | rmse_exact | 0.1 | 0.05 | better |" in summary
    ok, bad, summary = regress(b, r, fail_on_improvement=True)
    assert not ok and list(bad["verdict"]) == ["better"]
    assert main(["regress", "--baseline", str(b), "--results", str(r)]) == 0
    assert main(["regress", "--baseline", str(b), "--results", str(r), "--fail-on-improvement"]) == 3
    assert "| 0.1 | 0.05 | better |" in capsys.readouterr().out
    assert main(["regress", "--baseline", str(b), "--results", str(b), "--fail-on-improvement"]) == 0
    # within tolerance, or for a stochastic metric inside the baseline's CI: not an improvement
    tol = {"rmse_exact": Tolerance(rtol=0.6), "fd_true": Tolerance(rtol=0.05, stochastic=True)}
    better[1][6] = 0.012  # 40% lower fd_true, but inside the baseline CI [0.010, 0.030]
    assert regress(b, _csv(tmp_path / "r2.csv", better), tol, fail_on_improvement=True)[0]
    better[1][6] = 0.009  # below the CI: a real change
    ok, bad, _ = regress(b, _csv(tmp_path / "r3.csv", better), tol, fail_on_improvement=True)
    assert not ok and list(bad["metric"]) == ["fd_true"]
    # both ways: the worse cell decides the exit code
    both = [r.copy() for r in better]
    both[2][6] = 0.5
    assert main(["regress", "--baseline", str(b), "--results", str(_csv(tmp_path / "r4.csv", both)),
                 "--fail-on-improvement"]) == 1
    # higher-is-better metrics: a rise is the improvement
    base = [["gmm-2d", "ddim", 10, "logsnr", "none", "loglik_true", -1.0, -1.1, -0.9, 100, 1.0]]
    up = [base[0][:6] + [-0.5] + base[0][7:]]
    ok, bad, _ = regress(_csv(tmp_path / "b5.csv", base), _csv(tmp_path / "r5.csv", up), fail_on_improvement=True)
    assert not ok and list(bad["verdict"]) == ["better"]
