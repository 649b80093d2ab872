# One job per (model, guidance, schedule, solver): loads the model once, writes one npz per NFE.
rule sample:
    output:
        GRID.sample_outputs(),
    params:
        n=lambda wc: GRID.num_samples(wc.model),
        spec=lambda wc: GRID.spec(wc.solver),
        nfe=lambda wc: ",".join(str(n) for n in GRID.nfes(wc.model)),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        pattern=lambda wc: f"{RESULTS}/{wc.model}/g{wc.guidance}/{wc.schedule}/{wc.solver}/nfe{{nfe}}.npz",
        batch=GRID.batch_arg(),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {PY} -m dpmbench sample --model {wildcards.model} --solver '{params.spec}' --nfe {params.nfe}"
        " --num-samples {params.n} --seed {GRID.seed} --schedule {wildcards.schedule} {params.guidance}"
        " --t-end {GRID.t_end} --device {GRID.device} {params.batch} --out '{params.pattern}'"
