# Metrics of every NFE of a (model, guidance, schedule, solver) in one job, against the shared reference.
rule metrics:
    input:
        samples=GRID.sample_outputs(),
        reference=f"{RESULTS}/{{model}}/g{{guidance}}/reference.npz",
    output:
        GRID.metric_outputs(),
    params:
        metrics=",".join(GRID.metrics),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {PY} -m dpmbench evaluate --samples {input.samples} --reference {input.reference}"
        " --metrics {params.metrics} --out {output}"
