"""Recipe ``airquality`` (REAL data; tests that need it skip when ``shared/data`` lacks it) and safe distillation
(the safe fallback, always on) on a tiny SYNTHETIC label-sparse case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import make_sparse_case, sparse_case_config

import cmkd
from cmkd.errors import CmkdError
from cmkd.recipes.airquality import data as aq
from cmkd.recipes.base import label_mask

HAVE_DATA = (aq.default_folder() / aq.FILE).is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"air quality data absent ({aq.default_folder()})")


@needs_data
def test_loader_rows_split_and_labels() -> None:
    t = aq.read_table()
    assert t["sensors"].shape == (6941, 8) and t["reference"].shape == (6941, 3) and t["no2"].shape == (6941,)
    assert not np.isclose(np.c_[t["sensors"], t["reference"], t["no2"]], aq.MISSING).any()
    assert list(t["time"]) == sorted(t["time"])  # time order kept: the split is chronological
    split = aq.chronological_split(6941)
    assert np.bincount(split).tolist() == [4165, 694, 2082]
    assert (np.diff(split) >= 0).all()
    arrays = cmkd.recipes.get_recipe("airquality").load(
        {"seed": 3, "data": {"path": None}, "options": {"label_fraction": 0.05}})
    y, s = arrays["no2"], arrays["split"]
    assert (~np.isnan(y[s == 0])).sum() == 208 and not np.isnan(y[s != 0]).any()
    again = cmkd.recipes.get_recipe("airquality").load(
        {"seed": 3, "data": {"path": None}, "options": {"label_fraction": 0.05}})
    assert np.array_equal(np.isnan(again["no2"]), np.isnan(y))  # seeded


def test_missing_folder_and_bad_fraction(tmp_path: Path) -> None:
    with pytest.raises(CmkdError, match="looked for .*AirQualityUCI.csv"):
        aq.read_table(tmp_path)
    with pytest.raises(CmkdError, match="label_fraction"):
        label_mask(aq.chronological_split(100), 0.0, 0)


@pytest.mark.slow  # a quick run on the real data
@needs_data
def test_quick_run_reports_unlabelled_hours(tmp_path: Path) -> None:
    m = cmkd.run("airquality", tmp_path / "run", quick=True, quiet=True, overrides=["export.enabled=false"])
    assert m["synthetic"] is False and m["primary_metric"] == "rmse"
    assert m["data"]["n_train"] == 208 and m["data"]["n_train_unlabelled"] == 4165 - 208
    assert m["data"]["n_test"] == 2082
    for role in ("teacher", "student_baseline", "student"):
        assert np.isfinite(m["models"][role]["metrics"]["rmse"]) and "coverage_90" in m["models"][role]["metrics"]


@pytest.mark.slow  # two full runs (8-11 s each, -n 0 on the loaded machine)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_safe_distillation_never_below_baseline_on_validation(tmp_path: Path, task: str) -> None:
    """1.5% labels, ~880 unlabelled paired samples, a weak partly out-of-domain teacher (SYNTHETIC)."""
    np.savez(tmp_path / "data.npz", **make_sparse_case(n=1500, seed=0, label_fraction=0.015, task=task))
    cfg = sparse_case_config(task, epochs=15)
    cfg["distill"] = {"weights": {"task": 1.0, "kd": 1.0}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    m = cmkd.run(str(tmp_path / "exp.yaml"), tmp_path / "run", quiet=True)
    hist = json.loads((tmp_path / "run" / "histories.json").read_text())
    sign = -1.0 if task == "regression" else 1.0
    best = {r: max(sign * x["val_metric"] for x in hist[r]) for r in ("teacher", "student_baseline", "student")}
    d = m["distill"]
    if "selection" in m:  # few labels: the decision is made in cross-validation (cmkd.pipeline.crossval)
        c = {r: sign * v["mean"] for r, v in m["selection"]["candidates"].items()}
        assert m["recommended"]["selected_by"] == "cross-validation"
        assert d["fallback"] == (d.get("skipped") is not None or c["student"] <= c["student_baseline"])
    else:
        assert d["fallback"] == (best["student"] < best["student_baseline"])
    key = "rmse" if task == "regression" else "accuracy"
    got = {r: m["models"][r]["metrics"][key] for r in ("student_baseline", "student")}
    if d["fallback"]:  # the baseline is handed over: same test figures
        assert got["student"] == pytest.approx(got["student_baseline"])
    assert m["data"]["n_train"] <= 16 and m["data"]["n_train_unlabelled"] > 500
