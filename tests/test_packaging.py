"""What ``pip install .`` alone brings is enough for the default benchmark: with every installed distribution that is
neither a core dependency of pyproject.toml nor required by one made unimportable, the default benchmark's models
load, sample and compute their metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# runs in a fresh process with the extras' modules blocked (argv[1]: their top-level names, JSON): load every model
# of config/default.yaml, sample a few steps, compute its metrics
PROBE = """
import importlib.machinery, json, sys
BLOCKED = set(json.loads(sys.argv[1]))
class Hide:  # the path finder, blind to the blocked distributions' modules: they look not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)
    def invalidate_caches(self):
        importlib.machinery.PathFinder.invalidate_caches()
    def find_distributions(self, *args, **kwargs):
        return importlib.machinery.PathFinder.find_distributions(*args, **kwargs)
sys.meta_path[:] = [Hide() if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import torch
import dpmbench
from dpmbench.yamlfile import read_yaml
from evaluators.registry import evaluate
config = read_yaml("config/default.yaml")
for name, spec in config["models"].items():
    m = dpmbench.load_model(name)
    x = dpmbench.sample(m, "ddim", nfe=2, x_T=m.prior(8, seed=0), t_start=spec.get("t_start"))  # density (k = 5): >= 7
    names = [n for n in spec.get("metrics", config.get("metrics", [])) if n not in ("rmse_exact", "mse_ref",
             "model_error", "fd_true", "sw2_true", "loglik_true", "cond_acc")]
    evaluate(names, x.numpy(), {"model": name, "seed": 0, "t_end": 1e-3}, bootstraps=2)
print("ok")
"""


def _core_requirements() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("dependencies = ["):text.index("]", text.index("dependencies = ["))]
    return {re.split(r"[=<>\[ ]", r)[0].lower().replace("_", "-") for r in re.findall(r'"([^"]+)"', block)}


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` need, transitively (markers of extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" not in r:
                todo.append(re.split(r"[=<>!~;\[ (]", r.strip())[0].lower().replace("_", "-"))
    return seen


def test_the_default_benchmark_needs_only_core_dependencies():
    allowed = _closure(_core_requirements() | {"dpmbench"})
    blocked = sorted(top for top, ds in metadata.packages_distributions().items()
                     if not any(d.lower().replace("_", "-") in allowed for d in ds) and not top.startswith("_"))
    assert "transformers" in blocked and "pytest" in blocked and "diffusers" not in blocked  # the probe probes
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(blocked)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
