"""End to end on tiny SYNTHETIC data: every modality kind as the student's, the metrics.json contract, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import check_metrics, make_arrays, make_config, write_case

import cmkd
from cmkd.config import validate
from cmkd.errors import CmkdError

FAST = ["export.latency_runs=5"]  # API overrides
FAST_CLI = ["--set", "export.latency_runs=5"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *args], capture_output=True, text=True, timeout=600)


# the fast tier keeps one tiny end-to-end run here (a vector student, classification): the others are slow
SLOW = pytest.mark.slow


@pytest.mark.parametrize("student", ["vec", *(pytest.param(k, marks=SLOW) for k in ["seq", "img", "sig", "txt"])])
@pytest.mark.parametrize("task", ["classification", pytest.param("regression", marks=SLOW)])
def test_byod_every_kind(tmp_path: Path, student: str, task: str) -> None:
    """A user's own npz + YAML with any modality kind as the student runs end to end."""
    y = write_case(tmp_path, task=task, student=student, teacher=["vec", "seq", "img", "sig", "txt"], epochs=2)
    m = cmkd.run(str(y), tmp_path / "out", quiet=True, overrides=FAST)
    out = tmp_path / "out"
    for f in ("metrics.json", "report.html", "config.yaml", "teacher.pt", "student.pt", "student_baseline.pt",
              "student.onnx", "student.int8.onnx"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics(saved)
    assert saved["models"]["student"]["modalities"] == [student]
    assert saved["primary_metric"] == ("accuracy" if task == "classification" else "rmse")
    assert saved["export"]["max_abs_diff"] <= 1e-4
    for role in ("teacher", "student_baseline", "student"):
        assert np.isfinite(list(m["models"][role]["metrics"].values())).all()
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


@pytest.mark.slow  # a full run
def test_student_scored_on_all_test_samples_teacher_on_complete_ones(tmp_path: Path) -> None:
    """Test samples without the teacher's modality are kept: students are scored on them, the teacher is not."""
    arr = make_arrays(n=200)
    absent = (arr["split"] == 2) & (np.arange(200) % 2 == 0)
    arr["vec__present"] = ~absent
    arr["vec"][absent] = np.nan
    y = write_case(tmp_path, arrays=arr, config=make_config(epochs=1))
    m = cmkd.run(str(y), tmp_path / "out", quiet=True, overrides=FAST)
    n_test = int((arr["split"] == 2).sum())
    assert m["data"]["n_test"] == n_test
    assert m["models"]["student"]["n_test"] == n_test
    assert m["models"]["teacher"]["n_test"] == n_test - int(absent.sum())


def test_summary_marks_a_model_scored_on_fewer_samples(capsys: pytest.CaptureFixture[str]) -> None:
    """The terminal table flags a teacher scored on a subset of the test samples, or on validation samples."""
    from cmkd.evaluation.report import print_summary

    def model(n: int, on: str = "test") -> dict:
        return {"modalities": ["a"], "params": 10, "metrics": {"rmse": 1.0}, "latency_ms": 0.1, "cost": 1.0,
                "n_test": n, "scored_on": on}

    metrics = {"name": "t", "synthetic": True, "primary_metric": "rmse", "data": {"n_test": 100},
               "models": {"teacher": model(60), "student_baseline": model(100), "student": model(100)}}
    print_summary(metrics)
    out = " ".join(capsys.readouterr().out.split())  # whatever the terminal width wrapped
    assert "* teacher: scored on 60 of the 100 test samples" in out
    assert "student:" not in out and "student_baseline:" not in out
    metrics["models"]["teacher"] = model(40, "val")
    print_summary(metrics)
    assert "* teacher: scored on 40 validation samples" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow  # six CLI subprocesses (run, predict, evaluate x2, export, list)
def test_cli_run_predict_evaluate_export(tmp_path: Path) -> None:
    """One fast pass through the CLI: run, predict with the ONNX student, evaluate, re-export, list."""
    y = write_case(tmp_path, config=make_config(epochs=1))
    r = cli("run", str(y), "--out", str(tmp_path / "out"), "--quick", *FAST_CLI)
    assert r.returncode == 0, r.stderr
    assert "student" in r.stdout and "accuracy" in r.stdout  # the summary table
    assert "student epoch 1/" in r.stdout  # off a terminal: a plain line per epoch
    assert "tea…" not in r.stdout and "│ student_baseline" in r.stdout  # the table at full width, not 80 columns
    rows = (tmp_path / "out" / "logs" / "student.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and "val_metric" in rows[0] and len(rows) >= 2
    arr = make_arrays()
    np.savez(tmp_path / "new.npz", img=arr["img"][:7])  # only the student's modality
    r = cli("predict", "--model", str(tmp_path / "out"), "--input", str(tmp_path / "new.npz"),
            "--output", str(tmp_path / "preds.json"))
    assert r.returncode == 0, r.stderr
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert preds["n"] == 7 and len(preds["targets"]["y"]["label"]) == 7
    assert np.allclose(np.sum(preds["targets"]["y"]["probabilities"], axis=1), 1, atol=1e-3)
    r = cli("evaluate", "--model", str(tmp_path / "out"), "--data", str(tmp_path / "data.npz"), "--split", "test")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert ev["metrics"]["accuracy"] == pytest.approx(metrics["models"]["student"]["metrics"]["accuracy"])
    r = cli("evaluate", "--model", str(tmp_path / "out"), "--data", str(tmp_path / "data.npz"), "--role", "teacher")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == len(arr["y"])  # --split all: every labelled sample
    r = cli("export", "--model", str(tmp_path / "out"))
    assert r.returncode == 0 and "max |onnx - torch|" in r.stdout, r.stderr
    r = cli("list")
    assert r.returncode == 0 and "minerals" in r.stdout and "houston" in r.stdout


@pytest.mark.slow  # a full run
def test_set_override_and_resolved_config(tmp_path: Path) -> None:
    """--set overrides reach the run and the resolved config is saved next to the outputs."""
    y = write_case(tmp_path, config=make_config(epochs=1))
    cmkd.run(str(y), tmp_path / "out", quiet=True, overrides=[*FAST, "student.width=8", "distill.temperature=2.5"])
    cfg = cmkd.load_config(tmp_path / "out" / "config.yaml")
    assert cfg.student.width == 8 and cfg.distill.temperature == 2.5
    model, meta = cmkd.load_model(tmp_path / "out" / "student.pt")
    assert model.width == 8 and "temperature: 2.5" in meta["config"]


@pytest.mark.slow  # a full run
def test_recipes_quick(tmp_path: Path) -> None:
    """The minerals recipe runs in quick mode and is labelled synthetic."""
    m = cmkd.run("minerals", tmp_path / "m", quick=True, quiet=True,
                 overrides=["teacher.epochs=1", "student.epochs=1", *FAST])
    assert m["synthetic"] is True and m["data"]["source"] == "synthetic"
    assert "SYNTHETIC" in (tmp_path / "m" / "report.html").read_text()
    # survey outputs: deployment table and carbonation estimate against the generator's true uptake
    sv = json.loads((tmp_path / "m" / "survey.json").read_text())
    assert sv["synthetic"] is True and [r["model"] for r in sv["deployment"]][:3] == [
        "teacher", "student_baseline", "student"]
    assert sv["deployment"][2]["power_reduction"] == pytest.approx(1 - 1.5 / 24.5)
    for role in ("teacher", "student"):
        c = sv["carbonation"][role]
        assert c["true_t"] > 0 and c["interval_90_t"][0] <= c["estimate_t"] <= c["interval_90_t"][1]
        assert 0 <= c["pixel_interval_coverage"] <= 1
    assert "carbonation estimate" in (tmp_path / "m" / "report.html").read_text()


def test_carbonation_arithmetic() -> None:
    from cmkd.recipes.minerals.analysis import carbonation

    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    fractions = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = carbonation(probs, fractions, np.array([1.0, 0.0]), 2.0)
    # estimates 2 and 1 (total 3), truth 2 and 0 (total 2); sd 0 and 2 * 0.5 = 1
    assert r["estimate_t"] == pytest.approx(3.0) and r["true_t"] == pytest.approx(2.0)
    assert r["interval_90_t"] == pytest.approx([3 - 1.6449, 3 + 1.6449])
    assert r["interval_covers_truth"] is True and r["relative_error"] == pytest.approx(0.5)
    assert r["pixel_interval_coverage"] == pytest.approx(1.0)


@pytest.mark.slow  # a full run
def test_unlabelled_training_samples(tmp_path: Path) -> None:
    """Class id -1 marks unlabelled samples: the task ignores them, the distilled student learns on them."""
    arr = make_arrays(n=200)
    hidden = (arr["split"] == 0) & (np.arange(200) % 3 > 0)
    arr["y"] = np.where(hidden, -1, arr["y"])
    y = write_case(tmp_path, arrays=arr, config=make_config(epochs=1))
    m = cmkd.run(str(y), tmp_path / "out", quiet=True, overrides=FAST)
    assert m["data"]["n_train"] == int(((arr["split"] == 0) & ~hidden).sum())
    assert m["data"]["n_train_unlabelled"] == int(hidden.sum())
    _, meta = cmkd.load_model(tmp_path / "out" / "student.pt")
    assert meta["classes"]["y"] == [0, 1, 2]  # -1 is not a class


@pytest.mark.slow  # a full run
def test_progressive_chain(tmp_path: Path) -> None:
    """teacher -> assistant_1 (a middle modality set) -> student_progressive, beside the direct student."""
    cfg = make_config(student="img", teacher=["vec", "img", "seq"], epochs=2)
    cfg["distill"] = {"chain": [["vec", "img"]]}
    m = cmkd.run(validate(cfg), tmp_path / "out", arrays=make_arrays(), quiet=True, overrides=None)
    assert {"assistant_1", "student_progressive"} <= set(m["models"])
    assert m["models"]["assistant_1"]["modalities"] == ["vec", "img"]
    assert m["models"]["student_progressive"]["modalities"] == ["img"]
    assert (tmp_path / "out" / "student_progressive.pt").is_file()
    cfg["distill"] = {"chain": [["vec", "nope"]]}
    with pytest.raises(CmkdError, match="chain"):
        validate(cfg)
