"""cmkd: cross-modal knowledge distillation under extreme data sparsity.

A teacher trained on rich modalities is distilled into a compact student that sees only the cheap ones::

    import cmkd
    metrics = cmkd.run("minerals", out="runs/minerals")          # a built-in recipe
    metrics = cmkd.run("my.yaml", out="runs/mine")               # your own npz + YAML

The building blocks are public too: :class:`MultimodalNet`, the loss terms in :mod:`cmkd.losses`
(``task_loss``, ``kd_loss``, ``feature_loss``, ``relation_loss``, ``contrastive_loss``, ``CompositeLoss``).
An exported student runs without torch through :mod:`cmkd.runtime` (numpy + onnxruntime).

The public names are imported lazily (PEP 562), so ``import cmkd`` (and ``cmkd --help``, ``import cmkd.runtime``)
does not load torch or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import CmkdError

# public name -> the module that defines it
_LAZY = {
    "ExperimentConfig": "config", "load_config": "config",
    "LOSSES": "losses", "CompositeLoss": "losses", "contrastive_loss": "losses", "feature_loss": "losses",
    "kd_loss": "losses", "relation_loss": "losses", "task_loss": "losses",
    "ENCODERS": "models", "MultimodalNet": "models",
    "load_model": "checkpoint", "run": "pipeline",
    "list_recipes": "recipes",
    "EdgeModel": "runtime",
}

__all__ = ["ENCODERS", "LOSSES", "CmkdError", "CompositeLoss", "EdgeModel", "ExperimentConfig", "MultimodalNet",
           "__version__", "contrastive_loss", "feature_loss", "kd_loss", "list_recipes", "load_config",
           "load_model", "relation_loss", "run", "task_loss"]

if TYPE_CHECKING:  # for type checkers and IDEs: the eager imports
    from .checkpoint import load_model
    from .config import ExperimentConfig, load_config
    from .losses import LOSSES, CompositeLoss, contrastive_loss, feature_loss, kd_loss, relation_loss, task_loss
    from .models import ENCODERS, MultimodalNet
    from .pipeline import run
    from .recipes import list_recipes
    from .runtime import EdgeModel


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cmkd' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
