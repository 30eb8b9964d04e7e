"""Exact resume and determinism, through the real CLI.

A run killed with SIGKILL in the middle of training and restarted with ``--resume`` must end with the same
metrics, histories and weights as an uninterrupted run with the same seed; two uninterrupted runs must agree
too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import make_config, write_case

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILL_WHEN = ".ckpt/student_baseline.pt"  # the teacher is done and the baseline student is mid-training


def _cmd(exp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cmkd.cli", "run", str(exp), "--out", str(out), "--quiet", *extra]


def _run(exp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(exp, out, *extra), env=ENV, capture_output=True, text=True, timeout=600)


def _write(folder: Path, epochs: int) -> Path:
    cfg = make_config(epochs=epochs)
    for role in ("teacher", "student"):
        cfg[role].update(patience=1000, dropout=0.2)  # dropout: the RNG state must be restored too
    cfg["teacher"]["modality_dropout"] = 0.3
    cfg["export"]["latency_runs"] = 5
    return write_case(folder, config=cfg)


def _killed_run(exp: Path, out: Path) -> dict:
    """Start a run, SIGKILL it as soon as the baseline student has a checkpoint; report what was on disk."""
    log = out.parent / f"{out.name}-killed.log"
    with log.open("w") as f:
        proc = subprocess.Popen(_cmd(exp, out), env=ENV, stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + 500
    while proc.poll() is None and not (out / KILL_WHEN).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpts = sorted(p.name for p in (out / ".ckpt").glob("*.pt")) if (out / ".ckpt").is_dir() else []
    saved = out.parent / f"{out.name}-ckpt-at-kill"
    if killed and (out / ".ckpt").is_dir():
        shutil.copytree(out / ".ckpt", saved)
    return {"killed": killed, "returncode": proc.returncode, "stderr": log.read_text(),
            "ckpts": ckpts, "metrics_existed": (out / "metrics.json").exists(), "saved_ckpt": saved}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Uninterrupted runs A and C, and run B killed mid-training then resumed (retried with more epochs if the
    run finished before it could be killed)."""
    root = tmp_path_factory.mktemp("resume")
    for epochs in (15, 40, 100):
        base = root / f"e{epochs}"
        exp = _write(base, epochs)
        with ThreadPoolExecutor(max_workers=2) as pool:
            a = pool.submit(_run, exp, base / "A")
            kill = _killed_run(exp, base / "B")
            c = pool.submit(_run, exp, base / "C")
            resumed = _run(exp, base / "B", "--resume") if kill["killed"] else None
            a, c = a.result(), c.result()
        if kill["killed"]:
            return {"root": base, "exp": exp, "A": a, "C": c, "kill": kill, "resumed": resumed}
    pytest.fail("every run finished before it could be killed")


def _load(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "histories.json").read_text())


def _comparable(metrics: dict) -> dict:
    """Everything that must be reproducible: metrics, sizes and INT8 results, not wall-clock latencies."""
    ex = metrics["export"]
    models = {r: {k: v for k, v in m.items() if k != "latency_ms"} for r, m in metrics["models"].items()}
    return {"models": models,
            "data": metrics["data"], "int8_metrics": ex["int8_metrics"], "max_abs_diff": ex["max_abs_diff"],
            "onnx_bytes": ex["onnx_bytes"], "int8_bytes": ex["int8_bytes"]}


def _same_weights(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ between two saved models (empty when identical)."""
    import torch

    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.slow  # kill / resume CLI runs
def test_uninterrupted_runs_complete(runs: dict) -> None:
    for key in ("A", "C"):
        assert runs[key].returncode == 0, runs[key].stderr
        assert "Traceback" not in runs[key].stderr


@pytest.mark.slow  # kill / resume CLI runs
def test_kill_happened_mid_training(runs: dict) -> None:
    kill = runs["kill"]
    assert kill["killed"] and kill["returncode"] == -signal.SIGKILL, kill
    assert "teacher.pt" in kill["ckpts"] and "student_baseline.pt" in kill["ckpts"], kill
    assert not kill["metrics_existed"], "the run had already finished when it was killed"


@pytest.mark.slow  # kill / resume CLI runs
def test_resume_matches_uninterrupted_run(runs: dict) -> None:
    res = runs["resumed"]
    assert res.returncode == 0, res.stderr
    a_metrics, a_hist = _load(runs["root"] / "A")
    b_metrics, b_hist = _load(runs["root"] / "B")
    assert _comparable(b_metrics) == _comparable(a_metrics)
    assert b_hist == a_hist  # every epoch's losses, learning rate and validation score
    for role in ("teacher", "student_baseline", "student"):
        diff = _same_weights(runs["root"] / "A" / f"{role}.pt", runs["root"] / "B" / f"{role}.pt")
        assert not diff, f"{role}: weights differ after resume: {diff[:5]}"
    assert not (runs["root"] / "B" / ".ckpt").exists(), "checkpoints left behind after a finished run"


@pytest.mark.slow  # kill / resume CLI runs
def test_same_seed_same_results(runs: dict) -> None:
    a_metrics, a_hist = _load(runs["root"] / "A")
    c_metrics, c_hist = _load(runs["root"] / "C")
    assert _comparable(c_metrics) == _comparable(a_metrics)
    assert c_hist == a_hist
    assert not _same_weights(runs["root"] / "A" / "student.pt", runs["root"] / "C" / "student.pt")


@pytest.mark.slow  # kill / resume CLI runs
def test_resume_reads_the_checkpoints(runs: dict) -> None:
    """--resume really loads OUT/.ckpt: a damaged checkpoint there is a one-line error naming it."""
    out = runs["root"] / "D"
    out.mkdir()
    (out / ".cmkd-run").write_text("a cmkd run folder\n")  # an interrupted run's folder: the marker, its checkpoints
    shutil.copytree(runs["kill"]["saved_ckpt"], out / ".ckpt")
    ck = out / ".ckpt" / "teacher.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    proc = _run(runs["exp"], out, "--resume")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "teacher.pt" in lines[0], proc.stderr
