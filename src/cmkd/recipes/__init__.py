"""Built-in recipes: the registry. Each recipe is a package whose ``recipe.py`` registers a
:class:`~cmkd.recipes.base.Recipe` (name, description, synthetic or real, options, ``default_config``, ``load``
and the optional hooks ``references``, ``aggregate``, ``analyse``, ``cli``). Adding a recipe: its package plus
one line in :data:`RECIPES`; a recipe registered from elsewhere (:func:`register_recipe`) is found too."""

from __future__ import annotations

import importlib
from pathlib import Path

from cmkd.errors import CmkdError
from cmkd.recipes.base import REGISTRY, Recipe, register_recipe

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "recipe_names", "register_recipe"]

# name -> module that registers it (imported on first use)
RECIPES: dict[str, str] = {
    "minerals": "cmkd.recipes.minerals.recipe",
    "houston": "cmkd.recipes.houston.recipe",
    "coastal": "cmkd.recipes.coastal.recipe",
    "coastal-real": "cmkd.recipes.coastal_real.recipe",
    "habitat": "cmkd.recipes.habitat.recipe",
    "microgrid": "cmkd.recipes.microgrid.recipe",
    "recycling": "cmkd.recipes.recycling.recipe",
    "airquality": "cmkd.recipes.airquality.recipe",
}


def recipe_names() -> list[str]:
    """Every recipe name: the built-in ones in their order, then any registered from elsewhere."""
    return list(RECIPES) + [n for n in REGISTRY if n not in RECIPES]


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name`` (its module imported on first use); an unknown name lists the valid
    ones."""
    if name not in REGISTRY:
        if name not in RECIPES:
            raise CmkdError(f"unknown recipe '{name}'; valid: {', '.join(sorted(recipe_names()))} "
                            "(or a path to a YAML file)")
        importlib.import_module(RECIPES[name])
        if name not in REGISTRY:  # a programming error in the recipe module
            raise RuntimeError(f"{RECIPES[name]} does not register a recipe named {name!r}")
    return REGISTRY[name]


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


def cli_help(name: str) -> str | None:
    """The help line of a built-in recipe's own subcommands (its module's literal ``CLI_HELP``, read without
    importing it), or None when it declares none."""
    if name not in RECIPES:
        return None
    h = _constants(RECIPES[name], ("CLI_HELP",)).get("CLI_HELP")
    return h if isinstance(h, str) else None


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description; a built-in recipe's read from its module's literal ``DESCRIPTION``
    and ``SYNTHETIC`` without importing it (no torch for ``cmkd list``)."""
    out = {}
    for name in recipe_names():
        c = _constants(RECIPES[name], ("DESCRIPTION", "SYNTHETIC")) if name in RECIPES and name not in REGISTRY else {}
        out[name] = (f"{c['DESCRIPTION']}" + (" [synthetic data]" if c["SYNTHETIC"] else " [real data]")
                     if len(c) == 2 else get_recipe(name).label())
    return out
