# Searches and solver preparation, run once before the sample jobs that need them; their results are artifacts of
# the DAG under <results>/artifacts (DPMBENCH_ARTIFACTS of every job), content-keyed or named.
#   named searches (config `searches:`), e.g. an optimized time grid used as `schedules: [searched:NAME]`;
#   prepare: a solver's own cached artifacts (DC-Solver ratios, DPM-Solver-v3 statistics, ...) per cell: one job
#   per NFE group of the cell (`prepare` for the first, `prepare_group` for the others: models with nfe_overrides or
#   a solver entry with nfe_options).
rule search:
    input:
        search_checkpoint_input,
    output:
        os.path.join(ARTIFACTS, "named", "{name}.json"),
    log:
        os.path.join(LOGS, "search", "{name}.log"),
    wildcard_constraints:
        name=one_of(GRID.searches),
    params:
        job=JOB,
        artifacts=lambda wc: ARTIFACTS,
        args=lambda wc: GRID.search_args(wc.name),
    threads: GRID.resource("sample", "threads")
    resources:
        mem_mb=GRID.resource("sample", "mem_mb"),
        runtime=GRID.resource("sample", "runtime"),
        gpu=GRID.resource("sample", "gpu"),
    conda:
        "../env.yml"
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} DPMBENCH_ARTIFACTS={params.artifacts:q}"
        " {params.job} dpmbench search {params.args} 2> >(tee {log:q} >&2)"


rule prepare:
    input:
        checkpoint_input,
        GRID.cell_search_inputs,
    output:
        GRID.prepared_output(),
    log:
        os.path.join(LOGS, "prepare", "{model}", "g{guidance}", "seed{seed}", "{schedule}", "{solver}.log"),
    wildcard_constraints:
        solver=one_of(GRID.prepares),
    params:
        job=JOB,
        artifacts=lambda wc: ARTIFACTS,
        device=GRID.device,
        spec=lambda wc: shlex.quote(GRID.spec(wc.solver, wc.model, GRID.nfe_groups(wc.model)[0])),
        schedule=lambda wc: shlex.quote(GRID.schedule(wc.schedule)),
        nfe=lambda wc: ",".join(str(n) for n in GRID.nfe_groups(wc.model)[0]),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        t_end=lambda wc: GRID.t_end_of(wc.model, GRID.nfe_groups(wc.model)[0]),
        t_start=lambda wc: GRID.t_start_arg(wc.model),
        captions=lambda wc: GRID.captions_arg(wc.model),
    threads: GRID.resource("sample", "threads")
    priority: LONG_FIRST
    resources:
        mem_mb=GRID.resource("sample", "mem_mb"),
        runtime=GRID.resource("sample", "runtime"),
        gpu=GRID.resource("sample", "gpu"),
    conda:
        "../env.yml"
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} DPMBENCH_ARTIFACTS={params.artifacts:q}"
        " {params.job} dpmbench prepare --model {wildcards.model} --solver {params.spec} --nfe {params.nfe}"
        " --schedule {params.schedule} {params.guidance} --t-end {params.t_end} {params.t_start} {params.captions}"
        " --device {params.device}"
        " --out {output} 2> >(tee {log:q} >&2)"


rule prepare_group:
    input:
        checkpoint_input,
        GRID.cell_search_inputs,
    output:
        GRID.prepared_group_output(),
    log:
        os.path.join(LOGS, "prepare", "{model}", "g{guidance}", "seed{seed}", "{schedule}", "{solver}-nfe{nfes}.log"),
    wildcard_constraints:
        solver=one_of(GRID.prepares),
        model=one_of(GRID.multi_group_models()),
    params:
        job=JOB,
        artifacts=lambda wc: ARTIFACTS,
        device=GRID.device,
        spec=lambda wc: shlex.quote(GRID.spec(wc.solver, wc.model, [int(n) for n in wc.nfes.split("_")])),
        schedule=lambda wc: shlex.quote(GRID.schedule(wc.schedule)),
        nfe=lambda wc: wc.nfes.replace("_", ","),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        t_end=lambda wc: GRID.t_end_of(wc.model, [int(n) for n in wc.nfes.split("_")]),
        t_start=lambda wc: GRID.t_start_arg(wc.model),
        captions=lambda wc: GRID.captions_arg(wc.model),
    threads: GRID.resource("sample", "threads")
    priority: LONG_FIRST
    resources:
        mem_mb=GRID.resource("sample", "mem_mb"),
        runtime=GRID.resource("sample", "runtime"),
        gpu=GRID.resource("sample", "gpu"),
    conda:
        "../env.yml"
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} DPMBENCH_ARTIFACTS={params.artifacts:q}"
        " {params.job} dpmbench prepare --model {wildcards.model} --solver {params.spec} --nfe {params.nfe}"
        " --schedule {params.schedule} {params.guidance} --t-end {params.t_end} {params.t_start} {params.captions}"
        " --device {params.device}"
        " --out {output} 2> >(tee {log:q} >&2)"
