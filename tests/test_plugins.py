"""Solvers from outside the package, through DPMBENCH_PLUGINS (entry points use the same registration)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import support
from support import run_snakemake, shared_registry_cache, workflow_pythonpath

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


# -- the workflow and a plugin: the config check is exact, and a plugin's results follow its code ----------------------
ROOT = Path(__file__).parents[1]


def _plugin_env(tmp_path: Path, module: str) -> dict[str, str]:
    return {**os.environ, "DPMBENCH_PLUGINS": module, "DPMBENCH_CACHE": shared_registry_cache(tmp_path / "cache"),
            "PYTHONPATH": workflow_pythonpath(ROOT)}


def _tiny(tmp_path: Path, solver: str) -> Path:
    import yaml

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "results_dir": "results", "report_dir": "reports", "seed": 0, "device": "cpu", "metrics": ["fd_true"],
        "nfe": [3], "samples_per_shard": 8, "solvers": ["ddim", solver], "models": {"gmm-2d": {"num_samples": 8}}}))
    return cfg


def _snakemake(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", *args], env, timeout=900)


def test_a_config_naming_an_unloadable_plugin_solver_fails_before_anything_runs(tmp_path: Path) -> None:
    plugin = support.PLUGIN_DIR / "my_plugin3.py"
    plugin.write_text(PLUGIN.replace("half-ddim", "half-ddim-3"))
    env = _plugin_env(tmp_path, "my_plugin3")
    cfg = _tiny(tmp_path, "half-ddim-3")
    ok = subprocess.run([sys.executable, "-m", "dpmbench", "validate", str(cfg)], capture_output=True, text=True,
                        env=env)
    assert ok.returncode == 0 and ok.stdout.strip().count("\n") == 0 and "valid (2 cells" in ok.stdout, ok.stderr
    plugin.unlink()  # the plugin is gone; the registry cache written while it was loaded must not answer for it
    bad = subprocess.run([sys.executable, "-m", "dpmbench", "validate", str(cfg)], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "invalid DPMBENCH_PLUGINS entry 'my_plugin3'" in bad.stderr
    dry = _snakemake(tmp_path, env, "-n")
    assert dry.returncode == 2 and "invalid DPMBENCH_PLUGINS entry 'my_plugin3'" in dry.stderr, dry.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_a_plugin_solver_s_jobs_rerun_when_its_code_changes(tmp_path: Path) -> None:
    plugin = support.PLUGIN_DIR / "my_plugin4.py"
    plugin.write_text(PLUGIN.replace("half-ddim", "half-ddim-4"))
    env = _plugin_env(tmp_path, "my_plugin4")
    _tiny(tmp_path, "half-ddim-4")
    run = _snakemake(tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    again = _snakemake(tmp_path, env, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    plugin.write_text(PLUGIN.replace("half-ddim", "half-ddim-4").replace("0.5 *", "0.25 *"))
    dry = _snakemake(tmp_path, env, "-n", "-p")
    assert dry.returncode == 0, dry.stderr[-3000:]
    sample_cmds = [ln for ln in (dry.stdout + dry.stderr).splitlines() if "dpmbench sample" in ln]
    assert len(sample_cmds) == 1 and "--solver half-ddim-4" in sample_cmds[0]  # ddim's results stay


def test_the_registry_key_follows_the_installed_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry-point plugin installed or uninstalled (its code unchanged) gives the grid's registry another cache."""
    import importlib.metadata

    from dpmbench.grid.registry import Registry, plugins_identity

    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("DPMBENCH_PLUGINS", raising=False)
    none = Registry().path
    ep = importlib.metadata.EntryPoint("my-solver", "dpmbench.solvers.ddim:DDIM", "dpmbench.solvers")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == "dpmbench.solvers" else [])
    assert plugins_identity()[0].startswith("ep:my-solver=dpmbench.solvers.ddim:DDIM:")
    assert Registry().path != none
