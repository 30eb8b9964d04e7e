"""Experiment configuration: pydantic models of the experiment YAML, dotted overrides, saving.

The YAML holds data only (``yaml.safe_load``, registry names, never Python calls). It is validated once;
unknown keys are errors that name the key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cmkd.errors import CmkdError
from cmkd.validate import MAX_CLASSES, check_name, check_node_count, safe_load_yaml, yaml_value

Kind = Literal["vector", "sequence", "image", "signal", "text"]


class Role:
    """Model roles: the config sections (``teacher``, ``student``), the checkpoints (``<role>.pt``), the keys of
    metrics.json's ``models`` and the edge sidecar's ``role``. Plain ``str`` constants, not an enum: they go into
    YAML, JSON and weights-only checkpoints as the strings they are."""

    TEACHER = "teacher"
    STUDENT = "student"
    BASELINE = "student_baseline"  # the student trained on the labels alone
    ADAPTED = "student_adapted"  # the student after `cmkd adapt`
    TREES = "student_trees"  # the tree-ensemble student (classical.trees)
    BLEND = "student_blend"  # the network student averaged with a tree ensemble (classical.blend)
    CORE = (TEACHER, BASELINE, STUDENT)  # the three models every run trains, in report order

# Registry-name checks, registered by the registries above this module (``models``: encoders and their options;
# ``losses``: loss terms), so that config imports nothing from them. ``import cmkd`` imports both registries,
# so the checks are in place before any config is validated.
NAME_CHECKS: dict[str, Callable[[Any], None]] = {}


def register_name_check(name: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Decorator registering ``fn(value)`` as the check of config field ``name`` (``encoders``,
    ``encoder_options`` or ``loss_terms``); ``fn`` raises :class:`CmkdError` with a one-line message."""

    def deco(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        NAME_CHECKS[name] = fn
        return fn

    return deco


def _check_names(name: str, value: Any) -> None:
    """Run the registered check of ``name``; its CmkdError becomes the ValueError pydantic reports."""
    check = NAME_CHECKS.get(name)
    if check is None:  # the registries register their checks when imported (config imports nothing above it)
        raise RuntimeError(f"no name check registered for {name!r}: import cmkd.nn.models and cmkd.nn.losses before "
                           "validating a config (cmkd.load_config and cmkd.pipeline.resolve do)")
    try:
        check(value)
    except CmkdError as e:
        raise ValueError(str(e)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModalitySpec(_Strict):
    """One input modality: its array kind and what acquiring it costs in deployment (W, $, ...)."""

    kind: Kind
    cost: float = Field(1.0, ge=0)
    # names of a sequence's / vector's channels (the last axis), for tables and plots instead of indices
    channels: list[str] | None = None


class TargetSpec(_Strict):
    """One prediction target."""

    kind: Literal["classification", "regression"]
    # names of a regression target's output columns (plots and tables use them instead of "output k")
    columns: list[str] | None = None
    # a regression target's units, for plots and the edge model's sidecar
    units: str | None = None


class DataConfig(_Strict):
    """Where the data live and what each npz key means."""

    path: str | None = None
    sources: dict[str, Any] | None = Field(
        None, description="Data as they come, instead of path: table, stream and cube files and what each modality "
        "and target is made of (checked when the data are built: cmkd.data.sources.SourcesSpec; "
        "docs/own-data-sources.md)")
    modalities: dict[str, ModalitySpec]
    targets: dict[str, TargetSpec]
    split: str | None = "split"
    class_names: list[str] | None = None
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    text_vocab: int = Field(4096, ge=64)
    text_len: int = Field(64, ge=4)
    max_classes: int = Field(MAX_CLASSES, ge=2)  # classes per classification target a run accepts

    @field_validator("targets")
    @classmethod
    def _one_target(cls, v: dict[str, TargetSpec]) -> dict[str, TargetSpec]:
        if not v:
            raise ValueError("at least one target is needed")
        return v

    @field_validator("modalities", "targets")
    @classmethod
    def _valid_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            try:
                check_name(name, "")
            except CmkdError as e:
                raise ValueError(str(e).removeprefix(": ")) from None
        return v


class ModelConfig(_Strict):
    """Architecture and training settings of one model (teacher or student)."""

    modalities: list[str] = Field(default_factory=list)  # required, except for `teacher` when `teachers` is set
    width: int = Field(64, ge=4, le=4096)
    heads: int = Field(4, ge=1)
    depth: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    # null (default) = auto: enough epochs for about 1,600 optimiser steps, at least 60 and at most 200
    epochs: int | None = Field(None, ge=1)
    # null (default) = auto: 128, or fewer on small data so that every epoch has at least 8 batches (at least 8
    # samples each): min(128, max(8, ceil(n / 8))) for the n samples the model trains on. On 30-300 training
    # samples the former defaults (128, 60 epochs, patience 12) meant 60-180 optimiser steps in all and undertrained
    # networks that lost to a RandomForest (benchmarks/small_data.md); see cmkd.training.fit.schedule_for
    batch_size: int | None = Field(None, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # null (default) = auto: a fifth of the epochs, at least 12 (early stopping on a small validation set is noisy)
    patience: int | None = Field(None, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    warmup_epochs: int = Field(2, ge=0)
    modality_dropout: float = Field(0.0, ge=0, lt=1)
    # students: after early stopping, retrain on train + val for the best epoch count; the tree student and the
    # references are fitted again on train + val too (test figures and deployed models; validation figures, which
    # the recommendation compares, stay the first fits')
    refit: bool = False
    # std of Gaussian noise added in training to numeric inputs, in units of each feature's training std; 0 = off
    input_noise: float = Field(0.0, ge=0)
    # random flips / quarter turns of square image inputs in training, each sample its own (patches of a scene
    # have no preferred orientation; leave it off where orientation carries meaning). Off by default
    augment: bool = False
    # students: train this many networks, each from its own initialisation and batch order, and average their
    # outputs (class probabilities; regression means, with the mixture's variance): a deep ensemble, one ONNX
    # graph. On a few hundred samples one network's accuracy depends much on its initialisation; the average
    # less. Costs that many times the training and the inference. 1 = one network (the default)
    ensemble: int = Field(1, ge=1, le=16)
    # modality kind -> encoder name where the kind's default encoder is not wanted, e.g. {image: mobilenet}
    encoders: dict[str, str] = Field(default_factory=dict)
    # encoder name -> its keyword options, e.g. {periodic: {sigma: 0.03}}
    encoder_options: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("encoders")
    @classmethod
    def _known_encoders(cls, v: dict[str, str]) -> dict[str, str]:
        _check_names("encoders", v)
        return v

    @field_validator("encoder_options")
    @classmethod
    def _known_encoder_options(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        _check_names("encoder_options", v)
        return v


class TeacherSpec(ModelConfig):
    """One member of a multi-teacher ensemble (``teachers:``): its modalities, the targets it is trained on
    (default: all), its kd temperature (default: ``distill.temperature``) and its weight in the ensemble; the
    other settings default to the ``teacher:`` section's."""

    targets: list[str] | None = None
    temperature: float | None = Field(None, gt=0)
    weight: float = Field(1.0, gt=0)


class DistillConfig(_Strict):
    """Distillation loss settings. Weights are per loss term (see ``cmkd.nn.losses.LOSSES``)."""

    temperature: float = Field(4.0, gt=0)
    # kd temperature annealed over training from `temperature` to `temperature_end` (constant: no schedule)
    temperature_schedule: Literal["constant", "linear", "cosine"] = "constant"
    temperature_end: float = Field(1.0, gt=0)
    # class-balanced distillation: rare classes weigh more in the task and kd terms (effective number of samples,
    # Cui et al., 2019, with this beta; 0 = off)
    class_balance: float = Field(0.0, ge=0, lt=1)
    weights: dict[str, float] = Field(
        default_factory=lambda: {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5}
    )
    feature_mode: Literal["cosine", "mse"] = "cosine"
    relation_mode: Literal["sp", "rkd"] = "sp"
    contrastive_temperature: float = Field(0.1, gt=0)
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) mixing of training pairs for extra teacher terms; 0 = off
    # beta-NLL for regression task terms of every model (teacher included): 0 = plain Gaussian NLL
    nll_beta: float = Field(0.5, ge=0, le=1)
    # progressive distillation: modality sets of intermediate "assistant" models, from the teacher's side to the
    # student's, e.g. [[msi, rgb]]: teacher -> assistant_1 -> student_progressive (compared with the direct student)
    chain: list[list[str]] = Field(default_factory=list)
    # learn the loss-term weights by homoscedastic uncertainty (Kendall et al., 2018) instead of keeping them fixed
    learned_weights: bool = False
    # regression kd weighted by the teacher's precision (relative to the batch): follow the teacher where it is sure
    kd_confidence: bool = False
    # availability-adaptive weights: task term x (0.5 + a), teacher terms x (1.5 - a), a = observed share
    adaptive_weights: bool = False
    # cross-modal imputation for the `impute` term: student modality -> data key of its complete version
    impute: dict[str, str] = Field(default_factory=dict)
    # what the teacher sees when it makes the students' targets: "all" its modalities, or only the "student"'s
    # (the others marked absent; for a teacher trained with modality_dropout, its view of the student's evidence)
    teacher_view: Literal["all", "student"] = "all"
    # safe distillation from many unlabelled samples (see README "Safe distillation"); all off by default.
    # kd_ramp: the teacher terms' weights ramp linearly from 0 to full over this share of the epochs (0 = off)
    kd_ramp: float = Field(0.0, ge=0, le=1)
    # kd_gate: the teacher's validation quality decides the teacher terms' weight: they are multiplied by
    # clip(g / kd_gate, 0, 1), g = the teacher's relative gain over student_baseline on validation (0 = off)
    kd_gate: float = Field(0.0, ge=0)
    # fallback: when the distilled student scores worse on validation than student_baseline, keep the baseline
    fallback: bool = False

    @field_validator("weights")
    @classmethod
    def _known_terms(cls, v: dict[str, float]) -> dict[str, float]:
        _check_names("loss_terms", v)
        return v


class ExportConfig(_Strict):
    """Edge export settings."""

    enabled: bool = True
    int8: bool = True
    latency_runs: int = Field(200, ge=5)
    # global L1 magnitude pruning of the student's weights before export (share of weights zeroed; 0 = off)
    prune: float = Field(0.0, ge=0, lt=1)
    # epochs of fine-tuning the pruned student with its own training loss, pruned weights held at zero (0 = none)
    prune_epochs: int = Field(0, ge=0)
    # INT8: per-channel weight scales; 7-bit weights (avoids the u8s8 saturation of x86 CPUs without VNNI)
    int8_per_channel: bool = False
    int8_reduce_range: bool = False
    # which model becomes student.onnx: auto = the recommended one (metrics.json "recommended"), or a name
    # (student, student_trees, a random_forest / extra_trees / hist_gradient_boosting reference, or student_blend
    # with references.blend)
    model: str = "auto"


class ReferencesConfig(_Strict):
    """Classical references on the student's modalities (:mod:`cmkd.classical.references`); ``references: false`` in the
    YAML is short for ``{enabled: false}``."""

    enabled: bool = True
    algorithms: list[Literal["random_forest", "extra_trees", "hist_gradient_boosting"]] = Field(
        default_factory=lambda: ["random_forest", "extra_trees", "hist_gradient_boosting"])
    n_estimators: int = Field(100, ge=1)  # trees per forest, boosting iterations
    max_fit_samples: int = Field(20000, ge=10)  # a seeded random subset of the training samples beyond this
    # which algorithms also get one round of self-training where unlabelled samples exist ([] = none). Default
    # ExtraTrees only, the cheapest: over the 50 runs of benchmarks/label_fraction.py a self-training reference
    # was never the best on validation, and on minerals each scored below its labels-only fit (README table),
    # while HistGradientBoosting's cost most of the stage's time (recycling: 76 of 249 s)
    self_training: list[Literal["random_forest", "extra_trees", "hist_gradient_boosting"]] = Field(
        default_factory=lambda: ["extra_trees"])
    # fit the references and the tree student in a background thread while the students train (same figures;
    # they need only the teacher's outputs); false: after the students, in sequence
    background: bool = True
    # the recommended student (metrics.json ``recommended``): candidates whose validation figure lies within
    # ``tie_se`` standard errors of the best one (cmkd.classical.references.standard_error, on the validation samples)
    # are tied and the cheapest of them wins (a reference, then the tree student, then the network): the
    # one-standard-error rule. Default 0, the strictly best figure: over the 75 runs of
    # benchmarks/label_fraction.py, 1 helped houston at 5% / 20% labels but cost more at 1% / 2% and on
    # airquality at 1% / 20%, where the network generalises better than its margin on validation says (README).
    # Applies with ``enabled: false`` too (tree student against network)
    tie_se: float = Field(0.0, ge=0)
    # also offer ``student_blend`` (cmkd.classical.blend): the network student's and the best tree model's (on
    # validation)
    # outputs averaged, one ONNX graph when deployed. Off by default: in benchmarks/blend.py it won most of the
    # recommendations it changed, but lost some on airquality at 1% / 20% labels (README)
    blend: bool = False


class TreesConfig(_Strict):
    """The tree-ensemble student (:class:`cmkd.classical.trees.TreeStudent`, role ``student_trees``), distilled from the
    teacher's soft targets on the student's modalities; ``trees: false`` is short for ``{enabled: false}``."""

    enabled: bool = True
    algorithm: Literal["extra_trees", "random_forest"] = "extra_trees"
    n_estimators: int = Field(100, ge=1)
    min_samples_leaf: int = Field(1, ge=1)
    max_samples: int | None = Field(None, ge=1)  # bootstrap sample cap of each random forest tree
    label_weight: float = Field(1.0, ge=0, le=1)  # one-hot label vs teacher softmax on labelled samples


class UncertaintyConfig(_Strict):
    """Split-conformal calibration of regression heads (on split 3 when the data has one, else on val)."""

    enabled: bool = True
    alpha: float = Field(0.1, gt=0, lt=1)  # 0.1 -> 90% intervals
    # Mondrian calibration per band of the student's observed share (edges in [0, 1]); [] = one pooled quantile
    availability_edges: list[float] = Field(default_factory=lambda: [0.15, 0.3, 0.5, 0.75, 0.95])
    # modalities whose observed share defines the bands (e.g. the sparse sensors); null = all of the model's
    availability_modalities: list[str] | None = None

    @field_validator("availability_edges")
    @classmethod
    def _edges_in_order(cls, v: list[float]) -> list[float]:
        """Band edges: shares in [0, 1], strictly increasing (the bands are searched in order)."""
        if any(not 0.0 <= e <= 1.0 for e in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"edges must be shares in [0, 1] in increasing order, each once; got {v}")
        return v


class ExperimentConfig(_Strict):
    """The whole experiment, as in the YAML file."""

    name: str = "experiment"
    seed: int = Field(0, ge=0, lt=2**32)
    recipe: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = Field(1, ge=1, le=256)  # CPU threads for torch; 1 is fastest for small edge models
    data: DataConfig
    teacher: ModelConfig
    student: ModelConfig
    # multi-teacher distillation: name -> a teacher on its own modalities (and targets); see TeacherSpec
    teachers: dict[str, TeacherSpec] = Field(default_factory=dict)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig)
    references: ReferencesConfig = Field(default_factory=ReferencesConfig)
    trees: TreesConfig = Field(default_factory=TreesConfig)
    options: dict[str, Any] = Field(default_factory=dict)  # recipe-specific settings (see each recipe's docs)

    @field_validator("references", "trees", mode="before")
    @classmethod
    def _bool_switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @model_validator(mode="before")
    @classmethod
    def _teacher_defaults(cls, raw: Any) -> Any:
        """Members of ``teachers`` inherit unset settings from ``teacher``; ``teacher.modalities`` defaults to the
        union of theirs."""
        if not isinstance(raw, dict) or not isinstance(raw.get("teachers"), dict) or not raw["teachers"]:
            return raw
        raw = dict(raw)
        base = dict(raw.get("teacher") or {})
        members = {}
        for name, spec in raw["teachers"].items():
            members[name] = {**{k: v for k, v in base.items() if k != "modalities"}, **spec} \
                if isinstance(spec, dict) else spec
        raw["teachers"] = members
        if not base.get("modalities"):
            mods = [m for s in members.values() if isinstance(s, dict) for m in s.get("modalities") or []]
            base["modalities"] = list(dict.fromkeys(mods))
        raw["teacher"] = base
        return raw

    @model_validator(mode="after")
    def _declared_modalities(self) -> ExperimentConfig:
        roles = {"teacher": self.teacher, "student": self.student,
                 **{f"teachers.{k}": v for k, v in self.teachers.items()}}
        for role, mcfg in roles.items():
            mods = mcfg.modalities
            if not mods:
                raise ValueError(f"'{role}.modalities' needs at least one modality")
            for m in mods:
                if m not in self.data.modalities:
                    raise ValueError(f"'{role}.modalities': modality '{m}' is not declared in "
                                     f"data.modalities ({', '.join(self.data.modalities)})")
            if len(set(mods)) != len(mods):
                raise ValueError(f"'{role}.modalities' lists a modality twice")
        if self.teacher.ensemble != 1 or any(t.ensemble != 1 for t in self.teachers.values()):
            raise ValueError("'ensemble' is a student setting (student.ensemble); for several teachers use "
                             "'teachers:'")
        if self.student.ensemble > 1 and self.export.prune > 0:
            raise ValueError("'export.prune' does not take an ensemble student: set student.ensemble to 1 or "
                             "export.prune to 0")
        for name, spec in self.teachers.items():
            bad = [t for t in spec.targets or [] if t not in self.data.targets]
            if bad or spec.targets == []:
                raise ValueError(f"'teachers.{name}.targets': target '{bad[0] if bad else '(none)'}' is not declared "
                                 f"in data.targets ({', '.join(self.data.targets)})")
        for i, mods in enumerate(self.distill.chain):
            bad = [m for m in mods if m not in self.data.modalities]
            if bad or not mods:
                raise ValueError(f"'distill.chain[{i}]': modality '{bad[0] if bad else '(none)'}' is not declared in "
                                 f"data.modalities ({', '.join(self.data.modalities)})")
        for m, src in self.distill.impute.items():
            if m not in self.student.modalities:
                raise ValueError(f"'distill.impute': '{m}' is not a student modality "
                                 f"({', '.join(self.student.modalities)})")
            if src not in self.data.modalities:
                raise ValueError(f"'distill.impute': source '{src}' is not declared in data.modalities")
        return self


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


def validate(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw config dict; a problem becomes a one-line CmkdError naming the key."""
    if not isinstance(raw, dict):
        raise CmkdError(f"{source}: the top level must be a mapping of keys to values")
    check_node_count(raw, source)  # an alias bomb (in the YAML or a --set value) before any copy of it
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise CmkdError(f"{source}: unknown key '{loc}'{_did_you_mean(err['loc'])}") from None
        if err["type"] == "missing":
            raise CmkdError(f"{source}: missing required key '{loc}'") from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise CmkdError(f"{source}: '{loc}': {msg}" if loc else f"{source}: {msg}") from None


def _did_you_mean(loc: tuple) -> str:
    """``"; did you mean 'epochs'?"`` for an unknown key whose siblings hold a close name (difflib), else ``""``."""
    import difflib
    import types
    import typing

    node: Any = ExperimentConfig
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


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file with ``yaml.safe_load``; errors become CmkdError."""
    p = Path(path)
    if not p.is_file():
        raise CmkdError(f"config file not found: {p}")
    raw = safe_load_yaml(p)  # one door: safe constructors, bounded size and expansion, every failure one line
    if not isinstance(raw, dict):
        raise CmkdError(f"{p}: the top level must be a mapping of keys to values")
    return raw


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment YAML. A relative ``data.path`` is made relative to the YAML.

    Args:
        path: the YAML file.
        overrides: ``key=value`` strings.

    Returns:
        The validated config.
    """
    p = Path(path)
    raw = apply_overrides(load_yaml(p), overrides)
    cfg = validate(raw, source=str(p))
    if cfg.data.path and not Path(cfg.data.path).is_absolute():
        try:
            cfg.data.path = str((p.parent / cfg.data.path).resolve())
        except (OSError, RuntimeError) as e:  # a symbolic link loop (RuntimeError before Python 3.13)
            raise CmkdError(f"{p}: data.path {cfg.data.path}: {getattr(e, 'strerror', None) or e}") from None
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text (saved next to every output)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
