"""Self-contained HTML report of a cmkd run (:func:`write_report`), and the run's summary on the terminal
(:func:`print_summary`).

Every figure (:mod:`cmkd.evaluation.figures`) is drawn with matplotlib's Agg renderer (``matplotlib.figure.Figure``
without pyplot, so the caller's backend and pyplot state are never touched) and embedded as a base64 PNG. The page
has no external CSS, JS, fonts or images: it can be mailed or archived as one file. Recipes build their own
sections with :func:`figure_html`, :func:`table_html` and :func:`escape` (:mod:`cmkd.evaluation.markup`).
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import Any

from cmkd.config import Role
from cmkd.evaluation.figures import curves_html, predictions_html, size_latency_html
from cmkd.evaluation.markup import esc, escape, figure_html, flatten, fmt, is_num, order, table, table_html
from cmkd.io import atomic_write_text

__all__ = ["escape", "figure_html", "print_summary", "table_html", "write_report"]

_KNOWN_TOP = {"name", "recipe", "seed", "primary_metric", "data", "models", "export", "references", "quick",
              "synthetic", "costs", "uncertainty", "recommended", "deployed", "export_trees",
              "distillation_outlook", "channels", "dividend"}
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}tr.primary td{font-weight:bold}
.badge{display:inline-block;background:#c62828;color:#fff;font-weight:bold;padding:.2em .7em;
border-radius:4px}
.meta span{margin-right:1.5em}.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
img{max-width:100%}img.small{max-width:calc(33.3% - .7em)}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}.note{color:#666}
.tbl{max-width:100%;overflow-x:auto}.quick{background:#fff3cd;border:1px solid #e0c060;padding:.5em .8em}
.dividend{background:#e8f4ea;border-left:4px solid #2e7d32;padding:.5em .8em}
.dividend.none{background:#f3f3f3;border-left-color:#999}"""


def _uncertainty(metrics: dict) -> str:
    """How the intervals in the summary (``coverage_*``, ``width_*``) were calibrated."""
    u = metrics.get("uncertainty")
    if not isinstance(u, dict):
        return ""
    return (f"<p>Intervals: {esc(u.get('method'))}; alpha {esc(u.get('alpha'))}, calibrated on the "
            f"{esc(u.get('calibrated_on'))} split ({esc(u.get('n_calibration'))} samples), availability band "
            f"edges {esc(u.get('availability_edges'))}. Coverage is measured on the test samples.</p>")


def _summary(metrics: dict) -> str:
    """Side-by-side table of every model: modalities, params, metrics, latency and modality cost."""
    models = metrics.get("models", {})
    names = order(models)
    flat = {n: flatten(models[n].get("metrics")) for n in names}
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
    return table(["", *names], rows, primary_row=metrics.get("primary_metric"))


