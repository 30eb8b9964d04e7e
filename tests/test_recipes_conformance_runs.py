"""Every registered recipe runs ``--quick`` end to end, shrunk by overrides to seconds: its metrics.json meets the
contract (``shared/metrics.schema.json``) and its report.html renders. Real-data recipes skip, saying so, where
their data folder is absent. One test per recipe, so pytest-xdist spreads them (``--dist loadfile`` keeps a
file together: the runs live here, apart from the fast protocol checks in test_recipes_conformance.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import cmkd
from cmkd.recipes import RECIPES

SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "metrics.schema.json"
DATA = Path(os.environ.get("CMKD_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# real-data recipes and the folder they read
REAL = {"houston": "houston2013_mdlrs_subset", "coastal-real": "tide_gauge_netherlands_rws",
        "airquality": "air_quality_uci_cheap_vs_reference"}
# tiny and fast everywhere: one or two epochs, few latency runs, a small classical stage
TINY = ["teacher.epochs=1", "student.epochs=2", "export.latency_runs=5", "references.algorithms=[extra_trees]",
        "references.n_estimators=5", "trees.n_estimators=5"]
# smaller data where a recipe's quick run is still slow (its options model names these keys)
SMALL = {"habitat": ["options.n=300"], "recycling": ["options.n_items=200"], "coastal": ["options.days=60"]}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_quick_run_meets_the_contract(name: str, tmp_path: Path) -> None:
    if name in REAL and not (DATA / REAL[name]).is_dir():
        pytest.skip(f"{name}: real data folder {DATA / REAL[name]} absent (set CMKD_DATA)")
    out = tmp_path / name
    m = cmkd.run(name, out, quick=True, quiet=True, overrides=TINY + SMALL.get(name, []))
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["recipe"] == name and doc["quick"] is True and set(doc) == set(m)
    assert {"teacher", "student_baseline", "student"} <= set(doc["models"])
    if SCHEMA.is_file():
        import jsonschema

        jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    html = (out / "report.html").read_text()
    assert html.strip() and "Traceback" not in html
    for role in doc["models"]:
        assert role in html, f"report.html does not name {role}"
