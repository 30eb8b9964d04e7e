"""`cmkd tune`: trials on the validation split, best config written and runnable (tiny SYNTHETIC data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_case


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # cmkd tune through the CLI (trials are runs)
@pytest.mark.parametrize("sampler,trials", [("tpe", 3), ("de", 4)])
def test_tune_writes_trials_and_a_runnable_best_config(tmp_path: Path, sampler: str, trials: int) -> None:
    y = write_case(tmp_path, student="vec", teacher=["vec", "img"], epochs=2)
    r = cli("tune", str(y), "--trials", str(trials), "--sampler", sampler, "--out", str(tmp_path / "t"), "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "t" / "trials.json").read_text())
    assert 2 <= len(res["trials"]) <= trials and res["trials"][0]["params"] == "defaults"
    vals = [t["val_accuracy"] for t in res["trials"]]
    assert res["best"] == max(vals) and res["default"] == vals[0] and res["gain"] >= 0
    best = yaml.safe_load((tmp_path / "t" / "best.yaml").read_text())
    if res["best_params"] != "defaults":
        assert best["student"]["width"] == res["best_params"]["student.width"]
    r = cli("run", str(tmp_path / "t" / "best.yaml"), "--out", str(tmp_path / "run"), "--quiet",
            "--set", "export.enabled=false")
    assert r.returncode == 0, r.stderr


def test_tune_refuses_too_few_trials_and_an_unknown_sampler_before_training() -> None:
    """In-process (the fast tier): the arguments are checked before any trial trains."""
    from helpers import make_arrays, make_config

    from cmkd.config import validate
    from cmkd.errors import CmkdError
    from cmkd.pipeline.tune import tune

    cfg, arrays = validate(make_config(student="vec", teacher=["vec", "img"], epochs=1)), make_arrays()
    with pytest.raises(CmkdError, match="--trials must be at least 2"):
        tune(cfg, arrays, 1)
    with pytest.raises(CmkdError, match="--sampler 'grid'"):
        tune(cfg, arrays, 3, "grid")


@pytest.mark.slow  # two CLI subprocesses (the in-process twin above is in the fast tier)
def test_tune_bad_arguments(tmp_path: Path) -> None:
    y = write_case(tmp_path, student="vec", teacher=["vec", "img"], epochs=1)
    r = cli("tune", str(y), "--trials", "1")
    assert r.returncode == 2 and "trials" in r.stderr
    r = cli("tune", str(y), "--sampler", "grid")
    assert r.returncode == 2 and "sampler" in r.stderr and len(r.stderr.strip().splitlines()) == 1
