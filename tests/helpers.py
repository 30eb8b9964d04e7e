"""Tiny seeded SYNTHETIC datasets for the tests (one per modality kind) and a YAML writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from cmkd.sparse_case import make_sparse_case, sparse_case_config  # noqa: F401 - re-exported for the tests

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


