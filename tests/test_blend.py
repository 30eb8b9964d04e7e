"""The blended student (``references.blend``, :mod:`cmkd.classical.blend`): the network and its tree partner
averaged, in
metrics.json beside the references, recommended on validation like the others, deployed as one ONNX graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_arrays, make_config, write_case

import cmkd
from cmkd.classical.blend import blend_predictions
from cmkd.config import validate
from cmkd.data.arrays import build_data
from cmkd.export.onnx import ort_run, ort_session


def test_blend_predictions_average_probabilities_values_and_stds() -> None:
    kinds = {"c": "classification", "r": "regression"}
    net = {"c/logits": np.log(np.array([[0.9, 0.1], [0.2, 0.8]])), "r/value": np.array([[1.0], [3.0]]),
           "r/std": np.array([[1.0], [1.0]])}
    tree = {"c/logits": np.log(np.array([[0.1, 0.9], [0.4, 0.6]])), "r/value": np.array([[3.0], [5.0]]),
            "r/std": np.array([[3.0], [3.0]])}
    b = blend_predictions(net, tree, kinds, 0.25)
    assert np.allclose(np.exp(b["c/logits"]), [[0.3, 0.7], [0.35, 0.65]])
    assert np.allclose(b["r/value"], [[2.5], [4.5]]) and np.allclose(b["r/std"], [[2.5], [2.5]])


@pytest.mark.slow  # full runs (9-37 s each, -n 0 on the loaded 2-core machine)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_pinned_blend_is_one_onnx_graph_averaging_the_network_and_its_partner(tmp_path, task) -> None:
    """export.model student_blend: student.onnx holds the network and the partner side by side; its outputs are
    the average of the network's file (student_net.onnx) and the partner's, and score what metrics.json says."""
    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=2, task=task)
    cfg["references"] = {"n_estimators": 10, "algorithms": ["extra_trees"], "blend": True}
    cfg["trees"] = {"n_estimators": 10}
    cfg["export"]["model"] = "student_blend"
    arr = make_arrays(240, 0, task)
    out = tmp_path / "out"
    cmkd.run(str(write_case(tmp_path, arrays=arr, config=cfg)), out, quiet=True)
    saved = json.loads((out / "metrics.json").read_text())
    blend, dep = saved["student_blend"], saved["deployed"]
    assert blend["partner"] in {"extra_trees", "extra_trees_teacher_labels", "extra_trees_self_training",
                                "student_trees"}
    metric = "accuracy" if task == "classification" else "rmse"
    trees = {k: v for k, v in saved["recommended"]["val"].items() if k not in ("student", "student_blend")}
    # the partner: the best tree model on validation (a tie, e.g. the tree student sharing the extra_trees
    # fit on a fully labelled regression, to the cheaper)
    assert trees[blend["partner"]] == (max if task == "classification" else min)(trees.values())
    assert saved["recommended"]["val"]["student_blend"] == blend["val"][metric]
    assert dep["model"] == "student_blend" and dep["partner"] == blend["partner"] and dep["max_abs_diff"] <= 1e-5
    # the ONNX graph scores what the blend of the torch network and the scikit-learn trees scored
    assert dep["onnx_metrics"][metric] == pytest.approx(blend["metrics"][metric], rel=1e-4, abs=1e-4)
    data = build_data(arr, validate(cfg, source="t").data, 0)
    te = data.labelled(data.indices(2))
    got = ort_run(ort_session(out / "student.onnx"), {"seq": data.inputs["seq"][te]})[0]
    net = ort_run(ort_session(out / "student_net.onnx"), {"seq": data.inputs["seq"][te]})[0]
    assert got.shape == net.shape and not np.allclose(got, net)  # the trees took part
    card = json.loads((out / "student.json").read_text())
    assert card["model_type"] == "network_tree_blend" and card["role"] == "student_blend"
    assert not list(out.glob(".*.onnx"))  # the partner's temporary graph is gone


@pytest.mark.slow  # full runs (9-37 s each, -n 0 on the loaded 2-core machine)
def test_the_blend_is_off_by_default_and_a_refit_network_blends_on_its_earlier_predictions(tmp_path) -> None:
    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=2)
    cfg["references"] = {"n_estimators": 5, "algorithms": ["extra_trees"]}
    cfg["trees"] = {"n_estimators": 5}
    cfg["export"]["enabled"] = False
    m = cmkd.run(str(write_case(tmp_path / "a", config=cfg)), tmp_path / "a" / "out", quiet=True)
    assert "student_blend" not in m and "student_blend" not in m["recommended"]["val"]
    cfg["references"]["blend"] = True
    cfg["student"]["refit"] = True
    m = cmkd.run(str(write_case(tmp_path / "b", config=cfg)), tmp_path / "b" / "out", quiet=True)
    assert m["student_blend"]["val_from"].startswith("before the network's refit")
    assert m["recommended"]["val"]["student_blend"] == m["student_blend"]["val"]["accuracy"]
