"""A warm process for the workflow's jobs: start Python and import torch once per machine, fork once per job.

A job of the workflow (``sample``, ``metrics``, ``reference``, ``prepare``, ``search``) is a short computation in
a new Python process, and on 2 CPU cores starting that process and importing torch, numpy, scikit-learn and
dpmbench costs 1.5-4 s of CPU: more than most jobs' own work (``benchmarks/RESULTS.md``, "Where the time of
make bench goes"). The workflow therefore runs its jobs as::

    python -m dpmbench.worker dpmbench sample --model ... --out ...        # = python -m dpmbench sample ...
    python -m dpmbench.worker dpmbench metrics-job --cells ...             # = python -m dpmbench metrics-job ...

This client imports nothing heavy. It connects to a server for this machine, this Python and this exact code
(the socket's name is a digest of the interpreter, ``sys.path`` -- the working directory in it by the modules it
holds, so that jobs run in different directories share a server -- and the size and mtime of every source file of
``dpmbench`` and ``evaluators`` and of the installed packages' directories: an edit starts a fresh server, a
stale one is never used), starting the server if there is none. The server has imported everything once; for
each job it forks a child that takes over the client's stdin/stdout/stderr (passed over the socket), working
directory, environment, ``sys.path`` and arguments, sets torch's and the BLAS libraries' thread counts from the
job's ``OMP_NUM_THREADS`` (Snakemake's ``threads:``), and runs the entry point's ``main``. The client forwards
SIGTERM/SIGINT/SIGHUP to the child and exits with the child's status (or dies by its signal), so for Snakemake
the job is the same process it was: same output, exit code, interruption and temporary-file clean-up. A child
whose client dies (SIGKILL) terminates itself.

Every job is a fresh fork of a server that never ran any computation (no thread pools, no CUDA context, no
random state consumed, no caches filled), so a job computes exactly what a new process computes: bit-identical
samples (tested). The server exits after ``DPMBENCH_WORKER_IDLE`` seconds (default 120) without a job.
``DPMBENCH_WORKER=0`` runs every job in the client process itself (no server), as ``python -m`` would; so does
a job inside a SLURM allocation (a job's work must stay in its own allocation, where the scheduler limits and
accounts it) and a machine where the server cannot start (a one-line note says why).

    python -m dpmbench.worker --status    # is a server running for this code; its jobs and their CPU time
    python -m dpmbench.worker --stop      # stop it (the next job starts a new one)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import signal
import socket
import struct
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENTRY_POINTS = {"dpmbench": "dpmbench.cli"}
ENV_SWITCH = "DPMBENCH_WORKER"  # "0": no server
ENV_DIR = "DPMBENCH_WORKER_DIR"  # where sockets, locks, logs and statistics live
ENV_IDLE = "DPMBENCH_WORKER_IDLE"  # seconds without a job before the server exits
DEFAULT_IDLE_S = 120.0
START_TIMEOUT_S = 180.0  # importing torch on a loaded machine can take a minute
PRELOAD = (  # what the jobs import; imported once by the server
    "numpy", "scipy.linalg", "torch", "yaml", "dpmbench.cli", "evaluators.job", "dpmbench.sampling",
    "dpmbench.sampling.shards", "dpmbench.sampling.reference",
    "dpmbench.models", "dpmbench.solvers", "dpmbench.timesteps", "dpmbench.artifacts", "dpmbench.search",
    "evaluators", "evaluators.images", "evaluators.digits_cnn", "dpmbench.models.manifest", "dpmbench.models.store",
    "dpmbench.provenance", "sklearn.datasets", "threadpoolctl", "tqdm",
)
# Checkpoint / image models only; absent on lean installs. "module:name" also resolves a name: diffusers imports its
# model classes lazily on first access (~500 modules, transformers included: ~3 s per job that loads a network).
OPTIONAL_PRELOAD = ("torch_fidelity", "matplotlib.pyplot", "diffusers:UNet2DModel", "diffusers:UNet2DConditionModel",
                    "diffusers:AutoencoderKL", "diffusers:VQModel")
_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def enabled() -> bool:
    """Whether jobs go through a server: ``DPMBENCH_WORKER`` unset or not 0/false/no, and not inside a SLURM job
    (there a job must run inside its own allocation, accounted and limited by the scheduler, not in a process
    another job started; ``DPMBENCH_WORKER=1`` overrides)."""
    raw = os.environ.get(ENV_SWITCH, "").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return False
    return raw in ("1", "true", "yes", "on") or "SLURM_JOB_ID" not in os.environ


def worker_dir() -> Path:
    """Directory of the sockets (``DPMBENCH_WORKER_DIR``, else a private directory under the system's tmp)."""
    explicit = os.environ.get(ENV_DIR, "").strip()
    path = Path(explicit) if explicit else Path("/tmp") / f"dpmbench-worker-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:  # another user's directory: never talk to its server
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def _modules_in(directory: str) -> list[str]:
    """Names of the regular modules and packages a directory offers to ``import`` (``X.py``, extension modules,
    ``X/__init__.py``): what it can shadow. A directory without ``__init__.py`` shadows nothing (a namespace
    portion loses to a regular package later on the path)."""
    names = set()
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith((".py", ".so", ".pyd", ".pyc")) and not entry.is_dir():
                names.add(entry.name.split(".", 1)[0])
            elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                names.add(entry.name)
    return sorted(names)


def _import_path() -> list[str]:
    """``sys.path`` with the working directory (the entry ``python -m`` puts first) replaced by the modules it
    offers: jobs started in different directories share a server unless a directory could shadow a module."""
    path = list(sys.path)
    if path and path[0] in ("", os.getcwd()):
        path[0] = "cwd-modules:" + ",".join(_modules_in(path[0] or "."))
    return path


def code_key() -> str:
    """A digest of everything a server's imports depend on: interpreter, import path (the working directory by
    the modules it offers, not by its name), source files, packages."""
    h = hashlib.sha256()
    h.update(f"{sys.executable}\0{sys.version}\0".encode())
    h.update("\0".join(_import_path()).encode())
    for pkg in ("dpmbench", "evaluators"):
        root = PACKAGE_ROOT / pkg
        for path in sorted(root.rglob("*.py")):
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for key in ("purelib", "platlib"):  # a pip install or uninstall changes these directories' mtime
        with contextlib.suppress(OSError):
            h.update(f"{os.stat(sysconfig.get_paths()[key]).st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _paths_at(base: Path) -> dict[str, Path]:
    """A server's files: ``base`` + .sock / .lock / .log / .stats.json."""
    return {"socket": base.with_suffix(".sock"), "lock": base.with_suffix(".lock"),
            "log": base.with_suffix(".log"), "stats": base.with_suffix(".stats.json")}


def _paths(key: str) -> dict[str, Path]:
    return _paths_at(worker_dir() / key)


# ----------------------------------------------------------------------------------------------------- client
def _send_request(sock: socket.socket, args: Sequence[str]) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    body = json.dumps({"args": list(args), "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                       "umask": umask}).encode()
    socket.send_fds(sock, [_HEADER.pack(len(body)) + body], [0, 1, 2])


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


SERVE = ("-m", "dpmbench.worker", "--serve")  # the server's command line, before its socket


def _start_server(paths: dict[str, Path], serve: Sequence[str] = SERVE) -> Any:
    import subprocess

    env = dict(os.environ)  # the server itself stays single-threaded: no thread pool exists when it forks
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p))
    with open(paths["log"], "ab") as log:
        return subprocess.Popen([sys.executable, *serve, str(paths["socket"])],
                                cwd=str(PACKAGE_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)


def connect_or_start(sock_path: Path, serve: Sequence[str] = SERVE) -> socket.socket | None:
    """A connection to the server listening at ``sock_path``, starting ``python SERVE... SOCKET`` (its log beside
    the socket) when none is; None if it cannot start."""
    paths = _paths_at(sock_path.with_suffix(""))
    sock = _connect(paths["socket"])
    if sock is not None:
        return sock
    proc = _start_server(paths, serve)
    deadline = time.monotonic() + START_TIMEOUT_S
    delay = 0.02
    while time.monotonic() < deadline:
        sock = _connect(paths["socket"])
        if sock is not None:
            return sock
        if proc.poll() not in (None, 0):  # 0: another client's server holds the lock; keep waiting for it
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return None


def _server_socket(key: str) -> socket.socket | None:
    """A connection to the running server for ``key``, starting one when there is none; None if it cannot start."""
    paths = _paths(key)
    sock = connect_or_start(paths["socket"])
    if sock is None:
        print(f"dpmbench.worker: note: no job server (see {paths['log']}); running in this process",
              file=sys.stderr)
    return sock


def _run_here(args: Sequence[str]) -> int:
    """Run the entry point in this process, as ``python -m`` would."""
    module = importlib.import_module(ENTRY_POINTS[args[0]])
    sys.argv = [args[0], *args[1:]]
    return int(module.main(list(args[1:])) or 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def run_client(args: Sequence[str]) -> int:
    """Run ``args`` (entry point name, then its arguments) through the server; the job's exit status."""
    try:
        sock = _server_socket(code_key()) if enabled() else None
    except PermissionError as exc:
        print(f"dpmbench.worker: note: {exc}; running in this process", file=sys.stderr)
        sock = None
    if sock is None:
        return _run_here(args)
    return run_through(sock, args)


def run_through(sock: socket.socket, args: Sequence[str]) -> int:
    """Run ``args`` (entry point name, then its arguments) through the server connected at ``sock`` (closed
    here) with this process's stdio, directory, environment and import path; the job's exit status, or this
    process dies by the job's signal."""
    with sock:
        _send_request(sock, args)

        def forward(signum: int, frame: Any) -> None:
            with contextlib.suppress(OSError):
                sock.send(bytes([signum]))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, forward)
        raw = _recv_exact(sock, _STATUS.size)
    if len(raw) < _STATUS.size:
        print("dpmbench.worker: error: the job server went away", file=sys.stderr)
        return 1
    status = _STATUS.unpack(raw)[0]
    if os.WIFSIGNALED(status):  # die the way the job died, so that the caller sees the same status
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


# ----------------------------------------------------------------------------------------------------- server
def _set_threads(env: dict[str, str]) -> None:
    """Thread counts of a fresh process with this environment: torch intra-op and every BLAS / OpenMP pool."""
    raw = env.get("OMP_NUM_THREADS", "").strip()
    try:
        n = max(1, int(raw)) if raw else len(os.sched_getaffinity(0))
    except ValueError:
        n = len(os.sched_getaffinity(0))
    import threadpoolctl
    import torch

    torch.set_num_threads(n)
    threadpoolctl.threadpool_limits(n)


def _watch_client(conn: socket.socket) -> None:
    """In the child: a signal byte from the client is raised here; the client's end closing means it died."""
    while True:
        try:
            data = conn.recv(16)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
            os.kill(os.getpid(), signal.SIGKILL)
            return
        for signum in data:
            os.kill(os.getpid(), signum)


def _child(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """The forked job: take over the client's stdio, directory, environment, path and arguments; run; exit."""
    import threading
    import traceback

    for fd, target in zip(fds, (0, 1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(int(request.get("umask", 0o022)))
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["path"]
    args = request["args"]
    sys.argv = [args[0], *args[1:]]
    code: int = 0
    try:
        _set_threads(request["env"])
        threading.Thread(target=_watch_client, args=(conn,), daemon=True).start()
        module = sys.modules[ENTRY_POINTS[args[0]]]
        code = int(module.main(list(args[1:])) or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001  (the job's traceback, as Python would print it)
        traceback.print_exc()
        code = 1
    _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if not msg:
        raise ConnectionAbortedError  # a probe (status / a client checking the server is up): nothing to do
    if len(msg) < _HEADER.size:
        raise OSError("short request")
    (size,) = _HEADER.unpack(msg[:_HEADER.size])
    body = msg[_HEADER.size:] + _recv_exact(conn, size - (len(msg) - _HEADER.size))
    return json.loads(body), list(fds)


class _Server:
    """Accepts jobs, forks one child per job, reports each child's wait status to its client."""

    def __init__(self, sock_path: Path) -> None:
        self.paths = _paths_at(sock_path.with_suffix(""))
        self.children: dict[int, tuple[socket.socket, str]] = {}
        self.by_command: dict[str, list[float]] = {}  # command -> [jobs, CPU seconds]
        self.jobs = 0
        self.job_cpu_s = 0.0
        self.started = time.time()

    def preload(self) -> None:
        for name in PRELOAD:
            importlib.import_module(name)
        for item in OPTIONAL_PRELOAD:
            module, _, attr = item.partition(":")
            with contextlib.suppress(ImportError, AttributeError):
                mod = importlib.import_module(module)
                if attr:
                    getattr(mod, attr)

    def write_stats(self) -> None:
        own = os.times()
        stats = {"pid": os.getpid(), "started": self.started, "jobs": self.jobs, "job_cpu_s": self.job_cpu_s,
                 "server_cpu_s": own.user + own.system, "running": len(self.children),
                 "by_command": {k: {"jobs": int(v[0]), "cpu_s": v[1]} for k, v in sorted(self.by_command.items())}}
        tmp = self.paths["stats"].with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, self.paths["stats"])

    def reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            cpu = usage.ru_utime + usage.ru_stime
            self.jobs += 1
            self.job_cpu_s += cpu
            conn, command = self.children.pop(pid, (None, ""))
            entry = self.by_command.setdefault(command, [0, 0.0])
            entry[0] += 1
            entry[1] += cpu
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(_STATUS.pack(status))
                conn.close()
            self.write_stats()

    def serve(self, idle_s: float) -> None:
        import fcntl
        import select

        lock = open(self.paths["lock"], "a")  # noqa: SIM115  (held for the server's life)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # another server for this code is starting or running
        self.preload()
        with contextlib.suppress(FileNotFoundError):
            self.paths["socket"].unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.paths["socket"]))
        listener.listen(64)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        stop = False

        def on_term(*_: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_term)
        self.write_stats()
        last = time.monotonic()
        try:
            while not stop:
                ready, _, _ = select.select([listener, wake_r], [], [], 1.0)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                self.reap()
                if self.children:
                    last = time.monotonic()
                if listener in ready:
                    conn, _ = listener.accept()
                    self.start_job(conn, listener, (wake_r, wake_w), lock)
                    last = time.monotonic()
                elif not self.children and time.monotonic() - last > idle_s:
                    break
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.paths["socket"].unlink()
            listener.close()
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            self.write_stats()

    def start_job(self, conn: socket.socket, listener: socket.socket, pipe: tuple[int, int], lock: Any) -> None:
        try:
            request, fds = _receive(conn)
            if request.get("args", [None])[0] not in ENTRY_POINTS:
                raise OSError(f"unknown entry point {request.get('args')!r}")
        except ConnectionAbortedError:
            conn.close()
            return
        except (OSError, ValueError) as exc:
            print(f"dpmbench.worker: bad request: {exc}", file=sys.stderr, flush=True)
            conn.close()
            return
        _flush()
        pid = os.fork()
        if pid == 0:  # the job
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            listener.close()
            lock.close()
            for fd in pipe:
                os.close(fd)
            for other, _ in self.children.values():
                other.close()
            try:
                _child(conn, request, fds)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        self.children[pid] = (conn, " ".join(request["args"][:2]))


def status(key: str | None = None) -> dict[str, Any] | None:
    """The statistics of the server for this code (jobs, their CPU seconds, its own), or None if none runs."""
    paths = _paths(key or code_key())
    sock = _connect(paths["socket"])
    if sock is None:
        return None
    sock.close()
    try:
        return json.loads(paths["stats"].read_text())
    except (OSError, ValueError):
        return None


def _stop_at(paths: dict[str, Path], timeout_s: float) -> dict[str, Any] | None:
    """SIGTERM the server whose statistics are at ``paths`` (if its socket is up), wait until its socket is gone;
    its final statistics (None if it never wrote any)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = int(json.loads(paths["stats"].read_text())["pid"])
        if paths["socket"].exists():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while paths["socket"].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        return json.loads(paths["stats"].read_text())
    except (OSError, ValueError):
        return None


def stop(key: str | None = None, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Stop the server for this code; its final statistics, or None if none was running."""
    if status(key) is None:
        return None
    return _stop_at(_paths(key or code_key()), timeout_s)


def stop_all(directory: Path | str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Stop every server with statistics in ``directory`` (whatever its code); their final statistics."""
    final = []
    for stats_path in sorted(Path(directory).glob("*.stats.json")):
        info = _stop_at(_paths_at(Path(str(stats_path)[: -len(".stats.json")])), timeout_s)
        if info is not None:
            final.append(info)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dpmbench.worker ENTRY ARGS...`` (a job), ``--serve SOCKET``, ``--status`` or ``--stop``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve"] and len(args) == 2:
        idle = float(os.environ.get(ENV_IDLE, DEFAULT_IDLE_S))
        _Server(Path(args[1])).serve(idle)
        return 0
    if args in (["--status"], ["--stop"]):
        info = status() if args == ["--status"] else stop()
        print(json.dumps(info) if info else "no job server running for this code")
        return 0
    if not args or args[0] not in ENTRY_POINTS:
        allowed = ", ".join(ENTRY_POINTS)
        print(f"dpmbench.worker: error: the first argument must be an entry point ({allowed}), "
              "--serve SOCKET, --status or --stop", file=sys.stderr)
        return 2
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
