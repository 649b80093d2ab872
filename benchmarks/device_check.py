"""The first-GPU check (run through ``benchmarks/device_check.sh``): the CUDA path on a stand-in of realistic size.

The stand-in is google/ddpm-cifar10-32's network with random weights: a diffusers ``UNet2DModel`` built from that
repository's ``config.json`` (below, ``DDPM_CIFAR10_UNET``; the DDPM CIFAR-10 architecture of Ho et al. 2020,
arXiv:2006.11239, Appendix B: 35.7M parameters) and its ``scheduler_config.json`` (linear betas 1e-4..0.02, 1000
steps, epsilon prediction), saved flat as that repository is and loaded through dpmbench's own path:
``load_model("ddpm-cifar10")`` of the manifest entry in ``config/checkpoints.yaml`` with the stand-in's sha256 and
size pinned by an overlay manifest (sha256 verification, the ``diffusers-unet`` adapter) from a temporary
``$DPMBENCH_CACHE``, nothing downloaded. Four parts:

1. **throughput**: samples/s of DPM-Solver++(2M), UniPC and DDIM at each NFE, against the floor NFE x (one forward
   of the whole batch, timed on its own: the adapter's call, in its micro-batches); ratio = time / floor;
2. **precision**: the network in float16 and in bfloat16 (the adapter's ``dtype`` option; the solver stays float32),
   max |x - x_float32| and the relative L2 difference of the final samples, and the speedup over float32;
3. **CPU vs CUDA**: the same cells from the same x_T on a small batch, float32 on both; tolerance (relative L2) =
   ``AGREEMENT_FACTOR`` x the relative L2 difference between float32 and float64 on CPU, measured here for each
   cell (the size of float32 rounding on this trajectory); run with cuDNN's fp32 convolutions in IEEE float32
   (gated) and in TF32 (torch's default for convolutions: reported, not gated);
4. **make regress on CUDA**: ``make regress``'s two commands (the workflow on ``config/regression.yaml``, then
   ``dpmbench regress`` against ``reports/baseline.csv``) with ``device=cuda``, in a temporary directory; where it
   fails, once more with ``NVIDIA_TF32_OVERRIDE=0`` (no TF32 in cuDNN/cuBLAS: whether TF32 is the cause).

Without CUDA (or with ``--cpu``) parts 1 and 2 run on the CPU, by default on a narrowed stand-in (``--width 16``: the
same blocks with 16-32 channels instead of 128-256), 4 samples, NFE 4 (part 2 on the first cell only: half-precision
convolutions are slow there), and part 3 runs its float64 calibration only; every part that needs CUDA is skipped
with a line saying so. Writes one markdown file (``--out``; default ``benchmarks/device_check-<host>-<date>.md``)
ready to paste into ``benchmarks/RESULTS.md``. Exit status 1 when a
gated check fails (CPU vs CUDA in IEEE float32, make regress, non-finite samples), else 0.

    benchmarks/device_check.sh [--cpu] [--samples N] [--nfe 10,20] [--width 128] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "ddpm-cifar10"  # the manifest entry whose files the stand-in replaces (config/checkpoints.yaml)
# google/ddpm-cifar10-32, config.json (Hugging Face, revision main)
DDPM_CIFAR10_UNET: dict[str, Any] = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None, "center_input_sample": False, "downsample_padding": 0, "flip_sin_to_cos": False,
    "freq_shift": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-6, "norm_num_groups": 32, "act_fn": "silu",
    "time_embedding_type": "positional",
}
# google/ddpm-cifar10-32, scheduler_config.json
DDPM_CIFAR10_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                                          "beta_schedule": "linear", "clip_sample": True,
                                          "variance_type": "fixed_large"}
SOLVERS = ("dpm-solver++:order=2,method=multistep", "unipc", "ddim")
HALF_DTYPES = ("float16", "bfloat16")
AGREEMENT_FACTOR = 10.0
AGREEMENT_FLOOR = 1e-6  # relative L2; where float32 and float64 agree to the last bits of float32
REGRESS_TIMEOUT_S = 360


def log(msg: str) -> None:
    """One progress line on stderr (the results go to the markdown file and stdout)."""
    print(f"[device_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the stand-in checkpoint ----------------------------------------------------------------------------------------
def unet_config(width: int) -> dict[str, Any]:
    """The ddpm-cifar10 UNet config; ``width`` scales every block's channels (128: the real network)."""
    cfg = dict(DDPM_CIFAR10_UNET)
    cfg["block_out_channels"] = tuple(c * width // 128 for c in DDPM_CIFAR10_UNET["block_out_channels"])
    cfg["norm_num_groups"] = min(32, width)
    return cfg


def build_standin(folder: Path, width: int, seed: int = 0) -> int:
    """Save a random-weight ddpm-cifar10 UNet and its DDPM scheduler config in ``folder`` (the flat layout of
    google/ddpm-cifar10-32); returns the network's parameter count."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_config(width))
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder, safe_serialization=True)
    DDPMScheduler(**DDPM_CIFAR10_SCHEDULER).save_pretrained(folder)
    return sum(p.numel() for p in unet.parameters())


def load(device: str, dtype: str = "float32") -> Any:
    """The stand-in through dpmbench's loading path: ``load_model`` (float32), or the same verified entry through
    its adapter with the ``dtype`` option (float16 / bfloat16)."""
    from dpmbench import load_model

    if dtype == "float32":
        return load_model(MODEL_ID, device=device)
    from dpmbench.models.adapters import load_adapter
    from dpmbench.models.manifest import load_manifest
    from dpmbench.models.store import verify

    entry = load_manifest()[MODEL_ID]
    root = verify(entry)
    spec = entry.as_dict()
    spec["options"] = {**(spec.get("options") or {}), "dtype": dtype}
    return load_adapter(spec, root, device)


# -- timing and comparison ------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously; a clock read alone would not)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[Any, float]:
    """(result of a first, warm-up call; median seconds of ``repeats`` more calls, or of the warm-up call itself
    when ``repeats`` is 0), synchronized around each."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    times = [time.perf_counter() - t0] if repeats == 0 else []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def difference(x: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """max |x - ref| and the relative L2 difference ||x - ref|| / ||ref||, in float64 on the CPU."""
    a, b = x.detach().double().cpu(), ref.detach().double().cpu()
    d = a - b
    return {"max_abs": float(d.abs().max()), "rel_l2": float(d.norm() / b.norm().clamp_min(1e-300)),
            "finite": bool(torch.isfinite(a).all())}


def fp32_precision() -> dict[str, str]:
    """torch's fp32 settings for cuDNN convolutions and CUDA matmuls (``tf32`` or ``ieee``; ``none``: inherited)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return {"conv": str(conv.fp32_precision), "matmul": str(torch.backends.cuda.matmul.fp32_precision)}
    return {"conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
            "matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"}


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matmuls in TF32 (``enabled``) or IEEE float32 inside the block; restored after."""
    before = fp32_precision()
    mode = "tf32" if enabled else "ieee"
    conv = getattr(torch.backends.cudnn, "conv", None)
    new_api = conv is not None and hasattr(conv, "fp32_precision")

    def put(c: str, m: str) -> None:
        if new_api:
            torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = c, m
        else:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = c == "tf32", m == "tf32"

    put(mode, mode)
    try:
        yield
    finally:
        put(before["conv"], before["matmul"])


# -- the parts ------------------------------------------------------------------------------------------------------
def run_cells(model: Any, x_T: torch.Tensor, cells: list[tuple[str, int]], device: str,
              repeats: int) -> dict[tuple[str, int], tuple[torch.Tensor, float]]:
    """Each cell's final samples and median sampling time from ``x_T``."""
    from dpmbench import sample

    return {(spec, nfe): timed(lambda spec=spec, nfe=nfe: sample(model, spec, nfe, x_T), device, repeats)
            for spec, nfe in cells}


def forward_time(model: Any, x: torch.Tensor, device: str, repeats: int) -> float:
    """Median time of one network evaluation of the whole batch (the floor's unit), at mid-trajectory t = 0.5."""
    with torch.no_grad():
        return timed(lambda: model.eps(x, 0.5), device, max(repeats, 3))[1]


def part_throughput(device: str, cells: list[tuple[str, int]], n: int, repeats: int) -> tuple[list[str], dict]:
    """Part 1: rows of the throughput table and the float32 results (kept for part 2; ``finite``: every sample
    is)."""
    model = load(device)
    x_T = model.prior(n, seed=0, device=device)
    fwd = forward_time(model, x_T, device, repeats)
    before = model.micro_batch
    model.micro_batch = 0  # the same batch in ONE network call, for comparison with the adapter's micro-batches
    one_call = forward_time(model, x_T, device, repeats)
    model.micro_batch = before
    runs = run_cells(model, x_T, cells, device, repeats)
    mb = model.micro_batch if model.micro_batch is not None else "default"
    rows = [f"One forward of {n} samples: {fwd * 1e3:.2f} ms in the adapter's calls (micro_batch {mb}), "
            f"{one_call * 1e3:.2f} ms as one call of {n} rows.", "",
            "| solver | nfe | time (s) | samples/s | floor = nfe x forward (s) | time / floor | finite |",
            "|---|---|---|---|---|---|---|"]
    finite = True
    for (spec, nfe), (x, t) in runs.items():
        floor, ok = nfe * fwd, bool(torch.isfinite(x).all())
        finite &= ok
        rows.append(f"| {spec} | {nfe} | {t:.3f} | {n / t:.1f} | {floor:.3f} | {t / floor:.3f} | {ok} |")
    return rows, {"x_T": x_T, "runs": runs, "forward_s": fwd, "finite": finite}


def part_precision(device: str, cells: list[tuple[str, int]], fp32: dict, repeats: int) -> tuple[list[str], bool]:
    """Part 2: float16 / bfloat16 networks against float32 from the same x_T; (rows, all samples finite)."""
    rows = ["| network dtype | solver | nfe | max abs diff vs float32 | rel. L2 diff vs float32 | finite | "
            "time (s) | speedup vs float32 | forward speedup |", "|---|---|---|---|---|---|---|---|---|"]
    ok = True
    for dtype in HALF_DTYPES:
        try:
            model = load(device, dtype)
            fwd = forward_time(model, fp32["x_T"], device, repeats)
            runs = run_cells(model, fp32["x_T"], cells, device, repeats)
        except (RuntimeError, NotImplementedError) as exc:  # a dtype the device's kernels lack
            rows.append(f"| {dtype} | - | - | not run: {str(exc).splitlines()[0][:120]} | | | | | |")
            continue
        for cell, (x, t) in runs.items():
            ref, t32 = fp32["runs"][cell]
            d = difference(x, ref)
            ok &= d["finite"]
            rows.append(f"| {dtype} | {cell[0]} | {cell[1]} | {d['max_abs']:.3e} | {d['rel_l2']:.3e} | "
                        f"{d['finite']} | {t:.3f} | {t32 / t:.2f}x | {fp32['forward_s'] / fwd:.2f}x |")
        del model
    return rows, ok


def float64_model(model: Any) -> Any:
    """The same loaded network in float64 (the calibration run's exact-arithmetic stand-in)."""
    model.unet.double()
    model.dtype = torch.float64
    return model


def part_agreement(cuda: bool, cells: list[tuple[str, int]], n: int) -> tuple[list[str], bool, list[str]]:
    """Part 3: CPU vs CUDA in float32 with a tolerance calibrated by float32 vs float64 on CPU; (rows, passed,
    skipped lines)."""
    cpu = load("cpu")
    x_T = cpu.prior(n, seed=1)
    cpu32 = {c: r[0] for c, r in run_cells(cpu, x_T, cells, "cpu", 0).items()}
    cpu64 = {c: r[0] for c, r in run_cells(float64_model(cpu), x_T.double(), cells, "cpu", 0).items()}
    tol = {c: max(AGREEMENT_FACTOR * difference(cpu32[c], cpu64[c])["rel_l2"], AGREEMENT_FLOOR) for c in cells}
    gpu: dict[str, dict] = {}
    skipped = []
    if cuda:
        net = load("cuda")
        for mode in ("ieee", "tf32"):
            with tf32(mode == "tf32"):
                gpu[mode] = {c: r[0] for c, r in run_cells(net, x_T.to("cuda"), cells, "cuda", 0).items()}
    else:
        skipped.append("CPU vs CUDA agreement: no CUDA device (only the float32-vs-float64 calibration on CPU ran)")
    rows = [f"{n} samples, float32 network and solver on both devices, the same x_T (seed 1). Tolerance: "
            f"{AGREEMENT_FACTOR:g} x the relative L2 difference between the CPU's float32 and float64 runs of the "
            "cell (at least 1e-6).", "",
            "| solver | nfe | CPU f32 vs f64: rel. L2 | tolerance | CUDA (IEEE f32) vs CPU: max abs | rel. L2 | "
            "within | CUDA (TF32 convs) vs CPU: max abs | rel. L2 |", "|---|---|---|---|---|---|---|---|---|"]
    passed = True
    for c in cells:
        calib = difference(cpu32[c], cpu64[c])["rel_l2"]
        cols = ["-", "-", "skipped (no CUDA)", "-", "-"]
        if cuda:
            strict, loose = difference(gpu["ieee"][c], cpu32[c]), difference(gpu["tf32"][c], cpu32[c])
            within = strict["finite"] and strict["rel_l2"] <= tol[c]
            passed &= within
            cols = [f"{strict['max_abs']:.3e}", f"{strict['rel_l2']:.3e}", "yes" if within else "**NO**",
                    f"{loose['max_abs']:.3e}", f"{loose['rel_l2']:.3e}"]
        rows.append(f"| {c[0]} | {c[1]} | {calib:.3e} | {tol[c]:.3e} | " + " | ".join(cols) + " |")
    return rows, passed, skipped


def regress_commands(python: str, workdir: Path, device: str = "cuda") -> list[list[str]]:
    """``make regress``'s two commands (Makefile, targets regress-run and regress) for ``device``, run from the
    checkout with the results in ``workdir``."""
    config = str(ROOT / "config" / "regression.yaml")
    return [
        [python, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--cores", "all", "--scheduler", "greedy", "--quiet", "--configfile", config, "--config",
         f"device={device}"],
        [python, "-m", "dpmbench", "regress", "--baseline", str(ROOT / "reports" / "baseline.csv"), "--results",
         str(workdir / "reports" / "regression" / "results.csv"), "--config", config, "--fail-on-improvement"],
    ]


def part_regress(workdir: Path, timeout: float, device: str = "cuda",
                 env: dict[str, str] | None = None) -> tuple[list[str], bool]:
    """Part 4: ``make regress`` on ``device`` (``env``: variables added to the commands' environment); (rows,
    passed)."""
    rows, t0 = [], time.perf_counter()
    for cmd in regress_commands(sys.executable, workdir, device):
        shown = " ".join(Path(a).name if a == sys.executable else a for a in cmd)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **(env or {})})
            rc, text = proc.returncode, (proc.stdout + proc.stderr).strip()
        except subprocess.TimeoutExpired:
            rc, text = 124, f"timed out after {timeout:.0f} s"
        tail = "\n".join(text.splitlines()[-15 if rc else -3:])  # a failure's context, else the summary
        rows += [f"`{shown}`: exit {rc}", "", "```", tail or "(no output)", "```", ""]
        if rc != 0:
            return rows + [f"**make regress on {device} failed** ({time.perf_counter() - t0:.0f} s)"], False
    return rows + [f"make regress on {device} passed ({time.perf_counter() - t0:.0f} s wall)"], True


