"""Selection by cross-validation with few labels and the teacher chosen by evidence (cmkd.pipeline.crossval), on
tiny SYNTHETIC data: folds, the several-target yardstick, and whole runs where a linear teacher must win."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import cmkd
from cmkd.classical.trees import flat_features
from cmkd.config import DataConfig
from cmkd.data.arrays import build_data
from cmkd.evaluation.metrics import Yardstick
from cmkd.pipeline.crossval import (
    CV_MAX_LABELS,
    distilled_within_noise,
    make_folds,
    teacher_choice,
    teacher_worse,
)


def _data(y: dict, n: int) -> object:
    arrays = {"x": np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32), **y,
              "split": np.zeros(n, np.int64)}
    arrays["split"][-1] = 2  # one test sample (the pool below is the others)
    cfg = DataConfig(modalities={"x": {"kind": "vector"}},
                     targets={k: {"kind": "classification" if v.dtype.kind == "i" else "regression"}
                              for k, v in y.items()})
    return build_data(arrays, cfg, 0, "test")


def test_folds_stratified_grouped_and_disjoint() -> None:
    y = np.r_[np.repeat(np.arange(3), 4), 0]  # 4 labels per class: 4 folds at most
    data = _data({"c": y}, 13)
    pool = np.arange(12)
    folds = make_folds(data, pool, 5, 0)
    assert len(folds) == 4
    assert np.array_equal(np.sort(np.concatenate(folds)), pool)  # a partition of the pool
    for f in folds:  # stratified: one sample of each class per fold
        assert sorted(y[f].tolist()) == [0, 1, 2]
    groups = np.r_[np.repeat(np.arange(6), 2), 6]
    folds = make_folds(data, pool, 5, 1, groups)
    assert np.array_equal(np.sort(np.concatenate(folds)), pool)
    owner = {g: {i for i, f in enumerate(folds) if np.isin(np.flatnonzero(groups == g), f).any()} for g in range(6)}
    assert all(len(v) == 1 for v in owner.values())  # no group split across folds


def test_yardstick_several_targets_standardised() -> None:
    rng = np.random.default_rng(0)
    y1 = rng.normal(0, 10, size=(40, 1)).astype(np.float32)
    y2 = rng.integers(0, 2, 40)
    data = _data({"a": y1, "b": y2}, 40)
    yard = Yardstick(data, np.arange(40))
    assert yard.name == "standardised_error" and not yard.higher_is_better
    s = float(np.sqrt(np.var(y1)))
    got = yard({"rmse": 5.0, "b/accuracy": 0.75})
    assert got == pytest.approx((5.0 / s + 0.25) / 2)
    # a target without a figure (no labels among these samples) tells no candidate apart: the others decide
    assert yard({"rmse": 5.0, "b/accuracy": float("nan")}) == pytest.approx(5.0 / s)
    assert np.isnan(yard({"b/accuracy": float("nan")}))
    one = Yardstick(_data({"a": y1}, 40), np.arange(40))
    assert one.name == "rmse" and one({"rmse": 3.0}) == 3.0


def _spectra_case(tmp_path: Path, groups: bool = False) -> Path:
    """A SYNTHETIC spectrum -> value case: the target is linear in a 60-band teacher input, the 3-band student sees
    it only non-linearly; 24 labels, 300 paired unlabelled samples."""
    rng = np.random.default_rng(0)
    n = 420
    z = rng.uniform(-1, 1, size=(n, 2))
    bands = np.linspace(0, 1, 60)
    spectrum = (z[:, :1] * np.sin(3 * bands) + z[:, 1:] * np.cos(2 * bands)
                + 0.01 * rng.normal(size=(n, 60))).astype(np.float32)
    y = (2 * z[:, 0] - z[:, 1]).astype(np.float32)[:, None]
    student = np.stack([np.tanh(2 * z[:, 0]), z[:, 1] ** 3, rng.normal(size=n)], 1).astype(np.float32)
    split = np.r_[np.zeros(320), np.ones(8), np.full(92, 2)].astype(np.int64)
    yy = y.copy()
    yy[16:320] = np.nan  # 16 + 8 labels
    arrays = {"spectrum": spectrum, "student": student, "y": yy, "split": split}
    if groups:
        arrays["block"] = np.arange(n) // 4
    np.savez(tmp_path / "data.npz", **arrays)
    cfg = {"name": "spectra-synthetic", "seed": 0,
           "data": {"path": "data.npz", "modalities": {"spectrum": {"kind": "vector"}, "student": {"kind": "vector"}},
                    "targets": {"y": {"kind": "regression"}}, **({"groups": "block"} if groups else {})},
           "teacher": {"modalities": ["spectrum"], "width": 16, "epochs": 4},
           "student": {"modalities": ["student"], "width": 16, "epochs": 4},
           "references": {"n_estimators": 20}, "trees": {"n_estimators": 20}, "export": {"enabled": False}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "exp.yaml"


def test_linear_teacher_chosen_and_cross_validated_recommendation(tmp_path: Path) -> None:
    m = cmkd.run(str(_spectra_case(tmp_path, groups=True)), tmp_path / "run", quiet=True)
    sel = m["selection"]
    assert sel["selected_by"] == "cross-validation" and sel["pool"] == 24 and sel["blocked_by"] == "block"
    t = sel["teacher"]
    assert set(t["candidates"]) == {"network", "ridge", "pls", "extra_trees"}
    # a 4-epoch network cannot fit 16 labels; a linear model of a linear spectrum can
    assert t["chosen"] in ("ridge", "pls")
    figs = {k: v["mean"] for k, v in t["candidates"].items()}
    assert figs[t["chosen"]] == min(figs.values())
    assert all(len(v["folds"]) == sel["folds"] for v in sel["candidates"].values())
    rec = m["recommended"]
    assert rec["selected_by"] == "cross-validation"
    best = min(rec["cv"], key=rec["cv"].get)
    assert rec["model"] == best or abs(rec["cv"][rec["model"]] - rec["cv"][best]) <= rec["tie_tolerance"]
    # the classical teacher's pseudo-labels reach the tree references, and the dividend is reported
    assert "extra_trees_teacher_labels" in m["references"] and "ridge" in m["references"]
    assert m["dividend"]["val_from"] == "cross-validation"
    assert "feature" not in m["distill"]["weights"]  # a classical teacher has no features to match


def test_many_labels_keep_the_validation_split(tmp_path: Path) -> None:
    from cmkd.data.cases import make_sparse_case, sparse_case_config

    np.savez(tmp_path / "data.npz", **make_sparse_case(n=1500, seed=0, label_fraction=1.0))
    cfg = sparse_case_config("regression", epochs=2)
    cfg["references"] = {"n_estimators": 10}
    cfg["trees"] = {"n_estimators": 10}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    m = cmkd.run(str(tmp_path / "exp.yaml"), tmp_path / "run", quiet=True)
    assert m["data"]["n_train"] + m["data"]["n_val"] > CV_MAX_LABELS
    assert "selection" not in m and m["recommended"]["selected_by"] == "validation"


def test_validation_selection_one_yardstick_over_several_targets(tmp_path: Path) -> None:
    """Above the cross-validation threshold the validation split decides, on the same yardstick: with two
    targets every candidate's figure is the standardised error over both, and so is the dividend's."""
    from cmkd.data.cases import make_sparse_case, sparse_case_config
    from cmkd.evaluation.metrics import VAL_PARTS, yardstick_figure

    arrays = make_sparse_case(n=1500, seed=0, label_fraction=1.0)
    arrays["sign"] = (arrays["y"].reshape(-1) > np.nanmedian(arrays["y"])).astype(np.int64)
    np.savez(tmp_path / "data.npz", **arrays)
    cfg = sparse_case_config("regression", epochs=2)
    cfg["data"]["targets"]["sign"] = {"kind": "classification"}
    cfg["references"] = {"n_estimators": 10}
    cfg["trees"] = {"n_estimators": 10}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    m = cmkd.run(str(tmp_path / "exp.yaml"), tmp_path / "run", quiet=True)
    rec = m["recommended"]
    assert rec["selected_by"] == "validation" and rec["metric"] == "standardised_error"
    yard = rec["yardstick"]
    assert yard["targets"] == {"y": "regression", "sign": "classification"} and not yard["higher_is_better"]
    for name, ref in m["references"].items():  # each candidate compared on both targets
        assert rec["val"][name] == pytest.approx(yardstick_figure(ref["val"], yard))
        assert "val_parts" not in ref  # the parts serve the recommendation; metrics.json keeps the figures
    assert rec["val"][rec["best_on_val"]] == min(rec["val"].values())
    d = m["dividend"]
    assert d["metric"] == "standardised_error" and d["higher_is_better"] is False
    rec_test = m["models"].get(rec["model"], {}).get("metrics") or m["references"][rec["model"]]
    assert d["recommended_test"] == pytest.approx(yardstick_figure(rec_test, yard))
    assert "val_parts" not in (tmp_path / "run" / "metrics.json").read_text()
    assert VAL_PARTS == 10
    # with student.refit the network is compared as early stopping left it, on the same yardstick
    r = cmkd.run(str(tmp_path / "exp.yaml"), tmp_path / "refit", quiet=True, overrides=["student.refit=true"])
    rec = r["recommended"]
    assert rec["metric"] == "standardised_error" and "student_val_from" in rec
    assert np.isfinite(rec["val"]["student"]) and 0 < rec["val"]["student"] < 1


def test_parts_of_the_validation_split() -> None:
    from cmkd.evaluation.metrics import part_metrics

    y = np.r_[np.zeros(6), np.ones(6)].astype(np.int64)
    y[[0, 11]] = -1  # unlabelled: in no part
    data = _data({"c": y}, 12)
    logits = np.zeros((12, 2), np.float32)
    logits[np.arange(12), y.clip(0)] = 1.0
    logits[3] = [0.0, 1.0]  # one mistake
    parts = part_metrics(data, np.arange(12), {"c/logits": logits}, k=5)
    assert len(parts) == 5  # 10 labelled samples, interleaved: two per part
    assert sorted(p["accuracy"] for p in parts) == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert part_metrics(data, np.array([0, 1]), {"c/logits": logits[:2]}) == []  # one labelled sample: no spread


def test_groups_key_checked_where_it_enters(tmp_path: Path) -> None:
    path = _spectra_case(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["groups"] = "nope"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(cmkd.CmkdError, match="data.groups 'nope' must name an npz key of 420 group ids"):
        cmkd.run(str(path), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_skip_only_when_the_teacher_is_worse_beyond_noise() -> None:
    # Japanese Vowels, 27 labels: one sample of 27 worse, paired standard error of 2-3 samples: distillation goes on
    assert not teacher_worse(-1 / 27, 2.6 / 27)
    assert not teacher_worse(0.0, 0.0)  # a tie keeps distillation
    assert teacher_worse(-0.0165, 0.0113)  # Samson 4-band, 1%: the network teacher worse than the baseline
    assert teacher_worse(-0.01, float("inf")) and not teacher_worse(0.01, float("nan"))  # no spread: below 0


def test_sequence_summary_alone_for_the_classical_teacher() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5, 3)).astype(np.float32)
    x[0, 3:] = np.nan  # a shorter recording, padded with NaN
    data = build_data({"seq": x, "y": np.arange(12) % 2},
                      DataConfig(modalities={"seq": {"kind": "sequence"}}, targets={"y": {"kind": "classification"}}))
    both = flat_features(data, ["seq"], np.arange(12))
    alone = flat_features(data, ["seq"], np.arange(12), raw_sequences=False)
    assert both.shape == (12, 5 * 3 + 4 * 3) and alone.shape == (12, 4 * 3)
    np.testing.assert_array_equal(alone, both[:, 15:])  # the summary, the same either way
    np.testing.assert_allclose(alone[0, :3], x[0, :3].mean(axis=0), rtol=1e-6)  # mean over the observed frames only


def test_a_label_only_choice_within_noise_gives_way_to_the_distilled_one() -> None:
    figs = {"ridge": 0.889, "extra_trees_teacher_labels": 0.852, "student_trees": 0.815}
    prefer = ["extra_trees_teacher_labels", "student_trees"]
    noisy = {"ridge": [1.0, 0.778, 0.889], "extra_trees_teacher_labels": [0.778, 0.889, 0.889],
             "student_trees": [0.778, 0.778, 0.889]}
    name, why = distilled_within_noise(figs, noisy, prefer, "ridge", higher_is_better=True)
    assert name == "extra_trees_teacher_labels" and "within one paired standard error" in why
    steady = {"ridge": [0.9, 0.88, 0.887], "extra_trees_teacher_labels": [0.86, 0.84, 0.856],
              "student_trees": [0.8, 0.82, 0.825]}  # ahead in every fold: the label-only model stays
    assert distilled_within_noise(figs, steady, prefer, "ridge", higher_is_better=True) is None
    assert distilled_within_noise(figs, noisy, prefer, "student_trees", higher_is_better=True) is None  # distilled
    assert distilled_within_noise(figs, noisy, [], "ridge", higher_is_better=True) is None  # distillation skipped
    name, why = distilled_within_noise(figs, noisy, prefer, "ridge", True, "validation")  # parts of one split
    assert name == "extra_trees_teacher_labels" and "validation split's parts" in why
    rmse = {"ridge": 8.5, "ridge_teacher_labels": 9.1}  # lower is better
    folds = {"ridge": [6.0, 11.0, 8.5], "ridge_teacher_labels": [9.0, 8.0, 10.3]}
    assert distilled_within_noise(rmse, folds, ["ridge_teacher_labels"], "ridge", False)[0] == "ridge_teacher_labels"


def test_validation_choice_within_noise_goes_to_a_model_that_learnt_from_the_teacher() -> None:
    """On a validation split the same rule holds, its standard error from the split's parts (Houston 2013 at 1%
    labels, seed 4: self-training ahead by 9 pixels of 632, one paired standard error 10 pixels)."""
    from cmkd.pipeline.classical_stage import _learnt_from_teacher, _within_noise

    cands = {"student": {}, "student_trees": {}, "extra_trees": {}, "extra_trees_self_training": {},
             "random_forest_teacher_labels": {}}
    assert _learnt_from_teacher({"distill": {"fallback": False}}, cands) == [
        "student_trees", "random_forest_teacher_labels", "student"]
    # the safe fallback's student is the baseline's copy: it learnt from the labels alone
    assert "student" not in _learnt_from_teacher({"distill": {"fallback": True}}, cands)
    vals = {"extra_trees_self_training": 0.579, "random_forest_teacher_labels": 0.565, "student": 0.565}
    noisy = {"extra_trees_self_training": [0.64, 0.52] * 5, "random_forest_teacher_labels": [0.55, 0.58] * 5,
             "student": [0.55, 0.58] * 5}  # ahead by 0.015 on average, by 0.09 and behind by 0.06 in turn
    rec = {"model": "extra_trees_self_training", "why": "best validation accuracy"}
    _within_noise(rec, vals, noisy, ["random_forest_teacher_labels", "student"], True, "validation")
    assert rec["model"] == "random_forest_teacher_labels" and "validation split's parts" in rec["why"]
    steady = {k: [v] * 5 + [v + 0.001] * 5 for k, v in vals.items()}  # ahead in every part
    rec = {"model": "extra_trees_self_training", "why": "best validation accuracy"}
    _within_noise(rec, vals, steady, ["random_forest_teacher_labels", "student"], True, "validation")
    assert rec["model"] == "extra_trees_self_training"
    rec = {"model": "extra_trees_self_training", "why": "-"}
    _within_noise(rec, vals, {}, ["student"], True, "validation")  # no parts (e.g. a refit network): no swap
    assert rec["model"] == "extra_trees_self_training"


def test_the_network_teacher_only_beyond_noise() -> None:
    # Japanese Vowels, 27 labels, seed 4: the network ahead by one recording of 27 over three folds
    per = {"network": [0.889, 0.889, 0.778], "ridge": [0.778, 0.889, 0.778], "extra_trees": [0.889, 0.778, 0.778]}
    assert teacher_choice(per, higher_is_better=True) in ("ridge", "extra_trees")
    clear = {"network": [0.03, 0.031, 0.029, 0.032], "ridge": [0.09, 0.1, 0.095, 0.092]}  # RMSE: ahead in every fold
    assert teacher_choice(clear, higher_is_better=False) == "network"
    assert teacher_choice({"network": [5.0, 6.0], "pls": [5.8, 5.9]}, False) == "pls"  # within noise (paired)
    assert teacher_choice({"network": [5.0, 6.0], "pls": [5.5, 6.5]}, False) == "network"  # 0.5 ahead in each fold
    assert teacher_choice({"network": [5.0, 6.0], "pls": [float("nan")] * 2}, False) == "network"  # no rival
    assert teacher_choice({"network": [9.0, 9.5], "ridge": [5.0, 6.0]}, False) == "ridge"  # a classical best
