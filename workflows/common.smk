# Shared by every stage: the grid (built and validated in the Snakefile), paths, wildcard constraints, and the
# functions the rules call (input functions, the checkpoint pull, the cluster fit check). Rules live in the other
# files, functions here (Snakemake's convention).
import re
import shlex

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from dpmbench.grid.cluster import Request, fit_groups, query_nodes
from dpmbench.grid.cells import Unrecorded
from dpmbench.io import atomic_write

RESULTS = GRID.results_dir
REPORT = GRID.report_dir
PAPERS = config.get("papers_dir", os.path.join(workflow.basedir, "papers"))
# One log per job, beside the results (logs/<results_dir>/<rule>/...): the job's stderr, also on the terminal
# (`2> >(tee {log:q} >&2)`).
LOGS = os.path.join("logs", os.path.normpath(RESULTS).lstrip(os.sep))
# With --sdm conda, the jobs run the `python` of the rule's environment (env.yml); else Snakemake's own interpreter.
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PY = "python" if CONDA else shlex.quote(sys.executable)
# Every job runs through the warm job server (dpmbench/worker.py): a fork instead of a Python start + torch import.
# Not recorded by Snakemake among the job's parameters (params.job; dpmbench.grid.cells.Unrecorded): the interpreter's
# path is no input of the results.
JOB = Unrecorded(f"{PY} -m dpmbench.worker")
# Priority of the jobs that start long chains (checkpoint pulls, exact references, high-NFE reference runs, the
# prepare steps: 10-60 s each on digits-unet): started first, they no longer end the run on one busy core while the
# other waits (measured on the default benchmark: the digits-unet prepares started after 5 to 10 minutes without it).
LONG_FIRST = 10
ARTIFACTS = GRID.artifacts_dir()  # searched/prepared artifacts are DAG outputs (DPMBENCH_ARTIFACTS of the jobs)


def one_of(names):
    """A wildcard constraint matching exactly these names (or nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    model=one_of(GRID.models),
    guidance="none|[0-9.]+",
    seed="[0-9]+",
    schedule="[A-Za-z0-9_.+-]+",
    solver="[A-Za-z0-9_.+-]+",
    shard="[0-9]+-[0-9]+",
    nfes="[0-9]+(_[0-9]+)*",


# -- checkpoints (checkpoints.smk) ---------------------------------------------------------------------------------
def checkpoint_stamp(model):
    """The verification stamp of a checkpoint model's files."""
    return os.path.join(RESULTS, ".checkpoints", f"{model}.sha256")


def checkpoint_input(wildcards):
    """The verification stamp of the model's checkpoint, if it is a checkpoint model."""
    if wildcards.model in GRID.checkpoints or wildcards.model in GRID.unavailable:
        return [checkpoint_stamp(wildcards.model)]
    return []


def search_checkpoint_input(wildcards):
    """The checkpoint stamp of the model a named search runs on, if it is a checkpoint model."""
    model = GRID.searches[wildcards.name]["model"]
    return [checkpoint_stamp(model)] if model in GRID.checkpoints or model in GRID.unavailable else []


def pull_checkpoint(model, stamp, log):
    """Download (unless offline) and verify a checkpoint model's files, then write its stamp (sha256sum format)."""
    from dpmbench.models.store import pull, stamp_text

    if model not in GRID.checkpoints:
        raise WorkflowError(f"dpmbench: error: checkpoint {model!r} is only named (checkpoints_manifest: "
                            f"{GRID.unavailable[model].get('source', '?')}); add a loadable entry (adapter, source, "
                            "files with sha256) to config/checkpoints.yaml or the config's checkpoints")
    entry = GRID.checkpoints[model]
    try:
        pull(entry, offline=True if GRID.offline else None)
        text = stamp_text(entry)
    except DpmbenchError as exc:
        raise WorkflowError(f"dpmbench: error: {exc}") from None
    atomic_write(log, lambda tmp: tmp.write_text(f"{model}: {len(entry.files)} file(s) verified\n"))
    atomic_write(stamp, lambda tmp: tmp.write_text(text))


# -- metrics (metrics.smk) -----------------------------------------------------------------------------------------
def reference_input(wc):
    if GRID.has_reference(wc.model):
        return GRID.reference_file().format(**dict(wc.items()))
    return []


def cells_arg(wc, nfes):
    """The metrics job's --cells: one comma list of shard files per NFE."""
    shards = GRID.shards_of(wc.model)
    d = GRID.cell_dir().format(**dict(wc.items()))
    return " ".join(",".join(f"{d}/nfe{n}/{s}.npz" for s in shards) for n in nfes)


# -- cluster: submissions that fit (dpmbench/grid/cluster.py) ------------------------------------------------------
# On SLURM every submission (a job, or a group of jobs run side by side) must fit one node of its partition, else it
# waits in the queue for ever. The groups of sample and metrics jobs are named by `cluster_group`, which Snakemake
# calls while it builds the DAG, once the executor and the profile's group-components are known (not yet while this
# file is parsed): the first call checks every rule's request against the partitions' largest nodes (sinfo) — a
# request that fits no node stops the run with one line naming the request and the limit — and caps each
# group-components entry at the jobs that fit one node.
_CLUSTER_CHECKED = []


def _resource(r, key, default):
    """A rule's resource as declared (a profile's string resources are kept as their raw text)."""
    res = r.resources.get(key)
    if res is None:
        return default
    if isinstance(res.raw, str) and not res.raw.lstrip("-").isdigit():
        return res.raw.strip("'\"")
    try:
        value = res.value
    except ValueError:  # only known per job
        return default
    return default if value is None or callable(value) else value


def _check_cluster():
    plugin = workflow.executor_plugin
    name = getattr(plugin, "name", "") or ""
    partitions = {_resource(r, "slurm_partition", "") for r in workflow.rules} - {""}
    if not workflow.is_main_process or not (name.endswith("slurm") or (workflow.dryrun and partitions)):
        return
    nodes = query_nodes()
    if not nodes:
        return
    default = next(iter(nodes))  # sinfo lists the default partition first
    requests, groups = {}, {}
    for r in workflow.rules:
        if r.name in workflow._localrules or r.norun:  # run where the workflow runs
            continue
        requests[r.name] = Request(int(_resource(r, "_cores", 1)), int(_resource(r, "mem_mb", 0)),
                                   int(_resource(r, "gpu", 0)), int(_resource(r, "runtime", 0)),
                                   str(_resource(r, "slurm_partition", "") or default))
        if isinstance(r._group, str):
            groups[r.name] = r._group
        elif r._group is not None:
            groups[r.name] = getattr(r._group, "pattern", None)
    settings = workflow.group_settings
    capped, notes = fit_groups(requests, groups, dict(settings.group_components), nodes)
    for line in notes:
        print(f"dpmbench: {line}", file=sys.stderr)
    settings.group_components = type(settings.group_components)(capped)


def cluster_group(pattern):
    """A rule's group (``pattern`` formatted with its wildcards), checking the cluster's fit once per run."""

    def group(wildcards):
        if not _CLUSTER_CHECKED:
            _CLUSTER_CHECKED.append(True)
            try:
                _check_cluster()
            except DpmbenchError as exc:
                print(f"dpmbench: error: {exc}", file=sys.stderr)
                sys.exit(2)
        resolved = pattern.format(**dict(wildcards.items()))
        workflow.parent_groupids[resolved] = pattern  # group-components are given per pattern
        return resolved

    group.pattern = pattern
    return group
