"""The export stage of :func:`cmkd.pipeline.run`: ONNX + INT8 files, parity, INT8 metrics, latency."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import ExperimentConfig
from .data import MultimodalData
from .evaluate import example_inputs, predict, task_metrics
from .export import export_onnx, ort_latency_ms, ort_run, ort_session, prune_magnitude, quantize_int8
from .models import MultimodalNet


def export_student(student: MultimodalNet, data: MultimodalData, test: np.ndarray, out: Path,
                   cfg: ExperimentConfig, finetune: Callable[[MultimodalNet], object] | None = None) -> dict:
    """Export the student to ``student.onnx`` and ``student.int8.onnx`` and measure them on the test split.

    With ``export.prune`` > 0 a copy of the student is magnitude-pruned first (the exported files and their
    metrics are the pruned model's; ``sparsity`` is the share of zero Linear/Conv weights); ``finetune(net)``
    then retrains it with the pruned weights held at zero (:func:`cmkd.export.prune_magnitude`)."""
    mods = list(student.encoders)
    sparsity = None
    if cfg.export.prune > 0:
        student = copy.deepcopy(student).cpu().eval()
        sparsity = prune_magnitude(student, cfg.export.prune, finetune)
    export_onnx(student, example_inputs(data, mods, 2), out / "student.onnx")
    feed = {m: data.inputs[m][test] for m in mods}
    fp32 = ort_session(out / "student.onnx")
    ref = predict(student, data, test)
    got = ort_run(fp32, feed)
    diffs = []
    for i, (t, kind) in enumerate(student.target_kinds.items()):
        key = f"{t}/logits" if kind == "classification" else f"{t}/value"
        diffs.append(float(np.max(np.abs(got[i] - ref[key]))))
    res = {"onnx": "student.onnx", "max_abs_diff": max(diffs),
           "onnx_latency_ms": ort_latency_ms(fp32, feed, cfg.export.latency_runs),
           "onnx_bytes": (out / "student.onnx").stat().st_size}
    if sparsity is not None:
        res.update({"prune": cfg.export.prune, "sparsity": sparsity, "pruned_metrics": task_metrics(data, test, ref)})
    if cfg.export.int8:
        quantize_int8(out / "student.onnx", out / "student.int8.onnx", cfg.export.int8_per_channel,
                      cfg.export.int8_reduce_range)
        q = ort_session(out / "student.int8.onnx")
        qout = ort_run(q, feed)
        preds = {}
        for i, (t, kind) in enumerate(student.target_kinds.items()):
            preds[f"{t}/logits" if kind == "classification" else f"{t}/value"] = qout[i]
        res.update({"int8": "student.int8.onnx", "int8_metrics": task_metrics(data, test, preds),
                    "int8_latency_ms": ort_latency_ms(q, feed, cfg.export.latency_runs),
                    "int8_bytes": (out / "student.int8.onnx").stat().st_size})
    return res
