"""The sampling layer: the loop that runs one solver with one NFE budget (``loop``), batched and sharded sampling to
files (``shards``) and the reference runs (``reference``)."""

from __future__ import annotations

from dpmbench.sampling.loop import make_plan, sample

__all__ = ["make_plan", "sample"]