def _channels(metrics: dict) -> str:
    """The channel names of each modality that names them (``metrics["channels"]``), one line each."""
    ch = metrics.get("channels")
    if not isinstance(ch, dict) or not ch:
        return ""
    lines = "".join(f"<br><b>{esc(m)}</b>: {esc(', '.join(map(str, names[:40])))}"
                    + (f" ... ({len(names)} channels)" if len(names) > 40 else "")
                    for m, names in ch.items() if isinstance(names, list))
    return f"<p class='note'>Channels (feature axis, in order):{lines}</p>" if lines else ""


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
    if not isinstance(refs, dict) or not refs:
        return note
    flat = {n: flatten(r.get("metrics", r) if isinstance(r, dict) else {}) for n, r in refs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = [[n] + [flat[n].get(k) for k in keys] for n in refs]
    return ("<h2>Reference models</h2><p class='note'>Test figures; <code>val/...</code>: validation, what the "
            "recommendation compares.</p>" + table(["model", *keys], rows) + note)


def _outlook(metrics: dict) -> str:
    """"Will distillation help here": the measured predictors (``metrics["distillation_outlook"]``) and the
    run's own answer (distilled student minus student_baseline on test)."""
    o = metrics.get("distillation_outlook")
    if not isinstance(o, dict):
        return ""
    m = o.get("metric", metrics.get("primary_metric"))
    models = metrics.get("models", {})
    s_, b_ = (models.get(r, {}).get("metrics", {}).get(m) for r in (Role.STUDENT, Role.BASELINE))
    rows = [["labelled training samples", o.get("n_labelled")],
            ["unlabelled paired training samples (teacher terms only)", o.get("n_unlabelled_paired")],
            [f"teacher minus student_baseline, validation {m} (+ = teacher better)",
             o.get("teacher_minus_baseline_val")],
            [f"teacher's {m} on the labelled training samples (agreement with the labels)",
             o.get("teacher_agreement_train")]]
    if o.get("teacher_r2_train") is not None:
        rows.append(["teacher's R2 on the labelled training samples", o["teacher_r2_train"]])
    if is_num(s_) and is_num(b_):
        rows.append([f"this run: student minus student_baseline, test {m}", s_ - b_])
    return ("<h2>Will distillation help here?</h2><p class='note'>What predicts a gain from the teacher: unlabelled "
            "paired samples, a teacher clearly better than the baseline student on validation, and soft targets "
            "that agree with the labels. Reading: " + html.escape(str(o.get("verdict", ""))) + ".</p>"
            + table(["predictor", "value"], rows))


def _export(metrics: dict) -> str:
    """Export section: files, parity, size, latency and the INT8 model's metrics next to the FP32 student."""
    export = metrics.get("export")
    if not isinstance(export, dict) or not export:
        return "<p class='note'>No export.</p>"
    keys = ("onnx", "int8", "max_abs_diff", "int8_bytes", "onnx_latency_ms", "int8_latency_ms")
    out = table(["", "value"], [[k, export.get(k)] for k in keys if k in export])
    student = flatten((metrics.get("models", {}).get(Role.STUDENT) or {}).get("metrics"))
    int8 = flatten(export.get("int8_metrics"))
    keys2 = list(dict.fromkeys([*student, *int8]))
    if int8:
        out += table(["metric", "student (PyTorch)", "student INT8 (ONNX Runtime)"],
                      [[_channel_label(k, metrics.get("channels")), student.get(k), int8.get(k)] for k in keys2],
                      metrics.get("primary_metric"))
    return out


def _section_tables(name: str, value: Any) -> str:
    """A recipe's metrics.json section as tables: scalars as key/value rows, lists of records as one table each
    (numbers compact); anything else is summarised, never dumped."""
    parts = [f"<h3>{esc(name)}</h3>"]
    if not isinstance(value, dict):
        value = {name: value}
    scalars = flatten(value)
    if scalars:
        parts.append(table(["", "value"], [[k, v] for k, v in scalars.items()]))
    for key, v in _lists(value):
        if v and all(isinstance(r, dict) for r in v):
            cols = list(dict.fromkeys(c for r in v for c, x in flatten(r).items()))
            rows = [[flatten(r).get(c) for c in cols] for r in v[:50]]
            more = f"<p class='note'>first 50 of {len(v)} rows (all in metrics.json)</p>" if len(v) > 50 else ""
            parts.append(f"<p><b>{esc(key)}</b></p>" + table(cols, rows) + more)
        elif v and all(is_num(x) or isinstance(x, str) for x in v) and len(v) <= 20:
            parts.append(f"<p><b>{esc(key)}:</b> {esc(', '.join(fmt(x) for x in v))}</p>")
        else:
            parts.append(f"<p class='note'>{esc(key)}: {len(v)} values (in metrics.json)</p>")
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
            ("train / val / test", " / ".join(fmt(data.get(k)) for k in ("n_train", "n_val", "n_test"))),
            ("primary metric", metrics.get("primary_metric"))]
    spans = "".join(f"<span><b>{esc(k)}:</b> {esc(fmt(v))}</span>" for k, v in meta)
    quick = ("<p class='quick'><b>QUICK RUN (--quick):</b> a smoke test with few epochs and small data; its "
             "figures check that the pipeline works and are not results.</p>" if metrics.get("quick") else "")
    return f"<h1>{esc(metrics.get('name', 'cmkd run'))}{badge}</h1><p class='meta'>{spans}</p>{quick}"


