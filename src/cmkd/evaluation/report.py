"""Self-contained HTML report of a cmkd run.

Every figure is drawn with matplotlib's Agg renderer (``matplotlib.figure.Figure`` without pyplot, so the
caller's backend and pyplot state are never touched) and embedded as a base64 PNG. The page has no external
CSS, JS, fonts or images: it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

_CORE = ("teacher", "student_baseline", "student")
_CURVE_KEYS = {"epoch", "train_loss", "val_loss", "val_metric", "lr"}
_KNOWN_TOP = {"name", "recipe", "seed", "primary_metric", "data", "models", "export", "references", "quick",
              "synthetic", "costs", "uncertainty", "recommended", "deployed", "export_trees",
              "distillation_outlook", "channels", "student_blend"}
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}tr.primary td{font-weight:bold}
.badge{display:inline-block;background:#c62828;color:#fff;font-weight:bold;padding:.2em .7em;
border-radius:4px}
.meta span{margin-right:1.5em}.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
img{max-width:100%}img.small{max-width:calc(33.3% - .7em)}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}.note{color:#666}
.tbl{max-width:100%;overflow-x:auto}.quick{background:#fff3cd;border:1px solid #e0c060;padding:.5em .8em}"""


def _esc(value: Any) -> str:
    """HTML-escape ``str(value)``, quotes included."""
    return html.escape(str(value), quote=True)


def _is_num(value: Any) -> bool:
    """True for real numbers (bools excluded)."""
    real = isinstance(value, (int, float, np.integer, np.floating))
    return real and not isinstance(value, (bool, np.bool_))


def _fmt(value: Any) -> str:
    """Format a table cell: thousands separators for ints, 4 significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    if _is_num(value):
        return "nan" if not np.isfinite(value) else f"{float(value):.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _short(value: float) -> str:
    """Compact bar label: 120k, 1.2M, 0.036."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _flat(metrics: dict | None, prefix: str = "") -> dict[str, Any]:
    """Flatten nested metric dicts to ``{"a.b": scalar}``; arrays are left out of tables."""
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif _is_num(value) or value is None or isinstance(value, str):
            out[f"{prefix}{key}"] = value
    return out


def _table(header: list[str], rows: list[list[Any]], primary_row: str | None = None) -> str:
    """Render an escaped HTML table; the row whose first cell equals ``primary_row`` is bold."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cls = ' class="primary"' if primary_row is not None and row[0] == primary_row else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>")
    return f"<div class='tbl'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _img(fig: Figure, alt: str, small: bool = False) -> str:
    """Encode ``fig`` as an inline base64 PNG ``<img>`` (``small``: three per row) and release the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    fig.clear()
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cls = ' class="small"' if small else ""
    return f'<img src="data:image/png;base64,{data}"{cls} alt="{_esc(alt)}">'


def figure_html(fig: Figure, alt: str, small: bool = False) -> str:
    """Public: a matplotlib figure as an inline PNG ``<img>`` (for recipe report sections)."""
    return _img(fig, alt, small)


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    """Public: an HTML table, numbers formatted compactly (for recipe report sections)."""
    return _table(header, rows)


def escape(value: Any) -> str:
    """Public: HTML-escape text."""
    return _esc(value)


def _uncertainty(metrics: dict) -> str:
    """How the intervals in the summary (``coverage_*``, ``width_*``) were calibrated."""
    u = metrics.get("uncertainty")
    if not isinstance(u, dict):
        return ""
    return (f"<p>Intervals: {_esc(u.get('method'))}; alpha {_esc(u.get('alpha'))}, calibrated on the "
            f"{_esc(u.get('calibrated_on'))} split ({_esc(u.get('n_calibration'))} samples), availability band "
            f"edges {_esc(u.get('availability_edges'))}. Coverage is measured on the test samples.</p>")


def _order(names: Any) -> list[str]:
    """Core models first (teacher, baseline, student), then the rest in their given order."""
    names = list(names)
    return [n for n in _CORE if n in names] + [n for n in names if n not in _CORE]


