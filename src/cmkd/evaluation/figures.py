"""The figures of the run report (:mod:`cmkd.evaluation.report`): training curves, confusion matrices (or, with
many classes, a table of the most frequent confusions), predicted-versus-true scatters, and the size and latency
bars. Each returns an HTML fragment with the figure inline (:func:`cmkd.evaluation.markup.img`); matplotlib's
``Figure`` is used without pyplot, so the caller's backend and pyplot state are never touched."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from cmkd.config import Role
from cmkd.evaluation.markup import colour, esc, img, is_num, order, short, table

_CURVE_KEYS = {"epoch", "train_loss", "val_loss", "val_metric", "lr"}


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the epochs where it is a finite number."""
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if is_num(value) and np.isfinite(value):
            xs.append(float(row.get("epoch", i + 1)))
            ys.append(float(value))
    return xs, ys


def curves_html(histories: dict[str, list[dict]], primary: str) -> str:
    """Loss and validation-metric curves per model plus the distilled student's loss parts."""
    names = order(n for n, h in histories.items() if h)
    if not names:
        return "<p class='note'>No training history.</p>"
    parts = sorted({k for row in histories.get(Role.STUDENT, []) for k, v in row.items()
                    if k not in _CURVE_KEYS and is_num(v)})
    fig = Figure(figsize=(4.6 * (3 if parts else 2), 3.4))
    axes = fig.subplots(1, 3 if parts else 2)
    for name in names:
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            xs, ys = _series(histories[name], key)
            if xs:
                axes[0].plot(xs, ys, style, marker="o" if len(xs) < 3 else None, color=colour(name, names),
                             label=f"{name} {key.split('_')[0]}")
        xs, ys = _series(histories[name], "val_metric")
        if xs:
            axes[1].plot(xs, ys, "-o", ms=2.5, color=colour(name, names), label=name)
    has_val = any(_series(histories[n], "val_loss")[0] for n in names)
    axes[0].set(title="loss (solid train, dashed val task loss)" if has_val else "training loss", xlabel="epoch",
                ylabel="loss")
    axes[1].set(title=f"validation {primary}", xlabel="epoch", ylabel=primary)
    if parts:
        for key in parts:
            xs, ys = _series(histories[Role.STUDENT], key)
            axes[2].plot(xs, ys, "--" if key.startswith("val") else "-", marker="o" if len(xs) < 3 else None,
                         label=key)
        axes[2].set(title="distilled student: loss parts", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return img(fig, "training curves")


MAX_TICK_CLASSES = 40  # beyond this a confusion matrix has no per-class tick labels

MAX_MATRIX_CLASSES = 300  # beyond this no matrix at all: a table of the most frequent confusions (top k)

TOP_CONFUSIONS = 20


def _top_confusions(name: str, y_true: np.ndarray, y_pred: np.ndarray, names: list[str], labels: np.ndarray) -> str:
    """Many classes: accuracy and the ``TOP_CONFUSIONS`` most frequent (true, predicted) pairs of errors, counted
    sparsely (a dense matrix of 10,000 classes would take 800 MB)."""
    wrong = y_true != y_pred
    pairs, counts = (np.unique(np.stack([y_true[wrong], y_pred[wrong]], 1), axis=0, return_counts=True)
                     if wrong.any() else (np.zeros((0, 2), int), np.zeros(0, int)))
    top = np.argsort(-counts, kind="stable")[:TOP_CONFUSIONS]
    pos = {int(c): i for i, c in enumerate(labels)}

    def label(c: int) -> str:
        return names[pos[c]] if c in pos else str(c)

    acc = float(np.mean(~wrong)) if len(y_true) else float("nan")
    rows = [[label(int(pairs[i, 0])), label(int(pairs[i, 1])), int(counts[i])] for i in top]
    return (f"<p>{esc(name)}: {len(labels)} classes, accuracy {acc:.3f}, n={len(y_true)}; too many classes for a "
            f"matrix, the {len(rows)} most frequent confusions:</p>" + table(["true", "predicted", "count"], rows))


def confusion_html(name: str, pred: dict) -> str:
    """Row-normalised confusion matrix of one classifier."""
    y_true = np.asarray(pred["y_true"]).astype(int).ravel()
    y_pred = np.asarray(pred["y_pred"]).astype(int).ravel()
    names = pred.get("class_names")
    labels = np.arange(len(names)) if names else np.union1d(y_true, y_pred)
    names = [str(c) for c in (names if names else labels)]
    if len(labels) > MAX_MATRIX_CLASSES:
        return _top_confusions(name, y_true, y_pred, names, labels)
    index = {int(c): i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)))
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # rows sum to 1
    n = len(labels)
    size = min(max(3.0, 0.28 * n + 1.2), 14)  # ~3 small matrices fit side by side
    fig = Figure(figsize=(size + 0.7, size))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    font = 8 if n <= 15 else 6
    tilt = n > 4
    if n <= MAX_TICK_CLASSES:
        ax.set_xticks(range(n), names, rotation=45 if tilt else 0, ha="right" if tilt else "center",
                      fontsize=font)
        ax.set_yticks(range(n), names, fontsize=font)
    else:  # many classes: no per-class labels (unreadable and slow to lay out); the matrix alone
        ax.set_xticks([])
        ax.set_yticks([])
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=6 if n > 6 else 8,
                        color="white" if cm[i, j] > 0.5 else "black")
    acc = float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{name}\naccuracy {acc:.3f}, n={len(y_true)}", fontsize=10)
    fig.tight_layout()
    return img(fig, f"confusion matrix {name}", small=n <= 12)


