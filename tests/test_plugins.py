"""Solvers from outside the package, through DPMBENCH_PLUGINS (entry points use the same registration)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
import torch
from dpmbench.solvers.base import Point, SinglestepSolver, register


@register
class HalfDDIM(SinglestepSolver):
    """A deliberately odd solver for the plugin test: DDIM on half the eps."""

    name = "half-ddim"
    summary = "test plugin"
    source = "tests/test_plugins.py"
    options = {}

    def step(self, model, x, s: Point, t: Point, order: int) -> torch.Tensor:
        eps = 0.5 * self.predict(model, x, s, "eps")
        return t.alpha * (x - s.sigma * eps) / s.alpha + t.sigma * eps
'''


def test_plugin_solver_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "DPMBENCH_PLUGINS": "my_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "s.npz"
    proc = subprocess.run([sys.executable, "-m", "dpmbench", "sample", "--model", "gmm-2d", "--solver", "half-ddim",
                           "--nfe", "4", "--num-samples", "8", "--seed", "0", "--out", str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    listed = subprocess.run([sys.executable, "-m", "dpmbench", "list", "solvers"], capture_output=True, text=True,
                            env=env)
    assert "half-ddim: test plugin" in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "dpmbench", "list", "solvers"], capture_output=True, text=True,
                         env={**env, "DPMBENCH_PLUGINS": "no_such_module_xyz"})
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "invalid DPMBENCH_PLUGINS entry 'no_such_module_xyz'" in bad.stderr


def test_plugin_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_plugin2.py").write_text(PLUGIN.replace("half-ddim", "half-ddim-2").replace("HalfDDIM", "H2"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DPMBENCH_PLUGINS", "my_plugin2")
    from dpmbench import load_model, sample
    from dpmbench.solvers import list_solvers

    assert "half-ddim-2" in list_solvers()
    m = load_model("gmm-2d")
    assert sample(m, "half-ddim-2", 3, m.prior(4)).shape == (4, 2)
