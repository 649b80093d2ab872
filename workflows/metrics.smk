# One job per (model, guidance, seed, schedule, solver) and NFE group: reads every shard of every NFE of the group,
# concatenates each cell's shards and evaluates them against the shared reference, in one process
# (`dpmbench metrics-job`, evaluators/job.py).
for _suffix, _nfes, _models in GRID.nfe_sets():

    rule:
        name:
            f"metrics{_suffix}"
        input:
            shards=lambda wc, nfes=_nfes: GRID.shard_inputs(wc, nfes),
            reference=reference_input,
        output:
            GRID.metric_outputs(_nfes),
        log:
            os.path.join(LOGS, f"metrics{_suffix}", "{model}", "g{guidance}", "seed{seed}", "{schedule}",
                         "{solver}.log"),
        wildcard_constraints:
            model=one_of(_models),
        params:
            job=JOB,
            cells=lambda wc, nfes=_nfes: cells_arg(wc, nfes),
            metrics=lambda wc: ",".join(GRID.metrics(wc.model)),
            reference=lambda wc, input: f"--reference {input.reference}" if input.reference else "",
            fid_stats=lambda wc: GRID.fid_stats_arg(wc.model),
        group:
            cluster_group("metrics-{model}")
        threads: GRID.resource("metrics", "threads")
        resources:
            mem_mb=GRID.resource("metrics", "mem_mb"),
            runtime=GRID.resource("metrics", "runtime"),
            gpu=GRID.resource("metrics", "gpu"),
        conda:
            "../env.yml"
        shell:
            "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.job} dpmbench metrics-job"
            " --cells {params.cells} --out {output} --metrics {params.metrics} {params.reference}"
            " {params.fid_stats} --seed {wildcards.seed} 2> >(tee {log:q} >&2)"
