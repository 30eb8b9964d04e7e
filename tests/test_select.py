"""Sensor selection under a budget (``cmkd select``) on a tiny SYNTHETIC dataset: every subset scored, the Pareto
front is non-dominated, the choice respects the budget, JSON and figure written; bad budgets are clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_config, write_case

from cmkd.config import validate
from cmkd.errors import CmkdError
from cmkd.pipeline.select import pareto_front, select


def test_pareto_front_by_hand() -> None:
    rows = [{"cost": 1, "s": 0.5}, {"cost": 2, "s": 0.7}, {"cost": 3, "s": 0.6}, {"cost": 2, "s": 0.4},
            {"cost": 4, "s": 0.9}]
    assert [(r["cost"], r["s"]) for r in pareto_front(rows, "s", True)] == [(1, 0.5), (2, 0.7), (4, 0.9)]
    assert [(r["cost"], r["s"]) for r in pareto_front(rows, "s", False)] == [(1, 0.5), (2, 0.4)]


@pytest.mark.slow  # cmkd select through the CLI: one run per subset
def test_cli_select_exhaustive(tmp_path: Path) -> None:
    cfg = make_config(student="img", epochs=1)
    cfg["data"]["modalities"]["vec"]["cost"] = 5.0
    cfg["data"]["modalities"]["sig"]["cost"] = 2.0
    y = write_case(tmp_path / "case", config=cfg)
    r = subprocess.run([sys.executable, "-m", "cmkd.cli", "select", str(y), "--budget", "3",
                        "--candidates", "vec,img,sig", "--out", str(tmp_path / "sel"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Pareto front" in r.stdout and "best within budget 3" in r.stdout
    res = json.loads((tmp_path / "sel" / "select.json").read_text())
    assert res["search"] == "exhaustive" and len(res["subsets"]) == 7
    assert (tmp_path / "sel" / "pareto.png").stat().st_size > 1000
    best = res["best_within_budget"]
    assert best["cost"] <= 3 and set(best["modalities"]) <= {"img", "sig"}
    key = "val_accuracy"
    fits = [s for s in res["subsets"] if s["cost"] <= 3]
    assert best[key] == max(s[key] for s in fits)
    front = res["pareto_front"]
    for f in front:  # nothing cheaper-or-equal is strictly better
        assert not any(s["cost"] <= f["cost"] and s[key] > f[key] for s in res["subsets"])
    assert all("test_accuracy" in s for s in res["subsets"])


def test_budget_below_cheapest_and_unknown_candidate(tmp_path: Path) -> None:
    from helpers import make_arrays

    cfg = validate(make_config(student="img"))
    arrays = make_arrays()
    with pytest.raises(CmkdError, match="below the cheapest"):
        select(cfg, arrays, 0.5)
    with pytest.raises(CmkdError, match="'radar' is not a declared modality"):
        select(cfg, arrays, 10, ["img", "radar"])
