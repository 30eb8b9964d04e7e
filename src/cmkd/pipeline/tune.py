"""Hyperparameter search for the distilled student: ``cmkd tune CONFIG --trials N [--sampler tpe|de]``.

The teacher does not depend on the searched settings, so it is trained once (with ``teachers:``, every member,
combined into the ensemble exactly as ``cmkd run`` does); every trial trains the distilled
student with the trial's distillation temperature, loss weights, learning rate and width, and scores it on the
VALIDATION split (its best epoch's primary metric; the test split is never looked at). The first trial is the
config as given, so the table always shows what the search gained over the defaults.

Samplers: ``tpe`` (Optuna's tree-structured Parzen estimator, Bergstra et al., 2011) or ``de`` (SciPy's
differential evolution, Storn & Price, 1997, on the same box, run for about ``trials`` evaluations).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cmkd.config import ExperimentConfig, dump_config, validate
from cmkd.errors import CmkdError, require
from cmkd.io import dumps

# name -> (low, high, log scale); width is searched as an index into WIDTHS
SPACE: dict[str, tuple[float, float, bool]] = {
    "distill.temperature": (1.0, 8.0, True),
    "distill.weights.kd": (0.0, 3.0, False),
    "distill.weights.feature": (0.0, 1.0, False),
    "distill.weights.relation": (0.0, 1.0, False),
    "student.lr": (3e-4, 1e-2, True),
    "student.width": (0.0, 2.999, False),
}
WIDTHS = (32, 64, 128)


def _apply(raw: dict, params: dict[str, float]) -> dict:
    """The raw config with a trial's parameters set."""
    import copy

    out = copy.deepcopy(raw)
    for key, v in params.items():
        node = out
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = WIDTHS[int(v)] if key == "student.width" else float(v)
    return out


class _Objective:
    """Trains the teacher once; each call trains a distilled student and returns its validation metric."""

    def __init__(self, cfg: ExperimentConfig, arrays: dict[str, np.ndarray], quiet: bool = True,
                 extra_modalities: list[str] | None = None) -> None:
        import torch

        from cmkd.data.arrays import build_data, fit_stats
        from cmkd.evaluation.metrics import HIGHER_IS_BETTER, primary_metric
        from cmkd.training.distributed import THREADS
        from cmkd.training.teachers import teacher_targets, train_teachers

        torch.set_num_threads(THREADS)
        self.cfg, self.quiet = cfg, quiet
        tm, sm = list(cfg.teacher.modalities), list(cfg.student.modalities)
        self.data = build_data(arrays, cfg.data, cfg.seed, "tune",
                               modalities=list(dict.fromkeys(tm + sm + list(extra_modalities or []))))
        d = self.data
        self.train_all = d.indices(0)
        self.train, self.val = d.labelled(self.train_all), d.labelled(d.indices(1))
        if len(self.val) == 0:
            raise CmkdError("tuning needs a validation split with labelled samples")
        self.stats = fit_stats(d, self.train_all)
        # the teacher (or, with ``teachers:``, the ensemble of its members) is trained once, as ``cmkd run`` does
        teacher, _ = train_teachers(cfg, d, self.train, self.val, self.stats, {}, quiet=quiet)
        self.teacher_width = teacher.width
        self.cache, self.kd_mask = teacher_targets(teacher, d, list(d.target_kinds))
        self.metric = primary_metric(d)
        self.sign = 1.0 if HIGHER_IS_BETTER[self.metric] else -1.0

    def __call__(self, cfg: ExperimentConfig) -> float:
        return self.train_student(cfg)[1]

    def train_student(self, cfg: ExperimentConfig) -> tuple[Any, float]:
        """Train the distilled student of ``cfg``; returns it and its best validation metric."""
        from cmkd.nn.checkpoint import build_model
        from cmkd.training.distill import make_loss
        from cmkd.training.fit import FitSettings, fit, set_seed

        d, w = cfg.distill, dict(cfg.distill.weights)
        set_seed(cfg.seed + 1)
        imp = list(d.impute) if w.get("impute") else None
        model = build_model(self.data, list(cfg.student.modalities), cfg.student, cfg, impute=imp)
        model.set_stats(self.stats)
        loss = make_loss(cfg, cfg.student.width, self.teacher_width)
        set_seed(cfg.seed + 2)
        hist = fit(model, self.data, self.train_all, self.val, cfg.student, loss,
                   FitSettings(seed=cfg.seed + 1, target_stats=self.stats, teacher_cache=self.cache,
                               kd_mask=self.kd_mask, quiet=self.quiet, desc="student trial"))
        vals = [r["val_metric"] for r in hist]
        return model, float(max(vals) if self.sign > 0 else min(vals))


