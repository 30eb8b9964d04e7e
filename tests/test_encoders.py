"""The periodic vector and flat image encoders and the teacher's student-view targets, on tiny SYNTHETIC data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_arrays, make_config, write_case

import cmkd
from cmkd.config import validate
from cmkd.data.arrays import build_data
from cmkd.errors import CmkdError
from cmkd.export.onnx import export_onnx, ort_run, ort_session
from cmkd.nn.checkpoint import load_model
from cmkd.nn.encoders import FlatImageEncoder, PeriodicVectorEncoder, create_encoder
from cmkd.nn.models import MultimodalNet
from cmkd.training.teachers import teacher_targets


@pytest.mark.slow  # ONNX export
def test_periodic_encoder_exports_and_masks_missing_values(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = create_encoder("vector", (5,), 8, name="periodic").eval()
    assert isinstance(enc, PeriodicVectorEncoder)
    with pytest.raises(CmkdError, match="does not take"):
        create_encoder("image", (2, 4, 4), 8, name="periodic")
    x = torch.randn(3, 5)
    y = x.clone()
    x[0, 2], y[0, 2] = float("nan"), 123.0
    with torch.no_grad():
        a, b = enc(x), enc(y)
    assert torch.isfinite(a).all()
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])  # only the changed sample moves
    net = MultimodalNet({"v": {"kind": "vector", "shape": (5,)}}, {"y": {"kind": "classification", "n_out": 3}},
                        width=8, heads=2, encoders={"vector": "periodic"}).eval()
    export_onnx(net, {"v": x}, tmp_path / "m.onnx")
    with torch.no_grad():
        ref = torch.softmax(net({"v": x})["y"]["logits"], -1).numpy()  # the graph outputs probabilities
    got = ort_run(ort_session(tmp_path / "m.onnx"), {"v": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.slow  # ONNX export
def test_flat_image_encoder_sees_each_pixel_masks_missing_ones_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = create_encoder("image", (2, 5, 5), 8, name="flat").eval()
    assert isinstance(enc, FlatImageEncoder)
    with pytest.raises(CmkdError, match="does not take"):
        create_encoder("vector", (5,), 8, name="flat")
    x = torch.randn(3, 2, 5, 5)
    y = x.clone()
    x[0, 1, 4, 0], y[0, 1, 4, 0] = float("nan"), 55.0
    with torch.no_grad():
        a, b = enc(x), enc(y)
        flipped = enc(torch.flip(x, dims=(3,)))
    assert torch.isfinite(a).all()
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])  # only the changed sample moves
    assert not torch.allclose(flipped[1:], a[1:])  # no pooling: a pixel's position matters
    net = MultimodalNet({"img": {"kind": "image", "shape": (2, 5, 5)}},
                        {"y": {"kind": "classification", "n_out": 3}}, width=8, heads=2,
                        encoders={"image": "flat"}).eval()
    export_onnx(net, {"img": x}, tmp_path / "m.onnx")
    with torch.no_grad():
        ref = torch.softmax(net({"img": x})["y"]["logits"], -1).numpy()
    got = ort_run(ort_session(tmp_path / "m.onnx"), {"img": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4


def test_teacher_targets_are_the_teachers_outputs_on_all_its_modalities() -> None:
    cfg = validate(make_config(npz="unused.npz", student="vec", teacher=["vec", "img"]))
    data = build_data(make_arrays(n=40), cfg.data, 0, "tiny", modalities=["vec", "img"])
    torch.manual_seed(0)
    teacher = MultimodalNet({"vec": {"kind": "vector", "shape": (6,)}, "img": {"kind": "image", "shape": (2, 5, 5)}},
                            {"y": {"kind": "classification", "n_out": 3}}, width=8, heads=2).eval()
    cache, mask = teacher_targets(teacher, data, ["y"])
    x = {m: torch.from_numpy(data.inputs[m]) for m in ("vec", "img")}
    with torch.no_grad():
        expect = teacher(x)["y"]["logits"]
    assert torch.allclose(cache["y"]["logits"], expect, atol=1e-5) and mask.all()
    assert cache["features"].shape == (data.n, 8)


@pytest.mark.slow  # a full run
def test_run_with_periodic_student(tmp_path: Path) -> None:
    cfg = make_config(student="vec", teacher=["vec", "img"], epochs=20)
    cfg["teacher"]["modality_dropout"] = 0.3
    cfg["student"]["encoders"] = {"vector": "periodic"}
    cfg["student"]["encoder_options"] = {"periodic": {"sigma": 0.05, "n_freq": 4}}
    m = cmkd.run(str(write_case(tmp_path / "case", config=cfg)), tmp_path / "out", quiet=True)
    assert m["models"]["student"]["metrics"]["accuracy"] > 1 / 3 + 0.1  # learns something from vec alone
    saved = (tmp_path / "out" / "config.yaml").read_text()
    assert "vector: periodic" in saved
    student, _ = load_model(tmp_path / "out" / "student.pt")  # rebuilt with its options: 4 frequencies
    assert student.encoders["vec"].freq.shape == (6, 4)
    assert student.hparams["encoder_options"]["periodic"]["n_freq"] == 4
    with pytest.raises(CmkdError, match="unknown key 'distill.teacher_view': was removed"):  # a key of an older YAML
        validate({**make_config(), "distill": {"teacher_view": "half"}})
    for opts, msg in (({"periodic": {"sigmaa": 1}}, "no option 'sigmaa'"), ({"resnet": {}}, "unknown encoder")):
        with pytest.raises(CmkdError, match=msg):
            validate({**make_config(), "student": {**make_config()["student"], "encoder_options": opts}})
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["models"]["student"]["n_test"] > 0
