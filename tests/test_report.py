"""Tests of the self-contained HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from browser import check_report, chromium, problems

from cmkd.evaluation.report import write_report


def _metrics(kind: str) -> dict:
    """A small fake metrics.json dict for a classification or regression run."""
    if kind == "classification":
        scores = [{"accuracy": a, "macro_f1": a - 0.05} for a in (0.92, 0.71, 0.84)]
        primary = "accuracy"
    else:
        scores = [{"rmse": r, "mae": r * 0.8, "r2": 1 - r / 3, "coverage_90": 0.9, "width_90": 2 * r}
                  for r in (0.4, 0.9, 0.6)]
        primary = "rmse"
    names = ("teacher", "student_baseline", "student")
    mods = (["hsi", "lidar"], ["lidar"], ["lidar"])
    sizes, lats = (120_000, 9_000, 9_000), (2.5, 0.4, 0.4)
    models = {n: {"modalities": m, "params": p, "metrics": s, "latency_ms": lat}
              for n, m, p, s, lat in zip(names, mods, sizes, scores, lats, strict=True)}
    return {
        "name": "fake <run> & co", "recipe": "habitat", "seed": 0, "primary_metric": primary,
        "data": {"source": "synthetic", "n_train": 60, "n_val": 20, "n_test": 40},
        "models": models, "costs": {"hsi": 20.0, "lidar": 2.0},
        "references": {"random_forest": dict(scores[1])},
        "export": {"onnx": "student.onnx", "int8": "student.int8.onnx", "max_abs_diff": 1e-6,
                   "int8_metrics": dict(scores[2]), "onnx_latency_ms": 0.2, "int8_latency_ms": 0.15,
                   "int8_bytes": 12_345},
        "decisions": {"note": "recipe-specific section"},
    }


def _histories() -> dict[str, list[dict]]:
    """Per-model epoch logs; only the distilled student logs loss parts."""
    out: dict[str, list[dict]] = {}
    for name in ("teacher", "student_baseline", "student"):
        rows = []
        for e in range(1, 6):
            row = {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_metric": 1 - 0.5 / e,
                   "lr": 3e-3}
            if name == "student":
                row.update(train_task=0.5 / e, train_kd=0.3 / e, train_feature=0.1 / e,
                           train_relation=0.05 / e)
            rows.append(row)
        out[name] = rows
    return out


def _predictions(kind: str) -> dict[str, dict]:
    """Fake test predictions for every model."""
    rng = np.random.default_rng(0)
    out = {}
    for name in ("teacher", "student_baseline", "student"):
        if kind == "classification":
            y = rng.integers(0, 3, 40)
            pred = np.where(rng.random(40) < 0.8, y, rng.integers(0, 3, 40))
            out[name] = {"kind": kind, "y_true": y.tolist(), "y_pred": pred,
                         "class_names": ["grass", "tree", "road"]}
        else:
            y = rng.normal(size=40)
            out[name] = {"kind": kind, "y_true": y, "y_pred": y + rng.normal(scale=0.3, size=40)}
    return out


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_write_report(tmp_path: Path, kind: str) -> None:
    path = write_report(tmp_path / "out" / "report.html", _metrics(kind), _histories(), _predictions(kind))
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left behind
    text = path.read_text(encoding="utf-8")
    assert text.count('<img src="data:image/png;base64,') == text.count("<img") >= 5  # curves, 3 preds, bars
    for name in ("teacher", "student_baseline", "student", "random_forest"):
        assert name in text
    assert "SYNTHETIC DATA" in text
    assert "fake &lt;run&gt; &amp; co" in text and "<run>" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "http://" not in text and "https://" not in text


def test_write_report_minimal(tmp_path: Path) -> None:
    """Empty histories and predictions and real (non-synthetic) data still give a page, without the badge."""
    metrics = _metrics("classification")
    metrics["data"]["source"] = "data/houston.npz"
    path = write_report(tmp_path / "report.html", metrics, {}, {})
    text = path.read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" not in text
    assert "No training history" in text and "No test predictions" in text


def test_quick_banner_recipe_tables_and_scrolling(tmp_path: Path) -> None:
    """A --quick run is marked; recipe sections are tables, not a JSON dump; tables scroll inside their box; the
    loss plot does not promise a validation curve it does not have."""
    metrics = _metrics("classification")
    metrics["quick"] = True
    metrics["survey"] = {"carbonation": {"estimate_t": 1.23456789, "true_t": 1.1},
                         "deployment": [{"model": "teacher", "accuracy": 0.9123456}, {"model": "student",
                                                                                   "accuracy": 0.8}]}
    hist = {n: [{k: v for k, v in r.items() if k != "val_loss"} for r in rows] for n, rows in _histories().items()}
    text = write_report(tmp_path / "report.html", metrics, hist, {}).read_text(encoding="utf-8")
    assert "QUICK RUN (--quick)" in text
    assert "<pre>" not in text and "1.23456789" not in text and "carbonation.estimate_t" in text
    assert "<b>deployment</b>" in text and "0.9123" in text
    assert text.count("<div class='tbl'><table>") == text.count("<table>") > 0
    assert ".tbl{max-width:100%;overflow-x:auto}" in text
    assert "QUICK RUN" not in write_report(tmp_path / "r2.html", _metrics("classification"), {}, {}).read_text()


@pytest.mark.skipif(chromium() is None, reason="no headless Chromium installed (Debian: apt-get install "
                    "chromium-headless-shell); the browser check of the report is skipped")
def test_report_renders_cleanly_in_headless_chromium(tmp_path: Path) -> None:
    """A real browser: no console error, no network request, every image loads, nothing wider than the window
    (a wide recipe table scrolls inside its box)."""
    metrics = _metrics("regression")
    metrics["quick"] = True
    metrics["wide"] = {"sweep": [{f"column {i} with a long name": 1.234567 * i for i in range(40)}]}
    path = write_report(tmp_path / "report.html", metrics, _histories(), _predictions("regression"))
    check = check_report(path)
    assert check["images"] >= 5
    assert problems(check) == []