def _dividend(metrics: dict) -> str:
    """The distillation dividend (``metrics["dividend"]``, :mod:`cmkd.evaluation.dividend`) as a highlighted
    paragraph: the recommended model against the best one trained on the labels alone."""
    d = metrics.get("dividend")
    if not isinstance(d, dict) or not d.get("sentence"):
        return ""
    cls = "dividend none" if d.get("label_only_recommended") else "dividend"
    return (f"<p class='{cls}'><b>Distillation dividend:</b> {esc(d['sentence'])}. <span class='note'>Test: "
            f"against the best of {esc(d.get('n_label_only'))} label-only models on test, picked with hindsight; "
            f"{esc(d.get('val_from', 'validation'))}: what the recommendation compared.</span></p>")


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
        _header(metrics), _dividend(metrics),
        "<h2>Summary</h2>", _summary(metrics), _channels(metrics), _references(metrics), _outlook(metrics),
        _uncertainty(metrics),
        "<h2>Training curves</h2>", curves_html(histories or {}, primary),
        "<h2>Test predictions</h2>", predictions_html(predictions or {}),
        "<h2>Size and latency</h2>", size_latency_html(metrics),
        "<h2>Export (ONNX)</h2>", _export(metrics),
        *(extra_html or []),
    ]
    if extra:
        sections += ["<h2>Recipe sections</h2>", *(_section_tables(k, v) for k, v in extra.items())]
    title = esc(metrics.get("name", "cmkd"))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title} · cmkd report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n")
    return atomic_write_text(path, page)


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
        tab.add_row("student int8", "+".join(metrics["models"][Role.STUDENT]["modalities"]), "-",
                    *[f"{ex['int8_metrics'][k]:.4f}" if k in ex["int8_metrics"] else "-" for k in names],
                    f"{ex['int8_latency_ms']:.2f}", "")
    for name, ref in (metrics.get("references") or {}).items():
        tab.add_row(f"{name} (reference)", "+".join(metrics["models"][Role.STUDENT]["modalities"]), "-",
                    *[f"{ref[k]:.4f}" if k in ref else "-" for k in names], "-", "")
    con = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 400)  # a log: the table's own width
    con.print(tab)
    if metrics.get("recommended"):
        rec, dep = metrics["recommended"], metrics.get("deployed") or {}
        con.print(f"recommended student: {rec['model']} ({rec['why']})"
                  + (f"; student.onnx holds {dep['model']}" if dep else ""))
    if isinstance(metrics.get("dividend"), dict) and metrics["dividend"].get("sentence"):
        con.print(f"distillation dividend: {metrics['dividend']['sentence']}", markup=False, highlight=False)
    for role, m in partial.items():
        where = ("validation samples" if m.get("scored_on") == "val"
                 else f"of the {n_test:,} test samples, those with all its modalities")
        con.print(f"* {role}: scored on {m.get('n_test', '?'):,} {where}")
    if out is not None:
        more = " (every target's metrics are in metrics.json)" if len(metrics.get("models", {}).get(Role.STUDENT, {})
                                                                     .get("metrics", {})) > len(names) else ""
        files = [f for f in ("metrics.json", "report.html", "student.onnx", "student.int8.onnx", "student_trees.onnx",
                             "student_net.onnx") if (out / f).exists()]
        con.print(f"primary metric: {pm}{more}. Outputs in {out}/ ({', '.join(files)})")
