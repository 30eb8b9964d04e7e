"""Every module of ``src/cmkd`` imports (in the fast tier too), and the fast tier's reach check
(``tests/touched.py``, ``CMKD_TOUCHED=<folder> pytest -m "not slow"``) reads the package right."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import touched

import cmkd


def test_every_module_imports() -> None:
    """pkgutil walks the package (recipes and their helpers included) and each module imports without error."""
    names = [m.name for m in pkgutil.walk_packages(cmkd.__path__, "cmkd.")]
    files = {str(p.relative_to(touched.PKG)) for p in touched.PKG.rglob("*.py")}
    # every .py file is a module the walk reaches (no folder without __init__.py hiding one)
    walked = {n.removeprefix("cmkd.").replace(".", "/") for n in names}
    assert {f.removesuffix("/__init__.py").removesuffix(".py") for f in files if f != "__init__.py"} == walked
    for name in names:
        importlib.import_module(name)


def test_reach_check_lists_the_modules_no_function_ran_in(tmp_path: Path) -> None:
    """A module counts once a function of it ran in some process; modules without functions never count as
    missing; the list is relative to src/cmkd."""
    assert touched.has_functions(touched.PKG / "cli.py")
    assert not touched.has_functions(touched.PKG / "version.py")
    everything = {str(p.relative_to(touched.PKG)) for p in touched.PKG.rglob("*.py")}
    (tmp_path / "gw0.txt").write_text("".join(f"{f}\n" for f in sorted(everything - {"cli.py", "io.py"})))
    (tmp_path / "gw1.txt").write_text("io.py\n")
    assert touched.untouched(tmp_path) == ["cli.py"]
