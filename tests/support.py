"""Helpers shared by the test modules (pytest puts tests/ on sys.path through its conftest.py)."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpmbench import load_model, sample
from dpmbench.cli import main
from dpmbench.models.base import Model

T_END = 1e-3
# results.csv columns that are measured times: they differ from run to run (everything else must not)
TIMINGS = ("wall_s", "s_per_sample")
# Set by tests/conftest.py for each test process: its dpmbench cache, and one folder for the plugin modules that tests
# write (each module under its own name). Workflow tests put that folder on their jobs' PYTHONPATH whether they load a
# plugin or not: the job server's key includes the import path, so all their jobs share one warm server.
SESSION_CACHE: Path | None = None
PLUGIN_DIR: Path | None = None
# Set by tests/conftest.py: the socket of the test process's warm Snakemake server (tests/warm_snakemake.py)
WARM_SNAKEMAKE: Path | None = None


class CountingModel(Model):
    """Counts network calls independently of dpmbench's NFE counter."""

    def __init__(self, base: Model):
        self.base, self.calls = base, 0
        self.name, self.shape, self.num_classes = base.name, base.shape, base.num_classes
        self.schedule, self.parameterization = base.schedule, base.parameterization

    def forward(self, x: torch.Tensor, t: Any, cond: Any = None) -> torch.Tensor:
        self.calls += 1
        return self.base.forward(x, t, cond)


def gmm2d_convergence_setup(n: int = 500) -> tuple[Model, torch.Tensor, torch.Tensor]:
    """gmm-2d, n float64 x_T (seed 0) and their exact solutions at T_END: the convergence-order set-up."""
    model = load_model("gmm-2d")
    x_T = model.prior(n, seed=0, dtype=torch.float64)
    return model, x_T, model.exact_solution(x_T, t_end=T_END)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean squared difference over samples and dimensions."""
    return float(((a - b) ** 2).mean().sqrt())


def slope(nfes: list[int], errs: list[float]) -> float:
    """Fitted convergence order: minus the slope of log(error) against log(NFE)."""
    return float(-np.polyfit(np.log(nfes), np.log(errs), 1)[0])


def convergence_errors(setup: tuple, spec: str, nfes: list[int]) -> list[float]:
    """RMSE to the exact solutions of ``setup = (model, x_T, exact)`` for every NFE (logSNR steps, T_END)."""
    model, x_T, ref = setup
    return [rmse(sample(model, spec, n, x_T, schedule="logsnr", t_end=T_END), ref) for n in nfes]


def measured_order(setup: tuple, spec: str, nfes: list[int]) -> tuple[float, list[float]]:
    """The fitted convergence order over ``nfes`` and the errors it was fitted to."""
    errs = convergence_errors(setup, spec, nfes)
    return slope(nfes, errs), errs


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run ``dpmbench ARGV`` in-process: exit code (argparse's SystemExit included), stdout, stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code)
    out, err = capsys.readouterr()
    return code, out, err


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (URL path -> bytes; 404 for any other path) and records the paths asked for in ``requests``.
    Subclass it per test (``type("H", (FileHandler,), {"files": {...}, "requests": []})``) or reset both."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).requests.append(self.path)
        body = type(self).files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def local_http_server(handler: type[http.server.BaseHTTPRequestHandler], timeout: float | None = None
                      ) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) in a thread; yields the base URL, shuts down afterwards."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if timeout is not None:
        httpd.timeout = timeout
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def shared_registry_cache(cache: Path) -> str:
    """A test's own ``DPMBENCH_CACHE`` whose ``workflow`` folder is the session's: the grid's registry facts (solver
    and model checks, cached under a key of the sources and solver plugins they depend on) are computed once per
    test process instead of once per Snakemake start of every test, which would import torch each time. Everything
    else in the cache (checkpoints, exact solutions, features, artifacts) stays the test's own."""
    assert SESSION_CACHE is not None, "tests/conftest.py sets the session cache"
    shared = SESSION_CACHE / "workflow"
    shared.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / "workflow"
    if not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
    return str(cache)


def workflow_pythonpath(root: Path) -> str:
    """PYTHONPATH of a test's workflow or job processes: the checkout, then the session's plugin folder."""
    assert PLUGIN_DIR is not None, "tests/conftest.py sets the plugin folder"
    return os.pathsep.join([str(root), str(PLUGIN_DIR)])


def run_snakemake(args: list[str], env: dict[str, str], timeout: float, cwd: str | Path | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """``snakemake ARGS`` (its command line: output, exit status) as ``subprocess.run(..., capture_output=True,
    text=True)`` runs it, forked from the test process's warm Snakemake server (tests/warm_snakemake.py)."""
    assert WARM_SNAKEMAKE is not None, "tests/conftest.py sets the warm Snakemake socket"
    from warm_snakemake import SOCKET_ENV

    cmd = [sys.executable, str(Path(__file__).with_name("warm_snakemake.py")), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**env, SOCKET_ENV: str(WARM_SNAKEMAKE)},
                          timeout=timeout, cwd=cwd)


def run_forked(target: Any, arg_lists: list[tuple[Any, ...]], timeout: float) -> None:  # noqa: ANN401
    """``target(*args)`` in one process per item of ``arg_lists``, forked from this one (separate processes, as
    separate jobs are, without a new interpreter importing torch), all started, then each joined and asserted to
    exit 0; never terminated (a multiprocessing Pool's ``terminate()`` can hang on a worker killed while it held
    the task queue's lock), killed if still alive at the end."""
    import multiprocessing as mp

    procs = [mp.get_context("fork").Process(target=target, args=args) for args in arg_lists]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=timeout)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