def tune(cfg: ExperimentConfig, arrays: dict[str, np.ndarray], trials: int, sampler: str = "tpe",
         out: Path | None = None, quiet: bool = True) -> dict[str, Any]:
    """Search the student's distillation settings; returns the trials, the best config and the gain.

    Args:
        cfg: the experiment (its values are trial 0).
        arrays: its data.
        trials: evaluations (about this many for ``de``).
        sampler: ``tpe`` or ``de``.
        out: folder for ``trials.json`` and ``best.yaml`` (written atomically); None writes nothing.
        quiet: no progress bars.
    """
    if trials < 2:
        raise CmkdError(f"--trials must be at least 2 (the defaults and one more), got {trials}")
    if sampler not in ("tpe", "de"):
        raise CmkdError(f"--sampler {sampler!r}: valid: tpe, de")
    raw = cfg.model_dump(mode="json")
    objective = _Objective(cfg, arrays, quiet)
    sign = objective.sign
    rows: list[dict] = []

    def evaluate(params: dict[str, float]) -> float:
        trial_cfg = validate(_apply(raw, params), source="tuning trial") if params else cfg
        value = objective(trial_cfg)
        shown = {k: (WIDTHS[int(v)] if k == "student.width" else round(float(v), 5)) for k, v in params.items()}
        rows.append({"trial": len(rows), "params": shown or "defaults", "val_" + objective.metric: value})
        if not quiet:
            print(f"trial {len(rows) - 1}: {objective.metric} {value:.4f} {shown or '(defaults)'}", flush=True)
        return value

    default_value = evaluate({})
    if sampler == "tpe":
        optuna = require("optuna", "tune", "cmkd tune --sampler tpe")

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize" if sign > 0 else "minimize",
                                    sampler=optuna.samplers.TPESampler(seed=cfg.seed))

        def opt_obj(trial: Any) -> float:
            params = {k: trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in SPACE.items()}
            return evaluate(params)

        study.optimize(opt_obj, n_trials=trials - 1)
    else:
        from scipy.optimize import differential_evolution

        keys = list(SPACE)
        bounds = [(math.log(lo), math.log(hi)) if log else (lo, hi) for lo, hi, log in SPACE.values()]

        def de_obj(x: np.ndarray) -> float:
            if len(rows) >= trials:
                return -sign * float(rows[0]["val_" + objective.metric])  # budget spent
            params = {k: (math.exp(v) if SPACE[k][2] else v) for k, v in zip(keys, x)}
            return -sign * evaluate(params)

        pop = max(1, (trials - 1) // (2 * len(keys)))  # scipy's population is popsize x dimensions
        differential_evolution(de_obj, bounds, popsize=pop, maxiter=max(1, (trials - 1) // (pop * len(keys)) - 1),
                               seed=cfg.seed, polish=False, init="latinhypercube", tol=0)
    key = "val_" + objective.metric
    best = max(rows, key=lambda r: sign * r[key])
    params = {} if best["params"] == "defaults" else best["params"]
    best_raw = _apply(raw, {k: (WIDTHS.index(v) if k == "student.width" else v) for k, v in params.items()})
    best_cfg = validate(best_raw, source="best trial")
    result = {"sampler": sampler, "metric": key, "trials": rows, "default": default_value, "best": best[key],
              "gain": sign * (best[key] - default_value), "best_params": params or "defaults"}
    if out is not None:
        from cmkd.io import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "trials.json", dumps(result, indent=1))
        atomic_write_text(out / "best.yaml", dump_config(best_cfg))
    return result
