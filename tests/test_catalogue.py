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

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "dpmbench/catalogue.json is stale: run `python -m dpmbench.catalogue` and commit the file"


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh process as a user starts it: no plugins, no saved artifacts. (The registries are
    compared in a fresh interpreter: in the test session other tests register toy solvers and searches, and import
    search modules in another order.)"""
    env = {k: v for k, v in os.environ.items() if k != catalogue.PLUGINS_ENV}
    env["DPMBENCH_CACHE"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


def _run_fresh(tmp_path: Path, code: str, timeout: float = 300) -> list[str]:
    """The stdout lines of ``python -c code`` in a fresh process (:func:`_fresh_env`), which must exit 0."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_fresh_env(tmp_path),
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


HEAVY = ("print('HEAVY', [m for m in ('torch', 'sklearn', 'dpmbench.solvers.base', 'dpmbench.models.base') "
         "if m in sys.modules])\n")  # the last line a listing's process prints: the heavy modules it imported
# (the packages dpmbench.solvers and dpmbench.models export their API lazily: their modules that need torch are named)


def test_catalogue_file_equals_the_live_registries(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dpmbench.catalogue", "--check"], capture_output=True, text=True,
                          env=_fresh_env(tmp_path), timeout=300)
    assert proc.returncode == 0, f"{REGENERATE}\n{proc.stderr}"


def test_plugin_settings_match_the_plugin_loader() -> None:
    from dpmbench.solvers import plugins

    assert (catalogue.PLUGINS_ENV, catalogue.PLUGINS_GROUP) == (plugins.ENV_VAR, plugins.ENTRY_POINT_GROUP)


def _listing_from_the_registries(what: str) -> str:
    """What ``dpmbench list WHAT`` printed before the catalogue existed, straight from the live registries (the
    machine-dependent lines, checkpoints and saved artifacts, are left to the listing itself)."""
    from dpmbench.models.registry import ORACLES, load_model
    from dpmbench.search import SEARCHES, list_searches
    from dpmbench.solvers.base import COMMON_OPTIONS, SOLVERS
    from dpmbench.solvers.registry import list_solvers
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


def test_listings_print_what_the_live_registries_print(tmp_path: Path) -> None:
    """In a fresh process: each listing from the file, the same listing from the live registries, and what the
    listing printed before the catalogue existed are the same text."""
    code = ("import json, sys\n"
            "from dpmbench import catalogue\n"
            "from dpmbench.cli import main\n"
            "from test_catalogue import _listing_from_the_registries\n"
            "def run(what):\n"
            "    import contextlib, io\n"
            "    buf = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        assert main(['list', what]) == 0\n"
            "    return buf.getvalue()\n"
            "whats = ('solvers', 'models', 'schedules', 'searches')\n"
            "from_file = {w: run(w) for w in whats}\n"
            "assert 'torch' not in sys.modules\n"
            "catalogue.plugins_present = lambda: True  # forces the live registries\n"
            "out = {w: [from_file[w], run(w), _listing_from_the_registries(w)] for w in whats}\n"
            "print(json.dumps(out))\n")
    for what, (from_file, live, before) in json.loads(_run_fresh(tmp_path, code)[-1]).items():
        assert from_file == live, what
        assert from_file.startswith(before) and len(from_file.splitlines()) >= 3, what  # + machine-dependent lines


def test_listings_start_without_torch(tmp_path: Path) -> None:
    """The mechanism behind `dpmbench list` answering in well under a second: no torch, no solver modules, no
    scikit-learn (seconds of imports on a small machine). Measured times are in benchmarks/RESULTS.md."""
    code = ("import sys; from dpmbench.cli import main\n"
            "for w in ('solvers', 'models', 'schedules', 'searches', 'metrics'):\n"
            "    assert main(['list', w]) == 0\n" + HEAVY)
    assert _run_fresh(tmp_path, code, timeout=120)[-1] == "HEAVY []"


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


def _all_specs() -> set[str]:
    """Every solver spec of the configs and papers files, and each family with each option at a value."""
    import yaml

    specs: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("solver", "solvers") or (k == "spec" and isinstance(v, str)):
                    for s in v if isinstance(v, list) else [v]:
                        if isinstance(s, str):
                            specs.add(s)
                        elif isinstance(s, dict) and isinstance(s.get("solver"), str):
                            specs.add(s["solver"])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in [*ROOT.glob("config/**/*.yaml"), *ROOT.glob("papers/*.yaml")]:
        walk(yaml.safe_load(path.read_text()))
    values = {"bool": ["true", "false", "1", "no"], "int": ["2", "3", "40"], "float": ["0.5", "1", "2.0", "inf"]}
    cat = catalogue.section("solvers")
    for fam in cat["families"]:
        for opt in [*cat["common_options"], *fam["options"]]:
            for v in values.get(opt["type"], opt["allowed"].split(", ")) + [opt["default"]]:
                specs.add(f"{fam['name']}:{opt['key']}={v}")
    return specs


def test_canonical_specs_without_torch_equal_the_solvers_own() -> None:
    """``catalogue.canonical_spec`` (torch-free, for `dpmbench list papers`) gives ``get_solver(spec).spec`` for
    every valid spec in the configs and papers files and for every option of every family (it converts, it does not
    validate: tests/test_papers.py validates the papers files' specs with get_solver); what it cannot convert goes
    through get_solver and its one-line error."""
    from dpmbench.errors import DpmbenchError
    from dpmbench.solvers.registry import get_solver

    specs = _all_specs()
    assert len(specs) > 300
    checked = 0
    for spec in sorted(specs):
        try:
            want = get_solver(spec).spec
        except DpmbenchError:
            continue
        assert catalogue.canonical_spec(spec) == want, spec
        checked += 1
    assert checked > 300
    assert catalogue.canonical_spec("dpm-solver++-hb:momentum=0.5,denoise_to_zero=true,order=2") == get_solver(
        "dpm-solver++-hb:momentum=0.5,denoise_to_zero=true,order=2").spec
    with pytest.raises(DpmbenchError, match="option of solver 'ddim'"):
        catalogue.canonical_spec("ddim:no_such_option=1")
    with pytest.raises(DpmbenchError, match="invalid option 'order'"):
        catalogue.canonical_spec("deis:order=two")


def test_list_papers_starts_without_torch_once_the_facts_are_cached(tmp_path: Path) -> None:
    """`dpmbench list papers` reads the papers files and configs with the catalogue's canonical specs; after the
    first run (which caches the configs' registry facts per code version) it imports no torch."""
    code = "import sys; from dpmbench.cli import main\nassert main(['list', 'papers']) == 0\n" + HEAVY
    outs = [_run_fresh(tmp_path, code) for _ in range(2)]
    assert outs[1][-1] == "HEAVY []"
    assert outs[0][:-1] == outs[1][:-1] and len(outs[1]) > 5
