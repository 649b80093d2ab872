"""Seeded fuzzing of the inputs: mutated configs into the grid builder and random command lines into ``dpmbench``.

Only clean outcomes are allowed: success with a valid result, or exit code 2 with ONE line on stderr naming what is
wrong (a config key, an option, a file) — never a traceback, never a partial output file. A small seeded generator
(no hypothesis): every failure prints the case that produced it, reproducible from its seed.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import re
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from dpmbench import load_model, sample
from dpmbench.cli import main as cli_main
from dpmbench.errors import DpmbenchError
from dpmbench.grid import build_grid
from dpmbench.io import load_npz, save_npz

ROOT = Path(__file__).parents[1]
# a one-line error names what is wrong: a config key, an --option, or a quoted value / file
NAMES_A_FIELD = re.compile(r"^dpmbench: error: (invalid [-\w.'\[\]]+|argument \S+|"
                           r"the following arguments are required: \S+|unrecognized arguments: \S+|.*'[^']+')")

# -- configs -----------------------------------------------------------------------------------------------------
WEIRD: list[Any] = [None, -1, 0, 1, 2, 1.5, -0.5, 1e308, float("nan"), float("inf"), True, False, "", "x", "none",
                    "ddim", "gmm-2d", "logsnr", "fd_true", "dpm-solver++:order=9", "unipc:variant=bh3", "ddim:eta",
                    "deis:order=3,order=2", "é☃", "a" * 300, [], [None], [1, 1], [0], ["ddim", "ddim"], [-3], {},
                    {"num_samples": 4}, {"a": 1}, [[1]], ["none", 7.5], [7.5, "7.5"], 10**20, 10**9]
KEYS = ["results_dir", "report_dir", "seed", "seeds", "t_end", "device", "batch_size", "samples_per_shard",
        "metrics", "nfe", "schedules", "guidance", "solvers", "models", "resources", "checkpoints", "num_samples",
        "num_sample", "nfes", "solver", "gpu", "mem_mb", "papers_dir", "regression"]
SEED_CONFIGS = [
    {"metrics": ["rmse_exact"], "nfe": [4], "solvers": ["ddim"], "models": {"gmm-2d": {"num_samples": 8}}},
    {"metrics": ["rmse_exact", "fd_true"], "nfe": [5, 10], "solvers": ["ddim", "dpm-solver++:order=2", "unipc"],
     "schedules": ["logsnr", "karras"], "guidance": ["none", 7.5], "seeds": [0, 1], "samples_per_shard": 4,
     "models": {"gmm-2d": {"num_samples": 8, "nfe": [12], "solvers": ["pndm", "heun"]},
                "gmm-digits": {"num_samples": 4, "guidance": ["none"]}},
     "resources": {"sample": {"mem_mb": 100, "gpu": 0}}},
    yaml.safe_load((ROOT / "config" / "default.yaml").read_text()),
    yaml.safe_load((ROOT / "config" / "regression.yaml").read_text()),
]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys / indices) into a nested config."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _mutate_string(rng: random.Random, s: str) -> str:
    ops = [lambda: s[: rng.randrange(len(s) + 1)], lambda: s + rng.choice([":", ",", "=", "x", ":order=", " "]),
           lambda: s.replace(rng.choice(["=", ":", ",", "-", "r"]), rng.choice(["", "==", ";", "_"]), 1),
           lambda: s.upper(), lambda: rng.choice(["", " ", s * 2])]
    return rng.choice(ops)()


def mutate_config(rng: random.Random, config: dict[str, Any]) -> dict[str, Any]:
    """1-3 random edits: delete, replace, insert, duplicate or garble something anywhere in the config."""
    c = copy.deepcopy(config)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(c) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, last = _get(c, path[:-1]), path[-1]
        op = rng.randrange(5)
        if op == 0:
            del parent[last]
        elif op == 1:
            parent[last] = copy.deepcopy(rng.choice(WEIRD))
        elif op == 2:
            target = rng.choice([c, *[_get(c, p) for p in _paths(c) if p and isinstance(_get(c, p), dict)]])
            target[rng.choice(KEYS)] = copy.deepcopy(rng.choice(WEIRD))
        elif op == 3 and isinstance(parent[last], list) and parent[last]:
            parent[last].append(copy.deepcopy(rng.choice(parent[last])))
        elif isinstance(parent[last], str):
            parent[last] = _mutate_string(rng, parent[last])
        elif isinstance(parent[last], int | float) and not isinstance(parent[last], bool):
            parent[last] = rng.choice([-parent[last], parent[last] * 10**6, 0, parent[last] + 0.5])
    return c


def test_fuzz_config_validation(tmp_path: Path) -> None:
    """~250 mutated configs: build_grid either succeeds (and the grid expands) or raises ONE line naming a key;
    the CLI validator says the same with exit code 2."""
    rng = random.Random(20261123)
    failures, outcomes = [], {"ok": 0, "error": 0}
    for case in range(260):
        config = mutate_config(rng, rng.choice(SEED_CONFIGS))
        try:
            grid = build_grid(config)
            assert grid.cells() and all(grid.shards_of(m) for m in grid.models)
            outcomes["ok"] += 1
        except DpmbenchError as exc:
            msg = str(exc)
            if "\n" in msg or not msg.startswith("invalid config key '"):
                failures.append((case, config, f"bad message: {msg!r}"))
            outcomes["error"] += 1
        except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
            failures.append((case, config, traceback.format_exc(limit=3)))
        if case % 20 == 0 and not failures:  # the command-line validator, on some of the cases
            path = tmp_path / f"c{case}.yaml"
            path.write_text(yaml.safe_dump(config, allow_unicode=True))
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = cli_main(["validate", str(path)])
            lines = err.getvalue().splitlines()
            if not (code == 0 and not lines) and not (code == 2 and len(lines) == 1 and NAMES_A_FIELD.match(lines[0])):
                failures.append((case, config, f"validate: exit {code}, stderr {err.getvalue()!r}"))
    assert not failures, "\n\n".join(f"case {c}: {cfg!r}\n{why}" for c, cfg, why in failures[:5])
    assert outcomes["ok"] >= 20 and outcomes["error"] >= 100, outcomes  # both branches were exercised


# -- command lines -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs for the command lines: good and bad samples, references, results, CSVs, tolerance files."""
    d = tmp_path_factory.mktemp("fuzz-inputs")
    m = load_model("gmm-2d")
    x_T = m.prior(16, seed=0)
    x = sample(m, "ddim", 5, x_T)
    meta = {"model": "gmm-2d", "seed": 0, "num_samples": 16, "start": 0, "guidance": math.nan, "t_end": 1e-3,
            "labels": np.zeros(0, np.int64)}
    save_npz(d / "s.npz", x=x.numpy(), nfe=5, solver="ddim", solver_canonical="ddim", schedule="logsnr", wall_s=0.1,
             nfe_used=5, stochastic=False, **meta)
    save_npz(d / "nan.npz", x=np.full((16, 2), np.nan, np.float32), nfe=5, solver="x", schedule="logsnr",
             stochastic=False, **meta)
    mu, cov = m.data_moments(None, t=1e-3)
    ref = sample(m, "dpm-solver++", 50, x_T.to(torch.float64))
    save_npz(d / "ref.npz", x=ref.numpy(), solver="exact", nfe=-1, schedule="adaptive", target_mu=mu.numpy(),
             target_cov=cov.numpy(), **meta)
    save_npz(d / "ref_other.npz", x=ref.numpy(), **{**meta, "seed": 3})
    data = (d / "s.npz").read_bytes()
    (d / "trunc.npz").write_bytes(data[: len(data) // 2])
    (d / "text.npz").write_text("not an npz")
    np.savez(d / "nox.npz", y=np.zeros(3))
    res = d / "results"
    res.mkdir()
    rec = {"model": "gmm-2d", "solver": "ddim", "nfe": 5, "schedule": "logsnr", "guidance": None, "n_samples": 16,
           "metrics": {"fd_true": 0.5, "rmse_exact": None}, "ci": {"fd_true": [0.4, 0.6]}, "wall_s": 0.1}
    (res / "a.json").write_text(json.dumps(rec))
    (res / "b.json").write_text(json.dumps({**rec, "nfe": 10, "metrics": {"fd_true": 0.2}}))
    bad = d / "results_bad"
    bad.mkdir()
    (bad / "a.json").write_text(json.dumps({**rec, "nfe": "five"}))
    (bad / "b.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "model"}))
    trunc = d / "results_trunc"
    trunc.mkdir()
    (trunc / "a.json").write_text(json.dumps(rec)[:30])
    (d / "empty_dir").mkdir()
    header = "model,solver,nfe,schedule,guidance,metric,value,ci_low,ci_high,n_samples,wall_s\n"
    (d / "base.csv").write_text(header + "gmm-2d,ddim,5,logsnr,none,fd_true,0.5,0.4,0.6,16,0.1\n")
    (d / "worse.csv").write_text(header + "gmm-2d,ddim,5,logsnr,none,fd_true,0.9,0.8,1.0,16,0.1\n")
    (d / "textval.csv").write_text(header + "gmm-2d,ddim,5,logsnr,none,fd_true,abc,,,16,0.1\n")
    (d / "dup.csv").write_text(header + "gmm-2d,ddim,5,logsnr,none,fd_true,0.5,,,16,0.1\n" * 2)
    (d / "nocols.csv").write_text("a,b\n1,2\n")
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(bytes(range(256)))
    (d / "tol.yaml").write_text("regression:\n  tolerances:\n    fd_true: {rtol: 0.1, stochastic: true}\n")
    (d / "tol_badkey.yaml").write_text("regression:\n  tolerances:\n    fd_true: {rtoll: 0.1}\n")
    (d / "tol_badval.yaml").write_text("regression:\n  tolerances:\n    fd_true: {rtol: abc}\n")
    (d / "tol_list.yaml").write_text("- 1\n- 2\n")
    (d / "tol_notmap.yaml").write_text("regression:\n  tolerances:\n    fd_true: 3\n")
    (d / "tol_broken.yaml").write_text("regression: [unclosed\n")
    papers = d / "papers_bad"
    papers.mkdir()
    (papers / "p.yaml").write_text("paper: X\nentries:\n  - {table: 1}\n")
    return {p.name: str(p) for p in d.iterdir()}


def _pick(rng: random.Random, good: list[str], bad: list[str], p_good: float = 0.88) -> str:
    return rng.choice(good) if rng.random() < p_good else rng.choice(bad)


def random_argv(rng: random.Random, f: dict[str, str], out_dir: Path) -> tuple[list[str], Path | None]:
    """A random command line (mostly plausible, sometimes broken) and the output file it would write."""
    cmd = rng.choice(["sample"] * 6 + ["evaluate"] * 4 + ["report"] + ["regress"] * 2 + ["list", "bogus", ""])
    out: Path | None = None
    opts: list[tuple[str, str | None]] = []
    if cmd == "sample":
        out = out_dir / rng.choice(["s.npz", "sub/dir/s.npz", "s{nfe}.npz"])
        opts = [("--model", _pick(rng, ["gmm-2d"] * 8 + ["gmm-digits", "digits-empirical"], ["gmm", "", "GMM-2D"])),
                ("--solver", _pick(rng, ["ddim", "dpm-solver++:order=2", "unipc:order=3", "heun", "pndm", "ddpm",
                                         "dpm-solver:method=adaptive", "deis:order=3", "sa-solver", "ipndm"],
                                   ["ddim:order=2", "dpm-solver++:order=4", "unipc:variant=x", "nope", ":", "ddim:",
                                    "dpm-solver++:order=2,order=3", "heun:x=1"])),
                ("--nfe", _pick(rng, ["5", "8", "12", "5,8"], ["0", "-1", "x", "", "1", "2", ",", "1e3", "5,,x"])),
                ("--num-samples", _pick(rng, ["1", "7", "16"], ["0", "-2", "a", "1.5"])),
                ("--seed", _pick(rng, ["0", "3"], ["-1", "x"])),
                ("--schedule", _pick(rng, ["logsnr", "karras", "time-uniform", "ays-sd15"], ["LOGSNR", "custom", "x"])),
                ("--guidance", _pick(rng, ["1.0", "7.5"], ["nan", "inf", "-3", "x", "1e6", "0"], 0.5)),
                ("--t-end", _pick(rng, ["0.001", "0.01"], ["0", "-1", "1", "2", "nan", "1e-12"], 0.6)),
                ("--batch-size", _pick(rng, ["3", "100"], ["0", "x"])),
                ("--start", _pick(rng, ["0", "5"], ["-1"])), ("--dtype", _pick(rng, ["float64"], ["float16"])),
                ("--device", _pick(rng, ["cpu"], ["cuda", "tpu"])), ("--out", str(out))]
        keep = {"--model", "--solver", "--nfe", "--num-samples", "--seed", "--out"}
    elif cmd == "evaluate":
        out = out_dir / "m.json"
        samples = _pick(rng, [f["s.npz"]], [f["nan.npz"], f["trunc.npz"], f["text.npz"], f["nox.npz"],
                                             str(out_dir / "missing.npz"), f["base.csv"]], 0.6)
        metrics = ",".join(rng.sample(["rmse_exact", "fd_true", "mse_ref", "sw2_true", "loglik_true", "fdd", "kdd",
                                       "bogus", "", "fid"], rng.randint(1, 3)))
        opts = [("--samples", samples), ("--metrics", metrics),
                ("--reference", _pick(rng, [f["ref.npz"]], [f["ref_other.npz"], f["trunc.npz"], f["s.npz"],
                                                             str(out_dir / "nope.npz")], 0.7)),
                ("--bootstraps", _pick(rng, ["0", "5", "20"], ["-1", "x"])),
                ("--fid-backend", _pick(rng, ["torch-fidelity", "clean-fid"], ["tf"])),
                ("--eval-batch-size", _pick(rng, ["8"], ["0"])), ("--out", str(out))]
        keep = {"--samples", "--metrics", "--out"}
    elif cmd == "report":
        out = out_dir / "rep" / "results.csv"
        opts = [("", _pick(rng, [f["results"]], [f["results_bad"], f["results_trunc"], f["empty_dir"], f["s.npz"],
                                                  str(out_dir / "nodir")], 0.5)),
                ("--out", str(out.parent)), ("--papers", _pick(rng, [str(ROOT / "papers")], [f["papers_bad"]], 0.7))]
        keep = {"", "--out"}
    elif cmd == "regress":
        csvs = ["base.csv", "worse.csv", "textval.csv", "dup.csv", "nocols.csv", "empty.csv", "binary.csv"]
        opts = [("--baseline", f[rng.choice(csvs)]), ("--results", f[rng.choice(csvs)]),
                ("--config", f[rng.choice(["tol.yaml", "tol_badkey.yaml", "tol_badval.yaml", "tol_list.yaml",
                                           "tol_notmap.yaml", "tol_broken.yaml", "base.csv"])])]
        keep = {"--baseline", "--results"}
    elif cmd == "list":
        opts = [("", _pick(rng, ["solvers", "metrics", "schedules"], ["solver", ""]))]  # models: slow, in test_cli
        keep = {""}
    else:
        keep = set()
    argv = [cmd] if cmd else []
    for name, value in opts:
        if (name in keep and rng.random() < 0.93) or (name not in keep and rng.random() < 0.4):
            argv += ([name] if name else []) + ([value] if value is not None else [])
    if rng.random() < 0.05:
        argv.append(rng.choice(["--unknown", "--nfe", "extra", "--out"]))
    return argv, out


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _valid_result(cmd: str, argv: list[str], out: Path | None, stdout: str) -> str:
    """Empty if the successful command's result is valid, else why not."""
    if cmd == "sample":
        nfes = argv[argv.index("--nfe") + 1].split(",")
        n = int(argv[argv.index("--num-samples") + 1])
        for nfe in nfes:
            path = Path(str(out).replace("{nfe}", nfe))
            x = load_npz(path)["x"]
            if len(x) != n:
                return f"{path}: {len(x)} samples, expected {n}"
    elif cmd == "evaluate":
        rec = json.loads(out.read_text())
        if not isinstance(rec.get("metrics"), dict) or rec.get("status") not in ("ok", "diverged"):
            return f"bad metrics file {rec}"
    elif cmd == "report":
        if not out.is_file() or not (out.parent / "leaderboard.md").is_file():
            return "report files missing"
    elif cmd in ("list", "regress") and not stdout.strip():
        return "nothing printed"
    return ""


def test_fuzz_command_line(files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~250 random command lines: exit 0 with a valid result file (or exit 1 from regress: worse), or exit 2 with
    one line naming the field; never a traceback, never an output or temporary file left by a failed command."""
    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")  # no metric weights are downloaded
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (restored below)
    try:
        _fuzz_command_line(files, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _fuzz_command_line(files: dict[str, str], tmp_path: Path) -> None:
    rng = random.Random(1123)
    failures, codes = [], {}
    for case in range(250):
        case_dir = tmp_path / f"case{case}"
        case_dir.mkdir()
        argv, out = random_argv(rng, files, case_dir)
        cmd = argv[0] if argv else ""
        try:
            code, stdout, stderr = _run(argv)
        except Exception:  # noqa: BLE001 - what the fuzzer looks for
            failures.append((case, argv, traceback.format_exc(limit=4)))
            continue
        codes[code] = codes.get(code, 0) + 1
        lines = stderr.strip().splitlines()
        leftovers = [p for p in case_dir.rglob("*") if p.is_file()]
        if code == 0 or (code == 1 and cmd == "regress"):
            why = _valid_result(cmd, argv, out, stdout) if code == 0 else ""
            if why or "Traceback" in stderr:
                failures.append((case, argv, why or stderr))
        elif code == 2:
            if len(lines) != 1 or not NAMES_A_FIELD.match(lines[0]):
                failures.append((case, argv, f"stderr not one line naming a field: {stderr!r}"))
            if leftovers:
                failures.append((case, argv, f"files left by a failed command: {leftovers}"))
        else:
            failures.append((case, argv, f"exit {code}: {stderr!r}"))
    assert not failures, "\n\n".join(f"case {c}: dpmbench {' '.join(a)}\n{why}" for c, a, why in failures[:6])
    assert codes.get(0, 0) >= 40 and codes.get(2, 0) >= 80, codes  # both branches were exercised
