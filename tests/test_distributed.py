"""Data-parallel training with 2 CPU processes under torchrun (gloo): it exits cleanly, only rank 0 writes, and its
metrics match the single-process run within a stated tolerance (tiny SYNTHETIC data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cmkd.data.cases import DDP_TOLERANCE as TOLERANCE
from cmkd.data.cases import ddp_case
from cmkd.training.distributed import shard, torchrun


def run_ddp(yaml: Path, out: Path, nproc: int = 2):  # noqa: ANN201 - a CompletedProcess
    return torchrun(["run", str(yaml), "--out", str(out), "--quiet"], nproc)


def test_shard_splits_a_global_batch() -> None:
    idx = np.arange(10, 17)
    parts = [shard(idx, 2, r) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == idx.tolist()
    assert shard(np.array([5]), 2, 1).tolist() == [5]  # a rank never gets an empty batch


@pytest.mark.slow  # torchrun with two processes
@pytest.mark.skipif(sys.platform == "win32", reason="gloo process groups need a POSIX host here")
def test_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cmkd

    # data-parallel runs select on the validation split (cross-validation with few labels is single-process)
    monkeypatch.setattr("cmkd.pipeline.crossval.CV_MAX_LABELS", 0)

    y = ddp_case(tmp_path / "case")
    r = run_ddp(y, tmp_path / "ddp")
    assert r.returncode == 0, r.stderr[-2000:]
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    one = cmkd.run(str(y), tmp_path / "single", quiet=True)
    for role in ("teacher", "student_baseline", "student"):
        a, b = one["models"][role]["metrics"]["accuracy"], two["models"][role]["metrics"]["accuracy"]
        assert abs(a - b) <= TOLERANCE, (role, a, b)
    assert not (tmp_path / "ddp" / ".ckpt").exists()
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.json")) == [
        "histories.json", "metrics.json", "student.int8.json", "student.json", "student_net.json",
        "student_trees.json"]  # rank 0 alone wrote the outputs (the sidecars of the deployed models included)
