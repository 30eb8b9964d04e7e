"""The tree-ensemble student (cmkd.classical.trees) on tiny seeded SYNTHETIC data: soft targets, distillation, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_arrays, make_config

from cmkd.classical.trees import TreeStudent, bag_of_words, export_tree_student, flat_features, soft_targets
from cmkd.config import validate
from cmkd.data.arrays import build_data
from cmkd.evaluation.metrics import task_metrics
from cmkd.export.onnx import ort_run, ort_session


def sparse_case(task: str, n: int = 400, label_share: float = 0.1, seed: int = 0, k: int = 1):
    """SYNTHETIC data with ``label_share`` of the training labels kept, and an oracle-ish synthetic teacher
    (the true class with noisy logits, or the true value plus noise) as full-length predict-style outputs."""
    arr = make_arrays(n, seed, task)
    rng = np.random.default_rng(seed + 7)
    y = arr["y"]
    if task == "classification":
        teacher = {"y/logits": np.eye(3)[y] * 3 + rng.normal(size=(n, 3))}
        y = y.astype(float)
    else:
        y = np.stack([y, -0.5 * y][:k], axis=1).astype(np.float32) if k > 1 else y
        teacher = {"y/value": y.reshape(n, -1) + 0.3 * rng.normal(size=(n, k))}
    tr = np.flatnonzero(arr["split"] == 0)
    hide = rng.choice(tr, int((1 - label_share) * len(tr)), replace=False)
    y = y.copy()
    y[hide] = np.nan
    arr["y"] = y
    data = build_data(arr, validate(make_config(task=task), source="test").data, seed)
    return data, teacher


def test_bag_of_words_counts_ids_and_ignores_padding():
    ids = np.array([[1, 1, 3, 0], [7, 0, 0, 0]])
    bow = bag_of_words(ids, 5)  # ids 1..4; 7 is out of range
    assert bow.shape == (2, 4)
    assert bow[0].tolist() == [2, 0, 1, 0] and bow[1].sum() == 0


def test_flat_features_keep_nan_and_mark_absent_samples():
    data, _ = sparse_case("classification", n=60)
    data.present["img"][:3] = False
    x = flat_features(data, ["seq", "img", "txt"], np.arange(10), 256)
    assert x.shape == (10, 12 * 3 + 4 * 3 + 2 * 5 * 5 + 255)  # a sequence: its steps, then 4 summaries a channel
    assert np.isnan(x[:3, 48:98]).all() and not np.isnan(x[3:, 48:98]).any()
    assert np.isnan(x[:, :36]).any()  # the sequence's missing values stay NaN
    seq = data.inputs["seq"][:10].astype(np.float32)
    assert np.allclose(x[:, 36:39], np.nanmean(seq, axis=1), equal_nan=True)  # the channel means
    assert np.allclose(x[:, 45:48], np.nanmax(seq, axis=1), equal_nan=True)


def test_soft_targets_labels_where_known_teacher_elsewhere():
    data, teacher = sparse_case("classification", n=120)
    tr = data.indices(0)
    mask = np.ones(data.n, bool)
    mask[tr[:5]] = False  # the teacher did not see these
    rows, y = soft_targets(data, "y", tr, teacher, mask)
    lab = data.targets["y"][tr] >= 0
    kept = tr[rows]
    assert np.allclose(y.sum(axis=1), 1)
    assert set(tr[:5][~lab[:5]]).isdisjoint(kept)  # neither label nor teacher: dropped
    y_lab = y[lab[rows]]
    assert np.allclose(y_lab.max(axis=1), 1)  # one-hot where labelled
    p = np.exp(teacher["y/logits"][kept[~lab[rows]]])
    assert np.allclose(y[~lab[rows]], p / p.sum(axis=1, keepdims=True))


def test_distilled_trees_beat_labels_only_trees_with_a_good_teacher():
    """5% labels, a synthetic teacher close to the truth: the soft targets on the unlabelled samples help
    (measured when written: labels only 0.538, distilled 0.678 mean accuracy over seeds 0-2)."""
    acc_only, acc_kd = [], []
    for seed in range(3):
        data, teacher = sparse_case("classification", n=600, label_share=0.05, seed=seed)
        tr, te = data.indices(0), data.indices(2)
        kw = {"modalities": ["sig"], "n_estimators": 50, "seed": 0}
        only = TreeStudent(**kw).fit(data, data.labelled(tr))
        kd = TreeStudent(**kw).fit(data, tr, teacher)
        assert kd.n_fit_["y"] > 3 * only.n_fit_["y"]
        acc_only.append(task_metrics(data, te, only.predict(data, te))["accuracy"])
        acc_kd.append(task_metrics(data, te, kd.predict(data, te))["accuracy"])
    assert np.mean(acc_kd) > np.mean(acc_only) + 0.05, (acc_kd, acc_only)


@pytest.mark.parametrize("task,k", [("classification", 1), ("regression", 2)])
def test_onnx_parity_through_onnxruntime_alone(tmp_path, task, k):
    data, teacher = sparse_case(task, n=240, k=k)
    mods = ["seq", "img", "txt"]  # NaN inside seq, text as token ids
    ts = TreeStudent(mods, n_estimators=20, seed=1, text_vocab=512).fit(
        data, data.indices(0), teacher, val_idx=data.indices(1))
    te = data.indices(2)
    res = export_tree_student(ts, data, te, tmp_path / "student_trees.onnx", latency_runs=5)
    assert res["max_abs_diff"] <= 1e-5
    assert res["onnx_metrics"] == pytest.approx(task_metrics(data, te, ts.predict(data, te)), abs=1e-6)
    assert res["onnx_bytes"] > 0 and res["onnx_latency_ms"] > 0
    # ONNX Runtime alone, as a user would: inputs by modality name, outputs per target (+ <target>_std)
    sess = ort_session(tmp_path / "student_trees.onnx")
    assert [i.name for i in sess.get_inputs()] == mods
    names = [o.name for o in sess.get_outputs()]
    assert names == (["y"] if task == "classification" else ["y", "y_std"])
    x = {m: data.inputs[m][te] for m in mods}
    x["seq"] = x["seq"].copy()
    x["seq"][:, :4] = np.nan  # more missing values than in training
    out = ort_run(sess, x)
    data.inputs["seq"][te] = x["seq"]
    ref = ts.predict(data, te)
    key = "y/probs" if task == "classification" else "y/value"  # the graph outputs probabilities, as the network's
    assert out[0].shape == ref[key].shape
    assert np.max(np.abs(out[0] - ref[key])) <= 1e-5
    if task == "classification":
        assert np.allclose(out[0].sum(axis=1), 1, atol=1e-5)
    if task == "regression":
        assert out[0].shape[1] == k and np.all(out[1] > 0)
        assert np.allclose(out[1], ts.std_["y"][None, :])


@pytest.mark.parametrize("task,k", [("classification", 1), ("regression", 2)])
def test_a_large_forest_goes_in_parts_with_the_same_outputs(tmp_path, task, k, monkeypatch: pytest.MonkeyPatch):
    """Past CHUNK_NODES nodes the forest is several ensembles summed (ONNX Runtime's load peak is lower); the
    outputs stay scikit-learn's."""
    import onnx

    from cmkd.classical import trees_onnx

    data, teacher = sparse_case(task, n=240, k=k)
    ts = TreeStudent(["seq", "img"], n_estimators=20, seed=1).fit(data, data.indices(0), teacher)
    te = data.indices(2)
    whole = export_tree_student(ts, data, te, tmp_path / "whole.onnx", latency_runs=0)
    monkeypatch.setattr(trees_onnx, "CHUNK_NODES", 300)
    parts = export_tree_student(ts, data, te, tmp_path / "parts.onnx", latency_runs=0)
    ops = [n.op_type for n in onnx.load(tmp_path / "parts.onnx").graph.node]
    assert ops.count("TreeEnsembleRegressor") > 3 and "Sum" in ops
    assert [n.op_type for n in onnx.load(tmp_path / "whole.onnx").graph.node].count("TreeEnsembleRegressor") == 1
    assert whole["max_abs_diff"] <= 1e-5 and parts["max_abs_diff"] <= 1e-5
    assert parts["onnx_metrics"] == pytest.approx(whole["onnx_metrics"], abs=1e-6)


@pytest.mark.slow  # a full run
def test_run_writes_references_tree_student_and_the_recommended_student_onnx(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """cmkd.run on SYNTHETIC data with unlabelled training samples: every reference, student_trees and its ONNX,
    the recommendation, and student.onnx holding the recommended model (parity through onnxruntime alone)."""
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)  # the validation split, as with many labels
    import json

    from helpers import write_case

    import cmkd

    arr = make_arrays(240, 0)
    rng = np.random.default_rng(0)
    tr = np.flatnonzero(arr["split"] == 0)
    y = arr["y"].astype(float)
    y[rng.choice(tr, len(tr) // 2, replace=False)] = np.nan  # half the training samples unlabelled
    arr["y"] = y
    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=2)
    cfg["references"] = {"n_estimators": 10}
    cfg["trees"] = {"n_estimators": 10}
    m = cmkd.run(str(write_case(tmp_path, arrays=arr, config=cfg)), tmp_path / "out", quiet=True)
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    # self-training: ExtraTrees only by default (references.self_training)
    assert {"random_forest", "extra_trees_teacher_labels", "extra_trees_self_training"} <= set(saved["references"])
    assert not {"random_forest_self_training", "hist_gradient_boosting_self_training"} & set(saved["references"])
    st = saved["models"]["student_trees"]
    assert st["modalities"] == ["seq"] and st["params"] > 0 and st["latency_ms"] > 0
    assert st["n_fit"]["y"] > m["data"]["n_train"]  # labelled + unlabelled samples with the teacher's targets
    assert saved["export_trees"]["max_abs_diff"] <= 1e-5 and (out / "student_trees.onnx").is_file()
    rec = saved["recommended"]
    assert rec["model"] in rec["val"] and {"student", "student_trees"} <= set(rec["val"])
    best = max(rec["val"].values())
    assert rec["val"][rec["best_on_val"]] == best  # the recommended one is within the tie tolerance of it
    assert best - rec["tie_tolerance"] <= rec["val"][rec["model"]] <= best
    dep = saved["deployed"]
    assert dep["onnx"] == "student.onnx"
    if dep["model"] != "student":
        assert (out / "student_net.onnx").is_file() and saved["export"]["onnx"] == "student_net.onnx"
        assert dep["max_abs_diff"] <= 1e-5
    sess = ort_session(out / "student.onnx")
    data = build_data(arr, validate(cfg, source="t").data, 0)
    te = data.labelled(data.indices(2))
    logits = ort_run(sess, {"seq": data.inputs["seq"][te]})[0]
    assert logits.shape == (len(te), 3)
    want = dep["onnx_metrics"]["accuracy"] if dep["model"] != "student" else saved["export"]["int8_metrics"][
        "accuracy"]
    got = float((logits.argmax(1) == data.targets["y"][te]).mean())
    assert got == pytest.approx(want, abs=1e-9 if dep["model"] != "student" else 0.1)


@pytest.mark.slow  # a full run
def test_run_export_model_pins_the_network_and_switches_turn_the_stage_off(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)  # the validation split, as with many labels
    from helpers import write_case

    import cmkd

    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=1)
    cfg["references"] = {"n_estimators": 5, "algorithms": ["extra_trees"]}
    cfg["trees"] = {"n_estimators": 5}
    cfg["export"]["model"] = "student"
    m = cmkd.run(str(write_case(tmp_path / "a", config=cfg)), tmp_path / "a" / "out", quiet=True)
    assert m["deployed"]["model"] == "student" and not (tmp_path / "a" / "out" / "student_net.onnx").exists()
    assert set(m["references"]) == {"extra_trees"} and "recommended" in m
    cfg.update({"references": False, "trees": False})
    cfg["export"]["model"] = "auto"
    m = cmkd.run(str(write_case(tmp_path / "b", config=cfg)), tmp_path / "b" / "out", quiet=True)
    assert not {"references", "recommended", "deployed", "export_trees"} & set(m)
    assert "student_trees" not in m["models"]


def test_histgradientboosting_onnx_parity_binary_multiclass_and_regression(tmp_path):
    """HistGradientBoosting in ONNX (summed trees + baseline, sigmoid / softmax, classes spread over the full
    class list, a subset of the feature columns, NaN routed per node) matches scikit-learn through onnxruntime."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from cmkd.classical.trees import ensemble_onnx, save_onnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    xf = np.nan_to_num(x)
    keep = np.array([0, 1, 2, 3, 5])  # the models see 5 of the 6 columns
    c4 = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
        x[:, keep], (xf[:, 0] > 0).astype(int) + 2 * (xf[:, 1] > 0.5))
    c2 = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x[:, keep], (xf[:, 2] > 0).astype(int))
    rs = [HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x[:, keep], v)
          for v in (10 * xf[:, 0] + rng.normal(size=400), 3 + xf[:, 3])]
    heads = {"a": {"model": c4, "kind": "classification", "n_classes": 6, "classes": np.array([0, 2, 3, 5]),
                   "features": keep},
             "b": {"model": c2, "kind": "classification", "n_classes": 2, "features": keep},
             "r": {"model": rs, "kind": "regression", "std": np.ones(2), "features": keep}}
    sess = ort_session(save_onnx(ensemble_onnx(heads, ["x"], {"x": "vector"}, {"x": (6,)}), tmp_path / "hgb.onnx"))
    out = dict(zip([o.name for o in sess.get_outputs()], ort_run(sess, {"x": x})))
    want_a = np.zeros((400, 6))
    want_a[:, [0, 2, 3, 5]] = c4.predict_proba(x[:, keep])
    assert np.max(np.abs(out["a"] - want_a)) <= 1e-5
    assert np.max(np.abs(out["b"] - c2.predict_proba(x[:, keep]))) <= 1e-5
    assert np.max(np.abs(out["r"] - np.stack([m.predict(x[:, keep]) for m in rs], 1))) <= 1e-5
    assert out["r_std"].shape == (400, 2)


def test_random_forest_reference_onnx_parity(tmp_path):
    """A RandomForest reference's classifier and regressor (as a deployed reference is exported) in ONNX match
    scikit-learn through onnxruntime, NaN included."""
    from cmkd.classical.trees import ensemble_onnx, forest, save_onnx

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    xf = np.nan_to_num(x)
    clf = forest("random_forest", True, 10, 0).fit(x, (xf[:, 0] > 0).astype(int) + (xf[:, 1] > 0.5))
    reg = forest("random_forest", False, 10, 0, n_features=5).fit(x, 2 * xf[:, 2] + rng.normal(size=300))
    heads = {"a": {"model": clf, "kind": "classification", "n_classes": 3},
             "r": {"model": reg, "kind": "regression", "std": np.ones(1)}}
    sess = ort_session(save_onnx(ensemble_onnx(heads, ["x"], {"x": "vector"}, {"x": (5,)}), tmp_path / "rf.onnx"))
    out = dict(zip([o.name for o in sess.get_outputs()], ort_run(sess, {"x": x})))
    assert np.max(np.abs(out["a"] - clf.predict_proba(x))) <= 1e-5
    assert np.max(np.abs(out["r"].ravel() - reg.predict(x))) <= 1e-4




@pytest.mark.slow  # a full run
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_run_deploys_a_histgradientboosting_reference(tmp_path, task):
    """export.model pins the HistGradientBoosting reference: student.onnx holds it, with its parity and figures."""
    import json

    from helpers import write_case

    import cmkd

    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=1, task=task)
    cfg["references"] = {"n_estimators": 10, "algorithms": ["hist_gradient_boosting"]}  # no ExtraTrees: no
    # self-training reference
    cfg["trees"] = False
    cfg["export"]["model"] = "hist_gradient_boosting"
    out = tmp_path / "out"
    cmkd.run(str(write_case(tmp_path, arrays=make_arrays(240, 0, task), config=cfg)), out, quiet=True)
    saved = json.loads((out / "metrics.json").read_text())
    dep = saved["deployed"]
    assert dep["model"] == "hist_gradient_boosting" and dep["max_abs_diff"] <= 1e-5
    metric = "accuracy" if task == "classification" else "rmse"
    assert dep["onnx_metrics"][metric] == pytest.approx(saved["references"]["hist_gradient_boosting"][metric],
                                                        abs=1e-5)
    assert (out / "student_net.onnx").is_file() and (out / "student.json").is_file()
    assert json.loads((out / "student.json").read_text())["model_type"] == "tree_ensemble"


@pytest.mark.slow  # a full run
def test_a_refit_network_is_recommended_on_its_figure_before_the_refit(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """With student.refit the network trains on the validation samples too; the recommendation must not compare
    that training figure with the references' out-of-sample ones."""
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)  # the validation split, as with many labels
    import json

    from helpers import write_case

    import cmkd

    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=3)
    cfg["student"]["refit"] = True
    cfg["references"] = {"n_estimators": 5, "algorithms": ["extra_trees"]}
    cfg["trees"] = {"n_estimators": 5}
    cfg["export"]["enabled"] = False
    m = cmkd.run(str(write_case(tmp_path, config=cfg)), tmp_path / "out", quiet=True)
    hist = json.loads((tmp_path / "out" / "histories.json").read_text())
    assert "student_refit" in hist
    rec = m["recommended"]
    role = "student_baseline" if m["distill"]["fallback"] else "student"
    assert rec["val"]["student"] == pytest.approx(max(r["val_metric"] for r in hist[role]))
    assert rec["student_val_from"].startswith("before the refit")
    # the tree models' final fits add the labelled validation samples too; their validation figures stay the
    # first fits' (out of sample), as the network's does
    n_val = m["data"]["n_val"]
    assert m["models"]["student_trees"]["refit_on_val"] == n_val == m["references"]["extra_trees"]["refit_on_val"]
    assert m["export_trees"]["max_abs_diff"] <= 1e-5


