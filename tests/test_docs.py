"""README.md and docs/*.md: every command shown in a ```bash / ```sh / ```console block is run here (the cheap ones)
or is run by a named test, Makefile target or CI script (the expensive ones), and every internal link resolves.

A command in the docs that is in neither table below fails `test_every_command_is_exercised`: give it a way to be
run, or leave it out of the docs. Commands are compared after joining backslash continuations, dropping trailing
`# comments` and collapsing blanks.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "console"}
TIMEOUT_S = 120
SMALL_GRID = "seed: 0\nmetrics: [rmse_exact]\nnfe: [5, 10]\nsolvers: [ddim]\nmodels:\n  gmm-2d: {num_samples: 64}\n"

# -- the commands and how each is exercised -------------------------------------------------------------------------

# Cheap commands, run by this test: command as shown -> (group, what is run instead, or None for the command itself).
# A group's commands run in document order in one bash process, in a directory of their own. `~/dpmbench` (the
# checkout) and `~/runs/first` (a directory of the user's) are placeholders of docs/workflow.md.
RUN: dict[str, tuple[str, str | None]] = {
    "dpmbench list solvers": ("tour", None),
    "dpmbench sample --model gmm-2d --solver dpm-solver++:order=2 --nfe 10 --num-samples 1000 --seed 0 --out s.npz":
        ("tour", None),
    "snakemake -n -s ~/dpmbench/Snakefile -d ~/runs/first --cores all --configfile ~/runs/first/my.yaml":
        ("outside", "snakemake -n -s {repo}/Snakefile -d {cwd}/runs/first --cores all --configfile "
                    "{cwd}/runs/first/my.yaml"),
    "dpmbench sample --model gmm-2d-flow --solver flow-euler:denoise_to_zero=true --nfe 28 --schedule "
    "diffusers-flow-sd3 --num-samples 1000 --seed 0 --out flow.npz": ("flow", None),
    'export PYTHONPATH="$PWD:$PYTHONPATH"': ("plugin", None),
    "DPMBENCH_PLUGINS=ab2 dpmbench list solvers": ("plugin", None),
    "DPMBENCH_PLUGINS=ab2 dpmbench sample --model gmm-2d --solver ab2 --nfe 10 --num-samples 1000 --seed 0 --out "
    "ab2.npz": ("plugin", None),
    # the full run is a whole-workflow run (the form of tests/test_workflow.py's); here: the plugin's config is
    # accepted with the plugin loaded and its DAG builds (a group of its own, run beside the others)
    "DPMBENCH_PLUGINS=ab2 snakemake --cores all --configfile my.yaml":
        ("plugin-grid", 'PYTHONPATH="$PWD:$PYTHONPATH" DPMBENCH_PLUGINS=ab2 snakemake -n -s {repo}/Snakefile -d . '
                        "--cores all --configfile my.yaml"),
}

# Expensive commands, run elsewhere: command as shown -> [(file, text the file must contain), ...].
COVERED: dict[str, list[tuple[str, str]]] = {
    "dpmbench recommend --model gmm-2d --nfe 10 results/": [
        ("tests/test_recommend.py", 'main(["recommend", "--model", "gmm-2d", "--nfe", "10", str(tmp_path / "res")])')],
    "make bench": [("Makefile", "bench: $(STAMP)\n\t$(BIN)/snakemake --cores all --scheduler greedy")],
    "make test": [(".ci/run", "step make test"), ("Makefile", "test: lint browser")],
    "make regress": [(".ci/run", "step make regress"), ("Makefile", "regress: regress-run")],
    "benchmarks/device_check.sh": [
        ("tests/test_device_check.py", 'str(ROOT / "benchmarks" / "device_check.sh"), "--cpu"')],
    "make rehearse": [(".ci/run", "step make rehearse"),
                      ("Makefile", "rehearse: $(STAMP)\n\t$(BIN)/python tests/rehearsal.py --work "
                                   "reports/rehearsal-run")],
    "make baseline": [("Makefile", "baseline: regress-run\n\tcp reports/regression/results.csv reports/baseline.csv")],
    "OMP_NUM_THREADS=1 dpmbench train digits-unet --out trained/digits-unet": [
        ("tests/test_digits_unet.py", 'run_cli(capsys, "train", ID, "--steps", "200", "--batch-size", "16", "--out"')],
    "OMP_NUM_THREADS=1 dpmbench train digits-flow --out trained/digits-flow": [
        ("tests/test_digits_flow.py", 'train_digits_unet(out, TrainConfig(steps=20, batch_size=8), progress=False, '
                                      'model=ID)'),
        ("dpmbench/cli/parser.py", 'tr.add_argument("model", choices=["digits-unet", "digits-flow"])')],
    "dpmbench search autodiffusion --model digits-unet --solver ddim --nfe 5 --name ad-ddim5-unet": [
        ("tests/test_claims_schedules.py", 'main(["search", "autodiffusion", *common, "--solver", "ddim", "--name"')],
    "dpmbench sample --model digits-unet --solver ddim --nfe 5 --schedule searched:ad-ddim5-unet --num-samples 500 "
    "--seed 0 --out ad.npz": [("tests/test_artifacts.py", '"--schedule", "searched:toy"')],
    "dpmbench report results/ --out reports/ --site reports/site": [
        ("workflows/report.smk", "dpmbench report {params.results} --out {params.out} --papers {params.papers:q}")],
    "dpmbench report run-a/results run-b/results --out merged/ --site merged/site": [
        ("tests/test_site.py", 'main(["report", str(runs.a), str(runs.b), "--out", str(out), "--site", str(site)])')],
    "pip install -e '.[slurm]'": [("Makefile", "pip install --quiet --disable-pip-version-check -e '.[test,slurm]'"),
                                  ("pyproject.toml", '"snakemake-executor-plugin-slurm==2.8.0"')],
    "snakemake -n --profile profiles/slurm --configfile my.yaml": [
        ("tests/test_cluster_fit.py", '"-n", "--snakefile", str(ROOT / "Snakefile")'),
        ("tests/test_cluster_fit.py", '"--profile", str(ROOT / "profiles" / "slurm"), "--configfile"')],
    "snakemake --profile profiles/slurm --configfile my.yaml": [
        ("tests/slurm/test_slurm.py", '["--profile", str(ROOT / "profiles" / "slurm")]'),
        ("Makefile", "-m slurm \\\n\t\ttests/slurm"), (".ci/run", "step make test-slurm")],
    "snakemake --unlock --profile profiles/slurm --configfile my.yaml": [
        ("tests/slurm/test_slurm.py", 'snakemake(wd, "--unlock")')],
    "snakemake -s ~/dpmbench/Snakefile -d ~/runs/first --cores all --configfile ~/runs/first/my.yaml": [
        ("tests/test_workflow.py", '[SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),')],
    "snakemake --cores all --configfile my_regression.yaml": [
        ("Makefile", "snakemake --cores all --scheduler greedy --quiet --configfile config/regression.yaml")],
    "dpmbench regress --baseline baseline.csv --results reports/regression/results.csv --config my_regression.yaml": [
        ("Makefile", "dpmbench regress --baseline reports/baseline.csv --results reports/regression/results.csv")],
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page (also inside list items: dedented by the fence's indent)."""
    out: list[Block] = []
    lines = page.read_text().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^( *)```([\w-]*)\s*$", lines[i])
        if m:
            indent, lang, start, body = len(m.group(1)), m.group(2), i, []
            i += 1
            while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
                i += 1
            out.append(Block(page, start + 1, lang, "\n".join(body)))
        i += 1
    return out


def commands(block: Block) -> list[str]:
    """The command lines of a shell block: continuations joined, comments dropped (``console``: the ``$ `` lines)."""
    text = re.sub(r"\\\n\s*", " ", block.text)
    out = []
    for line in text.split("\n"):
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(" ".join(line.split()))
    return out


def shown() -> list[tuple[str, Block]]:
    return [(cmd, b) for page in PAGES for b in blocks(page) if b.lang in SHELL_LANGS for cmd in commands(b)]


def test_every_command_is_exercised() -> None:
    cmds = shown()
    assert cmds, "no commands found: the extraction is broken"
    missing = [f"{b.page.relative_to(ROOT)}:{b.line}: {c}" for c, b in cmds if c not in RUN and c not in COVERED]
    assert not missing, "commands in the docs that no test runs (add them to RUN or COVERED):\n" + "\n".join(missing)
    listed = {c for c, _ in cmds}
    stale = sorted((set(RUN) | set(COVERED)) - listed)
    assert not stale, f"entries for commands the docs no longer show: {stale}"


@pytest.mark.parametrize("command", sorted(COVERED))
def test_expensive_command_is_run_elsewhere(command: str) -> None:
    for name, needle in COVERED[command]:
        path = ROOT / name
        assert path.is_file(), f"{command!r}: {name} does not exist"
        assert needle in path.read_text(), f"{command!r}: {name} no longer contains {needle!r}"


# -- running the cheap ones ----------------------------------------------------------------------------------------


def _block_with(page: str, lang: str, marker: str) -> str:
    found = [b.text for b in blocks(ROOT / page) if b.lang == lang and marker in b.text]
    assert len(found) == 1, f"{page}: expected one ```{lang} block containing {marker!r}, found {len(found)}"
    return found[0]


