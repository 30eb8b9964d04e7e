"""``student.ensemble``: several student networks from their own initialisations, averaged into one model and one
ONNX graph (tiny SYNTHETIC data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_arrays, make_config, write_case

import cmkd
from cmkd.config import validate
from cmkd.data.arrays import build_data
from cmkd.errors import CmkdError
from cmkd.evaluation.metrics import predict, task_metrics
from cmkd.export.onnx import ort_run, ort_session
from cmkd.nn.checkpoint import load_model
from cmkd.nn.models import EnsembleTeacher


def _cfg(k: int, task: str = "classification") -> dict:
    cfg = make_config(student="vec", teacher=["vec", "img"], epochs=2, task=task)
    cfg["student"]["ensemble"] = k
    cfg["references"] = False
    cfg["trees"] = False
    return cfg


@pytest.mark.slow  # full runs
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_ensemble_student_averages_its_members_and_exports_as_one_graph(tmp_path: Path, task: str) -> None:
    arr = make_arrays(200, 0, task)
    one, three = tmp_path / "one", tmp_path / "three"
    cmkd.run(str(write_case(tmp_path / "a", arrays=arr, config=_cfg(1, task))), one, quiet=True)
    cmkd.run(str(write_case(tmp_path / "b", arrays=arr, config=_cfg(3, task))), three, quiet=True)
    m1, m3 = (json.loads((d / "metrics.json").read_text()) for d in (one, three))
    hist = json.loads((three / "histories.json").read_text())
    for role in ("student_baseline", "student"):
        assert m3["models"][role]["params"] == 3 * m1["models"][role]["params"]
        assert {f"{role}_m1", f"{role}_m2"} <= set(hist)  # each member's own training curve
    net, meta = load_model(three / "student.pt")
    assert isinstance(net, EnsembleTeacher) and list(net.members) == ["m0", "m1", "m2"]
    assert set(meta["hparams"]["modalities"]) == {"vec"} and net.hparams["targets"] == meta["hparams"]["targets"]
    # member 0 is the network an ensemble of one trains (same seeds): ensemble 1 is the run as before
    single, _ = load_model(one / "student_baseline.pt")
    base, _ = load_model(three / "student_baseline.pt")
    for a, b in zip(single.state_dict().values(), base.members["m0"].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(base.members["m0"].parameters(),
                                                     base.members["m1"].parameters(), strict=True))
    # the test figure is the members' average: class probabilities, or regression means
    data = build_data(arr, validate(_cfg(3, task), source="t").data, 0)
    te = data.labelled(data.indices(2))
    parts = [predict(m, data, te) for m in net.members.values()]
    if task == "classification":
        probs = [torch.softmax(torch.from_numpy(p["y/logits"]), -1).numpy() for p in parts]
        avg = {"y/logits": np.log(np.mean(probs, axis=0))}
    else:
        avg = {"y/value": np.mean([p["y/value"] for p in parts], axis=0)}
    metric = "accuracy" if task == "classification" else "rmse"
    assert m3["models"]["student"]["metrics"][metric] == pytest.approx(task_metrics(data, te, avg)[metric],
                                                                       rel=1e-5)
    # one ONNX graph with the ensemble's outputs
    assert m3["export"]["max_abs_diff"] <= 1e-5
    got = ort_run(ort_session(three / "student.onnx"), {"vec": data.inputs["vec"][te]})[0]
    ref = np.exp(avg["y/logits"]) if task == "classification" else avg["y/value"]
    assert np.abs(got - ref).max() < 1e-4


def test_the_ensemble_is_a_student_setting_and_does_not_combine_with_pruning(tmp_path: Path) -> None:
    cfg = _cfg(1)
    cfg["teacher"]["ensemble"] = 2
    with pytest.raises(CmkdError, match="student setting"):
        validate(cfg, source="t")
    cfg = _cfg(2)
    cfg["export"]["prune"] = 0.5
    with pytest.raises(CmkdError, match="export.prune"):
        validate(cfg, source="t")
    with pytest.raises(CmkdError, match="ensemble"):
        validate({**_cfg(1), "student": {**_cfg(1)["student"], "ensemble": 0}}, source="t")


@pytest.mark.slow  # full runs
def test_a_refit_ensemble_refits_each_member_and_is_compared_on_its_figure_from_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)  # the validation split, as with many labels
    cfg = _cfg(2)
    cfg["student"]["refit"] = True
    cfg["references"] = {"n_estimators": 5, "algorithms": ["extra_trees"]}
    out = tmp_path / "out"
    cmkd.run(str(write_case(tmp_path, arrays=make_arrays(200, 0), config=cfg)), out, quiet=True)
    hist = json.loads((out / "histories.json").read_text())
    assert {"student_refit", "student_m1", "student_m1_refit"} <= set(hist)
    saved = json.loads((out / "metrics.json").read_text())
    ens = saved["models"]["student"]["ensemble"]
    assert ens["members"] == 2
    # the recommendation compares the averaged members' validation figure from before the refit (the refit
    # members trained on the validation samples), not a member's best epoch
    v = saved["recommended"]["val"]["student"]
    assert (v["accuracy"] if isinstance(v, dict) else v) == pytest.approx(ens["val"])
    assert saved["models"]["student_baseline"]["ensemble"]["members"] == 2


def test_network_val_prefers_the_ensembles_figure() -> None:
    from types import SimpleNamespace

    from cmkd.pipeline.students import network_val

    st = SimpleNamespace(ensemble_val={"student": 0.7}, sign=1.0, val_metrics={},
                         histories={"student": [{"val_metric": 0.9}], "student_baseline": [{"val_metric": 0.6}]})
    assert network_val(st, "student") == 0.7  # the ensemble's, not its first member's best epoch
    assert network_val(st, "student_baseline") == 0.6
