"""The import graph, read from the code's AST, against the layer list of docs/architecture.md: no module imports a
higher layer, and no two modules import each other (directly or through others). Imports inside functions count: a
lazy import is a dependency all the same."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dpmbench", "evaluators")
LAYER_LINE = re.compile(r"^(\d+)\.\s+([\w ,-]+):\s+([\w., ]+)$")


def layers() -> dict[str, int]:
    """Module or package name -> layer number (1: the top), from docs/architecture.md's numbered list."""
    out: dict[str, int] = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        m = LAYER_LINE.match(line.strip())
        if m:
            for name in (n.strip() for n in m.group(3).split(",")):
                out[name] = int(m.group(1))
    return out


def modules() -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a.b import c`` names ``a.b.c`` where that is a module)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a function-less name: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def layer_of(name: str, table: dict[str, int]) -> int | None:
    """The layer of ``name``: a package's own ``__init__`` where it is listed as ``PACKAGE.__init__`` (the root
    package ``dpmbench`` is: it stands for its API, not for every module in it), else the longest listed prefix."""
    if f"{name}.__init__" in table:
        return table[f"{name}.__init__"]
    while name:
        if name in table:
            return table[name]
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    table = layers()
    assert table, "docs/architecture.md lists no layers"
    missing = [m for m in modules() if layer_of(m, table) is None]
    assert not missing, f"modules in no layer of docs/architecture.md: {missing}"


def test_no_import_climbs_a_layer():
    table = layers()
    upward = [f"{a} (layer {layer_of(a, table)}) imports {b} (layer {layer_of(b, table)})"
              for a, targets in graph().items() for b in sorted(targets)
              if (layer_of(b, table) or 0) < (layer_of(a, table) or 0)]
    assert not upward, "imports that climb:\n" + "\n".join(upward)


def test_no_import_circle():
    found = cycles(graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_a_circle_and_a_climb():
    """The checker itself, on a constructed graph and layer table: a circle and an upward import are found."""
    g = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert cycles(g) == [["p.a", "p.b", "p.c"]]
    assert cycles({"p.a": {"p.b"}, "p.b": set()}) == []
    table = {"p.a": 1, "p.b": 2, "q.__init__": 1}
    assert layer_of("p.b.x", table) == 2 and layer_of("r", table) is None
    assert layer_of("q", table) == 1 and layer_of("q.x", table) is None  # the root's __init__ only


@pytest.mark.parametrize("limit", [500])
def test_big_modules_are_explained(limit):
    """A module over ~500 lines has a one-line reason in docs/architecture.md's table of big modules."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    big = [str(p.relative_to(ROOT)) for p in modules().values() if len(p.read_text().splitlines()) > limit * 1.1]
    unexplained = [b for b in big if f"`{b}`" not in text]
    assert not unexplained, f"modules over {limit} lines with no reason in docs/architecture.md: {unexplained}"
