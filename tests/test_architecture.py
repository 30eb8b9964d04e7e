"""Imports run one way: the layers are declared once, as import-linter contracts in pyproject.toml, and checked
here; the import graph of ``src/cmkd`` has no cycle; the package top holds only entry points and shared leaves.

The graph is read with ``ast`` from the source files, so function-local imports and
``importlib.import_module("cmkd....")`` string literals count as edges too."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "cmkd"

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
    assert "cmkd.pipeline.core" in g and "cmkd.config" in g
    assert "cmkd.errors" in g["cmkd.config"]  # a plain top-level import is an edge
    assert "cmkd.recipes" in g["cmkd.pipeline.core"]  # a function-local import is an edge
    assert any(_is_recipe(t) for t in g["cmkd.recipes"])  # the registry names its recipes by string


def test_no_import_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_import_linter_contracts() -> None:
    """The layers and the torch-free runtime, as declared once in pyproject.toml ([tool.importlinter])."""
    from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

    root = SRC.parent
    cwd = os.getcwd()
    try:
        os.chdir(root)
        ok = lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    assert ok == EXIT_STATUS_SUCCESS, "an import breaks a contract in pyproject.toml: run `lint-imports`"


def test_package_top_holds_only_entry_points_and_leaves() -> None:
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 12, top
    subpackages = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file())
    assert {"pipeline", "nn", "training", "classical", "export", "evaluation", "data", "recipes"} <= set(subpackages)


# data generators (synthetic scenes) may be longer: they are one long recipe of physics, not logic to navigate
LONG_OK = {"recipes/coastal/scene.py"}


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450 and str(p.relative_to(PKG)) not in LONG_OK}
    assert not long, f"modules over 450 lines (split them by what they hold): {long}"


@pytest.mark.parametrize("edge", [("cmkd.a", "cmkd.b"), ("cmkd.b", "cmkd.a")])
def test_cycle_detector_finds_a_cycle(edge: tuple[str, str]) -> None:
    g = {"cmkd.a": {"cmkd.b"}, "cmkd.b": {"cmkd.a"}, "cmkd.c": {"cmkd.a"}}
    assert _cycles(g) == [["cmkd.a", "cmkd.b"]]
    g[edge[0]].discard(edge[1])
    assert _cycles(g) == []
