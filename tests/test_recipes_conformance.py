"""Conformance of every registered recipe to the Recipe protocol (fast: no training here).

Each recipe: a description and synthetic flag for ``cmkd list``, default configs (quick and full) that the
schema accepts and whose options its options model accepts, and a one-line error naming an unknown option key.
The quick end-to-end runs (metrics contract, report) are in test_recipes_conformance_runs.py, one test per
recipe so pytest-xdist spreads them."""

from __future__ import annotations

import pytest

from cmkd.config import validate
from cmkd.errors import CmkdError
from cmkd.pipeline.resolve import resolve
from cmkd.recipes import RECIPES, Recipe, get_recipe, list_recipes


@pytest.fixture(params=sorted(RECIPES))
def recipe(request: pytest.FixtureRequest) -> Recipe:
    return get_recipe(request.param)


def test_registered_under_its_name(recipe: Recipe) -> None:
    assert isinstance(recipe, Recipe)
    assert recipe.name in RECIPES and get_recipe(recipe.name) is recipe
    assert recipe.description and "\n" not in recipe.description
    assert list_recipes()[recipe.name].endswith("[synthetic data]" if recipe.synthetic else "[real data]")


@pytest.mark.parametrize("quick", [True, False])
def test_default_config_is_valid(recipe: Recipe, quick: bool) -> None:
    raw = recipe.default_config(quick=quick)
    cfg = validate({**raw, "recipe": recipe.name}, source=f"recipe {recipe.name}")
    recipe.check_options(cfg.options)  # the recipe's own defaults pass its options model
    assert recipe.options is not None, "declare the options the recipe reads (options_model(...))"


@pytest.mark.parametrize("quick", [True, False])
def test_every_model_pins_its_batch_size(recipe: Recipe, quick: bool) -> None:
    """The library's auto batch size (small data) must not change a recipe's figures: each recipe pins its own."""
    cfg = validate({**recipe.default_config(quick=quick), "recipe": recipe.name}, source=recipe.name)
    models = {"teacher": cfg.teacher, "student": cfg.student, **{f"teachers.{k}": v for k, v in cfg.teachers.items()}}
    assert [k for k, m in models.items() if m.batch_size is None] == []


def test_unknown_option_is_a_one_line_error(recipe: Recipe) -> None:
    with pytest.raises(CmkdError) as e:
        recipe.check_options({**(recipe.default_config(quick=True).get("options") or {}), "no_such_option": 1})
    msg = str(e.value)
    assert "\n" not in msg and "options.no_such_option" in msg and recipe.name in msg


def test_resolve_rejects_unknown_option_before_loading(recipe: Recipe) -> None:
    # the options check runs before load(), so it needs no data (real-data recipes too)
    with pytest.raises(CmkdError, match="unknown option 'options.no_such_option'"):
        resolve(recipe.name, ["options.no_such_option=1"], quick=True)
