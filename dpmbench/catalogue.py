"""The catalogue of the built-in registries that ``dpmbench list`` prints, read without importing torch.

``dpmbench list solvers|models|schedules|searches`` describe what is registered in code: the solver families and
their options, the oracle models, the timestep-schedule kinds, the searches. Building those registries imports
torch, every solver module and scikit-learn's datasets (seconds); their descriptions, however, change only when
the code does. ``dpmbench/catalogue.json`` holds them, generated from the live registries by

    python -m dpmbench.catalogue          # rewrite dpmbench/catalogue.json
    python -m dpmbench.catalogue --check  # exit 1 if it differs from the live registries

and tests/test_catalogue.py asserts that the file equals what the live registries give, so it cannot go stale.
What depends on the machine (checkpoint files present, saved named artifacts) is never in the file: ``list`` reads
it at run time. With solver plugins (``DPMBENCH_PLUGINS`` or entry points of the ``dpmbench.solvers`` group) the
registries are not only the built-in ones, so the live registries are used instead.

This module sits with the entry points: its ``live()`` imports the solvers, models, searches and timesteps.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from dpmbench.errors import DpmbenchError
from dpmbench.optvalues import fmt_value, parse_bool, split_spec

PATH = Path(__file__).with_name("catalogue.json")
SECTIONS = ("solvers", "models", "schedules", "searches")
PLUGINS_ENV = "DPMBENCH_PLUGINS"  # = dpmbench.solvers.plugins.ENV_VAR (not imported: that module is light, but
PLUGINS_GROUP = "dpmbench.solvers"  # its package is not); tests/test_catalogue.py checks they agree


def option_record(key: str, opt: Any) -> dict[str, str]:
    """One option as ``dpmbench list`` prints it: its key, default, allowed values and description."""
    return {"key": key, "type": opt.type.__name__, "default": fmt_value(opt.default), "allowed": opt.describe(),
            "doc": opt.doc}


def _solvers() -> dict[str, Any]:
    from dpmbench.solvers.base import COMMON_OPTIONS, SOLVERS
    from dpmbench.solvers.registry import list_solvers

    families = []
    for name in list_solvers():
        cls = SOLVERS[name]
        own = [option_record(k, o) for k, o in cls.options.items() if COMMON_OPTIONS.get(k) is not o]
        families.append({"name": name, "summary": cls.summary, "source": cls.source, "options": own,
                         "keys": list(cls.options)})
    return {"common_options": [option_record(k, o) for k, o in COMMON_OPTIONS.items()], "families": families}


def _models() -> dict[str, Any]:
    from dpmbench.models.registry import ORACLES, load_model

    oracles = []
    for name in ORACLES:
        m = load_model(name)
        oracles.append({"name": name, "shape": [int(v) for v in m.shape], "num_classes": m.num_classes,
                        "description": getattr(m, "description", "")})
    return {"oracles": oracles}


def _schedules() -> dict[str, Any]:
    from dpmbench.timesteps import ALL_KINDS

    return {"kinds": list(ALL_KINDS)}


def _searches() -> dict[str, Any]:
    from dpmbench.search import SEARCHES, list_searches

    out = []
    for name in list_searches():
        s = SEARCHES[name]
        out.append({"name": name, "summary": s.summary, "produces": s.produces, "source": s.source,
                    "options": [option_record(k, o) for k, o in s.options.items()]})
    return {"searches": out}


_LIVE = {"solvers": _solvers, "models": _models, "schedules": _schedules, "searches": _searches}


def live(section: str | None = None) -> dict[str, Any]:
    """The catalogue (or one section of it) built from the live registries (imports torch)."""
    if section is not None:
        return _LIVE[section]()
    return {name: _LIVE[name]() for name in SECTIONS}


def plugins_present() -> bool:
    """Whether solver plugins extend the built-in registry (then only the live registries are complete)."""
    if any(m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",")):
        return True
    return _has_entry_points(entry_points)


@functools.lru_cache(maxsize=2)
def _has_entry_points(finder: Any) -> bool:
    """Whether ``finder`` (importlib's ``entry_points``) lists solver plugins: it scans every installed
    distribution, so once per process (keyed by the finder, which tests replace)."""
    return bool(finder(group=PLUGINS_GROUP))


def section(name: str) -> dict[str, Any]:
    """One section of the catalogue: from ``catalogue.json`` (no torch), or live when plugins are present or the
    file is missing or unreadable."""
    if not plugins_present():
        try:
            return dict(_file(str(PATH))[name])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return live(name)


@functools.lru_cache(maxsize=2)
def _file(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


_PARSE = {"int": int, "float": float, "str": str}


def _parse(kind: str, raw: str) -> Any:
    """An option value from its spec text, as ``Option.parse`` converts it (types only; validation is
    ``get_solver``'s)."""
    return parse_bool(raw) if kind == "bool" else _PARSE[kind](raw)


def canonical_spec(spec: str) -> str:
    """``get_solver(spec).spec`` (the name and every option that differs from its default, in the solver's option
    order) read from the catalogue, without importing torch. It converts option values by type but does not check
    their ranges or combinations (``get_solver`` does); a spec it cannot convert (a plugin solver, an unknown option,
    a value of the wrong type) goes through ``get_solver``, so it gets its one-line error."""
    fams = {f["name"]: f for f in section("solvers")["families"]}
    try:
        name, raw_opts = split_spec(str(spec))
        fam = fams.get(name)
        if fam is None:
            raise KeyError(name)
        records = {o["key"]: o for o in section("solvers")["common_options"]}
        records.update({o["key"]: o for o in fam["options"]})
        given: dict[str, Any] = {}
        for key, raw in raw_opts.items():
            rec = records[key]
            value = _parse(rec["type"], raw)
            given[key] = value if value != _parse(rec["type"], rec["default"]) else None
    except (KeyError, ValueError, TypeError, DpmbenchError):
        from dpmbench.solvers.registry import get_solver

        return get_solver(spec).spec
    diff = [f"{k}={fmt_value(given[k])}" for k in fam["keys"] if given.get(k) is not None]
    return fam["name"] + (":" + ",".join(diff) if diff else "")


def render() -> str:
    """The catalogue file's text for the live registries (stable: sorted by registration order, 1-space JSON)."""
    return json.dumps(live(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m dpmbench.catalogue [--check]``: write (or check) ``dpmbench/catalogue.json``."""
    ap = argparse.ArgumentParser(prog="python -m dpmbench.catalogue", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from the live registries")
    args = ap.parse_args(argv)
    if plugins_present():
        print(f"error: solver plugins are loaded ({PLUGINS_ENV} or entry points of {PLUGINS_GROUP!r}); the catalogue "
              "describes the built-in registries only: run without them", file=sys.stderr)
        return 2
    text = render()
    if args.check:
        current = PATH.read_text(encoding="utf-8") if PATH.is_file() else ""
        if current != text:
            print(f"{PATH} is out of date: run python -m dpmbench.catalogue", file=sys.stderr)
            return 1
        print(f"{PATH} is up to date")
        return 0
    from dpmbench.io import atomic_write

    atomic_write(PATH, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
