"""Quiet means quiet: third-party warnings raised during a run go to ``OUT/logs/warnings.log`` and are counted in
metrics.json, never printed; what the user should act on is one plain line of cmkd's own (``warning: ...``),
printed unless ``--quiet``. On tiny SYNTHETIC data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import check_metrics

from cmkd.evaluation.logs import WARNINGS_LOG, WarningLog, few_samples_message, note, write_warnings_log

# few epochs, no export, small forests (each of their trees still warns): a few seconds
TINY = [arg for kv in ("teacher.epochs=1", "student.epochs=1", "export.enabled=false", "references.n_estimators=5",
                       "trees.n_estimators=5") for arg in ("--set", kv)]


def forty_classes(folder: Path) -> Path:
    """A user's own data: 40 classes x 3 samples (a rich and a cheap vector modality, no split column, so cmkd
    keeps one sample of each class for validation and one for testing), the config with few epochs and no
    export. scikit-learn warns on every tree it fits here (more classes than half the samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(40), 3)
    centers = 2 * rng.normal(size=(40, 8))
    rich = (centers[y] + 0.3 * rng.normal(size=(len(y), 8))).astype(np.float32)
    cheap = (centers[y][:, :4] + rng.normal(size=(len(y), 4))).astype(np.float32)
    np.savez(folder / "data.npz", rich=rich, cheap=cheap, y=y)
    cfg = {"name": "forty-classes", "seed": 0,
           "data": {"path": "data.npz", "modalities": {"rich": {"kind": "vector", "cost": 10.0},
                                                      "cheap": {"kind": "vector", "cost": 1.0}},
                    "targets": {"y": {"kind": "classification"}}},
           "teacher": {"modalities": ["rich", "cheap"], "width": 16, "epochs": 3, "batch_size": 64},
           "student": {"modalities": ["cheap"], "width": 16, "epochs": 3, "batch_size": 64},
           "export": {"latency_runs": 5}}
    (folder / "exp.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "exp.yaml"


def test_quiet_cli_run_prints_nothing_and_logs_the_warnings(tmp_path: Path) -> None:
    """``cmkd run exp.yaml --quiet`` through the CLI in a fresh process (every warning shows there, as for a user):
    exit 0, nothing on stdout or stderr; the scikit-learn warnings are in logs/warnings.log, grouped with their
    counts, and metrics.json counts them (the same total) and carries cmkd's own line about the small classes."""
    exp = forty_classes(tmp_path / "case")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the default filters, as for a user
    r = subprocess.run([sys.executable, "-m", "cmkd", "run", str(exp), "--quiet", "--out", str(tmp_path / "out"),
                        *TINY],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout == ""
    assert r.stderr == ""
    m = check_metrics(tmp_path / "out" / "metrics.json")
    w = m["warnings"]
    assert w["log"] == WARNINGS_LOG
    log = (tmp_path / "out" / WARNINGS_LOG).read_text()
    counts = [int(n) for n in re.findall(r"^\[(\d+)x\] ", log, flags=re.M)]
    assert w["count"] == sum(counts) > 0 and w["distinct"] == len(counts)
    assert "UserWarning" in log and "sklearn" in log and "number of unique classes" in log
    assert len(w["notes"]) == 1 and w["notes"][0].startswith("40 of 40 classes of y have fewer than 5 labelled")
    assert f"note: {w['notes'][0]}" in log.splitlines()


def test_warning_log_records_other_threads_and_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings in this thread and in a worker thread are recorded, not printed; the filters in force still
    apply; a note prints one ``warning:`` line unless quiet and is logged either way; after the log closes,
    warnings show again."""
    def worker() -> None:
        warnings.warn("from a worker thread", RuntimeWarning, stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="filtered out")
        with WarningLog() as log:
            for _ in range(2):  # one place, twice
                warnings.warn("twice", UserWarning, stacklevel=1)
            warnings.warn("filtered out", UserWarning, stacklevel=1)
            t = threading.Thread(target=worker)
            t.start()
            t.join()
            note("act on this", quiet=False)
            note("and on this, quietly", quiet=True)
            section = write_warnings_log(tmp_path)
        assert capsys.readouterr().err == "warning: act on this\n"
        with pytest.warns(UserWarning, match="after"):
            warnings.warn("after", UserWarning, stacklevel=1)
    assert [str(w.message) for w in log.records] == ["twice", "twice", "from a worker thread"]
    assert section == {"count": 3, "distinct": 2, "notes": ["act on this", "and on this, quietly"],
                       "log": WARNINGS_LOG}
    lines = (tmp_path / WARNINGS_LOG).read_text().splitlines()
    assert lines[1:3] == ["note: act on this", "note: and on this, quietly"]
    assert lines[3].startswith("[2x] ") and lines[3].endswith("UserWarning: twice")
    assert lines[4].startswith("[1x] ") and lines[4].endswith("RuntimeWarning: from a worker thread")
    assert json.dumps(section)  # plain JSON for metrics.json


def test_few_samples_message_names_the_small_classes() -> None:
    """One line per classification target with classes under 5 labelled training samples, smallest first;
    unlabelled samples (-1) and the other splits do not count; none when every class has enough."""
    class Data:
        target_kinds = {"kind": "classification", "level": "regression"}
        classes = {"kind": np.array(["ore", "slag", "sand"])}
        targets = {"kind": np.array([0] * 9 + [1] * 2 + [2] * 4 + [-1] * 5 + [1] * 6)}

    train = np.arange(20)  # the last 6 (all "slag") are not training samples
    (line,) = few_samples_message(Data(), train)
    assert line.startswith("2 of 3 classes of kind have fewer than 5 labelled training samples (slag: 2, sand: 4)")
    assert few_samples_message(Data(), train, k=2) == []
