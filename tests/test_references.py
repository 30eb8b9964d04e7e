"""Classical references and the recommended student (cmkd.classical.references) on tiny seeded SYNTHETIC data."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_arrays, make_config
from test_trees import sparse_case

from cmkd.classical.references import ALGORITHMS, ReferenceSettings, recommend, recommendation, references
from cmkd.classical.trees import flat_features
from cmkd.config import validate
from cmkd.evaluation.metrics import task_metrics

ALL = {f"{a}{s}" for a in ("random_forest", "extra_trees", "hist_gradient_boosting")
       for s in ("", "_teacher_labels", "_self_training")}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_reference_with_test_and_validation_metrics(task):
    data, teacher = sparse_case(task, n=300, label_share=0.3)
    tr = data.indices(0)
    lab, val, te = data.labelled(tr), data.indices(1), data.indices(2)
    models: dict = {}
    refs = references(data, ["seq", "txt"], lab, tr, val, te, teacher,
                      settings=ReferenceSettings(n_estimators=20, self_training=ALGORITHMS), models=models)
    assert set(refs) == ALL == set(models)
    metric = "accuracy" if task == "classification" else "rmse"
    for name, r in refs.items():
        assert np.isfinite(r[metric]) and np.isfinite(r["val"][metric]), name
        assert r["trained_on"] in ("labels", "teacher_labels", "self_training")
        assert r["n_fit"] == (len(lab) if r["trained_on"] == "labels" else len(tr))
        # the flat figures are the test split's: recomputed from the kept model
        x = flat_features(data, ["seq", "txt"], te)
        assert task_metrics(data, te, models[name].predict(x))[metric] == pytest.approx(r[metric])
        assert task_metrics(data, val, models[name].predict(flat_features(data, ["seq", "txt"], val)))[
            metric] == pytest.approx(r["val"][metric])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_refit_adds_the_labelled_validation_samples_to_the_final_fit_only(task):
    """refit (a run with student.refit): the validation figure is the first fit's, the test figure and the kept
    model those of the same fit on its rows plus the labelled validation samples."""
    data, teacher = sparse_case(task, n=300, label_share=0.3)
    tr = data.indices(0)
    lab, val, te = data.labelled(tr), data.indices(1), data.indices(2)
    args = (data, ["seq", "txt"], lab, tr, val, te, teacher)
    kw = {"n_estimators": 10, "algorithms": ("extra_trees", "hist_gradient_boosting"), "self_training": ALGORITHMS}
    models: dict = {}
    first = references(*args, settings=ReferenceSettings(**kw))
    refit = references(*args, settings=ReferenceSettings(**kw, refit=True), models=models)
    both = np.concatenate([lab, data.labelled(val)])
    alone = references(data, ["seq", "txt"], both, both, val, te, None,
                       settings=ReferenceSettings(**kw, kinds=("labels",)))
    metric = "accuracy" if task == "classification" else "rmse"
    assert set(refit) == set(first)
    for name, r in refit.items():
        assert r["refit_on_val"] == len(data.labelled(val)) and r["n_fit"] == first[name]["n_fit"], name
        assert r["val"][metric] == pytest.approx(first[name]["val"][metric]), name
        x = flat_features(data, ["seq", "txt"], te)
        assert task_metrics(data, te, models[name].predict(x))[metric] == pytest.approx(r[metric]), name
    for name in ("extra_trees", "hist_gradient_boosting"):  # on the labels: a fit on train + val labels
        assert refit[name][metric] == pytest.approx(alone[name][metric]), name
    assert any(refit[k][metric] != first[k][metric] for k in refit)


def test_without_unlabelled_samples_or_teacher_only_label_references():
    data, teacher = sparse_case("classification", n=200, label_share=1.0)
    tr = data.indices(0)
    refs = references(data, ["img"], tr, tr, data.indices(1), data.indices(2), teacher,
                      settings=ReferenceSettings(n_estimators=10))
    assert set(refs) == {"random_forest", "extra_trees", "hist_gradient_boosting"}
    data, _ = sparse_case("classification", n=200, label_share=0.3)
    tr = data.indices(0)
    refs = references(data, ["img"], data.labelled(tr), tr, data.indices(1), data.indices(2), None,
                      settings=ReferenceSettings(n_estimators=10, algorithms=("extra_trees",)))
    assert set(refs) == {"extra_trees", "extra_trees_self_training"}


def test_self_training_only_for_the_algorithms_asked():
    data, teacher = sparse_case("regression", n=200, label_share=0.3)
    tr = data.indices(0)
    args = (data, ["vec"], data.labelled(tr), tr, data.indices(1), data.indices(2), teacher)
    refs = references(*args, settings=ReferenceSettings(n_estimators=5, self_training=("random_forest",)))
    assert {k for k in refs if k.endswith("_self_training")} == {"random_forest_self_training"}
    none = references(*args, settings=ReferenceSettings(n_estimators=5, self_training=()))
    assert {k for k in none if k.endswith("_self_training")} == set()
    assert ReferenceSettings().self_training == ("extra_trees",)  # a run's: ExtraTrees only


def test_teacher_pseudo_labels_help_with_few_labels_and_a_good_teacher():
    """The classical cross-modal baseline: at 5% labels a RandomForest on a good (synthetic) teacher's
    pseudo-labels beats one on the labels alone (mean test accuracy over seeds 0-2)."""
    only, pseudo = [], []
    for seed in range(3):
        data, teacher = sparse_case("classification", n=600, label_share=0.05, seed=seed)
        tr = data.indices(0)
        refs = references(data, ["sig"], data.labelled(tr), tr, data.indices(1), data.indices(2), teacher,
                          settings=ReferenceSettings(seed=seed, n_estimators=50, algorithms=("random_forest",)))
        only.append(refs["random_forest"]["accuracy"])
        pseudo.append(refs["random_forest_teacher_labels"]["accuracy"])
    assert np.mean(pseudo) > np.mean(only) + 0.05, (pseudo, only)


def test_fit_samples_are_capped():
    data, teacher = sparse_case("regression", n=300, label_share=0.5)
    tr = data.indices(0)
    refs = references(data, ["vec"], data.labelled(tr), tr, data.indices(1), data.indices(2), teacher,
                      settings=ReferenceSettings(n_estimators=5, max_fit_samples=40, algorithms=("extra_trees",)))
    assert all(r["n_fit"] <= 80 for r in refs.values())  # self-training: 40 labelled + 40 unlabelled
    assert refs["extra_trees_teacher_labels"]["n_fit"] == 40


def test_recommend_best_on_validation_and_ties_to_the_cheaper_model():
    c = {"student": {"val": 0.80}, "student_trees": {"val": 0.82}, "random_forest": {"val": 0.81}}
    assert recommend(c, "accuracy", True) == "student_trees"
    assert recommend(c, "rmse", False) == "student"
    assert recommend(c, "rmse") == "student"  # higher_is_better from the metric's name
    tie = {"student": {"val": 0.9}, "student_trees": {"val": 0.9}, "extra_trees": {"val": 0.9}}
    assert recommend(tie, "accuracy") == "extra_trees"  # a reference is the cheapest
    assert recommend({k: tie[k] for k in ("student", "student_trees")}, "accuracy") == "student_trees"
    assert recommend({"student": {"val": 0.895}, "student_trees": {"val": 0.9}}, "accuracy", tol=0.01) \
        == "student_trees"
    assert recommend({"student": {"val": 0.9, "cost": 1}, "big": {"val": 0.9, "cost": 5}}, "accuracy") == "student"
    # metric dicts (as references() writes them), plain values, and NaN ignored
    assert recommend({"a": {"val": {"rmse": 2.0}}, "b": 1.5, "c": {"val": float("nan")}}, "rmse") == "b"
    with pytest.raises(ValueError):
        recommend({"a": {"val": float("nan")}}, "accuracy")
    rec = recommendation(tie, "accuracy")
    assert rec["model"] == "extra_trees" and "tie" in rec["why"] and rec["val"]["student"] == 0.9


def test_config_switches():
    raw = make_config()
    assert validate(raw, source="t").references.algorithms
    raw.update({"references": False, "trees": False})
    cfg = validate(raw, source="t")
    assert cfg.references.algorithms == [] and cfg.trees.n_estimators == 0 and cfg.export.model == "auto"


def test_a_set_stop_event_starts_no_further_fit():
    import threading

    data, teacher = sparse_case("classification", n=200, label_share=0.3)
    tr = data.indices(0)
    stop = threading.Event()
    stop.set()
    assert references(data, ["vec"], data.labelled(tr), tr, data.indices(1), data.indices(2), teacher,
                      settings=ReferenceSettings(n_estimators=5), stop=stop) == {}


def test_background_hands_back_the_value_or_the_error_of_its_call():
    import concurrent.futures

    from cmkd.errors import CmkdError
    from cmkd.pipeline.classical_stage import Background

    def ok(x, stop):
        return x + 1

    def bad(stop):
        raise CmkdError("tree student: target 'y' has 1 training samples")

    b = Background(ok, 1)
    assert b.result() == 2 and b.waited_s >= 0
    with pytest.raises(CmkdError, match="tree student"):
        Background(bad).result()
    b = Background(bad)  # in the background: check() raises it as soon as it has failed
    concurrent.futures.wait([b.future])
    with pytest.raises(CmkdError, match="tree student"):
        b.check()


@pytest.mark.slow  # a full run
def test_classical_fits_in_the_background_report_their_seconds(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The references and the tree student are fitted in a background thread while the students train;
    metrics.json says what the stage added to the run's wall time."""
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)  # the validation split, as with many labels
    from helpers import write_case

    import cmkd

    arr = make_arrays(200, 0)
    tr = np.flatnonzero(arr["split"] == 0)
    arr["y"] = arr["y"].astype(float)
    arr["y"][tr[::2]] = np.nan  # half the training samples unlabelled: every kind of reference
    cfg = make_config(student="seq", teacher=["vec", "seq"], epochs=2)
    cfg["references"] = {"n_estimators": 5}
    cfg["trees"] = {"n_estimators": 5}
    m = cmkd.run(str(write_case(tmp_path, arrays=arr, config=cfg)), tmp_path / "out", quiet=True)
    assert len(m["references"]) == 7 and m["models"]["student_trees"]["metrics"]
    assert 0 <= m["classical_added_s"] and 0 < m["classical_stage_s"]


