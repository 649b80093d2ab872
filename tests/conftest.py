"""Shared fixtures (an isolated dpmbench cache per test session, one torch thread) and the suite's order on the
worker processes of ``make test`` (``pytest -n 2 --dist loadfile``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The order of the suite, longest first, so that the two worker processes of ``make test`` end together (a long test
# started last would leave one of them idle). Modules not listed follow in their usual order.
LONG_FIRST = (
    "test_claims_digits_unet.py", "test_digits_unet.py", "test_claims_digits_unet_guided.py", "test_workflow.py",
    "test_dc_solver.py", "test_adapters.py", "test_flow_adapters.py", "test_workflow_hardening.py",
    "test_workflow_search.py", "test_catalogue.py", "test_checkpoints.py", "test_site.py", "test_hardening.py",
    "test_deis_pndm.py", "test_diffusers_scheduler.py", "test_cluster_fit.py", "test_iia.py", "test_convergence.py",
)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A dpmbench cache for the test process, and its folder for the plugin modules tests write (support.py)."""
    import support

    from dpmbench import worker

    support.SESSION_CACHE = tmp_path_factory.mktemp("dpmbench-cache")
    support.PLUGIN_DIR = tmp_path_factory.mktemp("plugins")
    os.environ["DPMBENCH_CACHE"] = str(support.SESSION_CACHE)
    # the job servers of the workflows the tests run (dpmbench.worker) and the warm Snakemake server
    # (tests/warm_snakemake.py): the test process's own, alive for the whole session (the default idle exit, 2 min,
    # came in the middle of it), stopped at its end
    servers = tmp_path_factory.mktemp("servers")
    servers.chmod(0o700)
    os.environ[worker.ENV_DIR], os.environ[worker.ENV_IDLE] = str(servers), "1800"
    support.WARM_SNAKEMAKE = servers / "snakemake.sock"
    yield
    worker.stop_all(servers)


_BLAS_LIMITS = pytest.StashKey[object]()


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op torch thread in every process that runs tests (before collection, which already computes in a
    few modules). The suite's tensors are small (oracle models, tiny networks) and ``make test`` runs two worker
    processes on two cores: a second thread per process only adds OpenMP synchronization, which on shared cores
    costs far more than the work (measured on the 2-core VM under load: 0.55 s instead of 7-17 s of CPU for three
    convergence-order fits on gmm-2d, 1.1 s instead of 25 s for 500 exact solutions). Jobs the tests start as
    processes keep their own settings (Snakemake's ``threads:``, OMP_NUM_THREADS)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller: it runs no test
    import torch

    torch.set_num_threads(1)
    if os.environ.get("DPMBENCH_TEST_BLAS_THREADS") == "default":
        return
    # and one thread in numpy's and scipy's OpenBLAS and in the other OpenMP runtimes (loaded here, then limited):
    # their idle threads spin, and with two worker processes on two cores a 2048 x 2048 eigenproblem took 20-36 s
    # of CPU with two threads against 5.4 s with one (measured on the 2-core VM under load); test_evaluators_images,
    # test_claims_rules and test_evaluators in one process: 72-80 s of CPU with the libraries' default threads
    # (DPMBENCH_TEST_BLAS_THREADS=default), 47-52 s with one
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    import sklearn.neighbors  # noqa: F401
    import threadpoolctl

    config.stash[_BLAS_LIMITS] = threadpoolctl.threadpool_limits(1)


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh artifact directory (``DPMBENCH_ARTIFACTS``) for one test."""
    monkeypatch.setenv("DPMBENCH_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first; a stable sort, so a module's tests stay together and in their order. With
    ``--dist loadfile`` each module runs on one worker (its module-scoped fixtures are computed once)."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
