"""cmkd: cross-modal knowledge distillation under extreme data sparsity.

A teacher trained on rich modalities is distilled into a compact student that sees only the cheap ones::

    import cmkd
    metrics = cmkd.run("minerals", out="runs/minerals")          # a built-in recipe
    metrics = cmkd.run("my.yaml", out="runs/mine")               # your own npz + YAML

The building blocks are public too: :class:`MultimodalNet`, the loss terms in :mod:`cmkd.nn.losses`
(``task_loss``, ``kd_loss``, ``feature_loss``, ``relation_loss``, ``contrastive_loss``, ``CompositeLoss``).
An exported student runs without torch through :mod:`cmkd.runtime` (numpy + onnxruntime).

The public names are imported lazily (PEP 562), so ``import cmkd`` (and ``cmkd --help``, ``import cmkd.runtime``)
does not load torch or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cmkd.errors import CmkdError
from cmkd.version import __version__

# public name -> the module that defines it
_LAZY = {
    "ExperimentConfig": "config", "load_config": "config",
    "LOSSES": "nn.losses", "CompositeLoss": "nn.losses", "contrastive_loss": "nn.losses",
    "feature_loss": "nn.losses", "kd_loss": "nn.losses", "relation_loss": "nn.losses", "task_loss": "nn.losses",
    "ENCODERS": "nn.encoders", "MultimodalNet": "nn.models",
    "load_model": "nn.checkpoint", "run": "pipeline.core",
    "list_recipes": "recipes",
    "EdgeModel": "runtime",
}

__all__ = ["ENCODERS", "LOSSES", "CmkdError", "CompositeLoss", "EdgeModel", "ExperimentConfig", "MultimodalNet",
           "__version__", "contrastive_loss", "feature_loss", "kd_loss", "list_recipes", "load_config",
           "load_model", "relation_loss", "run", "task_loss"]

if TYPE_CHECKING:  # for type checkers and IDEs: the eager imports
    from cmkd.config import ExperimentConfig, load_config
    from cmkd.nn.checkpoint import load_model
    from cmkd.nn.encoders import ENCODERS
    from cmkd.nn.losses import LOSSES, CompositeLoss, contrastive_loss, feature_loss, kd_loss, relation_loss, task_loss
    from cmkd.nn.models import MultimodalNet
    from cmkd.pipeline.core import run
    from cmkd.recipes import list_recipes
    from cmkd.runtime import EdgeModel


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cmkd' has no attribute {name!r}")
    if mod == "config":  # validating a config runs the encoder / loss-term checks those registries register
        importlib.import_module(".nn.encoders", __name__)
        importlib.import_module(".nn.losses", __name__)
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