# -- the whole check ------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults depend on whether CUDA is used)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the CPU mode even where CUDA is available")
    ap.add_argument("--samples", type=int, help="samples per throughput/precision cell (CUDA 256, CPU 4)")
    ap.add_argument("--agreement-samples", type=int, help="samples of the CPU vs CUDA cells (CUDA 8, CPU 2)")
    ap.add_argument("--nfe", help="NFE budgets, comma-separated (CUDA 10,20; CPU 4)")
    ap.add_argument("--repeats", type=int, help="timed runs per cell after a warm-up (CUDA 3, CPU 1)")
    ap.add_argument("--width", type=int, help="base channels of the UNet (CUDA 128: the real network; CPU 16)")
    ap.add_argument("--skip-regress", action="store_true", help="leave out make regress on CUDA")
    ap.add_argument("--regress-timeout", type=float, default=REGRESS_TIMEOUT_S, help="seconds per command")
    ap.add_argument("--out", type=Path, help="the results file (default benchmarks/device_check-<host>-<date>.md)")
    args = ap.parse_args(argv)
    from dpmbench.errors import bad_value

    cuda = torch.cuda.is_available() and not args.cpu
    args.device = "cuda" if cuda else "cpu"
    args.width = args.width if args.width is not None else (128 if cuda else 16)
    if args.width < 8 or args.width % 8:
        raise bad_value("--width", args.width, "a multiple of 8, at least 8")
    args.samples = args.samples if args.samples is not None else (256 if cuda else 4)
    args.agreement_samples = args.agreement_samples if args.agreement_samples is not None else (8 if cuda else 2)
    args.repeats = args.repeats if args.repeats is not None else (3 if cuda else 1)
    try:
        args.nfes = [int(v) for v in (args.nfe or ("10,20" if cuda else "4")).split(",")]
    except ValueError:
        raise bad_value("--nfe", args.nfe, "comma-separated integers, e.g. 10,20") from None
    for name in ("samples", "agreement_samples", "repeats"):
        if getattr(args, name) < (0 if name == "repeats" else 1):
            raise bad_value(f"--{name.replace('_', '-')}", getattr(args, name), "a positive integer")
    return args


