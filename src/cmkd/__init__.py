"""cmkd: cross-modal knowledge distillation under extreme data sparsity.

A teacher trained on rich modalities is distilled into a compact student that sees only the cheap ones::

    import cmkd
    metrics = cmkd.run("minerals", out="runs/minerals")          # a built-in recipe
    metrics = cmkd.run("my.yaml", out="runs/mine")               # your own npz + YAML

The building blocks are public too: :class:`MultimodalNet`, the loss terms in :mod:`cmkd.losses`
(``task_loss``, ``kd_loss``, ``feature_loss``, ``relation_loss``, ``contrastive_loss``, ``CompositeLoss``).
"""

from __future__ import annotations

from .checkpoint import load_model
from .config import ExperimentConfig, load_config
from .errors import CmkdError
from .losses import (
    LOSSES,
    CompositeLoss,
    contrastive_loss,
    feature_loss,
    kd_loss,
    relation_loss,
    task_loss,
)
from .models import ENCODERS, MultimodalNet
from .pipeline import run
from .recipes import list_recipes

__version__ = "0.1.0"
__all__ = ["ENCODERS", "LOSSES", "CmkdError", "CompositeLoss", "ExperimentConfig", "MultimodalNet",
           "contrastive_loss", "feature_loss", "kd_loss", "list_recipes", "load_config", "load_model",
           "relation_loss", "run", "task_loss"]