def _script(group: str, cwd: Path) -> str:
    lines = []
    for cmd, _ in shown():
        if cmd in RUN and RUN[cmd][0] == group:
            lines.append((RUN[cmd][1] or cmd).format(repo=ROOT, cwd=cwd))
    return "set -e\n" + "\n".join(lines) + "\n"


class _Runs:
    """The groups' scripts, started together (each a bash process of its own) and awaited on first use."""

    def __init__(self, base: Path):
        self.cwd: dict[str, Path] = {}
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.results: dict[str, tuple[int, str, str]] = {}
        self._lock = threading.Lock()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "PYTHONPATH": str(ROOT)}
        env.pop("DPMBENCH_PLUGINS", None)
        for group in sorted({g for g, _ in RUN.values()}):
            cwd = base / group
            cwd.mkdir(parents=True)
            if group.startswith("plugin"):
                (cwd / "ab2.py").write_text(_block_with("docs/contributing.md", "python", "class AB2("))
                (cwd / "my.yaml").write_text(_block_with("docs/contributing.md", "yaml", "ab2]"))
            if group == "outside":  # the user's grid: a small one
                (cwd / "runs" / "first").mkdir(parents=True)
                (cwd / "runs" / "first" / "my.yaml").write_text(SMALL_GRID)
            self.cwd[group] = cwd
            self.procs[group] = subprocess.Popen(["bash", "-c", _script(group, cwd)], cwd=cwd, env=env, text=True,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 start_new_session=True)  # its own process group: see _kill

    def result(self, group: str) -> tuple[int, str, str]:
        with self._lock:
            if group not in self.results:
                try:
                    out, err = self.procs[group].communicate(timeout=TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._kill(self.procs[group])
                    out, err = self.procs[group].communicate()
                    pytest.fail(f"the {group!r} commands took over {TIMEOUT_S} s:\n{out}\n{err}")
                self.results[group] = (self.procs[group].returncode, out, err)
        return self.results[group]

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        """The group's bash and the commands it started (which hold its pipes open)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                self._kill(proc)
                proc.communicate()


def _entry_point_registers_the_class_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/contributing.md: a solver exposed by the documented entry point is registered under its class's `name`
    (`ab2`), not under the entry point's (`my-ab2`)."""
    from dpmbench.solvers import base, plugins, registry

    (tmp_path / "ab2.py").write_text(_block_with("docs/contributing.md", "python", "class AB2("))
    toml = _block_with("docs/contributing.md", "toml", "dpmbench.solvers")
    group = re.search(r'\[project\.entry-points\."([\w.]+)"\]', toml)
    assert group and group.group(1) == plugins.ENTRY_POINT_GROUP
    name, value = (s.strip().strip('"') for s in toml.split("\n", 1)[1].strip().split("=", 1))
    dist = tmp_path / "my_solvers-0.1.dist-info"  # what installing a package with that entry point leaves
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-solvers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\n{name} = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    monkeypatch.setattr(plugins, "_loaded", set())
    sys.modules.pop("ab2", None)
    solvers = dict(base.SOLVERS)
    plugins._entry_points.cache_clear()
    try:
        names = registry.list_solvers()
        assert "ab2" in names and name not in names
        assert registry.get_solver("ab2:order=1").spec == "ab2:order=1"
    finally:
        plugins._entry_points.cache_clear()
        base.SOLVERS.clear()
        base.SOLVERS.update(solvers)
        sys.modules.pop("ab2", None)


def test_cheap_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap commands of the docs, run: their groups side by side (one test, so that a parallel test run does not
    run them twice), and meanwhile, in this process, the entry point of docs/contributing.md."""
    import numpy as np

    runs = _Runs(tmp_path / "groups")
    try:
        (tmp_path / "entry-point").mkdir()
        _entry_point_registers_the_class_name(tmp_path / "entry-point", monkeypatch)

        # README's tour
        rc, out, err = runs.result("tour")
        assert rc == 0, err
        assert "dpm-solver++:" in out
        assert (runs.cwd["tour"] / "s.npz").is_file()

        # docs/flow.md: SD3's grid on a flow oracle, diffusers' 28 steps in 28 evaluations
        rc, out, err = runs.result("flow")
        assert rc == 0, err
        with np.load(runs.cwd["flow"] / "flow.npz") as f:
            assert f["x"].shape == (1000, 2) and int(f["nfe"]) == 28 and np.isfinite(f["x"]).all()

        # docs/workflow.md: a grid from outside the checkout
        rc, out, err = runs.result("outside")
        assert rc == 0, err
        assert re.search(r"\breference\b", out + err) and re.search(r"\bsample\b", out + err)
        assert (runs.cwd["outside"] / "runs" / "first" / ".snakemake").is_dir()  # the working directory is -d's
        assert not (ROOT / "runs").exists()

        # docs/contributing.md's 'A solver as a plugin', literally: the AB2 file, DPMBENCH_PLUGINS, the listing, a
        # samples file, and a config naming the plugin's solver that the workflow accepts
        rc, out, err = runs.result("plugin")
        assert rc == 0, err
        assert "ab2: 2-step Adams-Bashforth on the data prediction" in out
        assert re.search(r"order=2\s+\[1, 2\]", out)
        rc, out, err = runs.result("plugin-grid")
        assert rc == 0, err
        assert "ab2" in out + err

        # the samples-file table of docs/contributing.md lists the keys `dpmbench sample` writes
        text = (ROOT / "docs" / "contributing.md").read_text().split("#### The samples file", 1)[1]
        table = re.findall(r"^\| `(\w+)` \|", text.split("\nOnly some files have", 1)[0], flags=re.M)
        with np.load(runs.cwd["plugin"] / "ab2.npz") as data:
            assert set(table) == set(data.files)
            assert str(data["solver_canonical"]) == "ab2" and int(data["nfe"]) == 10
    finally:
        runs.close()


# -- links -----------------------------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and _), blanks to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _prose(page: Path) -> str:
    """The page without its fenced blocks and inline code."""
    text, inside = [], False
    for line in page.read_text().split("\n"):
        if re.match(r"^ *```", line):
            inside = not inside
            continue
        if not inside:
            text.append(re.sub(r"`[^`]*`", "", line) if not line.lstrip().startswith("#") else line)
    return "\n".join(text)


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    for m in re.finditer(r"^#{1,6} (.+)$", _prose(page), flags=re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
    out = set()
    for slug, n in seen.items():
        out.add(slug)
        out.update(f"{slug}-{i}" for i in range(1, n))
    return out


def test_internal_links_resolve() -> None:
    bad = []
    for page in PAGES:
        for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", _prose(page)):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_readme_guides() -> None:
    """README.md: at most ~250 lines, the two commands first, a link to every docs page."""
    text = (ROOT / "README.md").read_text()
    assert len(text.split("\n")) <= 250
    first = blocks(ROOT / "README.md")[0]
    assert first.lang == "bash" and commands(first) == ["make bench", "make test"]
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in text, f"README.md does not link docs/{page.name}"


def test_layer_list_has_the_documented_form() -> None:
    """docs/architecture.md's layer list, which the layering test reads: `N. name: module, module, ...`, layers
    numbered from 1, dotted module names, each module in one layer."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    items = re.findall(r"^(\d+)\. ([^:\n]+): (.+)$", text, flags=re.M)
    assert [int(n) for n, _, _ in items] == list(range(1, len(items) + 1)) and len(items) >= 5
    modules = [m.strip() for _, _, mods in items for m in mods.split(",")]
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", m) for m in modules), modules
    assert len(modules) == len(set(modules))


def test_block_extraction(tmp_path: Path) -> None:
    """The extraction rules themselves: continuations, comments, console prompts, indented fences."""
    page = textwrap.dedent("""\
        1. step

           ```bash
           a --x 1 \\
               --y 2   # a comment
           # only a comment
           ```

        ```console
        $ b c
        output
        ```
        """)
    path = tmp_path / "page.md"
    path.write_text(page)
    assert [commands(b) for b in blocks(path)] == [["a --x 1 --y 2"], ["b c"]]