@pytest.mark.parametrize("task", [pytest.param("classification", marks=pytest.mark.slow), "regression"])
def test_figures_do_not_depend_on_the_thread_count(task):
    """The background fits widen their thread count once the networks have trained
    (cmkd.pipeline.classical_stage.Threads):
    one thread, two, or a count that changes between fits give the same references."""
    from cmkd.pipeline.classical_stage import Threads

    data, teacher = sparse_case(task, n=300, label_share=0.3)
    tr = data.indices(0)
    args = (data, ["seq", "txt"], data.labelled(tr), tr, data.indices(1), data.indices(2), teacher)
    calls = []

    def changing() -> int:  # 1, 2, 1, 2, ...: read as each fit starts
        calls.append(1)
        return 1 + len(calls) % 2

    threads = Threads(1)
    threads.widen(2)
    threads.widen(1)  # never narrows
    assert threads() == 2
    runs = [references(*args, settings=ReferenceSettings(n_estimators=10, n_jobs=n))
            for n in (1, threads, changing)]
    assert len(calls) > 3
    for r in runs[1:]:
        assert {k: {f: v for f, v in e.items() if f != "fit_s"} for k, e in r.items()} == {
            k: {f: v for f, v in e.items() if f != "fit_s"} for k, e in runs[0].items()}


