# Submissions that fit (dpmbench/grid/cluster.py). On SLURM every submission (a job, or a group of jobs run side by side)
# must fit one node of its partition, else it waits in the queue for ever. The groups of sample and metrics jobs
# are named by `cluster_group`, which Snakemake calls while it builds the DAG, once the executor and the profile's
# group-components are known (not yet while this file is parsed): the first call checks every rule's request
# against the partitions' largest nodes (sinfo) — a request that fits no node stops the run with one line naming
# the request and the limit — and caps each group-components entry at the jobs that fit one node.
_CLUSTER_CHECKED = []


def _resource(rule, key, default):
    """A rule's resource as declared (a profile's string resources are kept as their raw text)."""
    res = rule.resources.get(key)
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
    from dpmbench.grid.cluster import Request, fit_groups, query_nodes

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
    for rule in workflow.rules:
        if rule.name in workflow._localrules or rule.norun:  # run where the workflow runs
            continue
        requests[rule.name] = Request(int(_resource(rule, "_cores", 1)), int(_resource(rule, "mem_mb", 0)),
                                      int(_resource(rule, "gpu", 0)), int(_resource(rule, "runtime", 0)),
                                      str(_resource(rule, "slurm_partition", "") or default))
        if isinstance(rule._group, str):
            groups[rule.name] = rule._group
        elif rule._group is not None:
            groups[rule.name] = getattr(rule._group, "pattern", None)
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
