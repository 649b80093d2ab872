"""The command line: contracts of DESIGN.md, one-line errors with exit code 2 and no output file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import run_cli as run

BAD = [
    (["sample", "--model", "cifar", "--solver", "ddim", "--nfe", "5", "--num-samples", "4", "--seed", "0"],
     "invalid model 'cifar'; allowed: gmm-2d, gmm-digits, digits-empirical"),
    (["sample", "--model", "gmm-2d", "--solver", "dpm-solvr", "--nfe", "5", "--num-samples", "4", "--seed", "0"],
     "invalid solver 'dpm-solvr'; allowed: ddim, "),
    (["sample", "--model", "gmm-2d", "--solver", "dpm-solver:order=3", "--nfe", "2", "--num-samples", "4",
      "--seed", "0"], "invalid nfe 2 for solver 'dpm-solver': needs an integer >= 3"),
    (["sample", "--model", "gmm-2d", "--solver", "dpm-solver++:foo=1", "--nfe", "5", "--num-samples", "4",
      "--seed", "0"], "invalid option of solver 'dpm-solver++' 'foo'; allowed: "),
    (["sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "0", "--num-samples", "4", "--seed", "0"],
     "invalid --nfe '0'; allowed: integers >= 1"),
    (["sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "5", "--num-samples", "4", "--seed", "0",
      "--schedule", "cosine"], "invalid schedule 'cosine'; allowed: time-uniform, logsnr"),
    (["sample", "--model", "digits-empirical", "--solver", "ddim", "--nfe", "5", "--num-samples", "4", "--seed", "0",
      "--guidance", "nan"], "invalid --guidance 'nan'; allowed: a finite number"),
    (["sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "5,6", "--num-samples", "4", "--seed", "0"],
     "several --nfe values need '{nfe}' in the output path"),
    (["reference", "--model", "gmm-3d", "--num-samples", "4", "--seed", "0"], "invalid model 'gmm-3d'"),
    (["sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "5", "--num-samples", "-3", "--seed", "0"],
     "invalid --num-samples '-3'; allowed: integers >= 1"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_input_one_line_exit_2_no_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                           message: str) -> None:
    out_file = tmp_path / "out.npz"
    code, _, err = run(capsys, *argv, "--out", str(out_file))
    assert code == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out_file.exists() and list(tmp_path.iterdir()) == []


def test_sample_reference_evaluate_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    common = ["--model", "gmm-2d", "--num-samples", "64", "--seed", "3", "--guidance", "7.5"]
    pattern = str(tmp_path / "s_{nfe}.npz")
    assert run(capsys, "sample", *common, "--solver", "dpm-solver++:order=2", "--nfe", "5,10", "--out", pattern)[0] == 0
    assert run(capsys, "reference", *common, "--out", str(tmp_path / "ref.npz"))[0] == 0
    s5 = np.load(tmp_path / "s_5.npz")
    assert s5["x"].dtype == np.float32 and s5["x"].shape == (64, 2)
    assert int(s5["nfe"]) == 5 and str(s5["solver"]) == "dpm-solver++:order=2" and str(s5["model"]) == "gmm-2d"
    assert int(s5["seed"]) == 3 and s5["labels"].tolist() == [i % 4 for i in range(64)]
    outs = [str(tmp_path / "m5.json"), str(tmp_path / "m10.json")]
    code, _, err = run(capsys, "evaluate", "--samples", str(tmp_path / "s_5.npz"), str(tmp_path / "s_10.npz"),
                       "--metrics", "rmse_exact,fd_true", "--reference", str(tmp_path / "ref.npz"), "--out", *outs)
    assert code == 0, err
    m5, m10 = (json.loads(Path(p).read_text()) for p in outs)
    assert set(m5) >= {"model", "solver", "nfe", "schedule", "guidance", "n_samples", "metrics", "ci", "wall_s"}
    assert m5["guidance"] == 7.5 and m5["n_samples"] == 64 and m5["nfe"] == 5
    assert m10["metrics"]["rmse_exact"] < m5["metrics"]["rmse_exact"]
    lo, hi = m5["ci"]["rmse_exact"]
    assert lo <= m5["metrics"]["rmse_exact"] <= hi
    code, _, _ = run(capsys, "report", str(tmp_path), "--out", str(tmp_path / "rep"))
    assert code == 0
    csv = (tmp_path / "rep" / "results.csv").read_text().splitlines()
    assert csv[0] == ("model,solver,nfe,schedule,guidance,metric,value,ci_low,ci_high,n_samples,wall_s"
                      ",s_per_sample,device")  # DESIGN.md's columns, then the cost columns appended
    assert len(csv) == 1 + 4
    assert "| dpm-solver++:order=2 |" in (tmp_path / "rep" / "leaderboard.md").read_text()


def test_batch_size_does_not_change_samples(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["sample", "--model", "gmm-digits", "--solver", "dpm-solver++:order=3", "--nfe", "8",
            "--num-samples", "50", "--seed", "1"]
    run(capsys, *args, "--out", str(tmp_path / "a.npz"))
    run(capsys, *args, "--batch-size", "7", "--out", str(tmp_path / "b.npz"))
    assert np.array_equal(np.load(tmp_path / "a.npz")["x"], np.load(tmp_path / "b.npz")["x"])


def test_list_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "solvers")
    assert code == 0 and "dpm-solver++:" in out and "source:" in out and "order=2  [1, 2, 3]" in out
    assert "gmm-digits" in run(capsys, "list", "models")[1]
    assert "rmse_exact" in run(capsys, "list", "metrics")[1]
    assert "karras" in run(capsys, "list", "schedules")[1]
    code, _, err = run(capsys, "list", "things")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_module_entry_point_and_console_script(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dpmbench", "sample", "--model", "nope", "--solver", "ddim",
                           "--nfe", "3", "--num-samples", "2", "--seed", "0", "--out", str(tmp_path / "x.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    exe = Path(sys.executable).with_name("dpmbench")
    assert exe.exists(), "console script 'dpmbench' is installed"
