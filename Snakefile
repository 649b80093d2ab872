# dpmbench workflow: checkpoints -> reference (exact solutions) -> sample (shards) -> metrics -> report.
#   snakemake --cores all                          (the embedded default, config/default.yaml)
#   snakemake --cores all --configfile my.yaml     (any grid; validated against config/schema.yaml)
#   snakemake --profile profiles/slurm             (a SLURM cluster, see docs/workflow.md "Running on a cluster")
import os
import sys

import yaml
from snakemake.utils import validate

# the jobs and this file use the dpmbench beside the Snakefile, whatever is installed
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p)

from dpmbench.errors import DpmbenchError
from dpmbench.grid import build_grid
from dpmbench.grid.manifests import manifest_files

SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")
if not config:  # no --configfile / --config given: the embedded default
    with open(os.path.join(workflow.basedir, "config", "default.yaml")) as fh:
        config.update(yaml.safe_load(fh))

try:  # schema + registries (solvers, models, metrics, schedules, NFE minima): one line naming the bad key
    GRID = build_grid(config, SCHEMA)
except DpmbenchError as exc:
    print(f"dpmbench: error: {exc}", file=sys.stderr)
    sys.exit(2)
validate(config, SCHEMA, set_default=True)  # cannot fail any more; fills the schema's defaults
# provenance: every metrics file records the hash of the config that produced it (an environment variable, not a
# rule parameter: editing the grid must not re-run the cells it leaves unchanged)
from dpmbench.provenance import CONFIG_ENV, config_sha256

os.environ[CONFIG_ENV] = config_sha256(config)

# The checkpoint manifests of the config (dpmbench.grid.manifests: checkpoints_manifest files, then the config's own
# `checkpoints:` entries, later ones winning), for the jobs' `dpmbench` commands: listed in DPMBENCH_MANIFESTS.
_manifests = [str(path) for _, path in manifest_files(config)]
if config.get("checkpoints"):
    import json

    from dpmbench.io import cache_dir, digest, save_json

    _text = json.dumps({"checkpoints": config["checkpoints"]}, sort_keys=True)
    _manifests.append(str(cache_dir("workflow") / f"manifest-{digest(_text)[:20]}.json"))
    if not os.path.isfile(_manifests[-1]):
        save_json(_manifests[-1], json.loads(_text))
os.environ["DPMBENCH_MANIFESTS"] = os.pathsep.join(
    p for p in (os.environ.get("DPMBENCH_MANIFESTS"), *_manifests) if p)


# the run's opt-in to files without a pinned sha256 (config trust_unpinned, or DPMBENCH_TRUST_UNPINNED=1 already set):
# the pull rule and every job's `dpmbench` command read it (dpmbench.download.trust_unpinned)
from dpmbench.download import TRUST_ENV

os.environ[TRUST_ENV] = "1" if GRID.trust_unpinned else os.environ.get(TRUST_ENV, "0")

# the run's cap on a fit's sample count (config fit_samples_max, set by the dress rehearsal; part of the config's
# hash above): DPM-Solver-v3's EMS prepare steps read it (dpmbench.artifacts.fit_samples_max)
from dpmbench.artifacts import FIT_SAMPLES_MAX_ENV

os.environ[FIT_SAMPLES_MAX_ENV] = str(config.get("fit_samples_max") or os.environ.get(FIT_SAMPLES_MAX_ENV, ""))


# what the jobs need from this process's environment (also passed on to jobs run elsewhere, e.g. on a cluster)
envvars:
    "PYTHONPATH",
    "DPMBENCH_MANIFESTS",
    TRUST_ENV,
    CONFIG_ENV,
    FIT_SAMPLES_MAX_ENV,


if workflow.is_main_process:  # files left truncated by a killed job or copy: removed (even by -n), so recomputed
    for _path in GRID.remove_corrupt():
        print(f"dpmbench: removed incomplete file {_path} (it is recomputed)", file=sys.stderr)


include: "workflows/common.smk"
include: "workflows/checkpoints.smk"
include: "workflows/reference.smk"
include: "workflows/search.smk"
include: "workflows/sample.smk"
include: "workflows/metrics.smk"
include: "workflows/report.smk"


rule all:
    # Every shard and metric file is listed, so that deleting one regenerates it (and what depends on it)
    # even when the report is up to date.
    input:
        REPORT_OUTPUTS,
        GRID.all_metric_files(),
        GRID.all_shard_files(),
    default_target: True
