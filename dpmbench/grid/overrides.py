"""Per-model and per-NFE settings of a config.

``models.<m>.solver_options: {SOLVER: {option: value}}`` sets options of every spec of solver ``SOLVER`` that the
model runs, so that a solver is listed once even when one model needs other options (an option the spec already
sets is replaced in place, others are appended in the order given: ``dpm-solver-v3`` with ``{ems_samples: 64}`` is
``dpm-solver-v3:ems_samples=64``).

``nfe_overrides: [{nfe: [15, 20], t_end: 0.0001}, ...]`` (top level, or per model, which replaces the top level's)
gives NFE budgets their own settings — the end time a paper uses above some NFE — in one config. The NFEs of a
model with equal settings form one *NFE group*: one sample job and one metrics job per group (their rules are
static patterns, one per distinct NFE list).

An entry of a ``solvers`` list is a spec, or a mapping that gives one solver its own protocol: ``{solver: SPEC,
nfe_options: [{nfe: [9, 10], options: {corrector: false}}], schedules: [karras], guidance: [7.5]}`` — options that
change with the NFE budget (the official scripts' per-NFE settings), and schedules / guidance scales that replace the
model's for this solver. The cell keeps the entry's spec as its name (its directory); the spec run at an NFE is the
entry's with that NFE's options set, and NFEs whose specs differ fall in different NFE groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpmbench.grid.schema import bad
from dpmbench.optvalues import fmt_value, split_spec

NFE_SETTINGS = ("t_end",)  # what an nfe_overrides entry may set


def with_options(spec: str, options: dict[str, Any]) -> str:
    """``spec`` with ``options`` set (replacing an option it names, appending the others)."""
    name, opts = split_spec(spec)
    opts.update({k: fmt_value(v) for k, v in options.items()})
    return name if not opts else f"{name}:{','.join(f'{k}={v}' for k, v in opts.items())}"


def apply_solver_options(specs: list[str], solver_options: dict[str, dict[str, Any]], where: str) -> list[str]:
    """The model's solver specs with its ``solver_options`` applied; a solver name the model does not run is an
    error naming the key."""
    names = [s.partition(":")[0].strip() for s in specs]
    for solver in solver_options:
        if solver not in names:
            raise bad(f"{where}.{solver}", f"the model runs no solver {solver!r}; its solvers: {', '.join(names)}")
    return [with_options(s, solver_options[n]) if n in solver_options else s for s, n in zip(specs, names, strict=True)]


def _by_nfe(entries: list[dict[str, Any]], nfes: list[int], where: str) -> list[tuple[int, dict[str, Any]]]:
    """``(nfe, entry)`` for every NFE an entry's ``nfe`` list names; an NFE the model does not run, or one named by
    two entries, is an error naming the entry."""
    out: list[tuple[int, dict[str, Any]]] = []
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        for n in entry["nfe"]:
            if n not in nfes:
                raise bad(f"{where}[{i}].nfe", f"{n} is not an nfe of the model; its nfe: {sorted(nfes)}")
            if n in seen:
                raise bad(f"{where}[{i}].nfe", f"{n} is also in {where}[{seen[n]}]")
            seen[n] = i
            out.append((n, entry))
    return out


def nfe_settings(nfes: list[int], overrides: list[dict[str, Any]], base: dict[str, Any], where: str
                 ) -> dict[int, dict[str, Any]]:
    """The settings of every NFE: ``base`` updated by the ``nfe_overrides`` entry naming it (at most one)."""
    out = {n: dict(base) for n in nfes}
    for n, entry in _by_nfe(overrides, nfes, where):
        out[n].update({k: entry[k] for k in NFE_SETTINGS if k in entry})
    return out


def nfe_groups(settings: dict[int, dict[str, Any]]) -> list[list[int]]:
    """The NFEs (sorted) grouped by equal settings, groups in the order of their smallest NFE."""
    groups: dict[str, list[int]] = {}
    for n in sorted(settings):
        groups.setdefault(repr(sorted(settings[n].items())), []).append(n)
    return list(groups.values())


@dataclass
class SolverEntry:
    """One entry of a ``solvers`` list: its spec and, for a mapping entry, its own schedules, guidance scales (None:
    the model's) and per-NFE options."""

    spec: str
    schedules: list[str] | None = None
    guidance: list[Any] | None = None
    nfe_options: list[dict[str, Any]] = field(default_factory=list)


def solver_entries(items: list[Any]) -> list[SolverEntry]:
    """The entries of a (schema-checked) ``solvers`` list: a spec string or a mapping with ``solver``."""
    return [SolverEntry(str(i)) if not isinstance(i, dict) else
            SolverEntry(str(i["solver"]), i.get("schedules"), i.get("guidance"), list(i.get("nfe_options", [])))
            for i in items]


def nfe_specs(spec: str, nfe_options: list[dict[str, Any]], nfes: list[int], where: str) -> dict[int, str]:
    """The spec run at each NFE that an ``nfe_options`` item names (``spec`` with its options set); an NFE the model
    does not run, or one named by two items, is an error naming the item."""
    return {n: with_options(spec, item["options"]) for n, item in _by_nfe(nfe_options, nfes, where)}