def test_a_strictly_best_reference_stays_recommended_under_any_tie_tolerance():
    # benchmarks/common.py rule_holds() relies on this: a tie tolerance only moves toward a cheaper model
    rng = np.random.default_rng(0)
    names = ["student", "student_trees", "random_forest", "extra_trees", "hist_gradient_boosting_teacher_labels"]
    checked = 0
    for _ in range(300):
        c = {k: {"val": float(v)} for k, v in zip(names, rng.uniform(0.5, 0.7, len(names)))}
        for metric in ("accuracy", "rmse"):
            strict = recommend(c, metric)
            if strict.startswith("student"):
                continue
            checked += 1
            for tol in (0.01, 0.05, 0.3):
                assert recommendation(c, metric, tol=tol)["model"] == strict
    assert checked > 100


def test_a_spilled_reference_predicts_the_same_once_restored():
    data, teacher = sparse_case("regression", n=200, label_share=0.3)
    tr = data.indices(0)
    lab, val, te = data.labelled(tr), data.indices(1), data.indices(2)
    models: dict = {}
    references(data, ["seq", "txt"], lab, tr, val, te, teacher,
               settings=ReferenceSettings(n_estimators=10, algorithms=("random_forest",)), models=models)
    m, x = models["random_forest_teacher_labels"], flat_features(data, ["seq", "txt"], te)
    before = m.predict(x)
    m.spill()
    assert m.models == {}  # out of memory until restored
    after = m.restore().predict(x)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_hist_gradient_boosting_needs_rows_to_split(task):
    """On fewer than HGB_MIN_ROWS labelled rows HistGradientBoosting could not split (a constant): not fitted, so
    never a candidate; on enough rows, and on the teacher's labels of every training sample, it is."""
    from cmkd.classical.references import HGB_MIN_ROWS

    data, teacher = sparse_case(task, n=300, label_share=0.3)
    tr, val, te = data.indices(0), data.indices(1), data.indices(2)
    lab = data.labelled(tr)
    assert len(lab) >= HGB_MIN_ROWS
    settings = ReferenceSettings(n_estimators=10, algorithms=("hist_gradient_boosting", "extra_trees"))
    few = references(data, ["seq", "txt"], lab[:HGB_MIN_ROWS - 1], tr, val, te, teacher, settings=settings)
    assert "hist_gradient_boosting" not in few and "extra_trees" in few
    assert "hist_gradient_boosting_teacher_labels" in few  # every training sample, through the teacher
    enough = references(data, ["seq", "txt"], lab[:HGB_MIN_ROWS], tr, val, te, teacher, settings=settings)
    assert "hist_gradient_boosting" in enough
