# Shared by every stage: the grid (built and validated in the Snakefile), paths, wildcard constraints.
import re
import shlex

RESULTS = GRID.results_dir
REPORT = GRID.report_dir
PAPERS = config.get("papers_dir", os.path.join(workflow.basedir, "papers"))
PY = shlex.quote(sys.executable)
# every job runs through the warm job server (dpmbench/worker.py): a fork instead of a Python start + torch import
JOB = f"{PY} -m dpmbench.worker"
THREADS_ENV = "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
# Priority of the jobs that start long chains (checkpoint pulls, exact references, high-NFE reference runs, the
# prepare steps: 10-60 s each on digits-unet): started first, they no longer end the run on one busy core while the
# other waits (measured on the default benchmark: the digits-unet prepares started after 5 to 10 minutes without it).
LONG_FIRST = 10
ARTIFACTS = GRID.artifacts_dir()
ARTIFACTS_ENV = f"DPMBENCH_ARTIFACTS={shlex.quote(ARTIFACTS)}"  # searched/prepared artifacts are DAG outputs


def one_of(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    model=one_of(GRID.models),
    guidance="none|[0-9.]+",
    seed="[0-9]+",
    schedule="[A-Za-z0-9_.+-]+",
    solver="[A-Za-z0-9_.+-]+",
    shard="[0-9]+-[0-9]+",
