"""The state one :func:`cmkd.pipeline.core.run` carries from stage to stage (its named ``stage_*`` functions each read
and extend it). A module of its own so that stage helpers outside :mod:`cmkd.pipeline.core` can take it."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cmkd.config import ExperimentConfig
from cmkd.data.arrays import MultimodalData
from cmkd.nn.models import MultimodalNet

if TYPE_CHECKING:
    from cmkd.pipeline.rundir import RunDir
    from cmkd.recipes import Recipe

__all__ = ["RunState"]


@dataclass
class RunState:
    """Everything one run carries from stage to stage (see :func:`run`); each stage reads and extends it."""

    cfg: ExperimentConfig
    arrays: dict[str, np.ndarray]
    source: str
    synthetic: bool
    out: Path
    resume: bool
    quiet: bool
    quick: bool = False
    dev: torch.device | str = "cpu"
    main: bool = True
    recipe: Recipe | None = None
    # data stage
    data: MultimodalData | None = None
    train_all: np.ndarray | None = None  # training samples, unlabelled ones too (teacher terms only)
    train: np.ndarray | None = None  # labelled training samples
    val: np.ndarray | None = None
    test: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    ck_dir: Path | None = None
    sign: float = 1.0  # +1 when the primary metric is higher-is-better
    # teachers and students
    teacher: torch.nn.Module | None = None
    cache: dict = field(default_factory=dict)  # the teacher's outputs on every sample (the students' targets)
    kd_mask: np.ndarray | None = None
    models: dict[str, MultimodalNet] = field(default_factory=dict)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    aggregated: list[int] = field(default_factory=list)  # samples added per aggregation round
    safe: dict[str, Any] = field(default_factory=dict)  # safe distillation: whether the fallback was taken
    # with student.ensemble > 1: each ensemble's validation figure (sign x primary metric, before any refit)
    ensemble_val: dict[str, float] = field(default_factory=dict)
    # with several targets: each network's validation metrics (every target) as early stopping left it, before any
    # refit; the fallback and the recommendation compare the run's yardstick over them
    val_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    pruned: tuple[MultimodalNet, float] | None = None  # stage_prune: (the pruned, fine-tuned student, sparsity)
    # evaluation and outputs
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, dict] = field(default_factory=dict)
    conformal: dict[str, dict] = field(default_factory=dict)
    cal_all: np.ndarray | None = None
    extra_html: list[str] = field(default_factory=list)
    classical: Any = None  # the classical fits, running beside the networks (cmkd.pipeline.classical_stage.Background)
    teacher_handoff: Future | None = None  # where they get the teacher's outputs (a Future)
    classical_threads: Any = None  # their thread count, widened once the networks have trained (Threads)
    fitted: dict | None = None  # the classical stage's exportable tree models (references, tree student)
    rundir: RunDir | None = None  # the locked output folder; outputs go to its staging folder (st.out)
    # selection by cross-validation when labels are few (cmkd.pipeline.crossval); cv: what metrics.json reports
    cv: dict[str, Any] = field(default_factory=dict)
    cv_pool: np.ndarray | None = None
    cv_folds: list[np.ndarray] = field(default_factory=list)
    cv_yard: Any = None
    cv_teacher: list[dict] = field(default_factory=list)  # the chosen teacher's outputs per fold
    teacher_classical: str | None = None  # the chosen teacher when it is a classical model
    skip: str | None = None  # why distillation was skipped

    @property
    def distil(self) -> bool:
        """Whether the distilled student has any teacher term (else it is trained like the baseline)."""
        return self.skip is None and any(v for k, v in self.cfg.distill.weights.items() if k != "task")
