"""The CLI as a user meets it: a closed pipe, the solver listing, "did you mean" for misspelt names, light
commands that start without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import run_cli

from dpmbench.errors import bad_value, did_you_mean
from dpmbench.solvers.base import COMMON_OPTIONS
from dpmbench.solvers.registry import list_solvers

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_closed_pipe_ends_quietly() -> None:
    """``dpmbench list solvers | head``: the reader is gone before anything is written (its end of the pipe is
    closed at once, while the command still imports), so every write fails; exit 141 as a process ended by
    SIGPIPE, and no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "dpmbench", "list", "solvers"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""


def test_list_solvers_prints_the_common_options_once(capsys: Any) -> None:
    code, out, _ = run_cli(capsys, "list", "solvers")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("options every solver accepts")
    for key in COMMON_OPTIONS:
        assert sum(line.startswith(f"    {key}=") for line in lines) == 1, key
    names = [line.split(":")[0] for line in lines if line and not line.startswith(" ")]
    assert names[1:] == list_solvers()


@pytest.mark.parametrize("argv,hint", [
    (["--model", "gmm2d", "--solver", "ddim"], "; did you mean 'gmm-2d'?"),
    (["--model", "gmm-2d", "--solver", "dpm-solver+"], "; did you mean 'dpm-solver++'?"),
    (["--model", "gmm-2d", "--solver", "dpm-solver++:ordr=2"], "; did you mean 'order'?"),
    (["--model", "gmm-2d", "--solver", "dpm-solver++:method=multstep"], "; did you mean 'multistep'?"),
    (["--model", "gmm-2d", "--solver", "unipc:variant=bh-2"], "; did you mean 'bh2'?"),
    (["--model", "gmm-2d", "--solver", "ddim", "--schedule", "logsnrr"], "; did you mean 'logsnr'?"),
    (["--model", "gmm-2d", "--solver", "ddim", "--schedule", "diffusers-trialing"], "did you mean "
                                                                                   "'diffusers-trailing'?"),
])
def test_misspelt_names_get_a_suggestion(argv: list[str], hint: str, capsys: Any, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "sample", *argv, "--nfe", "5", "--num-samples", "2", "--seed", "0", "--out",
                           str(tmp_path / "x.npz"))
    assert code == 2 and err.rstrip().endswith(hint) and err.count("\n") == 1, err
    assert not (tmp_path / "x.npz").exists()


def test_argparse_choices_and_far_names(capsys: Any) -> None:
    code, _, err = run_cli(capsys, "list", "solver")
    assert code == 2 and err.rstrip().endswith("; did you mean 'solvers'?")
    assert "invalid choice: 'solver' (choose from" in err
    code, _, err = run_cli(capsys, "lst", "solvers")
    assert code == 2 and "did you mean 'list'?" in err
    code, _, err = run_cli(capsys, "list", "zzzz")
    assert code == 2 and "did you mean" not in err and "invalid choice: 'zzzz'" in err
    assert "did you mean" not in str(bad_value("solver", "zzzz", list_solvers()))
    assert did_you_mean(3, ["3"]) == "" and did_you_mean("ddim", ["ddim"]) == ""


def test_light_commands_start_without_torch() -> None:
    """``dpmbench --help`` and ``dpmbench list metrics`` do not import torch (measured: 0.40 -> 0.18 s and
    4.0 -> 0.45 s on a loaded 2-core machine, where importing torch alone takes 1.5-5 s)."""
    code = ("import sys\nfrom dpmbench.cli import main\nmain(['list', 'metrics'])\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rmse_exact" in out.stdout and "usage: dpmbench" in out.stdout


@pytest.mark.parametrize("change,hint", [
    ({"metrics": ["rmse_exat"]}, "; did you mean 'rmse_exact'?"),
    ({"schedules": ["diffusers-trailin"]}, "; did you mean 'diffusers-trailing'?"),
    ({"models": {"gmm2d": {"num_samples": 8}}}, "; did you mean 'gmm-2d'?"),
    ({"solvers": ["dpm-solver+"]}, "; did you mean 'dpm-solver++'?"),
])
def test_config_validator_suggests_too(change: dict, hint: str) -> None:
    from dpmbench.errors import DpmbenchError
    from dpmbench.grid import build_grid

    base = {"metrics": ["rmse_exact"], "nfe": [4], "solvers": ["ddim"], "models": {"gmm-2d": {"num_samples": 8}}}
    with pytest.raises(DpmbenchError) as err:
        build_grid({**base, **change})
    assert str(err.value).endswith(hint) and "\n" not in str(err.value)
