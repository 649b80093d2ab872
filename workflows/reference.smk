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
    threads: GRID.resource("reference", "threads")
    resources:
        mem_mb=GRID.resource("reference", "mem_mb"),
        runtime=GRID.resource("reference", "runtime"),
        gpu=0,
    shell:
        THREADS_ENV + " {PY} -m dpmbench reference --model {wildcards.model} --num-samples {params.n}"
        " --seed {wildcards.seed} {params.guidance} --t-end {GRID.t_end} --out {output}"
