"""Snakemake's command line for the tests, forked from a warm process: ``python tests/warm_snakemake.py ARGS...`` is
``snakemake ARGS...`` (same ``snakemake.cli.main``, arguments, working directory, environment, import path, stdio,
exit status and signals) without importing Snakemake, torch and the grid's registries again for every call.

Every start of the ``snakemake`` command imports Snakemake (1.7 s of CPU, its plugin registries included) and, to
check a config's solvers, models and schedules, torch and dpmbench's registries (2.5-3.5 s; cached per solver spec
and code, so a test's new config misses). The suite starts Snakemake ~40 times: that was a fifth of its CPU time.
This client (it imports only ``dpmbench.worker``) runs the call in a child forked by a server of the pytest process
(``support.run_snakemake`` sets ``DPMBENCH_TEST_SNAKEMAKE_SOCKET`` and stops it at the end of the session), the
machinery of ``dpmbench.worker`` with ``snakemake`` as one more entry point: what it has imported was imported
before any test's environment existed, and nothing of it depends on one (solver plugins load on the first solver
lookup, in the child, from the child's environment: checked at start). A test of Snakemake's reaction to being
killed (test_workflow.py) still starts the real command: a signal to this client reaches Snakemake, but not the
process group of Snakemake's jobs.

    python tests/warm_snakemake.py --serve SOCKET    # the server (started by the first client)
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ADDED = str(ROOT) not in sys.path
if _ADDED:
    sys.path.insert(1, str(ROOT))

from dpmbench import worker  # noqa: E402  (the checkout's, whatever is installed)

SOCKET_ENV = "DPMBENCH_TEST_SNAKEMAKE_SOCKET"
PRELOAD = ("snakemake.cli", "snakemake.api", "snakemake.scheduling.job_scheduler", "torch", "numpy", "scipy.linalg",
           "yaml", "jsonschema", "sklearn.neighbors", "dpmbench.grid", "dpmbench.timesteps",
           "dpmbench.solvers.registry", "dpmbench.search", "dpmbench.models.registry", "evaluators.registry")


class _Server(worker._Server):  # noqa: SLF001
    def preload(self) -> None:
        for name in PRELOAD:
            importlib.import_module(name)
        from dpmbench.solvers import plugins

        # the children must find plugins from their own environment: none loaded or discovered here
        assert not plugins._loaded and plugins._entry_points.cache_info().currsize == 0  # noqa: SLF001


def main(args: list[str]) -> int:
    worker.ENTRY_POINTS["snakemake"] = "snakemake.cli"
    if args[:1] == ["--serve"] and len(args) == 2:
        _Server(Path(args[1])).serve(float(os.environ.get(worker.ENV_IDLE, 1800)))
        return 0
    sock_path = Path(os.environ[SOCKET_ENV])
    sock = worker.connect_or_start(sock_path, (__file__, "--serve"))
    if sock is None:
        raise SystemExit(f"warm_snakemake: the server did not start (see {sock_path.with_suffix('.log')})")
    sys.path[0] = str(Path(sys.executable).parent)  # the import path of the console script ``snakemake``
    if _ADDED:
        sys.path.remove(str(ROOT))
    return worker.run_through(sock, ["snakemake", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
