# One job per (model, guidance, seed, schedule, solver, shard): loads the model once and writes that shard of
# every NFE (nfe<N>/<lo>-<hi>.npz, samples lo..hi-1). One rule per distinct NFE list (per-model overrides).
# On a cluster, the jobs of one model form the group "sample-<model>" (see profiles/slurm: many jobs per
# submission).
for _suffix, _nfes, _models in GRID.nfe_sets():

    rule:
        name:
            f"sample{_suffix}"
        input:
            checkpoint_input,
            GRID.sample_extra_inputs,
        output:
            GRID.shard_outputs(_nfes),
        wildcard_constraints:
            model=one_of(_models),
        params:
            spec=lambda wc: shlex.quote(GRID.spec(wc.solver)),
            schedule=lambda wc: shlex.quote(GRID.schedule(wc.schedule)),
            nfe=",".join(str(n) for n in _nfes),
            lo=lambda wc: int(wc.shard.split("-")[0]),
            n=lambda wc: int(wc.shard.split("-")[1]) - int(wc.shard.split("-")[0]),
            guidance=lambda wc: GRID.guidance_arg(wc.guidance),
            batch=lambda wc: GRID.batch_arg(wc.model),
            captions=lambda wc: GRID.captions_arg(wc.model),
            t_end=lambda wc: GRID.t_end_of(wc.model),
            pattern=lambda wc: shlex.quote(GRID.cell_dir().format(**dict(wc.items())) + "/nfe{nfe}/" + wc.shard + ".npz"),
        group:
            cluster_group("sample-{model}")
        threads: GRID.resource("sample", "threads")
        resources:
            mem_mb=GRID.resource("sample", "mem_mb"),
            runtime=GRID.resource("sample", "runtime"),
            gpu=GRID.resource("sample", "gpu"),
        shell:
            THREADS_ENV + " " + ARTIFACTS_ENV + " {JOB} dpmbench sample --model {wildcards.model} --solver {params.spec}"
            " --nfe {params.nfe} --num-samples {params.n} --start {params.lo} --seed {wildcards.seed}"
            " --schedule {params.schedule} {params.guidance} --t-end {params.t_end} --device {GRID.device}"
            " {params.batch} {params.captions} --out {params.pattern}"
