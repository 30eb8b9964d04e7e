"""Conformance of every registered encoder (cmkd.nn.encoders.ENCODERS): output shape, missing values and an absent
modality without NaN in the output, ONNX export of a tiny MultimodalNet with it (ONNX Runtime parity), and
determinism under a fixed seed. Tiny SYNTHETIC tensors only; a new encoder is checked by registering it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cmkd.export.onnx import export_onnx, ort_run, ort_session
from cmkd.nn.encoders import ALTERNATIVES, ENCODERS, create_encoder
from cmkd.nn.models import MultimodalNet

WIDTH, BATCH = 16, 4
# per-sample shape of each modality kind (images 8x8: the MobileNet-like encoder halves while >= 8 pixels)
SHAPES = {"vector": (6,), "sequence": (12, 3), "image": (2, 8, 8), "signal": (1, 32), "text": (10,)}


def _kind(name: str) -> str:
    return name if name in SHAPES else ALTERNATIVES[name][0]


def _inputs(kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "text":
        return torch.randint(1, 50, (BATCH, *SHAPES[kind]), generator=g)
    return torch.randn(BATCH, *SHAPES[kind], generator=g)


def _with_gaps(kind: str) -> torch.Tensor:
    """Sample 0: some values missing; sample 1: the modality absent (every value missing, or all padding)."""
    x = _inputs(kind)
    if kind == "text":
        x[0, 5:] = 0
        x[1] = 0
    else:
        x.view(BATCH, -1)[0, ::3] = float("nan")
        x[1] = float("nan")
    return x


def _net(name: str, seed: int = 0) -> MultimodalNet:
    torch.manual_seed(seed)
    kind = _kind(name)
    mods = {"m": {"kind": kind, "shape": SHAPES[kind]}, "aux": {"kind": "vector", "shape": (3,)}}
    return MultimodalNet(mods, {"y": {"kind": "classification", "n_out": 3}}, width=WIDTH, heads=2, text_vocab=64,
                         encoders={kind: name} if name != kind else None).eval()


@pytest.fixture(params=sorted(ENCODERS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_output_shape(name: str) -> None:
    kind = _kind(name)
    torch.manual_seed(0)
    enc = create_encoder(kind, SHAPES[kind], WIDTH, name=name, **({"vocab": 64} if kind == "text" else {})).eval()
    with torch.no_grad():
        out = enc(_inputs(kind))
    assert out.shape == (BATCH, WIDTH) and torch.isfinite(out).all()


def test_missing_values_and_absent_modality_give_finite_outputs(name: str) -> None:
    net = _net(name)
    x = {"m": _with_gaps(_kind(name)), "aux": torch.randn(BATCH, 3)}
    present = {"m": torch.tensor([True, False, True, True]), "aux": torch.ones(BATCH, dtype=torch.bool)}
    with torch.no_grad():
        flagged = net(x, present)["y"]["logits"]
        unflagged = net(x)["y"]["logits"]  # an exported model gets no flags: an empty modality is absent anyway
    assert torch.isfinite(flagged).all() and torch.isfinite(unflagged).all()
    assert torch.allclose(flagged, unflagged, atol=1e-6)


# an ONNX export takes seconds: the fast tier exports the vector encoder (the tiny run in test_pipeline exports too)
@pytest.mark.parametrize("name", [n if n == "vector" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(ENCODERS)])
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    net = _net(name)
    x = {"m": _with_gaps(_kind(name)), "aux": torch.randn(BATCH, 3)}
    export_onnx(net, x, tmp_path / "m.onnx")
    with torch.no_grad():
        ref = torch.softmax(net(x)["y"]["logits"], -1).numpy()  # the graph outputs probabilities
    got = ort_run(ort_session(tmp_path / "m.onnx"), {k: v.numpy() for k, v in x.items()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


def test_same_seed_same_model_and_outputs(name: str) -> None:
    a, b = _net(name, seed=3), _net(name, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = {"m": _inputs(_kind(name)), "aux": torch.randn(BATCH, 3)}
    with torch.no_grad():
        assert torch.equal(a(x)["y"]["logits"], b(x)["y"]["logits"])
    assert not torch.equal(_net(name, seed=4).state_dict()["mod_emb"], sa["mod_emb"])
