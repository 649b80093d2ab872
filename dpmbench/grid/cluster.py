"""Submissions that fit: every SLURM submission of the DAG (one job, or a group of jobs) must fit one node of the
partition it targets, otherwise it waits in the queue for ever (``Reason=PartitionConfig``).

The node sizes come from the cluster itself (``sinfo``, per partition the largest node); the requests from the
workflow's rules (threads, ``mem_mb``, ``gpu``, ``runtime``, ``slurm_partition``) and the profile's
``group-components``. Jobs of one group that can run side by side are summed by Snakemake, so a group's size is
capped at the number of its jobs that fit one node; a single job that fits no node is a one-line error naming the
request and the limit.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from dpmbench.errors import DpmbenchError


@dataclass(frozen=True)
class Node:
    """The largest node of a partition: CPUs, memory (MB), GPUs, time limit (minutes; ``inf``: none)."""

    cpus: int
    mem_mb: int
    gpus: int = 0
    max_runtime: float = math.inf


@dataclass(frozen=True)
class Request:
    """One job's request: CPUs (threads), memory (MB), GPUs, runtime (minutes), partition."""

    cpus: int
    mem_mb: int
    gpus: int
    runtime: int
    partition: str


def parse_time_limit(text: str) -> float:
    """Minutes of a SLURM time limit (``[D-]HH:MM:SS``, ``MM:SS``, ``MM``, ``infinite``)."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited", "n/a", ""):
        return math.inf
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = (0, *parts) if not days else (*parts, 0)
    else:
        h, m, s = parts
    return (int(days or 0) * 24 + h) * 60 + m + s / 60


def _gpus(gres: str) -> int:
    """GPUs of an ``sinfo %G`` field such as ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_sinfo(text: str) -> dict[str, Node]:
    """Per partition, the largest node of ``sinfo -h -N -o '%R|%c|%m|%G|%l'`` output."""
    nodes: dict[str, Node] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        part, cpus, mem, gres, limit = (f.strip() for f in line.split("|"))
        part = part.rstrip("*")
        node = Node(int(cpus.rstrip("+")), int(mem.rstrip("+")), _gpus(gres), parse_time_limit(limit))
        old = nodes.get(part)
        nodes[part] = node if old is None else Node(max(old.cpus, node.cpus), max(old.mem_mb, node.mem_mb),
                                                      max(old.gpus, node.gpus), max(old.max_runtime, node.max_runtime))
    return nodes


def query_nodes() -> dict[str, Node]:
    """The partitions of the cluster this machine submits to (``sinfo``), empty where ``sinfo`` is missing."""
    if shutil.which("sinfo") is None:
        return {}
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%R|%c|%m|%G|%l"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise DpmbenchError(f"cannot read the cluster's partitions: sinfo: {out.stderr.strip() or out.returncode}")
    return parse_sinfo(out.stdout)


def describe(r: Request, n: int = 1) -> str:
    """``cpus=2, mem_mb=8000, gpus=0, runtime=60`` of ``n`` such jobs side by side."""
    return f"cpus={n * r.cpus}, mem_mb={n * r.mem_mb}, gpus={n * r.gpus}, runtime={r.runtime} min"


def jobs_per_node(r: Request, node: Node) -> int:
    """How many such jobs fit one node side by side (0: not even one)."""
    fits = [node.cpus // max(r.cpus, 1), node.mem_mb // max(r.mem_mb, 1)]
    if r.gpus:
        fits.append(node.gpus // r.gpus)
    return min(fits)


def check_job(name: str, r: Request, nodes: Mapping[str, Node]) -> None:
    """One job's request must fit one node of its partition: otherwise a one-line error naming both."""
    if r.partition not in nodes:
        raise DpmbenchError(f"rule '{name}' asks for partition '{r.partition}'; allowed: {', '.join(sorted(nodes))}")
    node = nodes[r.partition]
    if jobs_per_node(r, node) < 1 or r.runtime > node.max_runtime:
        limit = (f"cpus={node.cpus}, mem_mb={node.mem_mb}, gpus={node.gpus}, runtime="
                 f"{'unlimited' if math.isinf(node.max_runtime) else f'{node.max_runtime:g} min'}")
        raise DpmbenchError(f"rule '{name}' asks for {describe(r)} but the largest node of partition "
                            f"'{r.partition}' has {limit}: it could never be scheduled")


def fit_groups(requests: Mapping[str, Request], groups: Mapping[str, str], components: Mapping[str, int],
               nodes: Mapping[str, Node]) -> tuple[dict[str, int], list[str]]:
    """Check every rule's request and cap the profile's group sizes at what fits one node.

    ``requests``: rule -> request; ``groups``: rule -> group name (pattern, as in ``group-components``);
    ``components``: group -> jobs per submission. Returns the capped ``components`` and one line per cap."""
    for name, r in requests.items():
        check_job(name, r, nodes)
    capped = dict(components)
    notes = []
    for group, n in components.items():
        members = [r for rule, r in requests.items() if groups.get(rule) == group]
        if not members or n <= 1:
            continue
        fit = min(jobs_per_node(r, nodes[r.partition]) for r in members)
        if fit < n:
            capped[group] = fit
            worst = max(members, key=lambda r: (r.mem_mb, r.cpus))
            notes.append(f"group '{group}': {n} jobs side by side would ask for {describe(worst, n)}, more than one "
                         f"node of partition '{worst.partition}' ({describe_node(nodes[worst.partition])}): "
                         f"{fit} per submission")
    return capped, notes


def describe_node(node: Node) -> str:
    """``cpus=2, mem_mb=24105, gpus=2``."""
    return f"cpus={node.cpus}, mem_mb={node.mem_mb}, gpus={node.gpus}"
