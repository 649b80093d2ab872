"""benchmarks/device_check.sh, the first-GPU check: its CPU mode end to end on a narrowed stand-in (what CI can run),
and the pieces its CUDA mode relies on: the stand-in is google/ddpm-cifar10-32's architecture, its `make regress`
is the Makefile's, the TF32 switch restores torch's settings, bad options are one-line errors."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpmbench.errors import DpmbenchError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
assert _spec is not None and _spec.loader is not None
device_check = importlib.util.module_from_spec(_spec)  # benchmarks/ is not a package, nor put on sys.path
_spec.loader.exec_module(device_check)

SOLVERS = device_check.SOLVERS


@pytest.mark.slow
def test_cpu_mode_runs_every_cpu_part_and_says_what_it_skipped(tmp_path: Path) -> None:
    out = tmp_path / "check.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--cpu", "--width", "8",
                           "--samples", "2", "--nfe", "2", "--repeats", "0", "--agreement-samples", "1",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert proc.stdout.startswith(text)  # the file is what was printed
    assert "skipped: CPU vs CUDA agreement: no CUDA device" in proc.stdout
    assert "skipped: make regress on CUDA: --cpu" in proc.stdout
    assert "**Result: every gated check passed.**" in text and "GPU: none used (--cpu)" in text
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in text.splitlines() if line.startswith("| ")}
    throughput = [r for r in rows if len(r) == 7 and r[0] in SOLVERS]
    assert sorted(r[0] for r in throughput) == sorted(SOLVERS) and all(r[1] == "2" and r[6] == "True"
                                                                          for r in throughput)
    for r in throughput:  # samples/s is the batch over the time; the ratio is the time over the floor
        # times and ratios are printed to 3 decimals, samples/s to 1: each derived value lies in what the rounding
        # intervals of the printed ones allow
        t, floor, u = float(r[2]), float(r[4]), 5e-4
        assert 2 / (t + u) - 0.05 <= float(r[3]) <= 2 / max(t - u, 1e-9) + 0.05
        assert (t - u) / (floor + u) - u <= float(r[5]) <= (t + u) / max(floor - u, 1e-9) + u
    half = {r[0]: r for r in rows if len(r) == 9 and r[0] in device_check.HALF_DTYPES}
    assert set(half) == {"float16", "bfloat16"}
    # a half-precision network changes the samples, bfloat16 (8-bit mantissa) more than float16 (11-bit)
    assert 0 < float(half["float16"][4]) < float(half["bfloat16"][4]) < 0.1
    agreement = [r for r in rows if len(r) == 9 and r[0] in SOLVERS]
    assert len(agreement) == 3 and all(r[6] == "skipped (no CUDA)" for r in agreement)
    for r in agreement:  # float32 rounding is measured (not zero), tiny, and the tolerance is 10x it
        assert 1e-9 < float(r[2]) < 1e-4
        assert float(r[3]) == pytest.approx(max(10 * float(r[2]), 1e-6), rel=1e-3)


def test_standin_is_the_ddpm_cifar10_architecture() -> None:
    from diffusers import UNet2DModel

    with torch.device("meta"):  # no memory, no initialization
        unet = UNet2DModel(**device_check.unet_config(128))
    # Ho et al. 2020 (arXiv:2006.11239), Appendix B: "Our CIFAR10 model has 35.7 million parameters"
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 35.7
    assert device_check.unet_config(32)["block_out_channels"] == (32, 64, 64, 64)


def _recipe(target: str) -> list[str]:
    """The tokens of the one command of a Makefile target's recipe, from the program's name on."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    body = re.search(rf"^{re.escape(target)}:[^\n]*\n\t([^\n]+)", text, re.M)
    assert body, target
    tokens = shlex.split(body.group(1))
    return [t.removeprefix("$(BIN)/") for t in tokens]


def test_its_regress_is_make_regress_with_device_cuda(tmp_path: Path) -> None:
    run, check = device_check.regress_commands("py", tmp_path)
    rel = [str(Path(t).relative_to(ROOT)) if t.startswith(str(ROOT)) else t for t in run]
    assert rel[:3] == ["py", "-m", "snakemake"] and rel[-2:] == ["--config", "device=cuda"]
    assert rel[3:7] == ["--snakefile", "Snakefile", "--directory", str(tmp_path)]
    assert ["snakemake", *rel[7:-2]] == _recipe("regress-run")
    rel = [str(Path(t).relative_to(tmp_path)) if t.startswith(str(tmp_path)) else
           str(Path(t).relative_to(ROOT)) if t.startswith(str(ROOT)) else t for t in check]
    assert ["dpmbench", *rel[3:]] == _recipe("regress") and rel[:3] == ["py", "-m", "dpmbench"]


def test_tf32_switch_restores_torch_settings() -> None:
    before = device_check.fp32_precision()
    with device_check.tf32(False):
        assert device_check.fp32_precision() == {"conv": "ieee", "matmul": "ieee"}
        with device_check.tf32(True):
            assert device_check.fp32_precision() == {"conv": "tf32", "matmul": "tf32"}
        assert device_check.fp32_precision() == {"conv": "ieee", "matmul": "ieee"}
    assert device_check.fp32_precision() == before


@pytest.mark.parametrize(("args", "field"), [(["--width", "12"], "--width"), (["--nfe", "ten"], "--nfe"),
                                              (["--samples", "-3"], "--samples")])
def test_bad_options_are_one_line_errors(args: list[str], field: str) -> None:
    with pytest.raises(DpmbenchError, match=f"^invalid {field} ") as err:
        device_check.parse(["--cpu", *args])
    assert "\n" not in str(err.value)
