"""Built-in recipes. Each module provides ``DESCRIPTION``, ``SYNTHETIC``, ``default_config(quick)`` and
``load(config, quick)``, and optionally ``references(...)`` (classical reference models) and ``decisions(...)``."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from ..errors import CmkdError

RECIPES: dict[str, str] = {
    "minerals": "cmkd.recipes.minerals",
    "houston": "cmkd.recipes.houston",
    "coastal": "cmkd.recipes.coastal.recipe",
    "coastal-real": "cmkd.recipes.coastal.real",
    "habitat": "cmkd.recipes.habitat.recipe",
    "microgrid": "cmkd.recipes.microgrid.recipe",
    "recycling": "cmkd.recipes.recycling.recipe",
}


def get_recipe(name: str) -> ModuleType:
    """Import the recipe module registered as ``name``; an unknown name lists the valid ones."""
    if name not in RECIPES:
        raise CmkdError(f"unknown recipe '{name}'; valid: {', '.join(sorted(RECIPES))} (or a path to a YAML file)")
    return importlib.import_module(RECIPES[name])


def _constants(module: str, names: tuple[str, ...]) -> dict[str, object]:
    """Module-level literal constants read from a module's source without importing it (no torch for
    `cmkd list`); {} when the module cannot be found this way."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return {}
    found: dict[str, object] = {}
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in names:
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return found


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description, read from each recipe's ``DESCRIPTION`` and ``SYNTHETIC`` without
    importing the recipe (and torch) where they are literals."""
    out = {}
    for name, module in RECIPES.items():
        c = _constants(module, ("DESCRIPTION", "SYNTHETIC"))
        if len(c) < 2:
            mod = get_recipe(name)
            c = {"DESCRIPTION": mod.DESCRIPTION, "SYNTHETIC": mod.SYNTHETIC}
        out[name] = f"{c['DESCRIPTION']}" + (" [synthetic data]" if c["SYNTHETIC"] else " [real data]")
    return out


def shared_data_folder(name: str) -> Path:
    """A real dataset's folder: ``$CMKD_DATA`` if set (a folder holding ``name``, or that folder itself), else
    ``shared/data/name`` beside the project (searched from the working directory and this package upwards)."""
    env = os.environ.get("CMKD_DATA")
    if env:
        p = Path(env)
        return p / name if (p / name).is_dir() else p
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        cand = base.parent / "shared" / "data" / name
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data" / name
