"""The training objectives built from the ``distill`` config section and the models' ``nll_beta``: one place, used by
:mod:`cmkd.pipeline.core`, :mod:`cmkd.pipeline.tune` and the benchmarks, so every student of the same config gets the
same loss."""

from __future__ import annotations

import math

import numpy as np

from cmkd.config import ExperimentConfig, ModelConfig
from cmkd.data.arrays import MultimodalData
from cmkd.nn.losses import CompositeLoss


def teacher_loss(teacher: ModelConfig) -> CompositeLoss:
    """A teacher's objective: the task loss only (beta-NLL with the teacher's ``nll_beta`` for regression targets),
    unweighted (no ``distill`` setting applies)."""
    return CompositeLoss({"task": 1.0}, nll_beta=teacher.nll_beta)


def best_val(histories: dict[str, list[dict]], role: str, sign: float) -> float:
    """``sign`` x the best validation metric in ``role``'s training history (higher = better); -inf without one."""
    vals = [sign * r["val_metric"] for r in histories.get(role, []) if "val_metric" in r]
    return max(vals) if vals else -math.inf


def best_epoch(histories: dict[str, list[dict]], role: str, sign: float) -> int:
    """The epoch count ``role``'s early stopping chose on validation (its best epoch, from 1; 1 without one)."""
    vals = [sign * r["val_metric"] for r in histories.get(role, []) if "val_metric" in r]
    return int(np.argmax(vals)) + 1 if vals else 1


def make_loss(cfg: ExperimentConfig, student_width: int, teacher_width: int | None, *,
              baseline: bool = False) -> CompositeLoss:
    """The student's :class:`CompositeLoss` from the config's ``distill`` section and ``student.nll_beta``.

    Args:
        cfg: the experiment config.
        student_width: the student's feature width (feature-term projection).
        teacher_width: the teacher's feature width.
        baseline: the baseline student's loss: the task term only (its weight, or 1 when it is 0 or unset), as
            the teachers' (no other ``distill`` setting applies).

    Constructing the loss draws from the torch RNG (the projections): call it where the caller always did, so
    seeded runs keep their figures.
    """
    w = dict(cfg.distill.weights)
    if baseline:
        return CompositeLoss({"task": w.get("task", 1.0) or 1.0}, nll_beta=cfg.student.nll_beta)
    return CompositeLoss(w, student_width, teacher_width, distill=cfg.distill, nll_beta=cfg.student.nll_beta)


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
                   "is little to pass on (the run keeps the baseline if the distilled student is worse)")
    elif n_unl < max(len(train), 1):
        verdict = ("modest: the teacher is better, but few unlabelled paired samples exist, so kd acts mostly "
                   "on the labelled samples (close to label smoothing)")
    else:
        verdict = ("likely: a better teacher and many unlabelled paired samples (the regime where distillation "
                   "pays; check the student against the references)")
    res["verdict"] = verdict
    return res
