"""Imports run one way (DESIGN.md): the import graph of ``src/cmkd`` has no cycle, no core module imports a
recipe, and no recipe imports the entry layer (``cmkd.pipeline``, ``cmkd.cli``, ...).

The graph is read with ``ast`` from the source files, so function-local imports and
``importlib.import_module("cmkd....")`` string literals count as edges too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "cmkd"

# The entry layer sits above the recipes: it may import recipes, recipes may not import it.
ENTRY = {"cmkd.cli", "cmkd.fuzz", "cmkd.pipeline", "cmkd.pipeline_export", "cmkd.resolve", "cmkd.tune", "cmkd.select",
         "cmkd.__main__"}
# The registry: it names and loads the recipes, so it may import them (lazily, by name).
REGISTRY = {"cmkd.recipes"}
# Re-exports of the public API (``cmkd.run``, ``cmkd.list_recipes``) live in the package root.
ROOT = {"cmkd"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    """Absolute name of ``from <level dots><module> import ...`` written in module ``current``."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _known(name: str, modules: set[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``cmkd.a.b.func`` -> ``cmkd.a.b``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> set of cmkd modules it imports anywhere (top level, function-local or via importlib)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                # ``from . import x`` names a submodule x, or else an attribute of the package itself.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
                    if isinstance(node.args[0].value, str):
                        targets = [node.args[0].value]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("cmkd."):
                # a module named by a string, e.g. a registry's "cmkd.recipes.x" entry; a string whose only known
                # prefix is the package itself ("cmkd.sidecar", an ONNX metadata key) names no module
                hit = _known(node.value, modules)
                targets = [node.value] if hit and hit != "cmkd" else []
            for t in targets:
                hit = _known(t, modules)
                if hit and hit != mod:
                    graph[mod].add(hit)
    # A module with submodule imports also reaches its parent package's __init__ at import time; that is the
    # interpreter's business, not a design edge, so it is not added.
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_recipe(mod: str) -> bool:
    return mod.startswith("cmkd.recipes.")


def test_graph_is_read() -> None:
    g = import_graph()
    assert "cmkd.pipeline" in g and "cmkd.config" in g
    assert "cmkd.errors" in g["cmkd.config"]  # a plain top-level import is an edge
    assert "cmkd.recipes" in g["cmkd.pipeline"]  # a function-local import is an edge
    assert any(_is_recipe(t) for t in g["cmkd.recipes"])  # the registry names its recipes by string


def test_no_import_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_core_does_not_import_recipes() -> None:
    g = import_graph()
    bad = sorted(
        f"{m} -> {t}"
        for m, ts in g.items()
        if not _is_recipe(m) and m not in ENTRY | REGISTRY | ROOT
        for t in ts
        if _is_recipe(t)
    )
    assert not bad, f"core modules importing recipes: {bad}"


def test_recipes_do_not_import_entry_layer() -> None:
    g = import_graph()
    bad = sorted(f"{m} -> {t}" for m, ts in g.items() if _is_recipe(m) for t in ts if t in ENTRY | ROOT)
    assert not bad, f"recipes importing the entry layer: {bad}"


def test_config_is_at_the_bottom() -> None:
    g = import_graph()
    assert g["cmkd.config"] <= {"cmkd.errors", "cmkd.names", "cmkd.validate"}, sorted(g["cmkd.config"])
    # the input checks config uses sit at the bottom too (the torch-free runtime holds the npz reader they share)
    assert g["cmkd.validate"] <= {"cmkd.errors", "cmkd.runtime"}, sorted(g["cmkd.validate"])
    assert g["cmkd.runtime"] <= {"cmkd.errors"}, sorted(g["cmkd.runtime"])


@pytest.mark.parametrize("edge", [("cmkd.a", "cmkd.b"), ("cmkd.b", "cmkd.a")])
def test_cycle_detector_finds_a_cycle(edge: tuple[str, str]) -> None:
    g = {"cmkd.a": {"cmkd.b"}, "cmkd.b": {"cmkd.a"}, "cmkd.c": {"cmkd.a"}}
    assert _cycles(g) == [["cmkd.a", "cmkd.b"]]
    g[edge[0]].discard(edge[1])
    assert _cycles(g) == []
