# One job per (model, guidance, seed, schedule, solver, shard) and NFE group: loads the model once and writes that
# shard of every NFE of the group (nfe<N>/<lo>-<hi>.npz, samples lo..hi-1). One rule per distinct NFE group
# (per-model NFE lists, nfe_overrides, a solver entry's nfe_options). On a cluster, the jobs of one model form the group "sample-<model>" (see
# profiles/slurm: many jobs per submission). A plugin solver's jobs re-run when its module's code changes
# (params.code: module and source digest; dpmbench.grid.registry).
for _suffix, _nfes, _models in GRID.nfe_sets():

    rule:
        name:
            f"sample{_suffix}"
        input:
            checkpoint_input,
            lambda wc, nfes=_nfes: GRID.sample_extra_inputs(wc, nfes),
        output:
            GRID.shard_outputs(_nfes),
        log:
            os.path.join(LOGS, f"sample{_suffix}", "{model}", "g{guidance}", "seed{seed}", "{schedule}", "{solver}",
                         "{shard}.log"),
        wildcard_constraints:
            model=one_of(_models),
        params:
            job=JOB,
            artifacts=lambda wc: ARTIFACTS,
            device=GRID.device,
            code=lambda wc: GRID.solver_code(wc.solver),
            spec=lambda wc, nfes=_nfes: shlex.quote(GRID.spec(wc.solver, wc.model, nfes)),
            schedule=lambda wc: shlex.quote(GRID.schedule(wc.schedule)),
            nfe=",".join(str(n) for n in _nfes),
            lo=lambda wc: int(wc.shard.split("-")[0]),
            n=lambda wc: int(wc.shard.split("-")[1]) - int(wc.shard.split("-")[0]),
            guidance=lambda wc: GRID.guidance_arg(wc.guidance),
            batch=lambda wc: GRID.batch_arg(wc.model),
            captions=lambda wc: GRID.captions_arg(wc.model),
            t_end=lambda wc, nfes=_nfes: GRID.t_end_of(wc.model, nfes),
            t_start=lambda wc: GRID.t_start_arg(wc.model),
            pattern=lambda wc: shlex.quote(GRID.shard_pattern(wc)),
        group:
            cluster_group("sample-{model}")
        threads: GRID.resource("sample", "threads")
        resources:
            mem_mb=GRID.resource("sample", "mem_mb"),
            runtime=GRID.resource("sample", "runtime"),
            gpu=GRID.resource("sample", "gpu"),
        conda:
            "../env.yml"
        shell:
            "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} DPMBENCH_ARTIFACTS={params.artifacts:q}"
            " {params.job} dpmbench sample --model {wildcards.model} --solver {params.spec}"
            " --nfe {params.nfe} --num-samples {params.n} --start {params.lo} --seed {wildcards.seed}"
            " --schedule {params.schedule} {params.guidance} --t-end {params.t_end} {params.t_start} --device {params.device}"
            " {params.batch} {params.captions} --out {params.pattern} 2> >(tee {log:q} >&2)"
