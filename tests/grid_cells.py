"""Every cell of a config with every setting a job receives (the grid's expansion), as JSON-able records; used by
tests/test_grid_cells.py to check that a config change leaves the expanded cells identical
(``python -m tests.grid_cells > tests/data/grid_cells.json`` rewrites the fixture)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXCLUDE = {"schema.yaml", "checkpoints.yaml"}


def run_configs() -> list[Path]:
    """The run configs of the repository (config/*.yaml and the paper reproductions)."""
    out = []
    for p in sorted((ROOT / "config").rglob("*.yaml")):
        if p.name not in EXCLUDE:
            out.append(p)
    return out


def expand(config: dict[str, Any]) -> dict[str, Any]:
    """The grid of a config: its cells (``model|guidance|seed|schedule|solver spec|solver slug|nfe|t_end|prepares``),
    the settings of each model's jobs, and the config-wide settings."""
    from dpmbench.grid import build_grid

    g = build_grid(config)
    cells, models = [], {}
    for c in g.cells():
        m = c["model"]
        cells.append("|".join(str(v) for v in (
            m, c["guidance"], c["seed"], g.schedule(c["schedule"]), g.spec(c["solver"], m, [c["nfe"]]), c["solver"],
            c["nfe"], g.t_end_of(m, [c["nfe"]]), c["solver"] in g.prepares)))
        models[m] = json.dumps({
            "num_samples": g.num_samples(m), "shards": g.shards_of(m), "batch": g.batch_arg(m),
            "captions": g.captions_arg(m), "reference": g.reference_args(m), "has_reference": g.has_reference(m),
            "fid_stats": g.fid_stats_arg(m), "metrics": g.metrics(m),
            "checkpoint": "loadable" if m in g.checkpoints else ("named" if m in g.unavailable else None),
        }, sort_keys=True)
    common = json.dumps({
        "report_dir": g.report_dir, "device": g.device,
        "resources": {s: {k: g.resource(s, k) for k in ("mem_mb", "runtime", "threads", "gpu")}
                      for s in ("reference", "sample", "metrics", "report")},
        "searches": {n: g.search_args(n) for n in sorted(g.searches)}}, sort_keys=True)
    return {"results_dir": g.results_dir, "cells": cells, "models": models, "common": common}


def by_results_dir(paths: list[Path]) -> dict[str, dict[str, list[str]]]:
    """The grids of the configs, merged by results directory (configs sharing one are one grid), sorted."""
    from dpmbench.yamlfile import read_yaml

    out: dict[str, dict[str, set[str]]] = {}
    for p in paths:
        e = expand(read_yaml(p))
        d = out.setdefault(e["results_dir"], {"cells": set(), "common": set()})
        d["cells"].update(e["cells"])
        d["common"].add(e["common"])
        for m, s in e["models"].items():
            d.setdefault(f"model:{m}", set()).add(s)
    return {k: {kk: sorted(vv) for kk, vv in sorted(v.items())} for k, v in sorted(out.items())}


if __name__ == "__main__":
    json.dump(by_results_dir(run_configs()), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
