"""Edge export: ONNX (torch.export / dynamo), ONNX Runtime dynamic INT8 quantisation, parity and latency."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cmkd.errors import CmkdError
from cmkd.io import atomic_write
from cmkd.nn.models import MultimodalNet


def output_names(net: MultimodalNet) -> list[str]:
    """ONNX outputs: one per target (class probabilities, softmax inside the graph, or regression values in raw
    units), then ``<target>_std`` (the Gaussian head's standard deviation in raw units) per regression target."""
    kinds = net.target_kinds
    return [*kinds, *[f"{t}_std" for t, k in kinds.items() if k == "regression"]]


class OnnxWrapper(nn.Module):
    """Positional tensors in (one per modality, in ``names`` order); outputs as in :func:`output_names`."""

    def __init__(self, net: MultimodalNet) -> None:
        super().__init__()
        self.net = net
        self.names = list(net.encoders)

    def forward(self, *xs: Tensor) -> tuple[Tensor, ...]:
        out = self.net(dict(zip(self.names, xs)))
        kinds = self.net.target_kinds
        main = [torch.softmax(out[t]["logits"], dim=-1) if k == "classification" else out[t]["value"]
                for t, k in kinds.items()]
        std = [torch.exp(0.5 * out[t]["logvar"]) * getattr(self.net, f"tstd_{t}")
               for t, k in kinds.items() if k == "regression"]
        return tuple(main + std)


def reference_outputs(preds: dict[str, np.ndarray], target_kinds: dict[str, str]) -> list[np.ndarray]:
    """The outputs the ONNX graph should give, from :func:`cmkd.evaluation.metrics.predict`'s torch predictions
    (softmax of the logits for classification), in :func:`output_names` order without the std outputs: for parity
    checks."""
    res = []
    for t, k in target_kinds.items():
        if k == "classification":
            z = preds[f"{t}/logits"]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            res.append(e / e.sum(axis=1, keepdims=True))
        else:
            res.append(preds[f"{t}/value"])
    return res


def as_predictions(outs: list[np.ndarray], target_kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """ONNX outputs back in :func:`cmkd.evaluation.metrics.predict`'s keys (log-probabilities as ``<t>/logits``: the
    same argmax and softmax), for :func:`cmkd.evaluation.metrics.task_metrics`."""
    preds = {}
    for i, (t, k) in enumerate(target_kinds.items()):
        if k == "classification":
            preds[f"{t}/logits"] = np.log(np.clip(outs[i], 1e-30, None))
        else:
            preds[f"{t}/value"] = outs[i]
    return preds


def prune_magnitude(net: nn.Module, amount: float, finetune: Callable[[nn.Module], object] | None = None
                    ) -> float:
    """Global L1 unstructured pruning of every Linear/Conv weight of ``net`` in place, made permanent.

    The ``amount`` share of those weights with the smallest magnitudes (over all layers together) become zero
    (``torch.nn.utils.prune.global_unstructured``). ``finetune(net)``, when given, trains the pruned net while the
    masks hold the pruned weights at zero, before they are made permanent. Returns the resulting share of zeros in
    those weights.
    """
    from torch.nn.utils import prune

    params = [(m, "weight") for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    if not params:
        return 0.0
    if amount > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(amount))
        if finetune is not None:
            finetune(net)
        for m, name in params:
            prune.remove(m, name)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return zeros / sum(m.weight.numel() for m, _ in params)


def export_onnx(net: MultimodalNet, example: dict[str, Tensor], path: str | Path) -> Path:
    """Export ``net`` to ONNX (opset 18, dynamic batch), written atomically.

    Args:
        net: a trained model (moved to CPU, eval mode).
        example: one modality -> tensor dict with at least 2 samples.
        path: the ``.onnx`` file.
    """
    path = Path(path)
    net = net.cpu().eval()
    wrapper = OnnxWrapper(net).eval()
    args = tuple(example[m][:2] if len(example[m]) >= 2 else example[m].repeat(2, *([1] * (example[m].dim() - 1)))
                 for m in wrapper.names)
    batch = torch.export.Dim("batch", min=1, max=1_000_000)
    dyn = tuple({0: batch} for _ in args)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            torch.onnx.export(wrapper, args, str(tmp), dynamo=True, external_data=False, opset_version=18,
                              dynamic_shapes=(dyn,), input_names=wrapper.names,
                              output_names=output_names(net), verbose=False)

    try:
        return atomic_write(path, write)
    except CmkdError:  # a failed write (a full disk): its own one-line error
        raise
    except Exception as e:  # noqa: BLE001
        raise CmkdError(f"ONNX export failed: {str(e).splitlines()[0][:200]}") from None


def quantize_int8(onnx_path: str | Path, out_path: str | Path, per_channel: bool = False,
                  reduce_range: bool = False) -> Path:
    """Dynamic INT8 quantisation of weights (MatMul/Gemm) with ONNX Runtime, written atomically.

    ``per_channel``: one scale per output channel; ``reduce_range``: 7-bit weights, which avoids the saturation
    of the u8 x s8 products on x86 CPUs without VNNI (ONNX Runtime's advice; it can matter for small models).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # silence onnxruntime's "consider pre-processing" hint
    try:
        return atomic_write(out_path, lambda tmp: quantize_dynamic(
            str(onnx_path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel, reduce_range=reduce_range))
    finally:
        root.setLevel(level)


def ort_session(path: str | Path, threads: int = 1):  # noqa: ANN201 - onnxruntime type
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise CmkdError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None


def ort_run(sess, inputs: dict[str, np.ndarray], batch_size: int = 4096) -> list[np.ndarray]:  # noqa: ANN001
    """Run a session on a dict of arrays in chunks; returns one array per output."""
    n = len(next(iter(inputs.values())))
    outs: list[list[np.ndarray]] = []
    for s in range(0, n, batch_size):
        feed = {k: np.ascontiguousarray(v[s:s + batch_size]) for k, v in inputs.items()}
        res = sess.run(None, feed)
        if not outs:
            outs = [[] for _ in res]
        for i, r in enumerate(res):
            outs[i].append(r)
    return [np.concatenate(o) for o in outs]


def ort_latency_ms(sess, inputs: dict[str, np.ndarray], runs: int = 200) -> float:  # noqa: ANN001
    """Median batch-1 latency of a one-thread session, in milliseconds."""
    feed = {k: np.ascontiguousarray(v[:1]) for k, v in inputs.items()}
    for _ in range(10):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)
