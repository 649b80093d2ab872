# Checkpoint models (config/checkpoints.yaml, plus the config's own `checkpoints:` entries): `pull_checkpoint`
# downloads each checkpoint model's files once (resume, sha256 checked before a file is renamed into place) and
# verifies them, before any job of the model. Offline (`--config offline=true` or DPMBENCH_OFFLINE=1) it never
# opens a connection and a missing file stops the run with one line naming the file and where to place it.
# The stamp lists `sha256  path` for every file (sha256sum format, relative to the checkpoint directory); it is
# redone when the entry's source or pinned files change (params). The oracle models need none.
from dpmbench.io import atomic_write
from snakemake.exceptions import WorkflowError


def checkpoint_input(wildcards):
    """The verification stamp of the model's checkpoint, if it is a checkpoint model."""
    if wildcards.model in GRID.checkpoints or wildcards.model in GRID.unavailable:
        return [f"{RESULTS}/.checkpoints/{wildcards.model}.sha256"]
    return []


rule pull_checkpoint:
    output:
        f"{RESULTS}/.checkpoints/{{model}}.sha256",
    params:
        entry=lambda wc: GRID.checkpoints[wc.model].fingerprint() if wc.model in GRID.checkpoints else "",
    localrule: True  # on a cluster, downloads run where the workflow runs (compute nodes are often offline)
    priority: LONG_FIRST
    run:
        from dpmbench.models.store import pull, stamp_text

        if wildcards.model not in GRID.checkpoints:
            raise WorkflowError(f"dpmbench: error: checkpoint {wildcards.model!r} is only named (checkpoints_manifest: "
                                f"{GRID.unavailable[wildcards.model].get('source', '?')}); add a loadable entry (adapter,"
                                " source, files with sha256) to config/checkpoints.yaml or the config's checkpoints")
        entry = GRID.checkpoints[wildcards.model]
        try:
            pull(entry, offline=True if GRID.offline else None)
            text = stamp_text(entry)
        except DpmbenchError as exc:
            raise WorkflowError(f"dpmbench: error: {exc}") from None
        atomic_write(output[0], lambda tmp: tmp.write_text(text))
