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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from cmkd.errors import CmkdError
from cmkd.settings_io import (  # noqa: F401 (re-exported: cmkd.config is where callers find them)
    REPLACED,
    apply_overrides,
    config_error,
    default_of,
    dump_config,
    load_yaml,
    replaced,
)
from cmkd.validate import MAX_CLASSES, check_name, check_node_count

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
    CORE = (TEACHER, BASELINE, STUDENT)  # the three models every run trains, in report order

# Registry-name checks, registered by the registries above this module (``models``: encoders and their options;
# ``losses``: loss terms), so that config imports nothing from them. ``import cmkd`` imports both registries,
# so the checks are in place before any config is validated.
NAME_CHECKS: dict[str, Callable[[Any], None]] = {}


def register_name_check(name: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Decorator registering ``fn(value)`` as the check of config field ``name`` (``encoders``,
    ``encoder_options``, ``loss_terms`` or ``term_options``); ``fn`` raises :class:`CmkdError` with a one-line
    message."""

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

    kind: Kind = Field(description="array kind: vector, sequence, image, signal or text")
    cost: float = Field(1.0, ge=0, description="what acquiring it costs in deployment (W, $, ...)")
    channels: list[str] | None = Field(None, description="names of a sequence's / vector's channels (the last axis), "
                                                         "for tables and plots instead of indices")


class TargetSpec(_Strict):
    """One prediction target."""

    kind: Literal["classification", "regression"] = Field(description="classification or regression")
    columns: list[str] | None = Field(None, description="names of a regression target's output columns (plots and "
                                                        "tables use them instead of 'output k')")
    units: str | None = Field(None, description="a regression target's units, for plots and the edge model's sidecar")


class DataConfig(_Strict):
    """Where the data live and what each npz key means."""

    path: str | None = Field(None, description="an .npz file or a directory of .npy shards (relative: to the YAML)")
    sources: dict[str, Any] | None = Field(
        None, description="data as they come, instead of path: table, stream and cube files and what each modality "
        "and target is made of (checked when the data are built: cmkd.data.sources.SourcesSpec; "
        "docs/own-data-sources.md)")
    modalities: dict[str, ModalitySpec] = Field(description="npz key -> input modality")
    targets: dict[str, TargetSpec] = Field(description="npz key -> prediction target (at least one)")
    split: str | None = Field("split", description="npz key of the split codes (0 train, 1 val, 2 test, 3 "
                                                   "calibration); null or absent: a seeded random split (65/15/20)")
    groups: str | None = Field(None, description="npz key of group ids (blocks of space or time): cross-validation "
                                                 "never splits a group across folds")
    class_names: list[str] | None = Field(None, description="names of the first classification target's classes")
    text_len: int = Field(64, ge=4, description="tokens per text sample")
    max_classes: int = Field(MAX_CLASSES, ge=2, description="classes per classification target a run accepts")

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

    modalities: list[str] = Field(default_factory=list, description="its input modalities; required, except for "
                                                                    "`teacher` when `teachers` is set")
    width: int = Field(64, ge=4, le=4096, description="feature width of the encoders and the fusion")
    heads: int = Field(4, ge=1, description="attention heads of the fusion")
    depth: int = Field(1, ge=1, le=8, description="fusion layers")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")
    epochs: int | None = Field(None, ge=1, description="null = auto: about 1,600 optimiser steps, 60 to 200 epochs "
                                                       "(cmkd.training.fit.schedule_for)")
    batch_size: int | None = Field(None, ge=1, description="null = auto: min(128, max(8, ceil(n / 8))) for n "
                                                           "training samples, at least 8 batches per epoch "
                                                           "(benchmarks/small_data.md)")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate (warm-up, then cosine decay)")
    patience: int | None = Field(None, ge=1, description="early-stopping patience in epochs; null = auto: a fifth of "
                                                         "the epochs, at least 12")
    nll_beta: float = Field(0.5, ge=0, le=1, description="its regression task loss: beta-NLL (Seitzer et al., "
                                                         "2022); 0 = plain Gaussian NLL")
    modality_dropout: float = Field(0.0, ge=0, lt=1, description="share of training samples with one modality "
                                                                 "dropped at random (robustness to missing inputs)")
    encoders: dict[str, str] = Field(default_factory=dict, description="modality kind -> encoder name where the "
                                                                       "kind's default is not wanted, e.g. "
                                                                       "{image: mobilenet}")
    encoder_options: dict[str, dict[str, float]] = Field(default_factory=dict, description="encoder name -> its "
                                                                                           "keyword options, e.g. "
                                                                                           "{periodic: {sigma: 0.03}}")

    @field_validator("encoders", "encoder_options")
    @classmethod
    def _known_encoders(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        _check_names(info.field_name, v)  # the check registered under the field's own name
        return v


class StudentConfig(ModelConfig):
    """The student's settings: a model's, plus those that apply to students only (the baseline, distilled,
    progressive students and the assistants share them)."""

    refit: bool = Field(False, description="after early stopping, retrain on train + val for the best epoch count; "
                                           "the tree student and the references are fitted again on train + val "
                                           "too (validation figures stay the first fits')")
    ensemble: int = Field(1, ge=1, le=16, description="train this many networks from their own initialisations and "
                                                      "average their outputs (a deep ensemble, one ONNX graph); "
                                                      "1 = one network")


class TeacherSpec(ModelConfig):
    """One member of a multi-teacher ensemble (``teachers:``): its modalities, the targets it is trained on
    (default: all) and its kd temperature (default: ``distill.temperature``); the members are averaged with equal
    weights; the other settings default to the ``teacher:`` section's."""

    targets: list[str] | None = Field(None, description="the targets it is trained on (null = all)")
    temperature: float | None = Field(None, gt=0, description="its kd temperature (null = distill.temperature)")


# per-term options of the loss terms (``distill.term_options``), their defaults; the options a term takes and the
# values allowed are the loss-term registry's (cmkd.nn.losses.register_loss)
TERM_OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "kd": {"confidence": False},
    "feature": {"mode": "cosine"},
    "relation": {"mode": "sp"},
    "contrastive": {"temperature": 0.1},
    "impute": {"sources": {}},
}


