# Checkpoint models (config/checkpoints.yaml, plus the config's own `checkpoints:` entries): `pull_checkpoint`
# downloads each checkpoint model's files once (resume, sha256 checked before a file is renamed into place) and
# verifies them, before any job of the model. Offline (`--config offline=true` or DPMBENCH_OFFLINE=1) it never
# opens a connection and a missing file stops the run with one line naming the file and where to place it.
# The stamp lists `sha256  path` for every file (sha256sum format, relative to the checkpoint directory); it is
# redone when the entry's source or pinned files change (params). The oracle models need none.
rule pull_checkpoint:
    output:
        os.path.join(RESULTS, ".checkpoints", "{model}.sha256"),
    log:
        os.path.join(LOGS, "pull_checkpoint", "{model}.log"),
    params:
        entry=lambda wc: GRID.checkpoints[wc.model].fingerprint() if wc.model in GRID.checkpoints else "",
    localrule: True  # on a cluster, downloads run where the workflow runs (compute nodes are often offline)
    priority: LONG_FIRST
    # No conda environment: a `run` directive runs in Snakemake's own process (pull_checkpoint in common.smk).
    run:
        pull_checkpoint(wildcards.model, output[0], log[0])
