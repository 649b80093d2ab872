"""The benchmark grid: a config becomes validated cells and the parameters of every workflow job.

Modules, one job each: :mod:`~dpmbench.grid.schema` (the JSON-schema check and the one-line errors),
:mod:`~dpmbench.grid.registry` (facts about solvers, models, metrics, cached under a key of the sources and the
loaded plugins), :mod:`~dpmbench.grid.manifests` (checkpoint ids a config may name, one precedence rule),
:mod:`~dpmbench.grid.overrides` (per-model solver options, per-NFE settings), :mod:`~dpmbench.grid.cells`
(:class:`Grid`: validation, cells, job parameters), :mod:`~dpmbench.grid.paths` (file patterns and files),
:mod:`~dpmbench.grid.cluster` (SLURM submissions that fit a node).
"""

from dpmbench.grid.cells import Grid, ModelGrid, build_grid
from dpmbench.grid.manifests import checkpoint_manifest, load_manifests
from dpmbench.grid.paths import guidance_key, metrics_complete, npz_complete, slug
from dpmbench.grid.schema import DEFAULT_SCHEMA, ROOT, check_schema

__all__ = ["DEFAULT_SCHEMA", "ROOT", "Grid", "ModelGrid", "build_grid", "check_schema", "checkpoint_manifest",
           "guidance_key", "load_manifests", "metrics_complete", "npz_complete", "slug"]