def _colour(name: str, names: list[str]) -> str:
    """A colour per model that stays the same in every figure (grey C7 is kept for the ONNX bars)."""
    if name in _CORE:
        return f"C{_CORE.index(name)}"
    others = [n for n in names if n not in _CORE]
    return f"C{(3, 4, 5, 6, 8, 9)[others.index(name) % 6]}"


def _summary(metrics: dict) -> str:
    """Side-by-side table of every model: modalities, params, metrics, latency and modality cost."""
    models = metrics.get("models", {})
    names = _order(models)
    flat = {n: _flat(models[n].get("metrics")) for n in names}
    keys = list(dict.fromkeys(k for n in names for k in flat[n]))
    rows: list[list[Any]] = [["modalities"] + [models[n].get("modalities") for n in names]]
    costs = metrics.get("costs")
    if isinstance(costs, dict) and costs:
        rows.append(["modality cost (sum)"] + [
            sum(float(costs.get(m, 0.0)) for m in models[n].get("modalities") or []) for n in names])
    rows.append(["params"] + [models[n].get("params") for n in names])
    if any("scored_on" in models[n] for n in names):  # the teacher may be scored on validation samples
        rows.append(["scored on (samples)"] + [f"{models[n].get('scored_on', 'test')} ({models[n].get('n_test', '?')})"
                                               for n in names])
    rows += [[_channel_label(k, metrics.get("channels"))] + [flat[n].get(k) for n in names] for k in keys]
    rows.append(["latency_ms (batch 1)"] + [models[n].get("latency_ms") for n in names])
    return _table(["", *names], rows, primary_row=metrics.get("primary_metric"))


def _channel_label(key: str, channels: dict | None) -> str:
    """``imputation_rmse/sensors/0`` -> ``imputation_rmse/sensors/water_level`` where the modality names its
    channels (``data.modalities.<m>.channels``); other keys unchanged."""
    parts = key.split("/")
    if isinstance(channels, dict) and len(parts) == 3 and parts[1] in channels and parts[2].isdigit():
        names = channels[parts[1]]
        if int(parts[2]) < len(names):
            return f"{parts[0]}/{parts[1]}/{names[int(parts[2])]}"
    return key


