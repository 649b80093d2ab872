"""Per-step solver overhead (time per step minus model time) of dpmbench solvers vs the equivalent diffusers
schedulers, on CPU, with a cheap model (so that solver arithmetic dominates) at batch 1 and 256, and the
forward time of a small UNet for scale.

    python benchmarks/solver_overhead.py [--steps 20] [--repeats 5]

Prints a markdown table. Times are medians over repeats; the model time is measured separately and
subtracted (NFE x model time).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from throughput import median_time  # benchmarks/ is the script's directory, so on sys.path

from dpmbench.api import sample  # the public dpmbench.sample (searches wired in)
from dpmbench.models.base import Model
from dpmbench.schedules import VPDiscrete

SHAPE = (3, 32, 32)


class CheapEps(Model):
    """A cheap stand-in network: eps = 0.1 x (elementwise)."""

    name, parameterization, shape = "cheap", "eps", SHAPE

    def __init__(self) -> None:
        self.schedule = VPDiscrete()

    def forward(self, x: torch.Tensor, t: Any, cond: Any = None) -> torch.Tensor:
        return 0.1 * x


def _diffusers_loop(scheduler: Any, x: torch.Tensor, steps: int) -> Callable[[], Any]:
    def run() -> Any:
        scheduler.set_timesteps(steps)
        s = x
        for t in scheduler.timesteps:
            s = scheduler.step(0.1 * s, t, s).prev_sample
        return s

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel

    model = CheapEps()
    rows = []
    for batch in (1, 256):
        x = torch.randn(batch, *SHAPE)
        model_time = median_time(lambda x=x: model.eps(x, 0.5), args.repeats * 20)
        pairs = [
            ("ddim", DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=False)),
            ("dpm-solver++:order=2,method=multistep",
             DPMSolverMultistepScheduler(final_sigmas_type="sigma_min", timestep_spacing="trailing")),
        ]
        for spec, sched in pairs:
            ours = median_time(lambda x=x, spec=spec: sample(model, spec, args.steps, x, schedule="time-uniform"),
                                args.repeats)
            theirs = median_time(_diffusers_loop(sched, x, args.steps), args.repeats)
            floor = args.steps * model_time
            rows.append((batch, spec, (ours - floor) / args.steps * 1e6, (theirs - floor) / args.steps * 1e6,
                         model_time * 1e6))
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1).eval()
    with torch.no_grad():
        unet_time = median_time(lambda: unet(torch.randn(1, *SHAPE), 10).sample, args.repeats)
    print(f"steps={args.steps}, CPU, 1 thread; small UNet (32x32, 2 levels) forward at batch 1: "
          f"{unet_time * 1e3:.2f} ms\n")
    print("| batch | solver | dpmbench overhead / step (us) | diffusers overhead / step (us) | "
          "cheap model / call (us) | dpmbench overhead vs UNet forward |")
    print("|---|---|---|---|---|---|")
    for batch, spec, ours, theirs, mt in rows:
        share = f"{ours / (unet_time * 1e6) * 100:.1f}%" if batch == 1 else "-"
        print(f"| {batch} | {spec} | {ours:.1f} | {theirs:.1f} | {mt:.1f} | {share} |")


if __name__ == "__main__":
    main()
