"""The coastal recipe (SYNTHETIC data): samples, quick run with the sparsity sweep, recommendation schema, and
forecasts from CSV readings with gaps, including malformed CSVs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from helpers import check_metrics

import cmkd
from cmkd.errors import CmkdError
from cmkd.recipes.coastal import decisions
from cmkd.recipes.coastal.forecast import EPOCH, read_csv
from cmkd.recipes.coastal.recipe import HORIZONS, WINDOW, build, default_config
from cmkd.recipes.coastal.scene import CHANNELS

FAST = ["teacher.epochs=1", "student.epochs=1", "export.latency_runs=5", "options.days=60", "options.stations=2"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coastal") / "run"
    cmkd.run("coastal", out, quick=True, quiet=True, overrides=FAST)
    return out


def test_samples_respect_the_time_split_and_failures() -> None:
    cfg = default_config(quick=True)
    arrays, scene = build(cfg, quick=True)
    split, hour, station = arrays["split"], arrays["hour"], arrays["station"]
    block = 24 * cfg["options"]["block_days"]
    assert set(np.unique(split)) == {0, 1, 2, 3}
    # a sample's window and targets lie in one block, and blocks are wholly in one part
    assert ((hour - WINDOW + 1) // block == hour // block).all()
    assert ((hour + max(HORIZONS)) // block == hour // block).all()
    for b in np.unique(hour // block):
        assert len(np.unique(split[hour // block == b])) == 1
    assert np.isnan(arrays["sensors"]).mean() > 0.2 and not np.isnan(arrays["sensors_full"]).any()
    i = 5
    assert np.allclose(arrays["level"][i], [scene.level[station[i], hour[i] + h] for h in HORIZONS])
    assert not arrays["satellite__present"].all()


@pytest.mark.slow  # the coastal recipe's quick run (module fixture)
def test_quick_run_sweep_intervals_and_recommendations(quick_run: Path) -> None:
    m = json.loads((quick_run / "metrics.json").read_text())
    assert m["synthetic"] is True and m["primary_metric"] == "rmse"
    st = m["models"]["student"]["metrics"]
    assert {"rmse", "coverage_90", "width_90", "imputation_rmse", "flood/accuracy"} <= set(st)
    c = m["coastal"]
    patterns = {r["pattern"] for r in c["sweep"]}
    assert patterns == {"none", "random", "bursty", "storm"}
    assert len(c["sweep"]) == 1 + 3 * 4
    for r in c["sweep"]:
        if r["pattern"] in ("none", "random"):  # failures as requested (windows sample the test hours)
            assert abs((1 - r["available_share"]) - r["missing"]) < 0.08
        assert r["harmonic"] > 0 and r["student"] > 0 and 0 <= r["student_coverage_90"] <= 1
    for pat in ("random", "bursty", "storm"):
        share = {r["missing"]: r["available_share"] for r in c["sweep"] if r["pattern"] == pat}
        assert share[0.9] < share[0.3]
    assert m["uncertainty"]["calibrated_on"] == "calibration"
    doc = json.loads((quick_run / "recommendations.json").read_text())
    jsonschema.validate(doc, decisions.SCHEMA)
    assert doc["synthetic"] is True and len(doc["recommendations"]) == 2 * 3 * len(HORIZONS)
    html = (quick_run / "report.html").read_text()
    assert "sparsity sweep" in html and "resilience recommendations" in html


def test_risk_classes() -> None:
    assert decisions.risk_class(1.0, 0.9, 1.1, 0.99, 0.8) == "severe"
    assert decisions.risk_class(1.0, 0.7, 1.3, 0.6, 0.9) == "high"
    assert decisions.risk_class(0.5, 0.3, 0.95, 0.12, 0.9) == "moderate"
    assert decisions.risk_class(0.2, 0.0, 0.4, 0.0, 0.9) == "low"
    p = decisions.exceedance_probability(np.array([1.0]), np.array([1.0 + 1.6449]), 1.0)
    assert p[0] == pytest.approx(0.5)


def _csv(path: Path, n: int = 60, gaps: float = 0.5, station: int = 0) -> Path:
    rng = np.random.default_rng(0)
    t = EPOCH + np.arange(n) * np.timedelta64(1, "h")
    vals = rng.normal(size=(n, len(CHANNELS))) * 0.1 + np.array([3.0, 8, 0.2, 1010, 1, 30, 10, 12])
    vals[rng.random(vals.shape) < gaps] = np.nan
    df = pd.DataFrame(vals, columns=CHANNELS)
    df.insert(0, "station", station)
    df.insert(0, "time", [str(x) for x in t])
    df = df.drop(index=range(10, 20))  # whole hours missing
    df.to_csv(path, index=False)
    return path


@pytest.mark.slow  # the coastal recipe's quick run (module fixture)
def test_predict_from_csv(quick_run: Path, tmp_path: Path) -> None:
    src = _csv(tmp_path / "readings.csv")
    out = tmp_path / "forecast.json"
    # the forecast runs the deployed ONNX through cmkd.runtime: torch is never imported
    code = ("import sys; from cmkd.cli import main; sys.argv = ['cmkd', 'predict', '--model', sys.argv[1], "
            "'--input', sys.argv[2], '--output', sys.argv[3]]\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nassert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code, str(quick_run), str(src), str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    f = doc["forecasts"][0]
    assert f["station"] == 0 and len(f["level_m"]) == len(HORIZONS)
    for mu, (lo, hi) in zip(f["level_m"], f["interval_90_m"]):
        assert lo < mu < hi
    assert 0 <= f["flood_probability_24h"] <= 1
    assert {r["horizon_h"] for r in doc["recommendations"]} == set(HORIZONS)


@pytest.mark.slow  # the coastal recipe's quick run (module fixture)
@pytest.mark.parametrize("case,message", [
    ("missing_column", "missing column"),
    ("bad_time", "unparseable timestamp"),
    ("all_nan", "all NaN"),
    ("unknown_station", "unknown to this model"),
    ("not_csv", "not a readable CSV"),
])
def test_malformed_csv_one_line_error(quick_run: Path, tmp_path: Path, case: str, message: str) -> None:
    src = _csv(tmp_path / "r.csv", station=7 if case == "unknown_station" else 0)
    df = pd.read_csv(src)
    if case == "missing_column":
        df.drop(columns=["pressure"]).to_csv(src, index=False)
    elif case == "bad_time":
        df.loc[3, "time"] = "yesterday-ish"
        df.to_csv(src, index=False)
    elif case == "all_nan":
        df[list(CHANNELS)] = np.nan
        df.to_csv(src, index=False)
    elif case == "not_csv":
        src.write_bytes(b"\x00\x01\x02PK\x03\x04 \xff\xfe")
    r = subprocess.run([sys.executable, "-m", "cmkd.cli", "predict", "--model", str(quick_run), "--input", str(src),
                        "--output", str(tmp_path / "o.json")], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not (tmp_path / "o.json").exists()


def test_read_csv_puts_readings_on_an_hourly_grid(tmp_path: Path) -> None:
    series = read_csv(_csv(tmp_path / "r.csv", n=30, gaps=0.0), CHANNELS)
    hours, vals = series[0]
    assert len(hours) == 30 and np.isnan(vals[10:20]).all() and not np.isnan(vals[:10]).any()
    with pytest.raises(CmkdError, match="not found"):
        read_csv(tmp_path / "nope.csv", CHANNELS)


@pytest.mark.slow  # the coastal recipe's quick run (module fixture)
def test_json_outputs_are_strict(quick_run: Path) -> None:
    """Every JSON file of a quick coastal run (the run whose metrics.json once held a bare NaN) is strict JSON
    (NaN / inf written as null), and metrics.json says it is a quick run and follows its schema."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    files = sorted(quick_run.glob("*.json"))
    assert {"metrics.json", "recommendations.json", "student.json"} <= {f.name for f in files}
    for f in files:
        json.loads(f.read_text(), parse_constant=refuse)
    m = json.loads((quick_run / "metrics.json").read_text())
    assert m["quick"] is True
    check_metrics(m)
