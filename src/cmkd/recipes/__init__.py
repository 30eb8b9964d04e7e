"""Built-in recipes. Each module provides ``DESCRIPTION``, ``SYNTHETIC``, ``default_config(quick)`` and
``load(config, quick)``, and optionally ``references(...)`` (classical reference models) and ``decisions(...)``."""

from __future__ import annotations

import importlib
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


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description."""
    out = {}
    for name in RECIPES:
        mod = get_recipe(name)
        out[name] = mod.DESCRIPTION + (" [synthetic data]" if mod.SYNTHETIC else " [real data]")
    return out
