# Exact ODE solutions (and the target's moments) from the shared x_T: computed once per (model, guidance, seed),
# reused by every solver, schedule and NFE of the model. Models without exact solutions get a high-NFE solver run
# instead when their config names one (`models.<m>.reference: {solver, nfe}`).
rule reference:
    input:
        checkpoint_input,
    output:
        GRID.reference_file(),
    params:
        n=lambda wc: GRID.num_samples(wc.model),
        guidance=lambda wc: GRID.guidance_arg(wc.guidance),
        run=lambda wc: GRID.reference_args(wc.model),
        captions=lambda wc: GRID.captions_arg(wc.model),
        batch=lambda wc: GRID.batch_arg(wc.model),
        device=lambda wc: GRID.device if GRID.reference_runs.get(wc.model) else "cpu",
    threads: GRID.resource("reference", "threads")
    resources:
        mem_mb=GRID.resource("reference", "mem_mb"),
        runtime=GRID.resource("reference", "runtime"),
        gpu=lambda wc: GRID.resource("sample", "gpu") if GRID.reference_runs.get(wc.model) else 0,
    shell:
        THREADS_ENV + " {PY} -m dpmbench reference --model {wildcards.model} --num-samples {params.n}"
        " --seed {wildcards.seed} {params.guidance} {params.run} {params.captions} {params.batch} --t-end {GRID.t_end}"
        " --device {params.device} --out {output}"