def _references(metrics: dict) -> str:
    """Table of classical reference models (``metrics["references"]``), if any."""
    refs = metrics.get("references")
    rec = metrics.get("recommended")
    note = ""
    if isinstance(rec, dict) and rec.get("model"):
        dep = metrics.get("deployed") or {}
        note = (f"<p><b>Recommended deployable student: {html.escape(str(rec['model']))}</b> "
                f"({html.escape(str(rec.get('why', '')))})"
                + (f"; student.onnx holds {html.escape(str(dep['model']))}" if dep.get("model") else "") + ".</p>")
    blend = metrics.get("student_blend")
    if isinstance(blend, dict):  # references.blend: the network averaged with its partner, beside the references
        refs = {**(refs if isinstance(refs, dict) else {}),
                f"student_blend (student + {blend.get('partner')})": {**blend.get("metrics", {}),
                                                                      "val": blend.get("val", {})}}
    if not isinstance(refs, dict) or not refs:
        return note
    flat = {n: _flat(r.get("metrics", r) if isinstance(r, dict) else {}) for n, r in refs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = [[n] + [flat[n].get(k) for k in keys] for n in refs]
    return ("<h2>Reference models</h2><p class='note'>Test figures; <code>val/...</code>: validation, what the "
            "recommendation compares.</p>" + _table(["model", *keys], rows) + note)


def _outlook(metrics: dict) -> str:
    """"Will distillation help here": the measured predictors (``metrics["distillation_outlook"]``) and the
    run's own answer (distilled student minus student_baseline on test)."""
    o = metrics.get("distillation_outlook")
    if not isinstance(o, dict):
        return ""
    m = o.get("metric", metrics.get("primary_metric"))
    models = metrics.get("models", {})
    s_, b_ = (models.get(r, {}).get("metrics", {}).get(m) for r in ("student", "student_baseline"))
    rows = [["labelled training samples", o.get("n_labelled")],
            ["unlabelled paired training samples (teacher terms only)", o.get("n_unlabelled_paired")],
            [f"teacher minus student_baseline, validation {m} (+ = teacher better)",
             o.get("teacher_minus_baseline_val")],
            [f"teacher's {m} on the labelled training samples (agreement with the labels)",
             o.get("teacher_agreement_train")]]
    if o.get("teacher_r2_train") is not None:
        rows.append(["teacher's R2 on the labelled training samples", o["teacher_r2_train"]])
    if _is_num(s_) and _is_num(b_):
        rows.append([f"this run: student minus student_baseline, test {m}", s_ - b_])
    return ("<h2>Will distillation help here?</h2><p class='note'>What predicts a gain from the teacher: unlabelled "
            "paired samples, a teacher clearly better than the baseline student on validation, and soft targets "
            "that agree with the labels. Reading: " + html.escape(str(o.get("verdict", ""))) + ".</p>"
            + _table(["predictor", "value"], rows))


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the epochs where it is a finite number."""
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if _is_num(value) and np.isfinite(value):
            xs.append(float(row.get("epoch", i + 1)))
            ys.append(float(value))
    return xs, ys


def _curves(histories: dict[str, list[dict]], primary: str) -> str:
    """Loss and validation-metric curves per model plus the distilled student's loss parts."""
    names = _order(n for n, h in histories.items() if h)
    if not names:
        return "<p class='note'>No training history.</p>"
    parts = sorted({k for row in histories.get("student", []) for k, v in row.items()
                    if k not in _CURVE_KEYS and _is_num(v)})
    fig = Figure(figsize=(4.6 * (3 if parts else 2), 3.4))
    axes = fig.subplots(1, 3 if parts else 2)
    for name in names:
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            xs, ys = _series(histories[name], key)
            if xs:
                axes[0].plot(xs, ys, style, marker="o" if len(xs) < 3 else None, color=_colour(name, names),
                             label=f"{name} {key.split('_')[0]}")
        xs, ys = _series(histories[name], "val_metric")
        if xs:
            axes[1].plot(xs, ys, "-o", ms=2.5, color=_colour(name, names), label=name)
    has_val = any(_series(histories[n], "val_loss")[0] for n in names)
    axes[0].set(title="loss (solid train, dashed val task loss)" if has_val else "training loss", xlabel="epoch",
                ylabel="loss")
    axes[1].set(title=f"validation {primary}", xlabel="epoch", ylabel=primary)
    if parts:
        for key in parts:
            xs, ys = _series(histories["student"], key)
            axes[2].plot(xs, ys, "--" if key.startswith("val") else "-", marker="o" if len(xs) < 3 else None,
                         label=key)
        axes[2].set(title="distilled student: loss parts", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _img(fig, "training curves")


MAX_TICK_CLASSES = 40  # beyond this a confusion matrix has no per-class tick labels
MAX_MATRIX_CLASSES = 300  # beyond this no matrix at all: a table of the most frequent confusions (top k)
TOP_CONFUSIONS = 20


def _top_confusions(name: str, y_true: np.ndarray, y_pred: np.ndarray, names: list[str], labels: np.ndarray) -> str:
    """Many classes: accuracy and the ``TOP_CONFUSIONS`` most frequent (true, predicted) pairs of errors, counted
    sparsely (a dense matrix of 10,000 classes would take 800 MB)."""
    wrong = y_true != y_pred
    pairs, counts = (np.unique(np.stack([y_true[wrong], y_pred[wrong]], 1), axis=0, return_counts=True)
                     if wrong.any() else (np.zeros((0, 2), int), np.zeros(0, int)))
    order = np.argsort(-counts, kind="stable")[:TOP_CONFUSIONS]
    pos = {int(c): i for i, c in enumerate(labels)}

    def label(c: int) -> str:
        return names[pos[c]] if c in pos else str(c)

    acc = float(np.mean(~wrong)) if len(y_true) else float("nan")
    rows = [[label(int(pairs[i, 0])), label(int(pairs[i, 1])), int(counts[i])] for i in order]
    return (f"<p>{_esc(name)}: {len(labels)} classes, accuracy {acc:.3f}, n={len(y_true)}; too many classes for a "
            f"matrix, the {len(rows)} most frequent confusions:</p>" + _table(["true", "predicted", "count"], rows))


def _confusion(name: str, pred: dict) -> str:
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
    return _img(fig, f"confusion matrix {name}", small=n <= 12)


def _scatter(name: str, pred: dict) -> str:
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
    return _img(fig, f"predicted versus true {name}", small=True)


def _predictions(predictions: dict[str, dict]) -> str:
    """Confusion matrices or scatter plots for every model with test predictions."""
    figs = []
    for name in _order(predictions):
        pred = predictions[name]
        if len(pred.get("y_true", [])) == 0:
            continue
        figs.append(_confusion(name, pred) if pred.get("kind") == "classification" else _scatter(name, pred))
    return f"<div class='figs'>{''.join(figs)}</div>" if figs else "<p class='note'>No test predictions.</p>"


def _size_latency(metrics: dict) -> str:
    """Bar charts of parameter count, FP32/INT8 size and latency (PyTorch, ONNX FP32, ONNX INT8)."""
    models = metrics.get("models", {})
    names = _order(models)
    export = metrics.get("export") or {}
    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 3)
    bars = [(n, models[n].get("params") or 0, _colour(n, names)) for n in names]
    # like with like: the student's real ONNX files (FP32, INT8); the other models as params x 4 bytes
    size = [(f"{n} (params x 4 B)", 4 * (models[n].get("params") or 0) / 1e6, _colour(n, names)) for n in names
            if not (n == "student" and _is_num(export.get("onnx_bytes")))]
    if _is_num(export.get("onnx_bytes")):
        size.append(("student fp32 onnx file", export["onnx_bytes"] / 1e6, _colour("student", names)))
    if _is_num(export.get("int8_bytes")):
        size.append(("student int8 onnx file", export["int8_bytes"] / 1e6, "C7"))
    lat = [(f"{n} torch", models[n].get("latency_ms") or 0, _colour(n, names)) for n in names]
    for key, label in (("onnx_latency_ms", "student onnx fp32"), ("int8_latency_ms", "student onnx int8")):
        if _is_num(export.get(key)):
            lat.append((label, export[key], "C7"))
    specs = ((bars, "parameters", "count"), (size, "model size (ONNX files; others params x 4 B)", "MB"),
             (lat, "latency, batch 1", "ms"))
    for ax, (items, title, unit) in zip(axes, specs, strict=True):
        labels, values, colours = zip(*items, strict=True) if items else ((), (), ())
        rects = ax.bar(range(len(values)), values, color=colours)
        ax.bar_label(rects, labels=[_short(v) for v in values], fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
        ax.set(title=title, ylabel=unit)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _img(fig, "size and latency")


def _export(metrics: dict) -> str:
    """Export section: files, parity, size, latency and the INT8 model's metrics next to the FP32 student."""
    export = metrics.get("export")
    if not isinstance(export, dict) or not export:
        return "<p class='note'>No export.</p>"
    keys = ("onnx", "int8", "max_abs_diff", "int8_bytes", "onnx_latency_ms", "int8_latency_ms")
    out = _table(["", "value"], [[k, export.get(k)] for k in keys if k in export])
    student = _flat((metrics.get("models", {}).get("student") or {}).get("metrics"))
    int8 = _flat(export.get("int8_metrics"))
    keys2 = list(dict.fromkeys([*student, *int8]))
    if int8:
        out += _table(["metric", "student (PyTorch)", "student INT8 (ONNX Runtime)"],
                      [[_channel_label(k, metrics.get("channels")), student.get(k), int8.get(k)] for k in keys2],
                      metrics.get("primary_metric"))
    return out


def _section_tables(name: str, value: Any) -> str:
    """A recipe's metrics.json section as tables: scalars as key/value rows, lists of records as one table each
    (numbers compact); anything else is summarised, never dumped."""
    parts = [f"<h3>{_esc(name)}</h3>"]
    if not isinstance(value, dict):
        value = {name: value}
    scalars = _flat(value)
    if scalars:
        parts.append(_table(["", "value"], [[k, v] for k, v in scalars.items()]))
    for key, v in _lists(value):
        if v and all(isinstance(r, dict) for r in v):
            cols = list(dict.fromkeys(c for r in v for c, x in _flat(r).items()))
            rows = [[_flat(r).get(c) for c in cols] for r in v[:50]]
            more = f"<p class='note'>first 50 of {len(v)} rows (all in metrics.json)</p>" if len(v) > 50 else ""
            parts.append(f"<p><b>{_esc(key)}</b></p>" + _table(cols, rows) + more)
        elif v and all(_is_num(x) or isinstance(x, str) for x in v) and len(v) <= 20:
            parts.append(f"<p><b>{_esc(key)}:</b> {_esc(', '.join(_fmt(x) for x in v))}</p>")
        else:
            parts.append(f"<p class='note'>{_esc(key)}: {len(v)} values (in metrics.json)</p>")
    return "".join(parts)


def _lists(value: dict, prefix: str = "") -> list[tuple[str, list]]:
    """(dotted key, list) of every list inside nested dicts."""
    out: list[tuple[str, list]] = []
    for k, v in value.items():
        if isinstance(v, dict):
            out += _lists(v, f"{prefix}{k}.")
        elif isinstance(v, (list, tuple)):
            out.append((f"{prefix}{k}", list(v)))
    return out


def _header(metrics: dict) -> str:
    """Title line, run metadata and the synthetic-data badge."""
    data = metrics.get("data") or {}
    synthetic = bool(metrics.get("synthetic")) or data.get("source") == "synthetic"
    badge = ' <span class="badge">SYNTHETIC DATA</span>' if synthetic else ""
    meta = [("recipe", metrics.get("recipe")), ("seed", metrics.get("seed")), ("data", data.get("source")),
            ("train / val / test", " / ".join(_fmt(data.get(k)) for k in ("n_train", "n_val", "n_test"))),
            ("primary metric", metrics.get("primary_metric"))]
    spans = "".join(f"<span><b>{_esc(k)}:</b> {_esc(_fmt(v))}</span>" for k, v in meta)
    quick = ("<p class='quick'><b>QUICK RUN (--quick):</b> a smoke test with few epochs and small data; its "
             "figures check that the pipeline works and are not results.</p>" if metrics.get("quick") else "")
    return f"<h1>{_esc(metrics.get('name', 'cmkd run'))}{badge}</h1><p class='meta'>{spans}</p>{quick}"


def write_report(path: str | Path, metrics: dict, histories: dict[str, list[dict]],
                 predictions: dict[str, dict], extra_html: list[str] | None = None) -> Path:
    """Write a self-contained ``report.html`` for one run.

    Args:
        path: Output file; its parent directory is created if needed. Written atomically.
        metrics: The run's metrics.json dict (see DESIGN.md). Unknown top-level sections added by recipes
            are shown as JSON at the end.
        histories: Per model name, a list of per-epoch dicts (``epoch``, ``train_loss``, ``val_loss``,
            ``val_metric``, ``lr`` and loss parts such as ``train_kd``). Missing keys are skipped.
        predictions: Per model name, ``{"kind": "classification", "y_true", "y_pred", "class_names"}`` or
            ``{"kind": "regression", "y_true", "y_pred"}`` on the test split.
        extra_html: recipe sections (HTML fragments, e.g. built with :func:`figure_html` and
            :func:`table_html`), placed after the export section.

    Returns:
        The path of the written report.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    primary = str(metrics.get("primary_metric", "metric"))
    extra = {k: v for k, v in metrics.items() if k not in _KNOWN_TOP}
    sections = [
        _header(metrics),
        "<h2>Summary</h2>", _summary(metrics), _references(metrics), _outlook(metrics), _uncertainty(metrics),
        "<h2>Training curves</h2>", _curves(histories or {}, primary),
        "<h2>Test predictions</h2>", _predictions(predictions or {}),
        "<h2>Size and latency</h2>", _size_latency(metrics),
        "<h2>Export (ONNX)</h2>", _export(metrics),
        *(extra_html or []),
    ]
    if extra:
        sections += ["<h2>Recipe sections</h2>", *(_section_tables(k, v) for k, v in extra.items())]
    title = _esc(metrics.get("name", "cmkd"))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title} · cmkd report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; a report is meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def print_summary(metrics: dict, out: Path | None = None) -> None:
    """The three models side by side on the terminal."""
    from rich.console import Console
    from rich.table import Table

    pm = metrics["primary_metric"]
    title = f"{metrics['name']} ({'synthetic data' if metrics.get('synthetic') else metrics['data']['source']})"
    tab = Table(title=title)
    names = sorted({k for m in metrics["models"].values() for k in m["metrics"]})
    if len(names) > 8:  # many targets: the primary target's metrics here, the rest in metrics.json
        names = [k for k in names if "/" not in k]
    for col in ["model", "modalities", "params", *names, "latency ms", "cost"]:
        tab.add_column(col, justify="left" if col in ("model", "modalities") else "right")
    n_test = metrics.get("data", {}).get("n_test")
    partial = {role: m for role, m in metrics["models"].items()  # e.g. a teacher scored where it has all inputs
               if m.get("scored_on") == "val" or (n_test and m.get("n_test", n_test) < n_test)}
    for role, m in metrics["models"].items():
        tab.add_row(role + (" *" if role in partial else ""), "+".join(m["modalities"]), f"{m['params']:,}",
                    *[f"{m['metrics'][k]:.4f}" if k in m["metrics"] else "-" for k in names],
                    f"{m['latency_ms']:.2f}", f"{m.get('cost', 0):g}")
    ex = metrics.get("export")
    if ex:
        tab.add_row("student int8", "+".join(metrics["models"]["student"]["modalities"]), "-",
                    *[f"{ex['int8_metrics'][k]:.4f}" if k in ex["int8_metrics"] else "-" for k in names],
                    f"{ex['int8_latency_ms']:.2f}", "")
    for name, ref in (metrics.get("references") or {}).items():
        tab.add_row(f"{name} (reference)", "+".join(metrics["models"]["student"]["modalities"]), "-",
                    *[f"{ref[k]:.4f}" if k in ref else "-" for k in names], "-", "")
    blend = metrics.get("student_blend")
    if blend:
        tab.add_row(f"student_blend (student + {blend['partner']})", "+".join(blend["modalities"]), "-",
                    *[f"{blend['metrics'][k]:.4f}" if k in blend["metrics"] else "-" for k in names], "-", "")
    con = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 400)  # a log: the table's own width
    con.print(tab)
    if metrics.get("recommended"):
        rec, dep = metrics["recommended"], metrics.get("deployed") or {}
        con.print(f"recommended student: {rec['model']} ({rec['why']})"
                  + (f"; student.onnx holds {dep['model']}" if dep else ""))
    for role, m in partial.items():
        where = ("validation samples" if m.get("scored_on") == "val"
                 else f"of the {n_test:,} test samples, those with all its modalities")
        con.print(f"* {role}: scored on {m.get('n_test', '?'):,} {where}")
    if out is not None:
        more = " (every target's metrics are in metrics.json)" if len(metrics.get("models", {}).get("student", {})
                                                                     .get("metrics", {})) > len(names) else ""
        files = [f for f in ("metrics.json", "report.html", "student.onnx", "student.int8.onnx", "student_trees.onnx",
                             "student_net.onnx") if (out / f).exists()]
        con.print(f"primary metric: {pm}{more}. Outputs in {out}/ ({', '.join(files)})")
