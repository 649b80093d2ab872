"""dpmbench/catalogue.json: the built-in registries' descriptions that ``dpmbench list`` prints without importing
torch. The file must equal what the live registries give (regenerate with ``python -m dpmbench.catalogue``), the
listings must print exactly what they printed from the live registries, and plugins switch back to them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpmbench import catalogue
from dpmbench.cli import main

REGENERATE = "dpmbench/catalogue.json is stale: run `python -m dpmbench.catalogue` and commit the file"


def test_catalogue_file_equals_the_live_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(catalogue.PLUGINS_ENV, raising=False)
    assert not catalogue.plugins_present()  # the test environment has no solver plugins installed
    assert json.loads(catalogue.PATH.read_text(encoding="utf-8")) == catalogue.live(), REGENERATE
    assert catalogue.PATH.read_text(encoding="utf-8") == catalogue.render(), REGENERATE  # formatting too
    assert catalogue.main(["--check"]) == 0  # the module's own check agrees


def test_plugin_settings_match_the_plugin_loader() -> None:
    from dpmbench.solvers import plugins

    assert (catalogue.PLUGINS_ENV, catalogue.PLUGINS_GROUP) == (plugins.ENV_VAR, plugins.ENTRY_POINT_GROUP)


def _listing_from_the_registries(what: str) -> str:
    """What ``dpmbench list WHAT`` printed before the catalogue existed, straight from the live registries (the
    machine-dependent lines, checkpoints and saved artifacts, are left to the listing itself)."""
    from dpmbench.models.registry import ORACLES, load_model
    from dpmbench.search import SEARCHES, list_searches
    from dpmbench.solvers.base import COMMON_OPTIONS, SOLVERS, list_solvers
    from dpmbench.timesteps import ALL_KINDS

    def opt_line(key: str, opt: object) -> str:
        default = str(opt.default).lower() if isinstance(opt.default, bool) else opt.default  # type: ignore[attr-defined]
        return f"    {key}={default}  [{opt.describe()}]  {opt.doc}"  # type: ignore[attr-defined]

    lines: list[str] = []
    if what == "solvers":
        lines.append("options every solver accepts (NAME:key=value):")
        lines += [opt_line(k, o) for k, o in COMMON_OPTIONS.items()]
        for name in list_solvers():
            cls = SOLVERS[name]
            lines += [f"{name}: {cls.summary}", f"    source: {cls.source}"]
            lines += [opt_line(k, o) for k, o in cls.options.items() if COMMON_OPTIONS.get(k) is not o]
    elif what == "models":
        for name in ORACLES:
            m = load_model(name)
            cond = f", {m.num_classes} classes" if m.num_classes else ""
            lines.append(f"{name}: oracle, shape {tuple(m.shape)}{cond}; {getattr(m, 'description', '')}")
    elif what == "searches":
        for name in list_searches():
            s = SEARCHES[name]
            lines += [f"{name}: {s.summary} (produces {s.produces})", f"    source: {s.source}"]
            lines += [opt_line(k, o) for k, o in s.options.items()]
    else:
        lines += list(ALL_KINDS)
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("what", ["solvers", "models", "schedules", "searches"])
def test_listing_prints_what_the_live_registries_print(what: str, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(catalogue.PLUGINS_ENV, raising=False)
    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))  # no saved artifacts
    assert main(["list", what]) == 0
    from_file = capsys.readouterr().out
    assert from_file.startswith(_listing_from_the_registries(what))
    monkeypatch.setattr(catalogue, "plugins_present", lambda: True)  # forces the live registries
    assert main(["list", what]) == 0
    assert capsys.readouterr().out == from_file


def test_listings_start_without_torch(tmp_path: Path) -> None:
    """The mechanism behind `dpmbench list` answering in well under a second: no torch, no solver modules, no
    scikit-learn (seconds of imports on a small machine). Measured times are in benchmarks/RESULTS.md."""
    code = ("import sys; from dpmbench.cli import main\n"
            "for w in ('solvers', 'models', 'schedules', 'searches', 'metrics'):\n"
            "    assert main(['list', w]) == 0\n"
            "heavy = [m for m in ('torch', 'sklearn', 'dpmbench.solvers', 'dpmbench.models') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    env = {k: v for k, v in os.environ.items() if k != catalogue.PLUGINS_ENV}
    env["DPMBENCH_CACHE"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_plugins_switch_to_the_live_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(catalogue.PLUGINS_ENV, raising=False)
    calls: list[str] = []
    monkeypatch.setattr(catalogue, "live", lambda section=None: calls.append(section) or {"kinds": ["x"]})
    assert catalogue.section("schedules")["kinds"][0] == "time-uniform" and calls == []  # from the file
    monkeypatch.setenv(catalogue.PLUGINS_ENV, "some_plugin")
    assert catalogue.section("schedules") == {"kinds": ["x"]} and calls == ["schedules"]
    monkeypatch.delenv(catalogue.PLUGINS_ENV)
    monkeypatch.setattr(catalogue, "entry_points", lambda group: ["an entry point"] if group == "dpmbench.solvers"
                        else [])
    assert catalogue.section("schedules") == {"kinds": ["x"]} and calls == ["schedules", "schedules"]
    monkeypatch.setattr(catalogue, "entry_points", lambda group: [])
    monkeypatch.setattr(catalogue, "PATH", catalogue.PATH.with_name("no-such-catalogue.json"))
    assert catalogue.section("schedules") == {"kinds": ["x"]}  # a missing file: live, never an error
