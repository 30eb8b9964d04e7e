"""Every registered recipe runs ``--quick`` end to end, shrunk by overrides to seconds: its metrics.json meets the
contract (``cmkd/schemas/metrics.schema.json``) and its report.html renders (in headless Chromium too, where installed:
no console error, network request, broken image or content wider than the window). Real-data recipes skip,
saying so, where their data folder is absent. One test per recipe, so pytest-xdist spreads them (``--dist
loadfile`` keeps a file together: the runs live here, apart from the fast protocol checks in
test_recipes_conformance.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from browser import check_report, chromium, problems
from helpers import check_metrics

import cmkd
from cmkd.recipes import RECIPES

DATA = Path(os.environ.get("CMKD_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# real-data recipes and the folder they read
REAL = {"houston": "houston2013_mdlrs_subset", "coastal-real": "tide_gauge_netherlands_rws",
        "airquality": "air_quality_uci_cheap_vs_reference"}
# tiny and fast everywhere: one or two epochs, few latency runs, a small classical stage
TINY = ["teacher.epochs=1", "student.epochs=2", "export.latency_runs=5", "references.algorithms=[extra_trees]",
        "references.n_estimators=5", "trees.n_estimators=5"]
# smaller data where a recipe's quick run is still slow (its options model names these keys)
SMALL = {"habitat": ["options.n=300"], "recycling": ["options.n_items=200"], "coastal": ["options.days=60"]}


@pytest.mark.slow  # every recipe's quick run / a CLI run of an outside recipe
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_quick_run_meets_the_contract(name: str, tmp_path: Path) -> None:
    if name in REAL and not (DATA / REAL[name]).is_dir():
        pytest.skip(f"{name}: real data folder {DATA / REAL[name]} absent (set CMKD_DATA)")
    out = tmp_path / name
    m = cmkd.run(name, out, quick=True, quiet=True, overrides=TINY + SMALL.get(name, []))
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    for f in out.rglob("*.json"):  # strict JSON everywhere: NaN / Infinity are written as null
        json.loads(f.read_text(), parse_constant=refuse)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["recipe"] == name and doc["quick"] is True and set(doc) == set(m)
    assert {"teacher", "student_baseline", "student"} <= set(doc["models"])
    check_metrics(doc)
    html = (out / "report.html").read_text()
    assert html.strip() and "Traceback" not in html
    for role in doc["models"]:
        assert role in html, f"report.html does not name {role}"
    if chromium() is not None:  # a real browser: no console error, network request, broken image, overflow
        check = check_report(out / "report.html")
        assert check["images"] > 0 and problems(check) == [], problems(check)


# A complete recipe outside the package, as its author writes it: the Recipe plus one registration line. Adding
# it touches no core file; the CLI runs it like a built-in one.
EXAMPLE = '''"""tiny-example: a SYNTHETIC recipe defined outside cmkd."""
from cmkd.data.cases import make_arrays, make_config
from cmkd.recipes import Recipe, register_recipe
from cmkd.recipes.base import options_model


def default_config(quick: bool = False) -> dict:
    cfg = make_config(npz="", student="vec", teacher=["vec", "img"], epochs=2 if quick else 20)
    cfg["data"]["path"] = None
    cfg["data"]["modalities"] = {"vec": {"kind": "vector"}, "img": {"kind": "image"}}
    cfg.update(export={"latency_runs": 5}, references=False, trees=False, options={"n": 160})
    return cfg


def load(config: dict, quick: bool = False) -> dict:
    a = make_arrays(n=int(config["options"]["n"]), seed=int(config["seed"]))
    return {k: a[k] for k in ("vec", "img", "y", "split")}


register_recipe(Recipe(name="tiny-example", description="test-only example recipe", synthetic=True,
                       default_config=default_config, load=load, options=options_model("tiny-example", n=int)))
'''
# the `cmkd` command with the example's module imported first (a plugin on PYTHONPATH)
LAUNCH = "import sys, tiny_example; from cmkd.cli import main; sys.argv[0] = 'cmkd'; main()"


@pytest.mark.slow  # every recipe's quick run / a CLI run of an outside recipe
def test_a_recipe_from_outside_the_package_runs_through_the_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "tiny_example.py").write_text(EXAMPLE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def cmkd_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", LAUNCH, *args], capture_output=True, text=True, timeout=600,
                              env=env, cwd=tmp_path)

    r = cmkd_cli("list")
    assert r.returncode == 0 and "tiny-example" in r.stdout and "[synthetic data]" in r.stdout, r.stderr
    r = cmkd_cli("run", "tiny-example", "--quick", "--quiet", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["recipe"] == "tiny-example" and doc["synthetic"] is True and doc["quick"] is True
    check_metrics(doc)
    r = cmkd_cli("run", "tiny-example", "--quick", "--out", str(tmp_path / "bad"), "--set", "options.nn=3")
    assert r.returncode == 2 and "unknown option 'options.nn'" in r.stderr