def header(args: argparse.Namespace, params: int, why_cpu: str | None) -> list[str]:
    """The results file's title and the machine it ran on."""
    from dpmbench.provenance import cpu_name, git_state

    git, prec = git_state(), fp32_precision()
    narrowed = "" if args.width == 128 else f": narrowed by --width {args.width}"
    timing = f"median of {args.repeats} timed runs after a warm-up" if args.repeats else "one run each (--repeats 0)"
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"none used ({why_cpu})"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [f"### Device check, {socket.gethostname()}, {date}", "",
            f"`benchmarks/device_check.sh` at {str(git['commit'])[:12]}{' (dirty)' if git['dirty'] else ''}; "
            f"GPU: {gpu}; CPU: {cpu_name()} ({os.cpu_count()} logical cores); torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}), Python {platform.python_version()}; fp32 settings (torch's defaults, "
            f"used by parts 1, 2 and 4): cuDNN convolutions {prec['conv']}, CUDA matmuls {prec['matmul']}.", "",
            f"Stand-in: google/ddpm-cifar10-32's UNet2DModel config (block widths "
            f"{unet_config(args.width)['block_out_channels']}{narrowed}), random weights (seed 0), {params / 1e6:.1f}M "
            f"parameters, loaded as `{MODEL_ID}` from a temporary cache; {args.samples} samples per cell, NFE "
            f"{args.nfes}, logSNR steps, {timing}.", ""]


