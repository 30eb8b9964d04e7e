"""Multi-teacher distillation: config inheritance, the ensemble's combination rules (hand-computed), kd against
its soft target, and a tiny end-to-end run on SYNTHETIC data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_arrays, make_config, write_case

import cmkd
from cmkd.config import validate
from cmkd.errors import CmkdError
from cmkd.nn.checkpoint import load_model
from cmkd.nn.losses import kd_loss
from cmkd.nn.models import EnsembleTeacher, MultimodalNet


def _config(**teachers: dict) -> dict:
    cfg = make_config(student="img")
    cfg["teacher"] = {"width": 16, "heads": 2, "epochs": 2, "batch_size": 64}
    cfg["teachers"] = teachers
    return cfg


def test_members_inherit_teacher_settings_and_union_modalities() -> None:
    cfg = validate(_config(a={"modalities": ["vec"], "temperature": 2.0}, b={"modalities": ["sig"], "width": 8}))
    assert cfg.teacher.modalities == ["vec", "sig"]
    assert cfg.teachers["a"].width == 16 and cfg.teachers["b"].width == 8 and cfg.teachers["b"].epochs == 2
    assert cfg.teachers["a"].temperature == 2.0 and cfg.teachers["b"].temperature is None


@pytest.mark.parametrize(("spec", "msg"), [({"modalities": ["nope"]}, "not declared"),
                                           ({"modalities": ["vec"], "targets": ["z"]}, "target 'z'"),
                                           ({"modalities": []}, "at least one modality")])
def test_bad_member_specs_are_clear_errors(spec: dict, msg: str) -> None:
    with pytest.raises(CmkdError, match=msg):
        validate(_config(a=spec))


class _Fixed(MultimodalNet):
    """A member whose outputs are fixed per sample: logits, or a regression mean/logvar."""

    def __init__(self, modality: str, target: str, kind: str, out: torch.Tensor) -> None:
        n_out = out.shape[1] if kind == "classification" else out.shape[1] // 2
        super().__init__({modality: {"kind": "vector", "shape": [2]}}, {target: {"kind": kind, "n_out": n_out}},
                         width=4, heads=1)
        self.fixed, self.kind, self.t = out, kind, target

    def forward(self, inputs: dict, present: dict | None = None) -> dict:
        b = next(iter(inputs.values())).shape[0]
        o = self.fixed[:b]
        head = ({"logits": o} if self.kind == "classification"
                else {"mean": o[:, :1], "logvar": o[:, 1:], "value": o[:, :1]})
        return {"features": torch.ones(b, 4) * (1 if self.kind == "classification" else -1), self.t: head}


def test_ensemble_combines_members_by_hand() -> None:
    za = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    zb = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    ens = EnsembleTeacher({"a": _Fixed("x", "y", "classification", za), "b": _Fixed("w", "y", "classification", zb)},
                          {"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 1.0})
    x = torch.zeros(2, 2)
    w = torch.full((2, 2), float("nan"))
    w[0] = 0.0  # member b has its modality only for sample 0
    out = ens({"x": x, "w": w})
    pa, pb = za.softmax(1), zb.softmax(1)
    expect0 = 0.75 * pa[0] + 0.25 * pb[0]
    assert torch.allclose(out["y"]["logits"][0].exp(), expect0, atol=1e-6)
    assert torch.allclose(out["y"]["logits"][1].exp(), pa[1], atol=1e-6)  # b is absent: a alone
    soft0 = 0.75 * za[0].softmax(0) + 0.25 * (zb[0] / 2.0).softmax(0)
    assert torch.allclose(out["y"]["soft_logp"][0].exp(), soft0, atol=1e-6)
    # features: sqrt(w_k / sum w) * unit vectors, b's block zero where b is absent
    assert torch.allclose(out["features"][0, :4], torch.full((4,), 0.5 * math.sqrt(0.75)))
    assert torch.allclose(out["features"][1, 4:], torch.zeros(4))
    # kd uses the ensemble's soft target: KL(soft || softmax(z_s / T)) * T^2
    zs = torch.tensor([[0.5, -0.5], [0.0, 1.0]])
    t = 2.0
    kl = (soft0 * (soft0.log() - (zs[0] / t).log_softmax(0))).sum()
    got = kd_loss({"features": zs, "y": {"logits": zs[:1]}}, {"y": {"soft_logp": out["y"]["soft_logp"][:1],
                                                                    "logits": out["y"]["logits"][:1]}},
                  {}, temperature=t, confidence=False)
    assert math.isclose(float(got), float(kl) * t**2, rel_tol=1e-5)


def test_ensemble_regression_is_the_mixture() -> None:
    a = _Fixed("x", "r", "regression", torch.tensor([[1.0, math.log(0.25)]]))
    b = _Fixed("w", "r", "regression", torch.tensor([[3.0, math.log(1.0)]]))
    ens = EnsembleTeacher({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0})
    out = ens({"x": torch.zeros(1, 2), "w": torch.zeros(1, 2)})
    assert math.isclose(float(out["r"]["mean"]), 2.0, rel_tol=1e-6)
    # 0.5 (0.25 + 1) + 0.5 (1 + 9) - 4 = 1.625
    assert math.isclose(float(out["r"]["logvar"].exp()), 1.625, rel_tol=1e-5)


@pytest.mark.slow  # a full run
def test_tiny_run_with_three_teachers(tmp_path: Path) -> None:
    arrays = make_arrays(n=240)
    arrays["zr"] = (2 * arrays["vec"][:, 0]).astype(np.float32)
    cfg = _config(vec={"modalities": ["vec"], "temperature": 2.0}, sig={"modalities": ["sig"], "targets": ["y"]},
                  txt={"modalities": ["txt"], "targets": ["y"]})
    cfg["data"]["targets"]["zr"] = {"kind": "regression"}
    cfg["distill"] = {"weights": {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5, "contrastive": 0.2}}
    m = cmkd.run(str(write_case(tmp_path / "case", arrays, cfg)), tmp_path / "out", quiet=True)
    roles = list(m["models"])
    assert roles[:4] == ["teacher", "teacher_sig", "teacher_txt", "teacher_vec"]
    assert m["models"]["teacher"]["modalities"] == ["sig", "txt", "vec"]
    assert "zr/rmse" in m["models"]["teacher_vec"]["metrics"] and "zr/rmse" not in m["models"]["teacher_sig"]["metrics"]
    assert {"accuracy", "zr/rmse"} <= set(m["models"]["student"]["metrics"])
    # the ensemble runs every member: slower than any one of them
    lat = {r: m["models"][r]["latency_ms"] for r in roles[:4]}
    assert lat["teacher"] > max(lat["teacher_sig"], lat["teacher_txt"], lat["teacher_vec"])
    hist = json.loads((tmp_path / "out" / "histories.json").read_text())
    assert {"teacher_sig", "teacher_txt", "teacher_vec", "student"} <= set(hist)
    assert "train_contrastive" in hist["student"][0]
    net, _ = load_model(tmp_path / "out" / "teacher.pt")
    assert isinstance(net, EnsembleTeacher) and set(net.members) == {"sig", "txt", "vec"}


@pytest.mark.slow  # a full run
def test_tune_trains_the_ensemble_once_and_searches_the_student(tmp_path: Path) -> None:
    from cmkd.pipeline.tune import tune

    cfg = _config(vec={"modalities": ["vec"], "temperature": 2.0}, sig={"modalities": ["sig"]})
    cfg["distill"] = {"term_options": {"kd": {"confidence": True}}, "weights": {"task": 1.0, "kd": 1.0, "feature": 0.5}}
    cfg["student"] = {**cfg.get("student", {}), "epochs": 2}
    res = tune(validate(cfg), make_arrays(n=200), trials=2, out=tmp_path / "t")
    assert len(res["trials"]) == 2 and res["trials"][0]["params"] == "defaults"
    assert all(np.isfinite(t["val_accuracy"]) for t in res["trials"])
    best = (tmp_path / "t" / "best.yaml").read_text()
    assert "teachers:" in best and "confidence: true" in best
