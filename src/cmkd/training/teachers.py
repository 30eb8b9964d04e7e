"""Teachers: training them (one model, or a multi-teacher ensemble) and the targets they give the students."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cmkd.config import ExperimentConfig
from cmkd.data.arrays import MultimodalData
from cmkd.evaluation.metrics import predict
from cmkd.nn.checkpoint import build_model
from cmkd.nn.models import EnsembleTeacher, MultimodalNet
from cmkd.training.distill import teacher_loss
from cmkd.training.fit import FitSettings, fit, set_seed


def train_teachers(cfg: ExperimentConfig, data: MultimodalData, train: np.ndarray, val: np.ndarray, stats: dict,
                   histories: dict[str, list[dict]], *, ck_dir: Path | None = None, resume: bool = False,
                   quiet: bool = True, device: torch.device | str = "cpu"
                   ) -> tuple[MultimodalNet, dict[str, MultimodalNet]]:
    """Train the teacher on its modalities with the task loss; with ``teachers:``, one member per entry on its
    modalities and targets, combined into an :class:`EnsembleTeacher`. Returns the teacher the students learn
    from and the members by role (``teacher_<name>``; just ``teacher`` without ``teachers:``); each training
    history goes into ``histories``."""
    members: dict[str, MultimodalNet] = {}
    for i, (name, spec) in enumerate(cfg.teachers.items() if cfg.teachers else [("teacher", cfg.teacher)]):
        role = name if name == "teacher" else f"teacher_{name}"
        mods = list(spec.modalities)
        set_seed(cfg.seed + 1000 * i)
        net = build_model(data, mods, spec, cfg, targets=getattr(spec, "targets", None))
        net.set_stats(stats)
        histories[role] = fit(net, data, data.all_present(mods, train), data.all_present(mods, val), spec,
                              teacher_loss(spec),
                              FitSettings(seed=cfg.seed + 1000 * i, target_stats=stats,
                                          ckpt_path=ck_dir / f"{role}.pt" if ck_dir is not None else None,
                                          resume=resume, quiet=quiet, desc=role, device=device))
        members[role] = net
    if not cfg.teachers:
        return members["teacher"], members
    ensemble = EnsembleTeacher({k: members[f"teacher_{k}"] for k in cfg.teachers},
                               {k: s.temperature or cfg.distill.temperature for k, s in cfg.teachers.items()},
                               {k: 1.0 for k in cfg.teachers})  # equal weights
    return ensemble, members  # type: ignore[return-value]


def teacher_seen(data: MultimodalData, modalities: list[str]) -> np.ndarray:
    """(N,) bool: the samples where the teacher saw at least one of its modalities (where kd terms apply)."""
    return np.any([data.present[m] for m in modalities], axis=0) if modalities else np.zeros(data.n, dtype=bool)


def teacher_targets(teacher: torch.nn.Module, data: MultimodalData, targets: list[str],
                    device: torch.device | str = "cpu") -> tuple[dict, np.ndarray]:
    """The teacher's outputs on every sample (the students' kd, feature and relation targets; it sees all its
    modalities) and the kd mask: where it saw at least one of them."""
    mods = list(teacher.encoders)
    preds = predict(teacher, data, np.arange(data.n), device=device)
    return cache_of(preds, targets), teacher_seen(data, mods)


def cache_of(preds: dict[str, np.ndarray], targets: list[str]) -> dict:
    """A network's predictions (:func:`cmkd.evaluation.metrics.predict`) as the students' teacher cache:
    ``{"features": tensor, <target>: {"logits" | "mean" | ...: tensor}}``."""
    out: dict = {"features": torch.from_numpy(preds["features"])}
    for t in targets:
        part = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in preds.items() if k.startswith(f"{t}/")}
        if part:  # a target no teacher predicts has no entry
            out[t] = part
    return out
