"""The training objectives built from the ``distill`` config section: one place, used by :mod:`cmkd.pipeline`,
:mod:`cmkd.tune` and the benchmarks, so every student of the same config gets the same loss."""

from __future__ import annotations

import numpy as np
import torch

from .config import DistillConfig
from .data import MultimodalData
from .losses import CompositeLoss


def class_balance_weights(data: MultimodalData, idx: np.ndarray, beta: float, device: torch.device | str = "cpu"
                          ) -> dict[str, torch.Tensor] | None:
    """Per classification target, class weights ``(1 - beta) / (1 - beta^n_c)`` (Cui et al., 2019) from the
    labelled samples ``idx``, scaled to mean 1 over the samples; None when ``beta`` is 0."""
    if not beta:
        return None
    out = {}
    for t, kind in data.target_kinds.items():
        if kind != "classification":
            continue
        y = data.targets[t][idx]
        counts = np.bincount(y[y >= 0], minlength=len(data.classes[t])).astype(float)
        w = (1 - beta) / (1 - beta ** np.maximum(counts, 1))
        w = w / (w[y[y >= 0]].mean())
        out[t] = torch.tensor(w, dtype=torch.float32, device=device)
    return out or None


def teacher_loss(distill: DistillConfig) -> CompositeLoss:
    """The teachers' objective: the task loss only (beta-NLL ``distill.nll_beta`` for regression targets)."""
    return CompositeLoss({"task": 1.0}, nll_beta=distill.nll_beta)


def make_loss(distill: DistillConfig, student_width: int, teacher_width: int | None, *, baseline: bool = False,
              data: MultimodalData | None = None, train: np.ndarray | None = None,
              device: torch.device | str = "cpu") -> CompositeLoss:
    """The student's :class:`CompositeLoss` from every ``distill`` setting.

    Args:
        distill: the config's ``distill`` section.
        student_width: the student's feature width (feature-term projection).
        teacher_width: the teacher's feature width.
        baseline: the baseline student's loss: the task term only (its weight, or 1 when it is 0 or unset).
        data, train: the data and its labelled training samples, for ``distill.class_balance`` weights
            (needed only when it is above 0).
        device: where the class weights live.

    Constructing the loss may draw from the torch RNG (projections, learned weights): call it where the caller
    always did, so seeded runs keep their figures.
    """
    w = dict(distill.weights)
    if baseline:
        return CompositeLoss({"task": w.get("task", 1.0) or 1.0}, nll_beta=distill.nll_beta)
    if distill.class_balance and (data is None or train is None):
        raise ValueError("make_loss: distill.class_balance needs the data and its training samples")
    weights = class_balance_weights(data, train, distill.class_balance, device) if data is not None else None
    return CompositeLoss(w, student_width, teacher_width, distill.temperature, distill.feature_mode,
                         distill.relation_mode, distill.contrastive_temperature, adaptive=distill.adaptive_weights,
                         impute_sources=distill.impute, nll_beta=distill.nll_beta,
                         temperature_schedule=distill.temperature_schedule, temperature_end=distill.temperature_end,
                         learned_weights=distill.learned_weights, kd_confidence=distill.kd_confidence,
                         class_weights=weights)
