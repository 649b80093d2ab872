# Exact ODE solutions (and the target's moments) from the shared x_T: computed once per (model, guidance, seed),
# reused by every solver, schedule and NFE of the model.
rule reference:
    input:
        checkpoint_input,
    output:
        GRID.reference_file(),
    log:
        os.path.join(LOGS, "reference", "{model}", "g{guidance}", "seed{seed}.log"),
    wildcard_constraints:
        model=one_of(GRID.exact_models()),  # matches nothing when the list is empty
    params:
        job=JOB,
        n=lambda wc: GRID.num_samples(wc.model),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        t_end=lambda wc: GRID.t_end_of(wc.model),
        t_start=lambda wc: GRID.t_start_arg(wc.model),
    threads: GRID.resource("reference", "threads")
    priority: LONG_FIRST
    resources:
        mem_mb=GRID.resource("reference", "mem_mb"),
        runtime=GRID.resource("reference", "runtime"),
        gpu=0,
    conda:
        "../env.yml"
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.job} dpmbench reference"
        " --model {wildcards.model} --num-samples {params.n} --seed {wildcards.seed} {params.guidance}"
        " --t-end {params.t_end} {params.t_start} --out {output} 2> >(tee {log:q} >&2)"


# Models with a `reference_solver` (checkpoint models, for mse_ref): a high-NFE solver run from the same x_T, once
# per (model, guidance, seed). It samples like a sample job, so it takes the sample stage's resources (GPU).
rule reference_run:
    input:
        checkpoint_input,
    output:
        GRID.reference_file(),
    log:
        os.path.join(LOGS, "reference_run", "{model}", "g{guidance}", "seed{seed}.log"),
    wildcard_constraints:
        model=one_of(GRID.solver_reference_models()),
    params:
        job=JOB,
        n=lambda wc: GRID.num_samples(wc.model),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        t_end=lambda wc: GRID.t_end_of(wc.model),
        t_start=lambda wc: GRID.t_start_arg(wc.model),
        solver=lambda wc: GRID.reference_args(wc.model),
        batch=lambda wc: GRID.batch_arg(wc.model),
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
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.job} dpmbench reference"
        " --model {wildcards.model} --num-samples {params.n} --seed {wildcards.seed} {params.guidance}"
        " --t-end {params.t_end} {params.t_start} {params.solver} {params.batch} {params.captions} --out {output}"
        " 2> >(tee {log:q} >&2)"
