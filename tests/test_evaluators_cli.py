"""CLI: `dpmbench reference --solver SPEC --nfe N` (high-NFE reference runs) and image/oracle metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import run_cli as run


def test_solver_reference_mse_ref_and_fdd(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    common = ["--model", "gmm-digits", "--num-samples", "64", "--seed", "3"]
    assert run(capsys, "reference", *common, "--solver", "dpm-solver++", "--nfe", "100",
               "--out", str(tmp_path / "ref100.npz"))[0] == 0
    assert run(capsys, "reference", *common, "--out", str(tmp_path / "exact.npz"))[0] == 0
    assert run(capsys, "sample", *common, "--solver", "dpm-solver++", "--nfe", "6,12",
               "--out", str(tmp_path / "s{nfe}.npz"))[0] == 0
    with np.load(tmp_path / "ref100.npz") as r, np.load(tmp_path / "exact.npz") as e:
        assert str(r["solver"]) == "dpm-solver++" and int(r["nfe"]) == 100 and str(e["solver"]) == "exact"
        assert r["x"].shape == e["x"].shape == (64, 1, 8, 8) and "target_mu" in r.files
        assert np.sqrt(((r["x"] - e["x"]) ** 2).mean()) < 1e-3  # the 100-NFE run is close to exact
    outs = [str(tmp_path / "m6.json"), str(tmp_path / "m12.json")]
    code, _, err = run(capsys, "evaluate", "--samples", str(tmp_path / "s6.npz"), str(tmp_path / "s12.npz"),
                       "--metrics", "mse_ref,fdd", "--reference", str(tmp_path / "ref100.npz"),
                       "--bootstraps", "20", "--out", *outs)
    assert code == 0, err
    m6, m12 = (json.loads(Path(o).read_text()) for o in outs)
    assert m12["metrics"]["mse_ref"] < m6["metrics"]["mse_ref"]
    assert m6["n_samples"] == 64 and m6["bootstraps"] == {"mse_ref": 20, "fdd": 20}
    for name in ("mse_ref", "fdd"):
        lo, hi = m6["ci"][name]
        assert lo <= m6["metrics"][name] <= hi
    code, _, err = run(capsys, "evaluate", "--samples", str(tmp_path / "s6.npz"), "--metrics", "rmse_exact",
                       "--reference", str(tmp_path / "ref100.npz"), "--out", str(tmp_path / "bad.json"))
    assert code == 2 and "not exact solutions" in err and not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("argv,msg", [
    (["--solver", "ddim"], "--solver and --nfe go together"),
    (["--solver", "ddim", "--nfe", "0"], "invalid --nfe '0'"),
    (["--solver", "nope", "--nfe", "10"], "invalid solver 'nope'"),
])
def test_reference_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], msg: str) -> None:
    code, _, err = run(capsys, "reference", "--model", "gmm-2d", "--num-samples", "4", "--seed", "0", *argv,
                       "--out", str(tmp_path / "r.npz"))
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r.npz").exists()


def test_fid_without_stats_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((4, 3, 8, 8), np.float32), model="images", seed=0)
    code, _, err = run(capsys, "evaluate", "--samples", str(tmp_path / "s.npz"), "--metrics", "fid",
                       "--out", str(tmp_path / "m.json"))
    assert code == 2 and "'fid' needs reference statistics" in err and not (tmp_path / "m.json").exists()
