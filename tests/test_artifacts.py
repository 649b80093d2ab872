"""Cached artifacts, the search registry, ``schedule=searched:NAME`` and the solver ``prepare`` hook."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from support import run_cli, run_forked

from dpmbench import load_model, sample
from dpmbench.artifacts import artifact_key, cached, code_version, keyed_path, load_named, save_named
from dpmbench.errors import DpmbenchError
from dpmbench.search import SEARCHES, register_search
from dpmbench.solvers.base import SOLVERS, Context, Option, register
from dpmbench.solvers.ddim import DDIM
from dpmbench.timesteps import timesteps


def _slow_compute(args: tuple[str, str]) -> Any:
    root, marker = args
    os.environ["DPMBENCH_ARTIFACTS"] = root

    def compute() -> Any:
        with open(marker, "a") as fh:  # one line per computation
            fh.write("computed\n")
        import time

        time.sleep(0.3)
        return {"value": 42}

    return cached("test-lock", ("same", 1), compute)


def test_an_artifact_s_arrays_live_in_its_npz_exact_and_checked(artifacts: Path) -> None:
    """Arrays among an artifact's top-level values go to a .npz beside its JSON (DPM-Solver-v3's data-sized b: no
    JSON of 10^8 numbers) and come back bit for bit; a missing, corrupt or foreign .npz makes the artifact absent."""
    import numpy as np

    from dpmbench.artifacts import sidecar

    calls: list[int] = []
    b = np.random.default_rng(0).standard_normal((5, 7)) * 1e-3

    def compute() -> dict[str, Any]:
        calls.append(1)
        return {"b": b.copy(), "l": [1.0, 2.0]}

    first = cached("toy-arrays", ("k", 1), compute)
    key = artifact_key("toy-arrays", "k", 1, code_version(_slow_compute))
    path = keyed_path("toy-arrays", key)
    stored = json.loads(path.read_text())
    assert stored["arrays"] == ["b"] and stored["data"] == {"l": [1.0, 2.0]} and sidecar(path).is_file()
    again = cached("toy-arrays", ("k", 1), compute)
    assert calls == [1] and again["b"].dtype == np.float64 and np.array_equal(again["b"], b)
    assert np.array_equal(first["b"], b) and again["l"] == [1.0, 2.0]
    sidecar(path).write_bytes(sidecar(path).read_bytes()[:40])  # truncated: recomputed
    assert np.array_equal(cached("toy-arrays", ("k", 1), compute)["b"], b) and calls == [1, 1]
    other = cached("toy-arrays", ("k", 2), compute)  # another artifact's arrays never stand in for this one's
    assert np.array_equal(other["b"], b) and len(calls) == 3
    sidecar(path).write_bytes(sidecar(keyed_path("toy-arrays", artifact_key(
        "toy-arrays", "k", 2, code_version(_slow_compute)))).read_bytes())
    cached("toy-arrays", ("k", 1), compute)
    assert len(calls) == 4
    sidecar(path).unlink()
    cached("toy-arrays", ("k", 1), compute)
    assert len(calls) == 5 and sidecar(path).is_file()


def test_cached_computes_once_and_recovers_from_corruption(artifacts: Path) -> None:
    calls: list[int] = []
    data = cached("toy", ("a", 1), lambda: calls.append(1) or {"x": [1.0, 2.0]})
    assert data == {"x": [1.0, 2.0]} and calls == [1]
    assert cached("toy", ("a", 1), lambda: calls.append(1) or {"x": 0}) == {"x": [1.0, 2.0]} and calls == [1]
    assert cached("toy", ("a", 2), lambda: calls.append(1) or {"x": 3}) == {"x": 3} and len(calls) == 2
    key = artifact_key("toy", "a", 1, code_version(_slow_compute))  # computed by lambdas of this module
    path = keyed_path("toy", key)
    path.write_text(path.read_text()[:10])  # truncated by a killed copy: recomputed, not trusted
    assert cached("toy", ("a", 1), lambda: calls.append(1) or {"x": [1.0, 2.0]}) == {"x": [1.0, 2.0]}
    assert len(calls) == 3 and json.loads(path.read_text())["data"] == {"x": [1.0, 2.0]}


def _slow_compute_to(args: tuple[str, str], out: str) -> None:
    Path(out).write_text(json.dumps(_slow_compute(args)))


def test_concurrent_processes_compute_a_shared_artifact_once(tmp_path: Path) -> None:
    root, marker = str(tmp_path / "artifacts"), str(tmp_path / "marker")
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    run_forked(_slow_compute_to, [((root, marker), str(o)) for o in outs], timeout=120)
    assert [json.loads(o.read_text()) for o in outs] == [{"value": 42}] * 3
    assert Path(marker).read_text().count("computed") == 1


def test_named_artifacts_and_searched_schedule(artifacts: Path) -> None:
    model = load_model("gmm-2d")
    sch = model.schedule
    grid = timesteps("time-quadratic", 5, sch, None, 1e-3)
    save_named("quad5", "timesteps", {"grids": {"5": grid.tolist()}})
    assert torch.equal(timesteps("searched:quad5", 5, sch, None, 1e-3), grid)
    with pytest.raises(DpmbenchError, match="it has grids for steps 5"):
        timesteps("searched:quad5", 6, sch, None, 1e-3)
    with pytest.raises(DpmbenchError, match="spans t"):
        timesteps("searched:quad5", 5, sch, None, 1e-2)
    with pytest.raises(DpmbenchError, match="unknown searched artifact 'nope'"):
        timesteps("searched:nope", 5, sch, None, 1e-3)
    with pytest.raises(DpmbenchError, match="invalid artifact name"):
        load_named("../etc")
    x_T = model.prior(64, seed=0)
    a = sample(model, "ddim", 5, x_T, schedule="searched:quad5", t_end=1e-3)
    b = sample(model, "ddim", 5, x_T, schedule="time-quadratic", t_end=1e-3)
    assert torch.equal(a, b)


@pytest.fixture
def toy_search() -> Any:
    @register_search("toy-power-grid", "t = t_end + (T - t_end) * u^p, p searched on a small list",
                     "test", produces="timesteps",
                     options={"powers": Option(str, "1,2,3", "candidate exponents")})
    def search(ctx: Context, solver: Any, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
        sch = ctx.model.schedule
        x_T = ctx.model.prior(200, seed=seed, dtype=torch.float64)
        ref = ctx.model.exact_solution(x_T, t_end=ctx.t_end)
        best = None
        for p in [float(v) for v in opts["powers"].split(",")]:
            u = torch.linspace(1, 0, ctx.nfe + 1, dtype=torch.float64) ** p
            ts = ctx.t_end + (sch.T - ctx.t_end) * u
            err = float(((sample(ctx.model, solver, ctx.nfe, x_T, schedule=ts, t_end=ctx.t_end) - ref) ** 2).mean())
            if best is None or err < best[0]:
                best = (err, p, ts.tolist())
        return {"grids": {str(ctx.nfe): best[2]}, "power": best[1], "mse": best[0]}

    yield search
    SEARCHES.pop("toy-power-grid")


def test_search_cli_saves_a_named_grid(capsys: Any, artifacts: Path, toy_search: Any, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "search", "toy-power-grid", "--model", "gmm-2d", "--nfe", "5,6",
                             "--solver", "ddim", "--t-end", "1e-3", "--name", "toy", "--out", str(tmp_path / "s.json"))
    assert code == 0, err
    grids = load_named("toy", "timesteps")["grids"]
    assert sorted(grids) == ["5", "6"]
    details = json.loads((tmp_path / "s.json").read_text())["data"]["details"]
    assert all(details[n]["power"] in (1.0, 2.0, 3.0) for n in ("5", "6"))
    code, out, err = run_cli(capsys, "sample", "--model", "gmm-2d", "--solver", "ddim", "--nfe", "6",
                             "--num-samples", "8", "--seed", "0", "--schedule", "searched:toy", "--t-end", "1e-3",
                             "--out", str(tmp_path / "x.npz"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "search", "toy-power-grid", "--model", "gmm-2d", "--nfe", "5",
                             "--solver", "ddim", "--set", "bogus=1", "--name", "toy2")
    assert code == 2 and "option of search 'toy-power-grid'" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "list", "schedules")
    assert "searched:toy" in out


def test_prepare_runs_once_outside_the_budget(artifacts: Path, capsys: Any, tmp_path: Path) -> None:
    @register
    class Prepared(DDIM):
        name = "test-prepared"
        needs_prepare = True
        calls = 0

        def prepare(self, ctx: Context) -> dict[str, Any]:
            def compute() -> Any:
                type(self).calls += 1
                ctx.model.eps(ctx.model.prior(4, seed=0), 0.5)  # model calls here are not counted
                return {"ok": True}

            self.data = cached("test-prepared", ctx.key(), compute)
            return {"ok": True}

    try:
        model = load_model("gmm-2d")
        x_T = model.prior(16, seed=0)
        assert torch.equal(sample(model, "test-prepared", 5, x_T), sample(model, "ddim", 5, x_T))
        sample(model, "test-prepared", 5, x_T)
        assert Prepared.calls == 1
        code, _, err = run_cli(capsys, "prepare", "--model", "gmm-2d", "--solver", "test-prepared", "--nfe", "5,6",
                               "--out", str(tmp_path / "p.json"))
        assert code == 0, err
        assert Prepared.calls == 2  # nfe 6 is new, nfe 5 was cached
        assert json.loads((tmp_path / "p.json").read_text())["prepared"] == {"5": {"ok": True}, "6": {"ok": True}}
    finally:
        SOLVERS.pop("test-prepared")
