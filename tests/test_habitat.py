"""The habitat recipe (SYNTHETIC data, ILLUSTRATIVE rules): physics and the rule engine by hand, conflict
resolution, recommendations that clear their violations, the design tool with .txt and .pdf legal inputs, and
clear errors for bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import cmkd
from cmkd.errors import CmkdError
from cmkd.recipes.habitat.design import read_legal, write_pdf
from cmkd.recipes.habitat.rules import evaluate, fix, load_rules, recommend, required
from cmkd.recipes.habitat.scene import generate, region_rules

SITE = {"depth_m": 3000.0, "distance_nm": 100.0, "seabed": "hydrothermal_vent", "current_m_s": 0.2,
        "temperature_c": 2.0, "oxygen_mg_l": 2.0}
DESIGN = {"radius_m": 3.0, "material": "steel", "crew": 6, "mission_days": 60, "hull_thickness_mm": 80.0,
          "waste_capacity_m3": 5.0, "emergency_buoyancy_kn": 100.0, "discharge_fraction": 0.3,
          "external_lighting_lux": 60.0, "vent_setback_m": 200.0, "national_permit": 0, "isa_contract": 0,
          "eia_done": 1, "mining_support": 1}
FAST = ["options.n=300", "teacher.epochs=1", "student.epochs=1", "teacher.width=16", "teacher.depth=1",
        "student.width=16", "export.latency_runs=5"]


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_physics_by_hand() -> None:
    req = required(SITE, DESIGN)
    p = 1025 * 9.81 * 3000
    assert math.isclose(req["required_hull_thickness_mm"], 1000 * 1.5 * p * 3.0 / (2 * 550e6), rel_tol=1e-9)
    assert math.isclose(req["required_waste_capacity_m3"], 6 * 60 * 0.035 * 0.7 * 1.2, rel_tol=1e-9)
    t = 0.08
    shell = 4 / 3 * math.pi * ((3 + t) ** 3 - 27)
    disp = 4 / 3 * math.pi * (3 + t) ** 3
    w = (7850 * shell + 6000 * 6 - 1025 * disp) * 9.81
    buoy = 1.25 * (max(w, 0) + 0.05 * 1025 * 9.81 * disp) + 0.5 * 1025 * 0.5 * math.pi * 9 * 0.04
    assert math.isclose(req["required_emergency_buoyancy_kn"], buoy / 1000, rel_tol=1e-9)


def test_conflict_resolves_by_priority_and_says_which_prevailed(tmp_path: Path) -> None:
    rs = load_rules()
    res = evaluate(rs, SITE, DESIGN)  # EEZ, vent field, hypoxic, mining support
    assert res["zone"] == "eez" and res["compliance"]["isa"] == "n/a"
    by_param = {c["parameter"]: c for c in res["conflicts"]}
    # lighting: national safety (>= 50 lux) vs environmental (<= 10 lux): environmental prevails
    assert by_param["external_lighting_lux"]["prevailing"] == "ENV-E-02"
    assert by_param["external_lighting_lux"]["overridden"] == "NAT-S-02"
    assert "takes priority" in by_param["external_lighting_lux"]["why"]
    assert by_param["discharge_fraction"]["prevailing"] == "ENV-E-01"  # over the commercial NAT-C-01
    rules = {v["rule"] for v in res["violations"]}
    assert {"ENV-E-02", "ENV-E-01", "UNCLOS-S-01", "UNCLOS-P-01"} <= rules and "NAT-S-02" not in rules
    # the priority order is configurable: safety first makes the national lighting rule prevail
    raw = yaml.safe_load((Path(cmkd.__file__).parent / "recipes/habitat/rules.yaml").read_text())
    raw["priority"] = ["safety", "environmental", "commercial", "procedural"]
    p = tmp_path / "rules.yaml"
    p.write_text(yaml.safe_dump(raw))
    res2 = evaluate(load_rules(p), SITE, DESIGN)
    assert {c["parameter"]: c["prevailing"] for c in res2["conflicts"]}["external_lighting_lux"] == "NAT-S-02"


def test_every_recommendation_clears_its_violation() -> None:
    checked = 0
    for region in (0, 1):
        rs = region_rules(load_rules(), region)
        _, records = generate(150, seed=3, region=region)
        for r in records:
            site, design = r["site"], r["design"]
            res = evaluate(rs, site, design)
            for v in res["violations"]:
                change = fix(v, design, site, rs)
                after = evaluate(rs, site, {**design, change["parameter"]: change["to"]})
                assert v["rule"] not in {w["rule"] for w in after["violations"]}, (v, change)
                checked += 1
            recs, fixed, final = recommend(rs, site, design)
            assert final["violations"] == [] and (recs == []) == (res["violations"] == [])
    assert checked > 200


def test_bad_rule_sets_and_jurisdictions(tmp_path: Path) -> None:
    with pytest.raises(CmkdError, match="unknown jurisdiction 'mars'"):
        load_rules().check_jurisdictions(["unclos", "mars"])
    p = tmp_path / "r.yaml"
    p.write_text("priority: [safety]\nzones: {a: [0, 10]}\njurisdictions: {x: {zones: [a]}}\nrules:\n"
                 "  - {id: R1, jurisdiction: x, category: safety, require: {param: hull, op: '>=', value: 1}, "
                 "text: t}\n")
    with pytest.raises(CmkdError, match="design parameter"):
        load_rules(p)


def test_generator_labels_match_the_rule_engine() -> None:
    arrays, records = generate(120, seed=1, region=1)
    rs = region_rules(load_rules(), 1)
    assert arrays["structural"].shape == (120, 18) and arrays["acoustic"].shape == (120, 1, 512)
    assert arrays["oceanographic"].shape == (120, 48, 4) and np.isnan(arrays["oceanographic"]).any()
    for i in (0, 17, 99):
        res = evaluate(rs, records[i]["site"], records[i]["design"])
        assert arrays["compliance_national"][i] == ["n/a", "compliant", "violation"].index(res["compliance"]
                                                                                          ["national"])
    eez = [i for i, r in enumerate(records) if r["evaluation"]["zone"] != "area"]
    assert "NAT-S-03" in arrays["legal_text"][eez[0]] and "80 lux" in arrays["legal_text"][eez[0]]


def test_legal_text_from_txt_and_pdf(tmp_path: Path) -> None:
    text = "UNCLOS-S-01 (safety): Installations shall withstand the ambient pressure (factor 1.5). " * 5
    write_pdf(text, tmp_path / "brief.pdf")
    (tmp_path / "brief.txt").write_text(text)
    assert read_legal(tmp_path / "brief.pdf") == read_legal(tmp_path / "brief.txt") == " ".join(text.split())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("habitat") / "run"
    cmkd.run("habitat", out, quick=True, quiet=True, overrides=FAST)
    return out


@pytest.mark.slow  # the habitat recipe's quick run (module fixture)
def test_quick_run_metrics(quick_run: Path) -> None:
    m = json.loads((quick_run / "metrics.json").read_text())
    assert m["synthetic"] is True
    assert {"teacher", "teacher_legal", "teacher_sonar", "teacher_ocean", "teacher_structural", "student"} <= set(
        m["models"])
    assert m["models"]["teacher_sonar"]["modalities"] == ["acoustic"]
    h = m["habitat"]
    assert set(h["compliance_accuracy"]["student"]) == {"national", "unclos", "isa", "environment", "mean"}
    sp = h["speed"]
    assert sp["speedup_torch"] > 0 and sp["teacher_ensemble_ms"] > 0
    # the ensemble is exported to ONNX for the like-for-like timing: it must be the same model
    assert sp["ensemble_onnx_max_abs_diff"] < 1e-2 and sp["speedup_onnx_both"] > 0
    assert sp["student_onnx_min_ms"] <= sp["student_onnx_ms"]
    rc = h["recommendation_check"]
    assert rc["recommendations_clearing_their_violation"] == rc["recommendations_checked"] > 0
    assert (quick_run / "habitat.json").is_file()


@pytest.mark.slow  # the habitat recipe's quick run (module fixture)
def test_design_tool_txt_and_pdf(quick_run: Path, tmp_path: Path) -> None:
    r = cli("habitat", "example", "--out", tmp_path / "ex", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ex = tmp_path / "ex"
    outs = []
    for legal in ("rules.txt", "rules.pdf"):
        r = cli("habitat", "design", "--model", quick_run, "--acoustic", ex / "survey.npy", "--legal", ex / legal,
                "--sensor", ex / "ocean.csv", "--structural", ex / "spec.json", "--output", tmp_path / f"{legal}.json",
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads((tmp_path / f"{legal}.json").read_text()))
    a, b = outs
    assert a["hull_thickness_mm"] == b["hull_thickness_mm"] and a["compliance"] == b["compliance"]
    assert set(a["compliance"]) == {"unclos", "national", "isa", "environment"}
    assert a["violations_after_recommendations"] == 0
    assert len(a["recommendations"]) >= len(a["violations"])
    for v in a["violations"]:
        assert {"rule", "text", "why"} <= set(v)


def _bad_inputs(ex: Path, tmp: Path) -> dict[str, tuple[list, str]]:
    (tmp / "bad.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    np.save(tmp / "short.npy", np.zeros(100))
    (tmp / "ocean_bad.csv").write_text("time,temperature_c,pressure_dbar\n2026-01-01T00:00,4.0,1000\n")
    base = {"--acoustic": ex / "survey.npy", "--legal": ex / "rules.txt", "--sensor": ex / "ocean.csv",
            "--structural": ex / "spec.json"}
    return {"unreadable pdf": ({**base, "--legal": tmp / "bad.pdf"}, "unreadable PDF"),
            "sonar length": ({**base, "--acoustic": tmp / "short.npy"}, "512 numbers"),
            "csv columns": ({**base, "--sensor": tmp / "ocean_bad.csv"}, "missing column(s) oxygen_mg_l, current_m_s"),
            "jurisdiction": ({**base, "--jurisdiction": "atlantis"}, "unknown jurisdiction 'atlantis'")}


@pytest.mark.slow  # the habitat recipe's quick run (module fixture)
def test_design_tool_bad_inputs(quick_run: Path, tmp_path: Path) -> None:
    assert cli("habitat", "example", "--out", tmp_path / "ex", cwd=tmp_path).returncode == 0
    for name, (opts, msg) in _bad_inputs(tmp_path / "ex", tmp_path).items():
        args = [x for kv in opts.items() for x in kv]
        r = cli("habitat", "design", "--model", quick_run, *args, cwd=tmp_path)
        assert r.returncode == 2, (name, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, name


def test_paired_latency_orders_calls() -> None:
    import time

    from cmkd.evaluation.metrics import paired_latency_ms

    lat = paired_latency_ms({"fast": lambda: None, "slow": lambda: time.sleep(0.002)}, runs=20, warmup=1, block=5)
    assert set(lat) == {"fast", "slow"}
    assert lat["slow"]["min"] >= 2.0 > lat["fast"]["median"]
    assert all(v["min"] <= v["median"] for v in lat.values())


def test_compliance_table_averages_the_jurisdictions_a_model_predicts() -> None:
    from cmkd.recipes.habitat.analysis import compliance_table

    t = compliance_table({"teacher": {"metrics": {"accuracy": 0.9, "compliance_unclos/accuracy": 0.7}},
                          "student": {"metrics": {"rmse": 1.0}}})
    assert t == {"teacher": {"national": 0.9, "unclos": 0.7, "mean": pytest.approx(0.8)}}
