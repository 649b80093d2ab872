"""Coverage of the published numbers (``papers/*.yaml``) by the paper reproductions (``config/reproductions/*.yaml``).

For each paper file: how many numbers it holds, how many are of solvers dpmbench implements, how many a config cell
reproduces with the same protocol (model, solver, metric, NFE, schedule, guidance, end time and sample count), and
the checkpoints those numbers need, with whether each is present in the cache. ``dpmbench list papers`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpmbench.catalogue import canonical_spec, section
from dpmbench.errors import DpmbenchError
from dpmbench.grid import ROOT, build_grid, guidance_key
from dpmbench.models.manifest import load_manifest
from dpmbench.models.store import checkpoint_dir
from dpmbench.yamlfile import read_yaml

CellKey = tuple[str, str, str, int, str, str]  # model, canonical solver, metric, nfe, schedule, guidance


def config_cells(config_dir: str | Path = ROOT / "config" / "reproductions") -> dict[CellKey, set[tuple[float, int]]]:
    """Every cell of the paper configurations, keyed by what it measures -> its (end time, sample count) pairs."""
    cells: dict[CellKey, set[tuple[float, int]]] = {}
    for path in sorted(Path(config_dir).glob("*.yaml")):
        grid = build_grid(read_yaml(path))
        for c in grid.cells():
            spec = canonical_spec(grid.spec(c["solver"], c["model"], [c["nfe"]]))
            for metric in grid.metrics(c["model"]):
                key = (c["model"], spec, metric, c["nfe"], c["schedule"], c["guidance"])
                cells.setdefault(key, set()).add((grid.t_end_of(c["model"], [c["nfe"]]), grid.num_samples(c["model"])))
    return cells


def cell_for(e: dict[str, Any], cells: dict[CellKey, set[tuple[float, int]]]) -> bool:
    """Whether a config cell reproduces the published number ``e`` with its protocol (end time and sample count when
    the entry states them)."""
    if "schedule" not in e:
        return False
    key = (e["model"], canonical_spec(e["solver"]), e["metric"], int(e["nfe"]), str(e["schedule"]),
           guidance_key(e.get("guidance", "none")))
    found = cells.get(key, set())
    if "t_end" in e:
        found = {p for p in found if p[0] == float(e["t_end"])}
    if "n_samples" in e:
        found = {p for p in found if p[1] == int(e["n_samples"])}
    return bool(found)


@dataclass
class PaperCoverage:
    """What one papers file holds and what reproduces it."""

    file: str
    paper: str
    numbers: int = 0
    unpinned: int = 0
    implemented: int = 0
    with_cell: int = 0
    checkpoints: dict[str, str] = field(default_factory=dict)  # model id -> present / not pulled / not pinned

    def line(self) -> str:
        """One line of ``dpmbench list papers``."""
        cps = ", ".join(f"{k} ({v})" for k, v in self.checkpoints.items()) or "none"
        return (f"{self.paper} [{self.file}]: {self.numbers} numbers ({self.unpinned} unpinned), "
                f"{self.implemented} of implemented solvers, {self.with_cell} with a config cell; checkpoints: {cps}")


def _checkpoint_state(model: str, manifest: dict[str, Any], oracles: set[str]) -> str:
    if model in oracles:
        return "oracle"
    if model not in manifest:
        return "not in config/checkpoints.yaml"
    entry = manifest[model]
    return "present" if all((checkpoint_dir(entry) / f.path).is_file() for f in entry.files) else "not pulled"


def coverage(papers_dir: str | Path = ROOT / "papers",
             config_dir: str | Path = ROOT / "config" / "reproductions") -> list[PaperCoverage]:
    """Coverage of every ``papers/*.yaml`` file (entries and unpinned rows)."""
    cells = config_cells(config_dir)
    solvers = {f["name"] for f in section("solvers")["families"]}
    oracles = {m["name"] for m in section("models")["oracles"]}
    manifest = load_manifest()
    out = []
    for path in sorted(Path(papers_dir).glob("*.yaml")):
        doc = read_yaml(path) or {}
        if not isinstance(doc, dict) or "paper" not in doc:
            raise DpmbenchError(f"invalid papers file {str(path)!r}: needs 'paper' and a list 'entries'")
        cov = PaperCoverage(path.name, str(doc["paper"]))
        rows = list(doc.get("entries") or []) + list(doc.get("unpinned") or [])
        cov.numbers, cov.unpinned = len(rows), len(doc.get("unpinned") or [])
        for e in rows:
            if str(e["solver"]).split(":", 1)[0] in solvers:
                cov.implemented += 1
                cov.with_cell += cell_for(e, cells)
            cov.checkpoints.setdefault(str(e["model"]), "")
        cov.checkpoints = {m: _checkpoint_state(m, manifest, oracles) for m in cov.checkpoints}
        out.append(cov)
    return out
