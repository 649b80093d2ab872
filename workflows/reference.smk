# Exact ODE solutions (and the target's moments) from the shared x_T: computed once per (model, guidance, seed),
# reused by every solver, schedule and NFE of the model.
rule reference:
    input:
        checkpoint_input,
    output:
        GRID.reference_file(),
    params:
        n=lambda wc: GRID.num_samples(wc.model),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        t_end=lambda wc: GRID.t_end_of(wc.model),
        # a high-NFE solver run (models with reference_solver, for mse_ref) instead of exact solutions
        solver=lambda wc: GRID.reference_args(wc.model),
    threads: GRID.resource("reference", "threads")
    resources:
        mem_mb=GRID.resource("reference", "mem_mb"),
        runtime=GRID.resource("reference", "runtime"),
        gpu=lambda wc: GRID.resource("sample", "gpu") if GRID.reference_args(wc.model) else 0,
    shell:
        THREADS_ENV + " {PY} -m dpmbench reference --model {wildcards.model} --num-samples {params.n}"
        " --seed {wildcards.seed} {params.guidance} --t-end {params.t_end} {params.solver} --out {output}"
