"""Sampling throughput against its floor, NFE x (model forward time), per solver.

Two models: a cheap stand-in network (eps = 0.1 x: what is left is the solver's own per-step cost) and a small
random diffusers ``UNet2DModel`` (3x32x32, block_out_channels (16, 32), one attention level), at batch 1 and 256.
For each solver and NFE budget:

- ``time``: wall time of ``dpmbench.sample`` (median over repeats);
- ``model``: time spent inside the network's forward during that same run (so machine load cancels out);
- ``floor``: NFE x the network's forward time measured on its own (median), the least any sampler can take;
- ``ratio``: time / floor (target for the UNet: <= 1.05); ``overhead``: (time - model) / time.

``--clock cpu`` measures every one of these times as this process's CPU time (``time.process_time``) instead of
wall time: on a shared machine the time a process waits for a core lands in wall time at random (inside or
outside the network), CPU time leaves it out, so the overhead share stays readable under load.

    PYTHONPATH=. python benchmarks/throughput.py [--nfe 10] [--repeats 3] [--unet-batch-256-repeats 1]
        [--skip-unet-256] [--skip-cheap] [--clock wall|cpu] [--solvers SPEC;SPEC;...]

CPU, 1 torch thread. Prints markdown tables (copied into benchmarks/RESULTS.md with the machine and date).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from dpmbench.api import sample  # the public dpmbench.sample (searches wired in)
from dpmbench.models.base import Model
from dpmbench.schedules import VPDiscrete

SHAPE = (3, 32, 32)
SOLVERS = ["ddim", "euler", "heun", "dpm-solver:order=3", "dpm-solver++:order=2", "dpm-solver++:order=3",
           "unipc:variant=bh2,order=3", "deis:order=3", "ipndm", "pndm:warmup=pie", "ddpm", "dpm-solver++:sde=true",
           "sa-solver"]
UNET_256_SOLVERS = ["ddim", "dpm-solver++:order=2", "unipc:variant=bh2,order=3", "sa-solver"]
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set by --clock


class Timed(Model):
    """An eps-prediction network on the VP-discrete (DDPM) schedule that accumulates its own forward time."""

    parameterization, shape = "eps", SHAPE

    def __init__(self, name: str, net: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
        self.name, self.net, self.schedule, self.spent = name, net, VPDiscrete(), 0.0

    def forward(self, x: torch.Tensor, t: Any, cond: Any = None) -> torch.Tensor:
        t0 = clock()
        out = self.net(x, float(t))
        self.spent += clock() - t0
        return out


def cheap_net(x: torch.Tensor, t: float) -> torch.Tensor:
    """The cheap stand-in: eps = 0.1 x."""
    return 0.1 * x


def small_unet() -> Callable[[torch.Tensor, float], torch.Tensor]:
    """A small random diffusers UNet2DModel (3x32x32), as a function (x, t in (0, 1]) -> eps."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
                       attention_head_dim=8).eval()

    def net(x: torch.Tensor, t: float) -> torch.Tensor:
        return unet(x, t * 1000.0).sample

    return net


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def measure(model: Timed, spec: str, nfe: int, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median (wall time, time inside the network) of one solver run."""
    runs = []
    sample(model, spec, nfe, x)  # warm-up
    for _ in range(repeats):
        model.spent = 0.0
        t0 = clock()
        sample(model, spec, nfe, x)
        runs.append((clock() - t0, model.spent))
    runs.sort()
    return runs[len(runs) // 2]


def table(name: str, net: Callable[[torch.Tensor, float], torch.Tensor], batch: int, solvers: list[str], nfe: int,
          repeats: int) -> list[str]:
    """Markdown rows: solver, nfe, time, model, floor, ratio, overhead."""
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        forward = median_time(lambda: net(x, 0.5), max(repeats * 3, 5))
    floor = nfe * forward
    model = Timed(name, net)
    rows = [f"\n**{name}, batch {batch}**: one forward {forward * 1e3:.3f} ms, floor = {nfe} x forward = "
            f"{floor * 1e3:.2f} ms\n",
            "| solver | nfe | time (ms) | in model (ms) | floor (ms) | ratio time/floor | overhead share |",
            "|---|---|---|---|---|---|---|"]
    for spec in solvers:
        wall, inside = measure(model, spec, nfe, x, repeats)
        rows.append(f"| {spec} | {nfe} | {wall * 1e3:.2f} | {inside * 1e3:.2f} | {floor * 1e3:.2f} | "
                    f"{wall / floor:.3f} | {(wall - inside) / wall * 100:.1f}% |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--unet-batch-256-repeats", type=int, default=1)
    ap.add_argument("--skip-unet-256", action="store_true")
    ap.add_argument("--skip-cheap", action="store_true", help="only the small UNet's tables")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall time, or this process's CPU time (robust to a shared machine's load)")
    ap.add_argument("--solvers", default=None, help="solver specs separated by ';' (default: the list above)")
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    solvers = args.solvers.split(";") if args.solvers else SOLVERS
    torch.set_num_threads(1)
    out = [f"NFE {args.nfe}, CPU, 1 torch thread, float32, logSNR steps; median of {args.repeats} runs "
           f"(UNet at batch 256: {args.unet_batch_256_repeats}); times are {args.clock} times."]
    if not args.skip_cheap:
        for batch in (1, 256):
            out += table("cheap model (eps = 0.1 x)", cheap_net, batch, solvers, args.nfe, max(args.repeats, 5))
    unet = small_unet()
    out += table("small UNet", unet, 1, solvers, args.nfe, args.repeats)
    if not args.skip_unet_256:
        out += table("small UNet", unet, 256, UNET_256_SOLVERS, args.nfe, args.unet_batch_256_repeats)
    print("\n".join(out))


if __name__ == "__main__":
    main()
