"""The training objectives built from the ``distill`` config section: one place, used by :mod:`cmkd.pipeline.core`,
:mod:`cmkd.pipeline.tune` and the benchmarks, so every student of the same config gets the same loss."""

from __future__ import annotations

import math

import numpy as np
import torch

from cmkd.config import DistillConfig
from cmkd.data.arrays import MultimodalData
from cmkd.nn.losses import CompositeLoss


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


def best_val(histories: dict[str, list[dict]], role: str, sign: float) -> float:
    """``sign`` x the best validation metric in ``role``'s training history (higher = better); -inf without one."""
    vals = [sign * r["val_metric"] for r in histories.get(role, []) if "val_metric" in r]
    return max(vals) if vals else -math.inf


def kd_gate_factor(histories: dict[str, list[dict]], sign: float, margin: float) -> float:
    """Weight factor of the teacher terms from the teacher's quality on validation (``distill.kd_gate``).

    ``g`` is the teacher's relative gain over student_baseline on validation, ``(sign * (m_t - m_b)) / |m_b|``;
    the factor is ``clip(g / margin, 0, 1)``: a teacher no better than the baseline student is not followed, one
    better by ``margin`` (a share, e.g. 0.05) or more is followed fully. ``margin`` 0 (off) or a missing
    history gives 1.
    """
    if margin <= 0 or "teacher" not in histories or "student_baseline" not in histories:
        return 1.0
    t, b = best_val(histories, "teacher", sign), best_val(histories, "student_baseline", sign)
    if not (math.isfinite(t) and math.isfinite(b)):
        return 1.0
    return float(min(1.0, max(0.0, (t - b) / max(abs(b), 1e-12) / margin)))


def make_loss(distill: DistillConfig, student_width: int, teacher_width: int | None, *, baseline: bool = False,
              data: MultimodalData | None = None, train: np.ndarray | None = None,
              device: torch.device | str = "cpu", gate: float = 1.0) -> CompositeLoss:
    """The student's :class:`CompositeLoss` from every ``distill`` setting.

    Args:
        distill: the config's ``distill`` section.
        student_width: the student's feature width (feature-term projection).
        teacher_width: the teacher's feature width.
        baseline: the baseline student's loss: the task term only (its weight, or 1 when it is 0 or unset).
        data, train: the data and its labelled training samples, for ``distill.class_balance`` weights
            (needed only when it is above 0).
        device: where the class weights live.
        gate: factor on the teacher terms' weights (``distill.kd_gate``, see :func:`kd_gate_factor`).

    Constructing the loss may draw from the torch RNG (projections, learned weights): call it where the caller
    always did, so seeded runs keep their figures.
    """
    w = dict(distill.weights)
    if baseline:
        return CompositeLoss({"task": w.get("task", 1.0) or 1.0}, nll_beta=distill.nll_beta)
    if distill.class_balance and (data is None or train is None):
        raise ValueError("make_loss: distill.class_balance needs the data and its training samples")
    weights = class_balance_weights(data, train, distill.class_balance, device) if data is not None else None
    if gate != 1.0:
        w = {k: (v if k in CompositeLoss.TEACHER_FREE else v * gate) for k, v in w.items()}
    return CompositeLoss(w, student_width, teacher_width, distill.temperature, distill.feature_mode,
                         distill.relation_mode, distill.contrastive_temperature, adaptive=distill.adaptive_weights,
                         impute_sources=distill.impute, nll_beta=distill.nll_beta,
                         temperature_schedule=distill.temperature_schedule, temperature_end=distill.temperature_end,
                         learned_weights=distill.learned_weights, kd_confidence=distill.kd_confidence,
                         kd_ramp=distill.kd_ramp, class_weights=weights)


def outlook(data: MultimodalData, train: np.ndarray, train_all: np.ndarray, cache: dict, kd_mask: np.ndarray,
            histories: dict[str, list[dict]], sign: float, metric: str) -> dict:
    """"Will distillation help here": the run's measured predictors of a gain from the teacher (the report's
    section and ``metrics.json`` ``distillation_outlook``).

    - ``n_unlabelled_paired``: training samples without a label that the teacher sees (only the teacher terms
      use them; with none, kd is close to label smoothing on the labelled samples);
    - ``teacher_minus_baseline_val``: the teacher's best validation ``metric`` minus student_baseline's, signed so
      that positive means the teacher is better (little or negative: little to pass on);
    - ``teacher_agreement_train``: the teacher's ``metric`` on the labelled training samples it sees (how far its
      soft targets agree with the labels; for regression also ``teacher_r2_train``);
    - ``verdict``: a one-line reading of the three (a heuristic summary, not a measurement).
    """
    lab = train[kd_mask[train]] if len(train) else train
    unl = np.setdiff1d(train_all, train)
    n_unl = int(kd_mask[unl].sum()) if len(unl) else 0
    res: dict = {"metric": metric, "n_labelled": int(len(train)), "n_unlabelled_paired": n_unl}
    t, b = best_val(histories, "teacher", sign), best_val(histories, "student_baseline", sign)
    gap = float(t - b) if math.isfinite(t) and math.isfinite(b) else None
    res["teacher_minus_baseline_val"] = gap
    first = next(iter(data.target_kinds))
    part = cache.get(first) or {}
    if len(lab) and ("logits" in part or "value" in part):
        from cmkd.evaluation.metrics import task_metrics

        key = "logits" if "logits" in part else "value"
        full = part[key].detach().cpu().numpy()
        m = task_metrics(data, lab, {f"{first}/{key}": full[lab]})
        res["teacher_agreement_train"] = m.get(metric)
        if "r2" in m:
            res["teacher_r2_train"] = m["r2"]
    rel = gap / max(abs(b), 1e-12) if gap is not None else None
    if gap is None:
        verdict = "no teacher/baseline validation history to judge from"
    elif rel is not None and rel <= 0.01:
        verdict = ("unlikely: the teacher is not clearly better than the baseline student on validation, so there "
                   "is little to pass on (distill.fallback keeps the baseline if the distilled student is worse)")
    elif n_unl < max(len(train), 1):
        verdict = ("modest: the teacher is better, but few unlabelled paired samples exist, so kd acts mostly "
                   "on the labelled samples (close to label smoothing)")
    else:
        verdict = ("likely: a better teacher and many unlabelled paired samples (the regime where distillation "
                   "pays; check the student against the references)")
    res["verdict"] = verdict
    return res
