"""Which modules of ``src/cmkd`` a test session runs code of: the check that the fast tier still reaches every
module (opt-in, since tracing slows the tests down).

    CMKD_TOUCHED=/tmp/touched pytest -m "not slow"

Every pytest process (each xdist worker too) traces the Python functions it calls (``sys.settrace`` and
``threading.settrace``: in-process runs and their worker threads, not the CLI subprocesses) and writes the files of
``src/cmkd`` that ran a function into ``$CMKD_TOUCHED/<process>.txt``; at the end the main process lists the
modules none of them reached and fails the session when there is one. A module counts as touched when one of its
functions or methods ran, not when it was only imported; a module that defines no function at all (a package's
``__init__`` of imports, constants) counts as touched by its import. ``tests/test_modules.py`` imports every module
in any session.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import threading
from pathlib import Path

import cmkd

PKG = Path(cmkd.__file__).resolve().parent
ENV = "CMKD_TOUCHED"
_files: set[str] = set()


def _trace(frame, event, arg):  # noqa: ANN001, ANN202 - the sys.settrace protocol
    code = frame.f_code
    if code.co_flags & inspect.CO_NEWLOCALS:  # a function or method: not a module or class body run by an import
        _files.add(code.co_filename)
    return None  # no line events


def start() -> None:
    """Trace every Python function call from now on, in this thread and in threads started later."""
    sys.settrace(_trace)
    threading.settrace(_trace)


def save(folder: str | Path, name: str) -> Path:
    """Write the package files whose functions ran (relative to ``src/cmkd``, one a line) to ``folder/name.txt``."""
    sys.settrace(None)
    threading.settrace(None)
    touched = sorted({str(Path(f).resolve().relative_to(PKG)) for f in _files
                      if f.endswith(".py") and Path(f).resolve().is_relative_to(PKG)})
    path = Path(folder) / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t}\n" for t in touched))
    return path


def has_functions(path: Path) -> bool:
    """Whether the module defines a function, a method or a lambda (else its import is all there is to run)."""
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
               for n in ast.walk(ast.parse(path.read_text())))


def untouched(folder: str | Path) -> list[str]:
    """The modules with functions that no process's ``folder/*.txt`` lists."""
    seen = {line for f in Path(folder).glob("*.txt") for line in f.read_text().splitlines()}
    return sorted(rel for p in PKG.rglob("*.py")
                  if (rel := str(p.relative_to(PKG))) not in seen and has_functions(p))


def enabled() -> str | None:
    """The folder of the check (``$CMKD_TOUCHED``), or None when it is off."""
    return os.environ.get(ENV) or None
