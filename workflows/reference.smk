# Exact ODE solutions from the shared x_T: computed once per (model, guidance), reused by every solver.
rule reference:
    output:
        f"{RESULTS}/{{model}}/g{{guidance}}/reference.npz",
    params:
        n=lambda wc: GRID.num_samples(wc.model),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {PY} -m dpmbench reference --model {wildcards.model} --num-samples {params.n} --seed {GRID.seed}"
        " {params.guidance} --t-end {GRID.t_end} --out {output}"
