"""Snakemake's own conventions: ``snakemake --lint`` finds nothing in the workflow, or each lint it finds is answered
by a comment ``# lint: <the lint's title, or its start> - why`` in the file it names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support import run_snakemake, shared_registry_cache

ROOT = Path(__file__).parents[1]
ANSWER = re.compile(r"#\s*lint:\s*(?P<title>.+?)\s+-\s+\S")


def answers(path: str) -> list[str]:
    """The lint titles a file answers (``# lint: TITLE - reason``)."""
    return [m.group("title") for m in ANSWER.finditer(Path(path).read_text())]


HEADER = re.compile(r"^Lints for (?:snakefile (?P<file>.+)|rule (?P<rule>\S+) \(line \d+, (?P<rulefile>.+)\)):$")
TITLE = re.compile(r"^    \* (?P<title>.+?):?$")


def parse(text: str) -> list[tuple[str, str, str]]:
    """(where, file, title) of every lint in ``snakemake --lint``'s text output (its ``json`` format is not passed
    on by the command line of Snakemake 9.27)."""
    out, where, path = [], "", ""
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            path = m.group("file") or m.group("rulefile")
            where = m.group("rule") or path
            continue
        t = TITLE.match(line)
        if t and path:
            out.append((where, path, t.group("title")))
    return out


def unanswered(lints: list[tuple[str, str, str]]) -> list[str]:
    return [f"{where}: {title}" for where, path, title in lints
            if not any(title.startswith(a) for a in answers(path))]


@pytest.mark.parametrize("configfile", [None, "config/reproductions/dpm-solver-v3.yaml"])
def test_snakemake_lint_is_clean_or_answered(tmp_path: Path, configfile: str | None) -> None:
    cmd = ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--lint"]
    if configfile:
        cmd += ["--configfile", str(ROOT / configfile)]
    env = {**os.environ, "DPMBENCH_CACHE": shared_registry_cache(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = run_snakemake(cmd, env, timeout=600)
    text = proc.stdout + proc.stderr
    lints = parse(text)
    assert proc.returncode == (1 if lints else 0), text[-3000:]
    assert lints or "good condition" in text, text[-3000:]
    assert not unanswered(lints), "\n".join(unanswered(lints))


def test_lints_are_parsed_and_answers_recognised(tmp_path: Path) -> None:
    f = tmp_path / "x.smk"
    f.write_text("rule a:\n    # lint: No log directive defined - its output is the log\n")
    text = (f"Lints for rule a (line 1, {f}):\n    * No log directive defined:\n      Without a log ...\n"
            f"    * Specify a conda environment or container for each rule.:\n\n"
            f"Lints for snakefile {f}:\n    * Mixed rules and functions in same snakefile.:\n")
    assert unanswered(parse(text)) == ["a: Specify a conda environment or container for each rule.",
                                       f"{f}: Mixed rules and functions in same snakefile."]
