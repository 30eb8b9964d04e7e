"""Reading and writing experiment settings: YAML loading, dotted ``--set`` overrides, the one-line error of a failed
validation (removed keys and what replaces them, did-you-mean), defaults and saving.

A shared leaf below :mod:`cmkd.config`, which holds the pydantic models and re-exports these names; nothing here
imports the models, so the functions that need them take the model class as an argument.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cmkd.errors import CmkdError
from cmkd.validate import safe_load_yaml, yaml_value

# keys that no longer exist -> what replaces them (the unknown-key error says it). ``model.<key>`` stands for the
# key in ``teacher``, ``student`` or a ``teachers`` member.
_NO_EFFECT = "it was removed (the default behaviour stays)"
REPLACED: dict[str, str] = {
    "distill.fallback": "removed: the distilled student is always compared with student_baseline (on validation, or "
                        "in cross-validation with few labels) and the better one is deployed (metrics.json "
                        "distill.fallback says which)",
    "distill.nll_beta": "moved to 'teacher.nll_beta' and 'student.nll_beta' (each model's own task loss)",
    "distill.impute": "moved to 'distill.term_options.impute.sources'",
    "device": "moved to the --device option of cmkd run (run(..., device=...)): where a run trains is not part of "
              "the experiment",
    "data.val_fraction": f"{_NO_EFFECT}: a random split holds 15% validation samples",
    "data.test_fraction": f"{_NO_EFFECT}: a random split holds 20% test samples",
    "data.text_vocab": f"{_NO_EFFECT}: text is hashed into 4096 token ids",
    "model.weight": f"{_NO_EFFECT}: the teachers: members are averaged with equal weights",
    "export.int8_per_channel": "merged into 'export.int8_x86' (per-channel scales and 7-bit weights together)",
    "export.int8_reduce_range": "merged into 'export.int8_x86' (per-channel scales and 7-bit weights together)",
    "references.enabled": "was removed: 'references: false' or 'references.algorithms: []' turns them off",
    "references.self_training": f"{_NO_EFFECT}: ExtraTrees only gets one round of self-training (never the best "
                                "on validation in benchmarks/label_fraction.py)",
    "trees.enabled": "was removed: 'trees: false' or 'trees.n_estimators: 0' turns the tree student off",
    "distill.feature_mode": "moved to 'distill.term_options.feature.mode'",
    "distill.relation_mode": "moved to 'distill.term_options.relation.mode'",
    "distill.contrastive_temperature": "moved to 'distill.term_options.contrastive.temperature'",
    "distill.kd_confidence": "moved to 'distill.term_options.kd.confidence'",
    "distill.temperature_schedule": "was removed: set by no recipe, test or benchmark; the kd temperature is "
                                    "constant (distill.temperature)",
    "distill.temperature_end": "was removed with distill.temperature_schedule; the kd temperature is constant",
    "distill.class_balance": "was removed: no recipe or benchmark used it",
    "distill.mixup": "was removed: it lowered houston's validation accuracy (off in every recipe)",
    "distill.learned_weights": "was removed: benchmarks/learned_weights.py found no gain; the weights are "
                               "distill.weights",
    "distill.kd_ramp": "was removed: it did not help in benchmarks/airquality_distill.py",
    "distill.kd_gate": "was removed: it switched kd off where kd helped (benchmarks/airquality_distill.py); "
                       "the run keeps student_baseline where the distilled student is worse",
    "distill.teacher_view": "was removed: kd from the teacher's view of the student's modalities did not help "
                            "(houston); the teacher sees all its modalities",
    "model.refit": "is a student setting: student.refit",
    "model.ensemble": "is a student setting: student.ensemble (for several teachers use 'teachers:')",
    "model.input_noise": "was removed: it lowered houston's validation accuracy",
    "model.augment": "was removed: it did not help (benchmarks)",
    "model.weight_decay": f"{_NO_EFFECT}: AdamW weight decay 1e-4",
    "model.grad_clip": f"{_NO_EFFECT}: gradients clipped to norm 1",
    "model.warmup_epochs": f"{_NO_EFFECT}: 2 warm-up epochs",
    "export.int8": "was removed: with export.enabled the INT8 model is always written",
    "references.background": "was removed: the references are always fitted in a background thread (same figures)",
    "references.tie_se": "was removed: the one-standard-error rule did not pay (benchmarks/label_fraction.py); the "
                         "strictly best candidate on validation is recommended",
    "references.blend": "was removed: the blended student was not safe everywhere (benchmarks/blend.py)",
    "references.max_fit_samples": f"{_NO_EFFECT}: at most 20,000 training samples per fit",
    "trees.algorithm": f"{_NO_EFFECT}: the tree student is an ExtraTrees",
    "trees.min_samples_leaf": f"{_NO_EFFECT}: scikit-learn's 1",
    "trees.max_samples": f"{_NO_EFFECT}: every tree sees every sample",
    "trees.label_weight": f"{_NO_EFFECT}: the one-hot label where labelled",
    "uncertainty.enabled": f"{_NO_EFFECT}: regression heads are always calibrated",
    "uncertainty.alpha": f"{_NO_EFFECT}: 90% intervals (alpha 0.1)",
    "threads": f"{_NO_EFFECT}: torch and the classical fits use one CPU thread while the networks train",
}


def replaced(loc: tuple) -> str | None:
    """What replaces the removed key at ``loc`` (a pydantic error location), or None."""
    parts = [str(p) for p in loc]
    keys = [".".join(parts)]
    if parts and parts[0] in ("teacher", "student") and len(parts) == 2:
        keys.append(f"model.{parts[1]}")
    if parts and parts[0] == "teachers" and len(parts) == 3:
        keys.append(f"model.{parts[2]}")
    return next((REPLACED[k] for k in keys if k in REPLACED), None)


def default_of(model: type[BaseModel], name: str) -> Any:
    """The default of ``model``'s field ``name``: code that needs a setting's default outside a config (a
    constructor's keyword default) takes it from here, so that each default has one source, the config."""
    return model.model_fields[name].get_default(call_default_factory=True)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config dict.

    Args:
        raw: the config as plain data.
        overrides: strings like ``student.epochs=5`` or ``distill.weights.kd=2``.

    Returns:
        A new dict with the overrides applied.

    Raises:
        CmkdError: when an override is malformed or names a key the schema does not know.
    """
    out = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise CmkdError(f"--set {item!r}: expected KEY=VALUE, e.g. --set student.epochs=5")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise CmkdError(f"--set {item!r}: empty key")
        parsed = yaml_value(value, f"--set {key}")  # the YAML file's door: every parser failure one line
        node = out
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.get(p, {}), dict):
                raise CmkdError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = parsed
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file with ``yaml.safe_load``; errors become CmkdError."""
    p = Path(path)
    if not p.is_file():
        raise CmkdError(f"config file not found: {p}")
    raw = safe_load_yaml(p)  # one door: safe constructors, bounded size and expansion, every failure one line
    if not isinstance(raw, dict):
        raise CmkdError(f"{p}: the top level must be a mapping of keys to values")
    return raw


def config_error(e: ValidationError, root: type[BaseModel], source: str) -> CmkdError:
    """The one-line CmkdError of a failed validation of model ``root``: it names the key (its first error), says
    what replaces a removed key (:data:`REPLACED`) or suggests a close name for an unknown one."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        note = replaced(err["loc"])
        if note is not None:
            return CmkdError(f"{source}: unknown key '{loc}': {note}")
        return CmkdError(f"{source}: unknown key '{loc}'{did_you_mean(root, err['loc'])}")
    if err["type"] == "missing":
        return CmkdError(f"{source}: missing required key '{loc}'")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return CmkdError(f"{source}: '{loc}': {msg}" if loc else f"{source}: {msg}")


def did_you_mean(root: type[BaseModel], loc: tuple) -> str:
    """``"; did you mean 'epochs'?"`` for an unknown key at ``loc`` under model ``root`` whose siblings hold a close
    name (difflib), else ``""``."""
    import difflib
    import types
    import typing

    node: Any = root
    for part in loc[:-1]:
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return ""
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return ""
        while typing.get_origin(node) in (typing.Union, types.UnionType):  # Optional[...]: its model, if any
            node = next((a for a in typing.get_args(node) if a is not type(None)), None)
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(node.model_fields), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML text (saved next to every output)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