def pin_standin(entry: Any, folder: Path, manifest: Path) -> None:  # noqa: ANN401
    """An overlay manifest (``$DPMBENCH_MANIFESTS``) of ``entry`` whose files carry the stand-in's sha256 and size:
    the real loading path verifies the stand-in's files as pinned ones (the shipped entry pins none of google's)."""
    import hashlib

    import yaml

    data = entry.as_dict()
    data.pop("id")
    data = {k: v for k, v in data.items() if v is not None}
    for f in data["files"]:
        blob = (folder / f["path"]).read_bytes()
        f.update(sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    manifest.write_text(yaml.safe_dump({"checkpoints": {entry.id: data}}))
    os.environ["DPMBENCH_MANIFESTS"] = str(manifest)


def main(argv: list[str] | None = None) -> int:
    """Run the check; write the results file; return the exit status."""
    args = parse(argv)
    why_cpu = "--cpu" if args.cpu else "no CUDA device"
    tmp = Path(tempfile.mkdtemp(prefix="dpmbench-device-check-"))
    os.environ["DPMBENCH_CACHE"] = str(tmp / "cache")  # the stand-in never lands in a real checkpoint cache
    os.environ["DPMBENCH_OFFLINE"] = "1"
    skipped: list[str] = []
    failed: list[str] = []
    cells = [(spec, nfe) for nfe in args.nfes for spec in SOLVERS]
    try:
        from dpmbench.models.manifest import load_manifest
        from dpmbench.models.store import checkpoint_dir

        log(f"building the stand-in (width {args.width}) on {args.device}")
        entry = load_manifest()[MODEL_ID]
        params = build_standin(checkpoint_dir(entry), args.width)
        pin_standin(entry, checkpoint_dir(entry), tmp / "manifest.yaml")
        out = header(args, params, why_cpu)
        log("part 1: throughput")
        rows, fp32 = part_throughput(args.device, cells, args.samples, args.repeats)
        if not fp32["finite"]:
            failed.append("non-finite samples from the float32 network")
        out += [f"#### Throughput vs the NFE x forward floor ({args.device}, float32)", "", *rows, ""]
        log("part 2: float16 / bfloat16")
        # on a CPU half-precision convolutions are many times slower than float32: the first cell shows the path runs
        rows, finite = part_precision(args.device, cells if args.device == "cuda" else cells[:1], fp32, args.repeats)
        if not finite:
            failed.append("non-finite samples from a float16/bfloat16 network")
        out += [f"#### float16 / bfloat16 networks vs float32 ({args.device})", "", *rows, ""]
        if args.device == "cpu":
            out += ["(On the CPU: the first cell only; its times show that the path runs, not what a GPU gains.)",
                    ""]
        log("part 3: CPU vs CUDA")
        rows, agreed, skip = part_agreement(args.device == "cuda", cells, args.agreement_samples)
        skipped += skip
        if not agreed:
            failed.append("CPU vs CUDA (IEEE float32) beyond tolerance")
        out += ["#### CPU vs CUDA agreement", "", *rows, ""]
        out += ["#### make regress on CUDA", ""]
        if args.device != "cuda":
            skipped.append(f"make regress on CUDA: {why_cpu} (CI runs make regress on CPU: .ci/run)")
            out += ["skipped", ""]
        elif args.skip_regress:
            skipped.append("make regress on CUDA: --skip-regress")
            out += ["skipped (--skip-regress)", ""]
        else:
            log("part 4: make regress on CUDA")
            rows, ok = part_regress(tmp / "regress", args.regress_timeout)
            out += [*rows, ""]
            if not ok:
                failed.append("make regress on CUDA")
                log("part 4 again, cuDNN and cuBLAS in IEEE float32 (NVIDIA_TF32_OVERRIDE=0)")
                rows, _ = part_regress(tmp / "regress-ieee", args.regress_timeout, env={"NVIDIA_TF32_OVERRIDE": "0"})
                out += ["Again with `NVIDIA_TF32_OVERRIDE=0` (no TF32 in cuDNN and cuBLAS), to tell whether TF32 "
                        "convolutions are the cause (reported, not gated):", "", *rows, ""]
        out += [f"Skipped: {s}." for s in skipped] + [""] if skipped else []
        out += [f"**Result: {'FAILED: ' + '; '.join(failed) if failed else 'every gated check passed'}.**", ""]
        text = "\n".join(out)
        path = args.out or ROOT / "benchmarks" / (f"device_check-{socket.gethostname()}-"
                                                  f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}.md")
        from dpmbench.io import atomic_write

        atomic_write(path, lambda p: p.write_text(text))
        print(text)
        for s in skipped:
            print(f"skipped: {s}")
        print(f"results written to {path}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from dpmbench.errors import DpmbenchError

    try:
        sys.exit(main())
    except DpmbenchError as exc:
        sys.exit(f"device_check: error: {exc}")
