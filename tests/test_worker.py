"""The warm job server (dpmbench/worker.py): a job run through it is the job run in a new process — same samples
bit for bit, same output and exit status, same reaction to signals — with the threads it is given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dpmbench import worker

ROOT = Path(__file__).resolve().parents[1]

# a plugin solver that reports what the job process sees, then (optionally) sleeps inside its first step
PROBE = '''
import json, os, time
import torch
import threadpoolctl
from dpmbench.solvers.base import SinglestepSolver, register


@register
class Probe(SinglestepSolver):
    name = "probe-ddim"
    summary = "test probe"
    source = "tests/test_worker.py"
    options = {}

    def step(self, model, x, s, t, order):
        report = os.environ.get("PROBE_REPORT")
        if report and not os.path.exists(report):
            pools = {p["internal_api"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
            with open(report + ".tmp", "w") as fh:
                json.dump({"pid": os.getpid(), "torch_threads": torch.get_num_threads(), "pools": pools,
                           "cwd": os.getcwd()}, fh)
            os.replace(report + ".tmp", report)
        time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
        eps = self.predict(model, x, s, "eps")
        return t.alpha * (x - s.sigma * eps) / s.alpha + t.sigma * eps
'''


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private server for the module's tests, stopped at the end."""
    d = tmp_path_factory.mktemp("worker")
    yield d
    worker.stop_all(d)


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe plugin's directory, one for the module: the same import path, so its tests share one server."""
    d = tmp_path_factory.mktemp("probe")
    (d / "probe_plugin.py").write_text(PROBE)
    return d


def _env(tmp: Path, server_dir: Path, probe_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(probe_dir)]),
            "DPMBENCH_PLUGINS": "probe_plugin", "DPMBENCH_CACHE": str(tmp / "cache"),
            "DPMBENCH_WORKER_DIR": str(server_dir), **extra}


def _sample_cmd(out: Path, solver: str = "ddpm", n: int = 64) -> list[str]:
    return [sys.executable, "-m", "dpmbench.worker", "dpmbench", "sample", "--model", "gmm-2d", "--solver", solver,
            "--nfe", "5", "--num-samples", str(n), "--seed", "3", "--guidance", "7.5", "--out", str(out)]


def test_a_job_through_the_server_equals_the_job_in_a_new_process(tmp_path: Path, server_dir: Path,
                                                                   probe_dir: Path) -> None:
    env = _env(tmp_path, server_dir, probe_dir)
    for name, extra in (("served", {}), ("direct", {"DPMBENCH_WORKER": "0"})):
        proc = subprocess.run(_sample_cmd(tmp_path / f"{name}.npz"), env={**env, **extra}, capture_output=True,
                              text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    plain = subprocess.run([sys.executable, "-m", "dpmbench", *_sample_cmd(tmp_path / "plain.npz")[4:]],
                           env=env, capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    served, direct, fresh = (np.load(tmp_path / f"{n}.npz") for n in ("served", "direct", "plain"))
    assert np.array_equal(served["x"], fresh["x"]) and np.array_equal(direct["x"], fresh["x"])  # ddpm: noise too
    info = worker.stop_all(server_dir)  # the job really went through a server (and the next test starts anew)
    assert sum(s["jobs"] for s in info) == 1


def test_exit_status_and_error_line_pass_through(tmp_path: Path, server_dir: Path, probe_dir: Path) -> None:
    env = _env(tmp_path, server_dir, probe_dir)
    cmd = _sample_cmd(tmp_path / "x.npz")
    cmd[cmd.index("gmm-2d")] = "no-such-model"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("dpmbench: error: invalid model 'no-such-model'")
    assert not (tmp_path / "x.npz").exists()
    ok = subprocess.run([sys.executable, "-m", "dpmbench.worker", "dpmbench", "list", "schedules"], env=env,
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and "logsnr" in ok.stdout  # stdout reaches the caller
    bad = subprocess.run([sys.executable, "-m", "dpmbench.worker", "os", "system"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "first argument must be an entry point" in bad.stderr


@pytest.mark.parametrize("threads", [1, 2])
def test_the_job_uses_the_threads_it_is_given(tmp_path: Path, server_dir: Path, probe_dir: Path, threads: int) -> None:
    report = tmp_path / "probe.json"
    env = _env(tmp_path, server_dir, probe_dir, OMP_NUM_THREADS=str(threads), PROBE_REPORT=str(report))
    proc = subprocess.run(_sample_cmd(tmp_path / "x.npz", "probe-ddim", 8), env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(report.read_text())
    assert seen["torch_threads"] == threads
    assert seen["pools"] and all(n == threads for n in seen["pools"].values()), seen["pools"]
    assert seen["cwd"] == str(tmp_path)


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_client_takes_its_job_with_it(tmp_path: Path, server_dir: Path, probe_dir: Path, sig: int) -> None:
    """SIGTERM is forwarded (the job unwinds: status 143, no temporary file); SIGKILL closes the connection and the
    orphaned job ends itself."""
    report = tmp_path / "probe.json"
    env = _env(tmp_path, server_dir, probe_dir, PROBE_REPORT=str(report), PROBE_SLEEP="60")
    proc = subprocess.Popen(_sample_cmd(tmp_path / "x.npz", "probe-ddim", 8), env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(report)
    job = json.loads(report.read_text())["pid"]
    assert job != proc.pid  # the job is the server's child, not the client
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert _gone(job), "the job outlived its client"
    assert list(tmp_path.glob("*.npz*")) == []


def test_a_code_change_gets_a_fresh_server(tmp_path: Path) -> None:
    source = ROOT / "dpmbench" / "worker.py"
    before = worker.code_key()
    st = source.stat()
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        assert worker.code_key() != before
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert worker.code_key() == before


def test_an_idle_server_exits(tmp_path: Path, probe_dir: Path) -> None:
    d = tmp_path / "idle"
    env = _env(tmp_path, d, probe_dir, DPMBENCH_WORKER_IDLE="1")
    proc = subprocess.run([sys.executable, "-m", "dpmbench.worker", "dpmbench", "list", "schedules"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(next(d.glob("*.stats.json")).read_text())
    assert _gone(stats["pid"], timeout=30), "the idle server did not exit"
    assert list(d.glob("*.sock")) == []


def test_jobs_in_different_directories_share_a_server_unless_one_could_shadow_a_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The working directory (``python -m`` puts it first on the import path) enters the key by the modules it
    offers to ``import``: two run directories without modules give one key; one holding ``numpy.py`` (which a new
    process would import instead of numpy) or a package gets its own server; a folder without ``__init__.py``
    shadows nothing."""
    keys = {}
    for name, entry in (("a", None), ("b", "results/"), ("c", "numpy.py"), ("d", "torch/__init__.py")):
        d = tmp_path / name
        d.mkdir()
        if entry:
            (d / entry).parent.mkdir(parents=True, exist_ok=True)
            if not entry.endswith("/"):
                (d / entry).write_text("")
        monkeypatch.chdir(d)
        monkeypatch.setattr(sys, "path", [str(d), *sys.path[1:]])
        keys[name] = worker.code_key()
    assert keys["a"] == keys["b"]
    assert len({keys["a"], keys["c"], keys["d"]}) == 3
