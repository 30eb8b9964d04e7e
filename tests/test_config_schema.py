"""The configuration schema stays small and documented: at most ~60 fields over every model reachable from
ExperimentConfig (each model counts the fields it declares; a subclass only its own), every one with a description;
a key an older YAML may hold gets the one-line unknown-key error with what replaced it; student-only settings are
not teacher settings."""

from __future__ import annotations

import types
import typing

import pytest
from helpers import make_config
from pydantic import BaseModel

import cmkd.nn.losses  # noqa: F401 - registers the loss-term checks
import cmkd.nn.models  # noqa: F401 - registers the encoder checks
from cmkd.config import REPLACED, ExperimentConfig, validate
from cmkd.errors import CmkdError

MAX_FIELDS = 61  # the lean-house target, ~60 (98 before it); the 61st is data.sources (data as they come)


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every pydantic model reachable from ``root`` through field annotations (dicts, lists, Optional)."""
    seen: list[type[BaseModel]] = []
    stack = [root]
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.append(m)

        def walk(t: object) -> None:
            if isinstance(t, type) and issubclass(t, BaseModel):
                stack.append(t)
            for a in typing.get_args(t):
                walk(a)
            if isinstance(t, types.UnionType):
                for a in t.__args__:
                    walk(a)

        for f in m.model_fields.values():
            walk(f.annotation)
    return seen


def _own_fields(model: type[BaseModel]) -> dict:
    """The fields ``model`` declares itself (not those it inherits from a model base)."""
    inherited = set()
    for base in model.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
            inherited |= set(base.model_fields)
    return {k: f for k, f in model.model_fields.items() if k not in inherited}


def test_about_sixty_fields_each_with_a_description() -> None:
    fields = {f"{m.__name__}.{k}": f for m in _models(ExperimentConfig) for k, f in _own_fields(m).items()}
    assert len(fields) <= MAX_FIELDS, sorted(fields)
    missing = [k for k, f in fields.items() if not (f.description or "").strip()]
    assert not missing, f"fields without Field(description=...): {missing}"
    # the student-only settings are counted once, in StudentConfig
    assert {"StudentConfig.refit", "StudentConfig.ensemble"} <= set(fields)
    assert "ModelConfig.refit" not in fields


@pytest.mark.parametrize("key,value,says", [
    ("distill.nll_beta", 0.3, "moved to 'teacher.nll_beta' and 'student.nll_beta'"),
    ("distill.impute", {"vec": "img"}, "moved to 'distill.term_options.impute.sources'"),
    ("device", "cuda", "moved to the --device option"),
    ("distill.feature_mode", "mse", "moved to 'distill.term_options.feature.mode'"),
    ("distill.kd_confidence", True, "moved to 'distill.term_options.kd.confidence'"),
    ("references.tie_se", 1.0, "was removed: the one-standard-error rule did not pay"),
    ("references.blend", True, "was removed"),
    ("student.input_noise", 0.1, "was removed"),
    ("teachers.a.augment", True, "was removed"),
    ("threads", 2, "it was removed"),
])
def test_an_old_key_gets_the_one_line_error_with_its_replacement(key: str, value: object, says: str) -> None:
    raw = make_config()
    if key.startswith("teachers."):
        raw["teachers"] = {"a": {"modalities": ["vec"]}}
    node = raw
    *path, last = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[last] = value
    with pytest.raises(CmkdError) as err:
        validate(raw, source="old.yaml")
    msg = str(err.value)
    assert "\n" not in msg and f"unknown key '{key}'" in msg and says in msg, msg


def test_replacements_name_keys_that_are_gone() -> None:
    """Every key of the REPLACED map is unknown to today's schema (else the map would hide a live key)."""
    for key in REPLACED:
        section, _, name = key.partition(".")
        if not name:
            assert section not in ExperimentConfig.model_fields, key
            continue
        model = ExperimentConfig.model_fields["teacher" if section == "model" else section].annotation
        assert name not in model.model_fields, key


def test_student_settings_are_not_teacher_settings() -> None:
    raw = make_config()
    raw["student"]["refit"] = True
    raw["student"]["ensemble"] = 2
    cfg = validate(raw)
    assert cfg.student.refit and cfg.student.ensemble == 2
    for key in ("refit", "ensemble"):
        bad = make_config()
        bad["teacher"][key] = True if key == "refit" else 2
        with pytest.raises(CmkdError, match=f"unknown key 'teacher.{key}': is a student setting: student.{key}"):
            validate(bad, source="t")


def test_term_options_merge_over_the_defaults_and_are_checked_against_the_registry() -> None:
    raw = make_config()
    raw["distill"] = {"term_options": {"relation": {"mode": "rkd"}}}
    opts = validate(raw).distill.term_options
    assert opts["relation"] == {"mode": "rkd"} and opts["feature"] == {"mode": "cosine"}
    assert opts["kd"] == {"confidence": False} and opts["contrastive"] == {"temperature": 0.1}
    assert opts["impute"] == {"sources": {}}
    for bad, msg in (({"hint": {}}, "unknown loss term 'hint'"),
                     ({"feature": {"modes": "mse"}}, "has no option 'modes'; valid: mode"),
                     ({"feature": {"mode": "l1"}}, "not one of cosine, mse"),
                     ({"contrastive": {"temperature": 0}}, "not a number above 0"),
                     ({"kd": {"confidence": "yes"}}, "not true or false"),
                     ({"impute": {"sources": ["vec"]}}, "not a mapping of names to names")):
        raw["distill"] = {"term_options": bad}
        with pytest.raises(CmkdError, match=msg):
            validate(raw, source="t")
