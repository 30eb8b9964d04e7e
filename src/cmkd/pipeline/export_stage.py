"""The export stage of :func:`cmkd.pipeline.core.run`: ONNX + INT8 files, parity, INT8 metrics, latency."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cmkd.config import ExperimentConfig
from cmkd.data.arrays import MultimodalData
from cmkd.evaluation.metrics import example_inputs, predict, task_metrics
from cmkd.export.onnx import (
    as_predictions,
    export_onnx,
    ort_latency_ms,
    ort_run,
    ort_session,
    prune_magnitude,
    quantize_int8,
    reference_outputs,
)
from cmkd.export.sidecar import model_card, write_card
from cmkd.nn.models import MultimodalNet


def prune_student(student: MultimodalNet, amount: float,
                  finetune: Callable[[MultimodalNet], object] | None = None) -> tuple[MultimodalNet, float]:
    """A magnitude-pruned copy of the student (``finetune(net)`` then retrains it with the pruned weights held at
    zero, :func:`cmkd.export.onnx.prune_magnitude`) and its share of zero Linear/Conv weights."""
    net = copy.deepcopy(student).cpu().eval()
    return net, prune_magnitude(net, amount, finetune)


def export_student(student: MultimodalNet, data: MultimodalData, test: np.ndarray, out: Path,
                   cfg: ExperimentConfig, pruned: tuple[MultimodalNet, float] | None = None) -> dict:
    """Export the student to ``student.onnx`` and ``student.int8.onnx`` and measure them on the test split.

    ``pruned``: ``(net, sparsity)`` from :func:`prune_student` (``export.prune`` > 0): the exported files and their
    metrics are the pruned model's; ``sparsity`` is the share of zero Linear/Conv weights."""
    mods = list(student.encoders)
    sparsity = None
    if pruned is not None:
        student, sparsity = pruned
    export_onnx(student, example_inputs(data, mods, 2), out / "student.onnx")
    feed = {m: data.inputs[m][test] for m in mods}
    fp32 = ort_session(out / "student.onnx")
    ref = predict(student, data, test)
    got = ort_run(fp32, feed)
    # parity of what the graph outputs: probabilities (softmax of the torch logits) and raw-unit values
    diffs = [float(np.max(np.abs(g - r))) for g, r in zip(got, reference_outputs(ref, student.target_kinds))]
    res = {"onnx": "student.onnx", "max_abs_diff": max(diffs),
           "onnx_latency_ms": ort_latency_ms(fp32, feed, cfg.export.latency_runs),
           "onnx_bytes": (out / "student.onnx").stat().st_size}
    if sparsity is not None:
        res.update({"prune": cfg.export.prune, "sparsity": sparsity, "pruned_metrics": task_metrics(data, test, ref)})
    quantize_int8(out / "student.onnx", out / "student.int8.onnx", cfg.export.int8_x86, cfg.export.int8_x86)
    q = ort_session(out / "student.int8.onnx")
    qout = ort_run(q, feed)
    preds = as_predictions(qout, student.target_kinds)
    res.update({"int8": "student.int8.onnx", "int8_metrics": task_metrics(data, test, preds),
                "int8_latency_ms": ort_latency_ms(q, feed, cfg.export.latency_runs),
                "int8_bytes": (out / "student.int8.onnx").stat().st_size})
    card = student_card(out, data, cfg, pruned=sparsity is not None)
    if card is not None:
        write_card(out / "student.onnx", card, "fp32")
        res["sidecar"] = "student.json"
        write_card(out / "student.int8.onnx", card, "int8")
        res["int8_sidecar"] = "student.int8.json"
    return res


def data_summary(data: MultimodalData, synthetic: bool | None = None) -> dict:
    """What the model was trained on, for the sidecar: source, samples per split, modalities and targets."""
    split = np.asarray(data.split)
    return {"source": str(data.source), "synthetic": synthetic,
            **{f"n_{k}": int((split == i).sum()) for i, k in enumerate(("train", "val", "test", "calibration"))},
            "modalities": list(data.kinds), "targets": data.target_kinds}


def student_card(out: Path, data: MultimodalData, cfg: ExperimentConfig, pruned: bool = False) -> dict | None:
    """The sidecar of the exported student, from ``out/student.pt``'s metadata (None without it)."""
    from cmkd.io import safe_load

    if not (out / "student.pt").is_file():
        return None
    synthetic = data.source == "synthetic"
    return model_card(safe_load(out / "student.pt"), data_summary(data, synthetic), synthetic,
                      prune=cfg.export.prune if pruned else None)


def reexport(folder: Path, int8: bool = True) -> float:
    """``cmkd export``: ``folder/student.pt`` (re-)exported to ``student.onnx`` (and ``student.int8.onnx``) with
    their sidecars (the data summary from ``folder/metrics.json`` when it is there); returns the largest
    ``|onnx - torch|`` output difference on random example inputs."""
    import json

    import torch

    from cmkd.nn.checkpoint import load_model

    net, meta = load_model(folder / "student.pt")
    gen = torch.Generator().manual_seed(0)
    example = {}
    for m, spec in meta["hparams"]["modalities"].items():
        shape = (4, *spec["shape"])
        example[m] = (torch.randint(1, 50, (4, 8), generator=gen) if spec["kind"] == "text"
                      else torch.randn(shape, generator=gen))
    export_onnx(net, example, folder / "student.onnx")
    with torch.no_grad():
        res = net(example)
    ref = reference_outputs({f"{t}/{'logits' if k == 'classification' else 'value'}":
                             res[t]["logits" if k == "classification" else "value"].numpy()
                             for t, k in net.target_kinds.items()}, net.target_kinds)
    got = ort_run(ort_session(folder / "student.onnx"), {k: v.numpy() for k, v in example.items()})
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
    try:  # the run's data summary for the sidecar, when its metrics.json is there
        summary = json.loads((folder / "metrics.json").read_text())
        data, synthetic = summary.get("data"), summary.get("synthetic")
    except (OSError, ValueError):
        data, synthetic = None, None
    card = model_card(meta, data, synthetic)
    write_card(folder / "student.onnx", card, "fp32")
    if int8:
        quantize_int8(folder / "student.onnx", folder / "student.int8.onnx")
        write_card(folder / "student.int8.onnx", card, "int8")
    return diff
