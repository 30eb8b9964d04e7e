"""The Recipe protocol and its registry.

A recipe is one package ``cmkd/recipes/<name>/`` whose ``recipe.py`` builds a :class:`Recipe` and registers it
with :func:`register_recipe`; the built-in ones are listed by module in :data:`cmkd.recipes.RECIPES` (one line
each) and imported on first use. The pipeline calls the optional hooks through this protocol:

- ``references(data, modalities, seed) -> {name: metrics}``: classical reference models on the test split;
- ``aggregate(config, student, round) -> arrays | None``: extra training samples labelled where the trained
  student goes (dataset aggregation, e.g. DAgger); None when there are no more rounds;
- ``aggregate_rounds(config) -> int``: with ``aggregate``, how many rounds it will return samples for: the
  training data are then final once the last round's samples are in, and the classical fits start beside that
  round's retraining instead of after it;
- ``analyse(ctx) -> {"metrics": {...}, "html": [...]}``: the recipe's domain outputs after evaluation;
- ``cli() -> typer.Typer``: the recipe's own subcommands, mounted as ``cmkd <name> ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from cmkd.errors import CmkdError

REGISTRY: dict[str, Recipe] = {}


@dataclass(frozen=True)
class Recipe:
    """A built-in experiment: its data, default configuration and optional hooks (see the module docstring).

    Attributes:
        name: registry name (``cmkd run <name>``).
        description: one line for ``cmkd list``.
        synthetic: True when the data is generated (labelled SYNTHETIC everywhere), False for real data.
        default_config: ``default_config(quick) -> dict``, the experiment config (``quick``: a fast variant).
        load: ``load(config, quick) -> {key: array}``, the arrays the config's ``data`` section names.
        options: the pydantic model of ``options`` (``extra="forbid"``), holding each option's real default (a
            full-size run's): a key it does not declare, or a value of the wrong type, is a one-line error naming
            the key (see :func:`options_model`, :func:`read_options`). None: no check here (``load`` checks what
            it reads).
        references: optional hook, classical reference models.
        aggregate: optional hook, dataset aggregation rounds.
        aggregate_rounds: optional hook with ``aggregate``, its number of rounds (read from the config).
        analyse: optional hook, domain outputs.
        cli: optional hook, a factory of the recipe's own typer subcommands.
    """

    name: str
    description: str
    synthetic: bool
    default_config: Callable[..., dict]
    load: Callable[..., dict]
    options: type[BaseModel] | None = None
    references: Callable[..., dict] | None = None
    aggregate: Callable[..., dict | None] | None = None
    aggregate_rounds: Callable[[dict], int] | None = None
    analyse: Callable[[dict], dict] | None = None
    cli: Callable[[], Any] | None = None

    def check_options(self, options: dict | None) -> None:
        """Validate ``options`` with the recipe's model: a one-line :class:`CmkdError` naming the first bad key.
        Values are checked, not replaced (``load`` reads them through :func:`read_options`)."""
        if self.options is not None:
            read_options(self.options, options, recipe=self.name)

    def label(self) -> str:
        """The ``cmkd list`` line: the description plus whether the data is synthetic or real."""
        return self.description + (" [synthetic data]" if self.synthetic else " [real data]")


def options_model(name: str, **fields: tuple[Any, Any]) -> type[BaseModel]:
    """A strict pydantic model of a recipe's ``options``: ``key=(type, default)`` for each key it reads, with its
    real default (a full-size run's; a quick run's differences are the recipe's ``QUICK``), e.g.
    ``options_model("habitat", n=(int, 3000), region=(int, 0), rules=(str | None, None))``."""
    return create_model(f"{name.title().replace('-', '')}Options", __config__=ConfigDict(extra="forbid"),
                        **dict(fields))


def read_options(model: type[BaseModel], options: dict | None, quick: dict | None = None, recipe: str = "recipe"
                 ) -> dict[str, Any]:
    """Every option of a recipe as a dict: the model's defaults, over them ``quick`` (a quick run's defaults,
    where it is one), over those ``options`` (the config's). A key the model does not declare, or a value of the
    wrong type, is a one-line :class:`CmkdError` naming it."""
    try:
        return model.model_validate({**(quick or {}), **(options or {})}).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = ", ".join(sorted(model.model_fields)) or "(none)"
            raise CmkdError(f"recipe {recipe}: unknown option 'options.{key}'; valid: {valid}") from None
        raise CmkdError(f"recipe {recipe}: options.{key}: {err['msg']}") from None


def label_mask(split: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: which samples keep their label in a recipe's label-sparse regime (``options.label_fraction``):
    every validation / test sample and, seeded, ``round(fraction * n_train)`` training ones drawn at random (at
    least 2), or with ``labels`` ``max(2, round(fraction * n_class))`` of each class's training samples, so that
    every class has labels to learn."""
    if not 0 < fraction <= 1:
        raise CmkdError(f"options.label_fraction must be in (0, 1], got {fraction}")
    keep = split != 0
    if labels is None:
        tr = np.flatnonzero(split == 0)
        k = max(2, int(round(fraction * len(tr))))
        keep[np.random.default_rng(seed).choice(tr, size=min(k, len(tr)), replace=False)] = True
        return keep
    if fraction == 1:
        return np.ones(len(labels), bool)
    rng = np.random.default_rng([seed, 21])  # per-class draws: a stream of their own
    for c in np.unique(labels[split == 0]):
        members = np.flatnonzero((labels == c) & (split == 0))
        k = min(len(members), max(2, int(round(fraction * len(members)))))
        keep[rng.choice(members, size=k, replace=False)] = True
    return keep


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the registry under its name (a second registration of a name replaces the first)."""
    REGISTRY[recipe.name] = recipe
    return recipe