def test_fit_memo_shares_only_identical_fits():
    from cmkd.classical.trees import FitMemo, forest

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 5)).astype(np.float32), rng.normal(size=80).astype(np.float32)
    memo = FitMemo()
    a = memo.fit(forest("extra_trees", False, 5, 0, 1, 5), x, y)
    # the same forest on the same data (y as float64, another thread count): the first fit, and what a fit gives
    b = memo.fit(forest("extra_trees", False, 5, 0, 2, 5), x, y.astype(np.float64))
    assert b is a and memo.hits == 1
    fresh = forest("extra_trees", False, 5, 0, 1, 5).fit(x, y)
    assert np.array_equal(fresh.predict(x), a.predict(x))
    # another seed, other targets, another algorithm: fitted anew
    assert memo.fit(forest("extra_trees", False, 5, 1, 1, 5), x, y) is not a
    assert memo.fit(forest("extra_trees", False, 5, 0, 1, 5), x, y + 1) is not a
    assert memo.fit(forest("random_forest", False, 5, 0, 1, 5), x, y) is not a
    assert memo.hits == 1


@pytest.mark.slow  # a full run
def test_a_fully_labelled_regression_run_fits_the_tree_student_once(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Every training sample labelled: the tree student (ExtraTrees on the labels) is the extra_trees reference,
    fitted once, with the same figures."""
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)  # the validation split, as with many labels
    from helpers import write_case

    import cmkd

    cfg = make_config(task="regression", student="seq", teacher=["vec", "seq"], epochs=1)
    cfg["references"] = {"n_estimators": 5, "algorithms": ["extra_trees"]}
    cfg["trees"] = {"n_estimators": 5}
    cfg["export"]["enabled"] = False
    m = cmkd.run(str(write_case(tmp_path, config=cfg, task="regression")), tmp_path / "out", quiet=True)
    st = m["models"]["student_trees"]
    assert st["shared_fits"] == 1
    assert st["metrics"]["rmse"] == m["references"]["extra_trees"]["rmse"]
    assert m["export_trees"]["max_abs_diff"] <= 1e-5