class DistillConfig(_Strict):
    """Distillation loss settings. Weights are per loss term (see ``cmkd.nn.losses.LOSSES``)."""

    temperature: float = Field(4.0, gt=0, description="kd temperature (and the default of each teachers: member's)")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5},
        description="loss term -> weight (task, kd, feature, relation, contrastive, impute)")
    term_options: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: copy.deepcopy(TERM_OPTION_DEFAULTS),
        description="loss term -> its options, merged over the defaults: kd.confidence (regression kd weighted by "
                    "the teacher's relative precision), feature.mode (cosine, mse), relation.mode (sp, rkd), "
                    "contrastive.temperature, impute.sources (student modality -> data key of its complete "
                    "version, for cross-modal imputation)")
    chain: list[list[str]] = Field(default_factory=list, description="progressive distillation: modality sets of "
                                                                     "assistant models from the teacher's side to "
                                                                     "the student's, e.g. [[msi, rgb]]")
    adaptive_weights: bool = Field(False, description="availability-adaptive weights: task term x (0.5 + a), teacher "
                                                      "terms x (1.5 - a), a = the sample's observed share")

    @field_validator("weights")
    @classmethod
    def _known_terms(cls, v: dict[str, float]) -> dict[str, float]:
        _check_names("loss_terms", v)
        return v

    @field_validator("term_options", mode="before")
    @classmethod
    def _merged_term_options(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = copy.deepcopy(TERM_OPTION_DEFAULTS)
        for term, opts in v.items():
            out[term] = {**out.get(term, {}), **opts} if isinstance(opts, dict) else opts
        return out

    @field_validator("term_options")
    @classmethod
    def _known_term_options(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _check_names("term_options", v)
        return v

    @property
    def impute(self) -> dict[str, str]:
        """The impute term's sources: student modality -> the data key of its complete version."""
        return self.term_options.get("impute", {}).get("sources", {})


class ExportConfig(_Strict):
    """Edge export settings."""

    enabled: bool = Field(True, description="write student.onnx and student.int8.onnx with their sidecars")
    latency_runs: int = Field(200, ge=5, description="batch-1 inferences timed per model")
    prune: float = Field(0.0, ge=0, lt=1, description="global L1 magnitude pruning of the student's weights before "
                                                      "export (share zeroed; 0 = off)")
    prune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning the pruned student with its own loss, "
                                                   "pruned weights held at zero (0 = none)")
    int8_x86: bool = Field(False, description="INT8 for x86 CPUs without VNNI: per-channel weight scales and 7-bit "
                                              "weights (avoids their u8s8 saturation)")
    model: str = Field("auto", description="what becomes student.onnx: auto = the recommended model, or a name "
                                           "(student, student_trees, a random_forest / extra_trees / "
                                           "hist_gradient_boosting reference)")


Algorithm = Literal["random_forest", "extra_trees", "hist_gradient_boosting", "ridge"]


class ReferencesConfig(_Strict):
    """Classical references on the student's modalities (:mod:`cmkd.classical.references`), fitted in a background
    thread while the students train; ``references: false`` in the YAML is short for ``{algorithms: []}``."""

    algorithms: list[Algorithm] = Field(
        default_factory=lambda: ["random_forest", "extra_trees", "hist_gradient_boosting"],
        description="which algorithms ([] = no references); ExtraTrees also gets one round of self-training where "
                    "unlabelled samples exist")
    n_estimators: int = Field(100, ge=1, description="trees per forest, boosting iterations")


class TreesConfig(_Strict):
    """The tree-ensemble student (:class:`cmkd.classical.trees.TreeStudent`, role ``student_trees``): an ExtraTrees
    distilled from the teacher's soft targets on the student's modalities; ``trees: false`` is short for
    ``{n_estimators: 0}``."""

    n_estimators: int = Field(100, ge=0, description="trees of the forest (0 = no tree student)")


class UncertaintyConfig(_Strict):
    """Split-conformal calibration (90% intervals) of regression heads, on split 3 when the data has one, else on
    val."""

    availability_edges: list[float] = Field(default_factory=lambda: [0.15, 0.3, 0.5, 0.75, 0.95],
                                            description="Mondrian calibration per band of the student's observed "
                                                        "share (edges in [0, 1]); [] = one pooled quantile")
    availability_modalities: list[str] | None = Field(None, description="modalities whose observed share defines the "
                                                                        "bands (null = all of the model's)")

    @field_validator("availability_edges")
    @classmethod
    def _edges_in_order(cls, v: list[float]) -> list[float]:
        """Band edges: shares in [0, 1], strictly increasing (the bands are searched in order)."""
        if any(not 0.0 <= e <= 1.0 for e in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"edges must be shares in [0, 1] in increasing order, each once; got {v}")
        return v


class ExperimentConfig(_Strict):
    """The whole experiment, as in the YAML file."""

    name: str = Field("experiment", description="the run's name (metrics.json, the report)")
    seed: int = Field(0, ge=0, lt=2**32, description="seeds every model, split and draw")
    recipe: str | None = Field(None, description="the built-in recipe whose hooks run (set by `cmkd run <recipe>`)")
    data: DataConfig = Field(description="the data and what each key means")
    teacher: ModelConfig = Field(description="the teacher (with `teachers:`, the members' shared settings)")
    student: StudentConfig = Field(description="the student (baseline, distilled, progressive)")
    teachers: dict[str, TeacherSpec] = Field(default_factory=dict, description="multi-teacher distillation: name -> "
                                                                               "a teacher on its own modalities "
                                                                               "(and targets)")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="the distillation loss")
    export: ExportConfig = Field(default_factory=ExportConfig, description="ONNX / INT8 export")
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig, description="conformal intervals")
    references: ReferencesConfig = Field(default_factory=ReferencesConfig, description="classical references")
    trees: TreesConfig = Field(default_factory=TreesConfig, description="the tree student")
    options: dict[str, Any] = Field(default_factory=dict, description="recipe-specific settings (see each "
                                                                      "recipe's docs)")

    @field_validator("references", mode="before")
    @classmethod
    def _references_switch(cls, v: Any) -> Any:
        return ({} if v else {"algorithms": []}) if isinstance(v, bool) else v

    @field_validator("trees", mode="before")
    @classmethod
    def _trees_switch(cls, v: Any) -> Any:
        return ({} if v else {"n_estimators": 0}) if isinstance(v, bool) else v

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
                raise ValueError(f"'distill.term_options.impute.sources': '{m}' is not a student modality "
                                 f"({', '.join(self.student.modalities)})")
            if src not in self.data.modalities:
                raise ValueError(f"'distill.term_options.impute.sources': source '{src}' is not declared in "
                                 "data.modalities")
        return self


def validate(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw config dict; a problem becomes a one-line CmkdError naming the key."""
    if not isinstance(raw, dict):
        raise CmkdError(f"{source}: the top level must be a mapping of keys to values")
    check_node_count(raw, source)  # an alias bomb (in the YAML or a --set value) before any copy of it
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise config_error(e, ExperimentConfig, source) from None


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
