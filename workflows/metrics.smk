# One job per (model, guidance, seed, schedule, solver): reads every shard of every NFE, concatenates each cell's
# shards and evaluates them against the shared reference, in one process.
def reference_input(wc):
    if GRID.has_reference(wc.model):
        return GRID.reference_file().format(**dict(wc.items()))
    return []


def cells_arg(wc, nfes):
    shards = GRID.shards_of(wc.model)
    d = GRID.cell_dir().format(**dict(wc.items()))
    return " ".join(",".join(f"{d}/nfe{n}/{s}.npz" for s in shards) for n in nfes)


for _suffix, _nfes, _models in GRID.nfe_sets():

    rule:
        name:
            f"metrics{_suffix}"
        input:
            shards=GRID.shard_inputs,
            reference=reference_input,
        output:
            GRID.metric_outputs(_nfes),
        wildcard_constraints:
            model=one_of(_models),
        params:
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
        shell:
            THREADS_ENV + " {JOB} dpmbench metrics-job --cells {params.cells} --out {output}"
            " --metrics {params.metrics} {params.reference} {params.fid_stats} --seed {wildcards.seed}"
