# Searches and solver preparation, run once before the sample jobs that need them; their results are artifacts of
# the DAG under <results>/artifacts (DPMBENCH_ARTIFACTS of every job), content-keyed or named.
#   named searches (config `searches:`), e.g. an optimized time grid used as `schedules: [searched:NAME]`;
#   prepare: a solver's own cached artifacts (DC-Solver ratios, DPM-Solver-v3 statistics, ...) per cell.


def search_checkpoint_input(wildcards):
    """The checkpoint stamp of the model a named search runs on, if it is a checkpoint model."""
    model = GRID.searches[wildcards.name]["model"]
    return [f"{RESULTS}/.checkpoints/{model}.sha256"] if model in GRID.checkpoints or model in GRID.unavailable else []


rule search:
    input:
        search_checkpoint_input,
    output:
        f"{ARTIFACTS}/named/{{name}}.json",
    wildcard_constraints:
        name=one_of(GRID.searches) if GRID.searches else "(?!x)x",
    params:
        args=lambda wc: GRID.search_args(wc.name),
    threads: GRID.resource("sample", "threads")
    resources:
        mem_mb=GRID.resource("sample", "mem_mb"),
        runtime=GRID.resource("sample", "runtime"),
        gpu=GRID.resource("sample", "gpu"),
    shell:
        THREADS_ENV + " " + ARTIFACTS_ENV + " {JOB} dpmbench search {params.args}"


rule prepare:
    input:
        checkpoint_input,
        GRID.cell_search_inputs,
    output:
        f"{GRID.cell_dir()}/prepared.json",
    wildcard_constraints:
        solver=one_of(GRID.prepares) if GRID.prepares else "(?!x)x",
    params:
        spec=lambda wc: shlex.quote(GRID.spec(wc.solver)),
        schedule=lambda wc: shlex.quote(GRID.schedule(wc.schedule)),
        nfe=lambda wc: ",".join(str(n) for n in GRID.nfes(wc.model)),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        t_end=lambda wc: GRID.t_end_of(wc.model),
    threads: GRID.resource("sample", "threads")
    priority: LONG_FIRST
    resources:
        mem_mb=GRID.resource("sample", "mem_mb"),
        runtime=GRID.resource("sample", "runtime"),
        gpu=GRID.resource("sample", "gpu"),
    shell:
        THREADS_ENV + " " + ARTIFACTS_ENV + " {JOB} dpmbench prepare --model {wildcards.model} --solver {params.spec}"
        " --nfe {params.nfe} --schedule {params.schedule} {params.guidance} --t-end {params.t_end}"
        " --device {GRID.device} --out {output}"
