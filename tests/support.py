"""Helpers shared by the test modules (pytest puts tests/ on sys.path through its conftest.py)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dpmbench import load_model, sample
from dpmbench.cli import main
from dpmbench.models.base import Model

T_END = 1e-3


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
