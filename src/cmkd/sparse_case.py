"""SYNTHETIC label-sparse cases for safe distillation (tests and ``benchmarks/airquality_distill.py``): a
few labels, many paired unlabelled samples, a teacher only slightly better than the baseline student and partly
out of domain."""

from __future__ import annotations

import numpy as np


def make_sparse_case(n: int = 2000, seed: int = 0, label_fraction: float = 0.015,
                     task: str = "regression") -> dict:
    """SYNTHETIC label-sparse case for safe distillation: few labels, many paired unlabelled samples, a weak and
    partly out-of-domain teacher.

    ``stu`` (N, 4) holds the student's evidence (two informative, two noise features); ``priv`` (N, 2) a privileged
    but noisy view of a small part of the target, so a teacher on ``stu`` + ``priv`` is only slightly better than a
    student on ``stu``. A third of the unlabelled training samples lie outside the labelled range (shifted
    ``stu``), where the teacher extrapolates. Only ``label_fraction`` of the training samples (60%) keep a
    target (NaN or class -1 elsewhere); validation (10%) and test (30%) are labelled and in-domain.
    """
    rng = np.random.default_rng(seed)
    stu = rng.normal(size=(n, 4))
    priv_signal = rng.normal(size=n)
    f = np.sin(1.5 * stu[:, 0]) + 0.7 * stu[:, 1] + 0.4 * priv_signal
    priv = np.stack([priv_signal + 1.0 * rng.normal(size=n), rng.normal(size=n)], axis=1)
    split = rng.choice([0, 1, 2], size=n, p=[0.6, 0.1, 0.3])
    tr = np.flatnonzero(split == 0)
    labelled = rng.choice(tr, size=max(4, int(round(label_fraction * len(tr)))), replace=False)
    unl = np.setdiff1d(tr, labelled)
    ood = rng.choice(unl, size=len(unl) // 3, replace=False)
    stu[ood, :2] += 3.0
    f[ood] = np.nan  # never scored
    y_true = f + 0.3 * rng.normal(size=n)
    if task == "classification":
        y = np.digitize(y_true, [-0.6, 0.6]).astype(np.int64)
        y[np.isin(np.arange(n), unl)] = -1
    else:
        y = np.where(np.isin(np.arange(n), unl), np.nan, y_true).astype(np.float32)
    return {"stu": stu.astype(np.float32), "priv": np.concatenate([stu[:, :2], priv], 1).astype(np.float32),
            "y": y, "split": split}


def sparse_case_config(task: str = "regression", epochs: int = 40) -> dict:
    """A config dict for :func:`make_sparse_case` data: teacher on stu + priv, student on stu."""
    return {
        "name": "sparse-synthetic", "seed": 0,
        "data": {"path": "data.npz", "modalities": {"stu": {"kind": "vector", "cost": 1.0},
                                                   "priv": {"kind": "vector", "cost": 10.0}},
                 "targets": {"y": {"kind": task}}, "split": "split"},
        "teacher": {"modalities": ["stu", "priv"], "width": 32, "epochs": epochs, "batch_size": 64, "patience": 10},
        "student": {"modalities": ["stu"], "width": 32, "epochs": epochs, "batch_size": 64, "patience": 10},
        "export": {"enabled": False},
    }
