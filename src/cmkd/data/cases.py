"""Tiny seeded SYNTHETIC experiments: arrays in the data contract plus a matching config, in a few lines.

The test suite and the benchmarks build their cases from here (one definition each), and they double as
examples of the ``.npz`` + YAML a user brings:

- :func:`make_arrays` / :func:`make_config`: one modality of every kind (vector, sequence with gaps, image,
  signal, text) carrying a 3-class (or regression) target, a rich ``teacher`` view and a noisy ``student`` one;
- :func:`make_sparse_case` / :func:`sparse_case_config`: a label-sparse case for safe distillation;
- :func:`write_case`: ``data.npz`` + ``exp.yaml`` in a folder, ready for ``cmkd run exp.yaml``;
- :func:`ddp_case`: the data-parallel check's case (:data:`DDP_TOLERANCE`).

Only numpy and PyYAML are imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

KINDS = ["vector", "sequence", "image", "signal", "text"]
WORDS = ["sonar", "basalt", "ridge", "plume", "clay", "reef", "trench", "vent"]


def make_arrays(n: int = 240, seed: int = 0, task: str = "classification", n_classes: int = 3) -> dict:
    """A synthetic dataset where a rich 'teacher' modality and a noisy 'student' one carry the label.

    Keys: vec (N, 6), seq (N, 12, 3), img (N, 2, 5, 5), sig (N, 1, 32), txt (N,) strings, y, split.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))  # latent
    y = (np.digitize(z[:, 0] + 0.5 * z[:, 1], [-0.5, 0.5]) if n_classes == 3
         else (z[:, 0] > 0).astype(int)) if task == "classification" else (2 * z[:, 0] + z[:, 1]).astype(np.float32)
    vec = np.concatenate([z + 0.1 * rng.normal(size=(n, 2)), rng.normal(size=(n, 4))], axis=1).astype(np.float32)
    seq = (z[:, None, :1] * np.ones((1, 12, 1)) + rng.normal(size=(n, 12, 3))).astype(np.float32)
    seq[rng.random(seq.shape) < 0.3] = np.nan
    img = (z[:, :1, None, None] * np.ones((1, 2, 5, 5)) + 0.8 * rng.normal(size=(n, 2, 5, 5))).astype(np.float32)
    t = np.linspace(0, 1, 32)
    sig = (np.sin(2 * np.pi * (3 + z[:, :1]) * t)[:, None, :] + 0.3 * rng.normal(size=(n, 1, 32))).astype(np.float32)
    txt = np.array([" ".join(rng.choice(WORDS, 4)) + (" high" if zz > 0 else " low") for zz in z[:, 0]])
    split = rng.choice([0, 1, 2], size=n, p=[0.6, 0.2, 0.2])
    return {"vec": vec, "seq": seq, "img": img, "sig": sig, "txt": txt, "y": y, "split": split}


def make_config(npz: str = "data.npz", task: str = "classification", student: str = "img",
                teacher: list[str] | None = None, epochs: int = 3) -> dict:
    """A config dict for :func:`make_arrays` data."""
    kinds = {"vec": "vector", "seq": "sequence", "img": "image", "sig": "signal", "txt": "text"}
    return {
        "name": "tiny-synthetic", "seed": 0,
        "data": {"path": npz, "modalities": {k: {"kind": v, "cost": 1.0} for k, v in kinds.items()},
                 "targets": {"y": {"kind": task}}, "split": "split"},
        "teacher": {"modalities": teacher or ["vec", student], "width": 16, "heads": 2, "epochs": epochs,
                    "batch_size": 64},
        "student": {"modalities": [student], "width": 16, "heads": 2, "epochs": epochs, "batch_size": 64},
        "export": {"latency_runs": 5},
    }


def write_case(folder: Path, arrays: dict | None = None, config: dict | None = None, **kw) -> Path:
    """Write data.npz and exp.yaml into ``folder``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", **(arrays if arrays is not None else make_arrays()))
    p = folder / "exp.yaml"
    p.write_text(yaml.safe_dump(config if config is not None else make_config(**kw)))
    return p


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


# per-rank batches normalise their terms separately and floating-point sums run in another order, so the runs
# drift apart a little over training: on the 65-sample test split of :func:`ddp_case` we allow 3 samples (0.05)
# of accuracy between a 2-process data-parallel run and the single-process one
DDP_TOLERANCE = 0.05


def ddp_case(folder: Path) -> Path:
    """The data-parallel check's case (400 samples, image student, no dropout) written into ``folder``; returns
    the YAML path."""
    cfg = make_config(student="img", epochs=4)
    for m in ("teacher", "student"):
        cfg[m]["dropout"] = 0.0
    return write_case(folder, make_arrays(n=400), cfg)
