"""The distillation dividend (:mod:`cmkd.evaluation.dividend`): the recommended model against the best model trained
on the labels alone, on hand-built metrics dicts, and in a tiny real run (metrics.json, terminal, report.html)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pytest
from helpers import write_case

import cmkd
from cmkd.evaluation.dividend import dividend, label_only_candidates
from cmkd.evaluation.metrics import HIGHER_IS_BETTER
from cmkd.evaluation.report import print_summary


def _model(metric: str, test: float, val: float | None = None) -> dict:
    m = {"modalities": ["rgb"], "params": 10, "metrics": {metric: test}, "latency_ms": 1.0}
    if val is not None:
        m["val_metrics"] = {metric: val}
    return m


def _ref(metric: str, test: float, val: float, trained_on: str = "labels") -> dict:
    return {metric: test, "val": {metric: val}, "trained_on": trained_on, "algorithm": "extra_trees"}


def _rmse_run() -> dict:
    """A regression run whose recommended model (a tree fitted on the teacher's labels) beats every label-only one;
    the best label-only model on validation (hist_gradient_boosting) is not the best on test (extra_trees)."""
    refs = {"extra_trees": _ref("rmse", 0.119, 0.120),
            "hist_gradient_boosting": _ref("rmse", 0.125, 0.118),
            "extra_trees_teacher_labels": _ref("rmse", 0.080, 0.085, "teacher_labels"),
            "extra_trees_self_training": _ref("rmse", 0.070, 0.200, "self_training")}
    return {"name": "t", "primary_metric": "rmse",
            "models": {"teacher": _model("rmse", 0.05), "student_baseline": _model("rmse", 0.130),
                       "student": _model("rmse", 0.100)},
            "references": refs,
            "recommended": {"model": "extra_trees_teacher_labels", "why": "best",
                            "val": {"student": 0.090, **{k: v["val"]["rmse"] for k, v in refs.items()}}},
            "deployed": {"model": "extra_trees_teacher_labels"}}


def test_rmse_sign_hindsight_and_sentence() -> None:
    d = dividend(_rmse_run())
    assert d is not None and d["metric"] == "rmse" and d["higher_is_better"] is False
    assert d["n_label_only"] == 3  # student_baseline + the two references fitted on the labels
    assert d["recommended"] == "extra_trees_teacher_labels"
    assert (d["recommended_val"], d["recommended_test"]) == (0.085, 0.080)
    # best on validation: hist_gradient_boosting (0.118); the baseline has no validation figure here (skipped)
    assert d["label_only_val"] == {"model": "hist_gradient_boosting", "val": 0.118, "test": 0.125}
    # with hindsight on test: extra_trees (0.119); self-training and teacher labels are not label-only
    assert d["label_only_test"] == {"model": "extra_trees", "test": 0.119}
    assert d["val"] == pytest.approx(0.118 - 0.085) and d["val"] > 0  # lower rmse: positive = cmkd better
    assert d["test"] == pytest.approx(0.119 - 0.080) and d["test"] > 0
    assert d["relative_test"] == pytest.approx(0.039 / 0.119)
    assert d["val_from"] == "validation" and d["label_only_recommended"] is False
    assert d["sentence"] == ("cmkd's deployed model (extra_trees_teacher_labels) vs the best you could train from "
                             "your labels alone (extra_trees): RMSE 0.080 vs 0.119 on test, 0.039 better (33%); on "
                             "validation 0.085 vs 0.118 (hist_gradient_boosting, the best label-only model there)")


def test_accuracy_sign_worse_and_baseline_val_fallback() -> None:
    m = {"primary_metric": "accuracy",
         "models": {"student_baseline": _model("accuracy", 0.84, val=0.81), "student": _model("accuracy", 0.80)},
         "references": {"random_forest": _ref("accuracy", 0.70, 0.78)},
         "recommended": {"model": "student", "why": "best", "val": {"student": 0.82, "random_forest": 0.78}}}
    d = dividend(m)
    assert d["higher_is_better"] is True
    # student_baseline is not among recommended["val"]: its own val_metrics figure counts
    assert d["label_only_val"] == {"model": "student_baseline", "val": 0.81, "test": 0.84}
    assert d["val"] == pytest.approx(0.82 - 0.81) and d["val"] > 0  # higher accuracy: positive = cmkd better
    assert d["label_only_test"] == {"model": "student_baseline", "test": 0.84}
    assert d["test"] == pytest.approx(-0.04) and d["relative_test"] == pytest.approx(-0.04 / 0.84)
    assert "accuracy 0.800 vs 0.840 on test, 0.040 worse (5%)" in d["sentence"]
    assert "cmkd's recommended model (student)" in d["sentence"]  # no deployed entry: recommended, not deployed
    assert "the best label-only model there" not in d["sentence"]  # the same model is best on both splits


def test_recommended_label_only_model_is_no_dividend() -> None:
    m = _rmse_run()
    m["recommended"]["model"] = m["deployed"]["model"] = "hist_gradient_boosting"
    d = dividend(m)
    assert d["label_only_recommended"] is True
    assert d["sentence"].startswith("no dividend: the best model here is trained on labels alone "
                                    "(hist_gradient_boosting: RMSE 0.125 on test")
    assert "extra_trees 0.119" in d["sentence"]  # the better label-only test figure, named as hindsight
    assert d["val"] == 0.0 and d["test"] == pytest.approx(0.119 - 0.125)


def test_safe_fallback_student_is_label_only() -> None:
    m = _rmse_run()
    m["recommended"]["model"] = "student"
    m["distill"] = {"fallback": True}
    d = dividend(m)
    assert d["label_only_recommended"] is True and "safe fallback's copy of student_baseline" in d["sentence"]
    m["distill"] = {"fallback": False}
    assert dividend(m)["label_only_recommended"] is False


def test_cross_validation_preferred_over_validation() -> None:
    m = _rmse_run()
    m["models"]["student_baseline"]["val_metrics"] = {"rmse": 0.110}
    m["recommended"]["cv"] = {"extra_trees_teacher_labels": 0.090, "extra_trees": 0.100,
                              "hist_gradient_boosting": 0.105}
    m["recommended"]["selected_by"] = "cross-validation"
    d = dividend(m)
    assert d["val_from"] == "cross-validation" and d["recommended_val"] == 0.090
    assert d["label_only_val"] == {"model": "extra_trees", "val": 0.100, "test": 0.119}
    assert d["val"] == pytest.approx(0.010)
    assert "on cross-validation 0.090 vs 0.100" in d["sentence"]
    m["recommended"]["cv"] = {}  # an empty cv: the validation figures
    assert dividend(m)["val_from"] == "validation"


def test_several_targets_one_yardstick() -> None:
    """With several targets the dividend compares what the recommendation compared: the standardised error over
    every target (``recommended.yardstick``), on validation and on test, lower is better."""
    yard = {"name": "standardised_error", "higher_is_better": False,
            "targets": {"y": "regression", "c": "classification"}, "scale": {"y": 2.0}}

    def both(rmse: float, acc: float) -> dict:
        return {"rmse": rmse, "c/accuracy": acc}

    m = {"primary_metric": "rmse",
         "models": {"student_baseline": {"metrics": both(1.0, 0.9)}, "student": {"metrics": both(1.2, 0.98)}},
         "references": {"extra_trees": {**both(0.9, 0.5), "val": both(0.9, 0.5), "trained_on": "labels"}},
         "recommended": {"model": "student", "metric": "standardised_error", "yardstick": yard,
                         "val": {"student": 0.32, "extra_trees": 0.475}}}
    d = dividend(m)
    assert d["metric"] == "standardised_error" and d["higher_is_better"] is False
    # the first target alone would call extra_trees (RMSE 0.9) better than the student (1.2)
    assert d["recommended_test"] == pytest.approx((1.2 / 2 + 0.02) / 2)
    assert d["label_only_test"] == {"model": "student_baseline", "test": pytest.approx((1.0 / 2 + 0.1) / 2)}
    assert d["test"] == pytest.approx(0.3 - 0.31) and d["test"] < 0  # the baseline is better over both
    assert d["label_only_val"]["model"] == "extra_trees" and d["val"] == pytest.approx(0.475 - 0.32)
    assert "standardised error" in d["sentence"]


def test_no_recommendation_or_no_label_only_candidate() -> None:
    m = _rmse_run()
    assert dividend({k: v for k, v in m.items() if k != "recommended"}) is None
    assert dividend({**m, "recommended": {"model": None}}) is None
    only_teacher_fed = {**m, "models": {"student": m["models"]["student"]},
                        "references": {k: v for k, v in m["references"].items() if v["trained_on"] != "labels"}}
    assert label_only_candidates(only_teacher_fed) == [] and dividend(only_teacher_fed) is None


def test_missing_and_nan_figures() -> None:
    m = _rmse_run()
    m["references"]["extra_trees_teacher_labels"]["rmse"] = float("nan")
    m["references"]["extra_trees"]["val"] = {}
    m["recommended"]["val"]["extra_trees"] = None
    del m["models"]["student_baseline"]["metrics"]["rmse"]
    d = dividend(m)
    assert d["recommended_test"] is None and d["test"] is None and d["relative_test"] is None
    assert d["label_only_test"] == {"model": "extra_trees", "test": 0.119}
    assert d["label_only_val"]["model"] == "hist_gradient_boosting"
    assert "no test figure of RMSE to compare; on validation RMSE 0.085 vs 0.118" in d["sentence"]
    for ref in m["references"].values():  # no label-only figure at all
        ref["rmse"], ref["val"] = float("inf"), {}
    m["recommended"]["val"] = {}
    d = dividend(m)
    assert d["label_only_val"] is None and d["label_only_test"] is None and d["val"] is None
    assert "no label-only model has a figure of RMSE" in d["sentence"]
    json.dumps(d, allow_nan=False)  # every figure is a finite number or None


def test_a_real_run_reports_its_dividend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run's metrics.json holds the dividend computed from its own entries; the terminal summary and the
    report's first lines show its sentence."""
    y = write_case(tmp_path, task="classification", student="vec", teacher=["vec", "seq"], epochs=1)
    cmkd.run(str(y), tmp_path / "out", quiet=True, overrides=["export.latency_runs=5"])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    d, pm, rec = m["dividend"], m["primary_metric"], m["recommended"]
    higher = HIGHER_IS_BETTER[pm]
    sel = rec.get("cv") or rec["val"]
    names = ["student_baseline"] + [k for k, r in m["references"].items() if r["trained_on"] == "labels"]
    assert d["n_label_only"] == len(names) >= 2

    def test_of(n: str) -> float:
        return m["models"][n]["metrics"][pm] if n in m["models"] else m["references"][n][pm]

    val = {n: sel.get(n, m["models"].get(n, {}).get("val_metrics", {}).get(pm)) for n in names}
    val = {n: v for n, v in val.items() if v is not None and math.isfinite(v)}
    pick = max if higher else min
    best_test = pick(names, key=test_of)
    sign = 1 if higher else -1
    assert d["recommended"] == rec["model"] and d["recommended_test"] == pytest.approx(test_of(rec["model"]))
    assert d["label_only_test"]["test"] == pytest.approx(test_of(best_test))
    assert d["test"] == pytest.approx(sign * (test_of(rec["model"]) - test_of(best_test)))
    assert d["label_only_val"]["val"] == pytest.approx(val[pick(val, key=val.__getitem__)])
    assert d["val"] == pytest.approx(sign * (sel[rec["model"]] - d["label_only_val"]["val"]))
    assert d["label_only_recommended"] == (rec["model"] in names)
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.index(html.escape(d["sentence"], quote=True)) < page.index("<h2>Summary</h2>")
    print_summary(m, tmp_path / "out")
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("recommended student:"))
    assert lines[at + 1] == f"distillation dividend: {d['sentence']}"