def scatter_html(name: str, pred: dict) -> str:
    """Predicted-versus-true scatter of one regressor (one colour per output column)."""
    y_true = np.asarray(pred["y_true"], dtype=float).reshape(len(pred["y_true"]), -1)  # (N, K)
    y_pred = np.asarray(pred["y_pred"], dtype=float).reshape(y_true.shape)
    idx = np.arange(len(y_true))
    if len(idx) > 5000:  # keep the PNG small
        idx = np.sort(np.random.default_rng(0).choice(idx, 5000, replace=False))
    fig = Figure(figsize=(3.8, 3.6))
    ax = fig.subplots()
    cols = pred.get("columns") or []
    for k in range(y_true.shape[1]):
        ax.scatter(y_true[idx, k], y_pred[idx, k], s=6, alpha=0.5,
                   label=(cols[k] if k < len(cols) else f"output {k}") if y_true.shape[1] > 1 else None)
    finite = np.isfinite(y_true) & np.isfinite(y_pred)
    if finite.any():
        lo = min(y_true[finite].min(), y_pred[finite].min())
        hi = max(y_true[finite].max(), y_pred[finite].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    if y_true.shape[1] > 1:
        ax.legend(fontsize=7)
    unit = f" ({pred['units']})" if pred.get("units") else ""
    ax.set(xlabel=f"true{unit}", ylabel=f"predicted{unit}", title=name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return img(fig, f"predicted versus true {name}", small=True)


def predictions_html(predictions: dict[str, dict]) -> str:
    """Confusion matrices or scatter plots for every model with test predictions."""
    figs = []
    for name in order(predictions):
        pred = predictions[name]
        if len(pred.get("y_true", [])) == 0:
            continue
        figs.append(confusion_html(name, pred) if pred.get("kind") == "classification" else scatter_html(name, pred))
    return f"<div class='figs'>{''.join(figs)}</div>" if figs else "<p class='note'>No test predictions.</p>"


def size_latency_html(metrics: dict) -> str:
    """Bar charts of parameter count, FP32/INT8 size and latency (PyTorch, ONNX FP32, ONNX INT8)."""
    models = metrics.get("models", {})
    names = order(models)
    export = metrics.get("export") or {}
    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 3)
    bars = [(n, models[n].get("params") or 0, colour(n, names)) for n in names]
    # like with like: the student's real ONNX files (FP32, INT8); the other models as params x 4 bytes
    size = [(f"{n} (params x 4 B)", 4 * (models[n].get("params") or 0) / 1e6, colour(n, names)) for n in names
            if not (n == Role.STUDENT and is_num(export.get("onnx_bytes")))]
    if is_num(export.get("onnx_bytes")):
        size.append(("student fp32 onnx file", export["onnx_bytes"] / 1e6, colour(Role.STUDENT, names)))
    if is_num(export.get("int8_bytes")):
        size.append(("student int8 onnx file", export["int8_bytes"] / 1e6, "C7"))
    lat = [(f"{n} torch", models[n].get("latency_ms") or 0, colour(n, names)) for n in names]
    for key, label in (("onnx_latency_ms", "student onnx fp32"), ("int8_latency_ms", "student onnx int8")):
        if is_num(export.get(key)):
            lat.append((label, export[key], "C7"))
    specs = ((bars, "parameters", "count"), (size, "model size (ONNX files; others params x 4 B)", "MB"),
             (lat, "latency, batch 1", "ms"))
    for ax, (items, title, unit) in zip(axes, specs, strict=True):
        labels, values, colours = zip(*items, strict=True) if items else ((), (), ())
        rects = ax.bar(range(len(values)), values, color=colours)
        ax.bar_label(rects, labels=[short(v) for v in values], fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
        ax.set(title=title, ylabel=unit)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return img(fig, "size and latency")
