"""The recycling recipe (SYNTHETIC items): generator physics, sorting policy arithmetic, MobileNet encoder export,
a tiny end-to-end run and ``cmkd predict`` on a folder of PNGs (including a bad PNG)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cmkd
from cmkd.errors import CmkdError
from cmkd.export.onnx import export_onnx, ort_run, ort_session, quantize_int8
from cmkd.nn.checkpoint import load_model
from cmkd.nn.encoders import MobileNetEncoder, create_encoder
from cmkd.nn.models import MultimodalNet
from cmkd.recipes.recycling import scene
from cmkd.recipes.recycling.analysis import read_png
from cmkd.recipes.recycling.policy import Policy
from cmkd.recipes.recycling.recipe import load, split_items, write_pngs

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["options.n_items=240", "teacher.epochs=1", "student.epochs=1", "export.latency_runs=5",
        "teacher.width=16", "student.width=16", "teacher.heads=2", "student.heads=2"]
M = {m: i for i, m in enumerate(scene.MATERIALS)}
D = {d: i for i, d in enumerate(scene.DEGRADATION)}


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recycling") / "run"
    cmkd.run("recycling", out, quick=True, quiet=True, overrides=TINY)
    return out


def test_generator_classes_states_and_lookalikes() -> None:
    items = scene.generate(n=240, seed=3, size=12, bands=64, frames=12)
    assert len(scene.MATERIALS) >= 12 and len(scene.DEGRADATION) >= 5
    assert set(np.unique(items.material)) == set(range(len(scene.MATERIALS)))
    assert items.visual.shape == (240, 3, 12, 12) and items.thermal.shape == (240, 12, 1)
    assert 0 <= items.visual.min() and items.visual.max() <= 1 and 0 <= items.quality.min() <= items.quality.max() <= 1
    # a pristine item is worth more than a contaminated one
    q = {d: items.quality[items.degradation == i].mean() for d, i in D.items()}
    assert q["pristine"] > q["worn"] > q["contaminated"]
    # look-alike PET and PVC: the spectra differ at the bands the generator places (1660 vs 1716 nm)
    wl = items.wavelengths
    rng = np.random.default_rng(0)
    pet = np.mean([scene.spectrum("PET", wl, rng) for _ in range(20)], axis=0)
    pvc = np.mean([scene.spectrum("PVC", wl, rng) for _ in range(20)], axis=0)
    b1660, b1716 = np.argmin(np.abs(wl - 1660)), np.argmin(np.abs(wl - 1716))
    assert pet[b1660] / pet[b1716] < 0.9 and pvc[b1716] / pvc[b1660] < 0.9
    # metals look cold in the IR camera (low emissivity), thin paper heats up fast
    t_al = scene.thermal_curve("aluminium", 12, rng)
    t_paper = scene.thermal_curve("paper", 12, rng)
    assert t_al.max() - t_al[0] < 1.0 < t_paper.max() - t_paper[0]


def test_split_is_stratified_and_labels_can_be_hidden() -> None:
    mat = np.repeat(np.arange(12), 20)
    s = split_items(mat, 0)
    for c in range(12):
        assert (s[mat == c] == 2).sum() == 5 and (s[mat == c] == 0).sum() == 12
    a = load({"seed": 0, "options": {"n_items": 240, "label_fraction": 0.5}}, quick=True)
    hidden = a["material"] == -1
    assert hidden.any() and (a["split"][hidden] == 0).all() and np.isnan(a["quality"][hidden]).all()


def test_policy_routes_costs_and_purity() -> None:
    pol = Policy()
    routes = pol.route(np.array([M["PET"], M["PET"], M["textile"], M["PVC"], M["glass"]]),
                       np.array([0.9, 0.5, 0.5, 0.1, 0.9]),
                       np.array([D["pristine"], D["worn"], D["damaged"], D["worn"], D["contaminated"]]))
    assert routes.tolist() == ["reuse", "recycle:PET", "repair", "disposal", "disposal"]
    # PVC in the PET stream costs what the matrix says; right routes cost nothing
    assert pol.cost("PVC", "recycle:PVC", "recycle:PET") == 10.0
    assert pol.cost_matrix()["PVC"]["PET"] == 10.0 and pol.cost_matrix()["PET"]["PET"] == 0.0
    assert pol.cost("PET", "reuse", "recycle:PET") == 1.0  # default route cost
    assert pol.cost("PET", "reuse", "disposal") == 3.0
    # hand example: 3 items sent to the PET stream, one of them PVC -> purity 2/3, cost 10
    mat = np.array([M["PET"], M["PET"], M["PVC"], M["HDPE"]])
    true = np.array(["recycle:PET", "recycle:PET", "recycle:PVC", "recycle:HDPE"])
    pred = np.array(["recycle:PET", "recycle:PET", "recycle:PET", "recycle:HDPE"])
    ev = pol.evaluate(mat, true, pred)
    assert ev["purity"]["recycle:PET"] == pytest.approx(2 / 3) and ev["purity"]["recycle:HDPE"] == 1.0
    assert ev["missort_cost_total"] == 10.0 and ev["missorted"] == 1 and ev["pvc_in_pet_stream"] == 1
    custom = Policy({"contamination": {"PVC": {"PET": 25.0}}, "q_reuse": 0.95})
    assert custom.cost("PVC", "recycle:PVC", "recycle:PET") == 25.0
    assert custom.cost("glass", "recycle:glass", "recycle:fibre") == 4.0  # untouched defaults survive the merge
    with pytest.raises(CmkdError, match="q_reuse"):
        Policy({"q_reuse": 2})
    with pytest.raises(CmkdError, match="unknown material"):
        Policy({"repairable": ["wood"]})


@pytest.mark.slow  # ONNX export and INT8 quantisation of a MobileNet
def test_mobilenet_encoder_exports_and_quantises(tmp_path: Path) -> None:
    torch.manual_seed(0)  # fixed weights and inputs: the INT8 tolerance below is checked on one known case
    enc = create_encoder("image", (3, 16, 16), 16, name="mobilenet")
    assert isinstance(enc, MobileNetEncoder)
    with pytest.raises(CmkdError, match="does not take"):
        create_encoder("vector", (8,), 16, name="mobilenet")
    net = MultimodalNet({"img": {"kind": "image", "shape": (3, 16, 16)}},
                        {"y": {"kind": "classification", "n_out": 4}}, width=16, heads=2,
                        encoders={"image": "mobilenet"}).eval()
    assert net.hparams["encoders"] == {"image": "mobilenet"}
    x = torch.rand(4, 3, 16, 16)
    x[0, :, 2, 3] = float("nan")  # a missing pixel goes through the mask channel
    export_onnx(net, {"img": x}, tmp_path / "m.onnx")
    quantize_int8(tmp_path / "m.onnx", tmp_path / "m8.onnx")
    with torch.no_grad():
        ref = torch.softmax(net({"img": x})["y"]["logits"], -1).numpy()  # the graph outputs probabilities
    got = ort_run(ort_session(tmp_path / "m.onnx"), {"img": x.numpy()})[0]
    got8 = ort_run(ort_session(tmp_path / "m8.onnx"), {"img": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4 and np.abs(got8 - ref).max() < 0.1
    # old configs (no encoders key) keep the default image encoder
    plain = MultimodalNet({"img": {"kind": "image", "shape": (3, 16, 16)}},
                          {"y": {"kind": "classification", "n_out": 4}}, width=16, heads=2)
    assert type(plain.encoders["img"]).__name__ == "ImageEncoder"


def test_unknown_encoder_is_a_config_error() -> None:
    with pytest.raises(CmkdError, match="encoder 'resnet'"):
        cmkd.run("recycling", "/nonexistent/never", quick=True, quiet=True,
                 overrides=["student.encoders.image=resnet"])


@pytest.mark.slow  # the recycling recipe's quick run (module fixture)
def test_tiny_run_writes_sorting_energy_and_per_class(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["synthetic"] is True and m["primary_metric"] == "accuracy"
    st = m["models"]["student"]
    assert st["modalities"] == ["visual"] and {"macro_f1", "quality/rmse", "degradation/accuracy"} <= set(st["metrics"])
    r = m["recycling"]
    assert r["synthetic"] is True
    for role in ("teacher", "student_baseline", "student", "student_int8"):
        s = r["sorting"][role]
        assert {"purity", "missort_cost_total", "missort_cost_per_item", "route_accuracy"} <= set(s)
        assert all(0 <= v <= 1 for v in s["purity"].values()) and s["n"] == m["data"]["n_test"]
        assert set(r["per_class_f1"][role]) == set(scene.MATERIALS)
    e = r["energy"]
    assert e["deployed_student"] == "student_int8"
    assert e["ratio_teacher_over_student"] == pytest.approx(e["teacher_j"] / e["student_j"])
    assert e["ratio_teacher_over_student"] > 5  # 18.5 W of sensors against 1.5 W
    assert json.loads((tiny_run / "policy.json").read_text())["policy"]["contamination"]["PVC"]["PET"] == 10.0
    html = (tiny_run / "report.html").read_text()
    assert "sorting policy" in html and "energy per item" in html
    net, _ = load_model(tiny_run / "student.pt")  # the MobileNet student reloads
    assert type(net.encoders["visual"]).__name__ == "MobileNetEncoder"


@pytest.mark.slow  # the recycling recipe's quick run (module fixture)
def test_predict_on_png_folder_and_bad_png(tiny_run: Path, tmp_path: Path) -> None:
    items = scene.generate(n=24, seed=5, size=16)
    folder = tmp_path / "pngs"
    write_pngs(folder, items.visual[:3], items.material[:3], items.degradation[:3], items.quality[:3])
    assert np.abs(read_png(folder / "item_0000.png", (3, 16, 16)) - items.visual[0]).max() < 1 / 255 + 1e-6
    (folder / "big.png").parent.mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (40, 32), (200, 10, 10)).save(folder / "big.png")  # resized to 16 x 16
    out = tmp_path / "routes.json"
    r = cli("predict", "--model", tiny_run, "--input", folder, "--output", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert [e["file"] for e in doc["items"]] == ["big.png", "item_0000.png", "item_0001.png", "item_0002.png"]
    routes = set(Policy().routes)
    for e in doc["items"]:
        assert e["material"] in scene.MATERIALS and e["degradation"] in scene.DEGRADATION
        assert e["route"] in routes and 0 <= e["probability"] <= 1 and 0 <= e["quality"] <= 1
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = cli("predict", "--model", tiny_run, "--input", folder, "--output", tmp_path / "x.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and "broken.png" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("predict", "--model", tiny_run, "--input", empty, "--output", tmp_path / "y.json")
    assert r.returncode == 2 and "no .png" in r.stderr


def test_energy_per_item_from_sensor_power_and_latency() -> None:
    """Sensor energy = their watts x the acquisition time, compute = watts x latency; the INT8 student is the one
    deployed when it was measured."""
    from cmkd.recipes.recycling.analysis import energy

    models = {"teacher": {"modalities": ["hsi", "rgb"], "latency_ms": 10.0},
              "student_baseline": {"modalities": ["rgb"], "latency_ms": 2.0},
              "student": {"modalities": ["rgb"], "latency_ms": 2.0}}
    metrics = {"costs": {"hsi": 9.0, "rgb": 1.0}, "models": models, "export": {"int8_latency_ms": 1.0}}
    e = energy(metrics, acquisition_s=0.5, compute_w=4.0)
    assert e["teacher_j"] == pytest.approx(10.0 * 0.5 + 4.0 * 0.010)
    assert e["deployed_student"] == "student_int8" and e["student_j"] == pytest.approx(0.5 + 4.0 * 0.001)
    assert e["ratio_teacher_over_student"] == pytest.approx(e["teacher_j"] / e["student_j"])
    assert energy({**metrics, "export": None}, 0.5, 4.0)["deployed_student"] == "student"
