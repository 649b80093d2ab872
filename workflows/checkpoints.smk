# Checkpoint files (config `checkpoints`: model id -> file, sha256, source), verified once before any job of
# the model. Offline machines get one line saying which file to place where.
import hashlib

from snakemake.exceptions import WorkflowError


def checkpoint_root():
    return os.path.join(os.environ.get("DPMBENCH_CACHE", os.path.expanduser("~/.cache/dpmbench")), "checkpoints")


def checkpoint_input(wildcards):
    """The verification stamp of the model's checkpoint, if it has one."""
    if wildcards.model in GRID.checkpoints:
        return [f"{RESULTS}/.checkpoints/{wildcards.model}.sha256"]
    return []


rule checkpoint:
    output:
        f"{RESULTS}/.checkpoints/{{model}}.sha256",
    localrule: True
    run:
        entry = GRID.checkpoints[wildcards.model]
        path = os.path.join(checkpoint_root(), entry["file"])
        if not os.path.isfile(path):
            raise WorkflowError(f"missing checkpoint of model {wildcards.model!r}: place {entry.get('source', 'the file')}"
                                f" at {path} (sha256 {entry['sha256']})")
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != entry["sha256"]:
            raise WorkflowError(f"checkpoint {path} has sha256 {h.hexdigest()}, expected {entry['sha256']}")
        with open(output[0], "w") as fh:
            fh.write(h.hexdigest() + "\n")
