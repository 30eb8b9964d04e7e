"""The ``cmkd`` command line: run, list, predict, export, evaluate.

User mistakes print one line (``error: ...``) on stderr and exit with code 2; never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from .errors import CmkdError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cmkd: cross-modal knowledge distillation. Train a teacher on rich modalities, distil it "
                       "into a compact student that needs only the cheap ones, export it to ONNX/INT8.")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set student.epochs=5 "
                                                                "(repeatable; values parsed as YAML).")]


@app.command()
def run(target: Annotated[str, typer.Argument(help="A recipe name (see `cmkd list`) or an experiment YAML file.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/latest"),
        quick: Annotated[bool, typer.Option(help="A short smoke-test run (few epochs).")] = False,
        overrides: SetOpt = None,
        resume: Annotated[bool, typer.Option(help="Continue an interrupted run from OUT/.ckpt.")] = False,
        quiet: Annotated[bool, typer.Option(help="No progress bars and no summary table.")] = False,
        device: Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = None) -> None:
    """Teacher -> baseline student -> distilled student -> test metrics -> ONNX/INT8 -> report.

    Writes OUT/metrics.json, OUT/report.html, OUT/config.yaml, OUT/teacher.pt, OUT/student.pt,
    OUT/student.onnx and OUT/student.int8.onnx.
    """
    from .pipeline import run as run_pipeline

    run_pipeline(target, out, overrides=overrides, quick=quick, resume=resume, quiet=quiet, device=device)


@app.command("list")
def list_cmd() -> None:
    """List the built-in recipes."""
    from .recipes import list_recipes

    for name, desc in list_recipes().items():
        typer.echo(f"{name:12s} {desc}")


def _model_dir(model: Path) -> Path:
    if not model.is_dir():
        raise CmkdError(f"model folder not found: {model} (the --out folder of `cmkd run`)")
    return model


def _student_inputs(meta: dict, arrays: dict[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
    """Check an input npz against the student's modalities and shapes; tokenise text."""
    import yaml

    from .data import tokenize

    cfg = yaml.safe_load(meta["config"])
    feed = {}
    for m, spec in meta["hparams"]["modalities"].items():
        if m not in arrays:
            raise CmkdError(f"{src}: modality '{m}' needed by the model not found; keys: {', '.join(arrays)}")
        a = arrays[m]
        if spec["kind"] == "text":
            if a.ndim != 1 or a.dtype.kind not in "US":
                raise CmkdError(f"{src}: text modality '{m}' must be a (N,) array of strings")
            a = tokenize(a, cfg["data"]["text_vocab"], cfg["data"]["text_len"])
        else:
            if tuple(a.shape[1:]) != tuple(spec["shape"]) or a.dtype.kind not in "fiub":
                raise CmkdError(f"{src}: '{m}' has per-sample shape {tuple(a.shape[1:])} ({a.dtype}), the model "
                                f"expects {tuple(spec['shape'])} numbers")
            a = a.astype(np.float32)
        feed[m] = a
    if len({len(v) for v in feed.values()}) > 1:
        raise CmkdError(f"{src}: the student's modalities have different sample counts")
    return feed


def _intervals(meta: dict, feed: dict[str, np.ndarray], outs: list[np.ndarray]) -> dict[str, dict]:
    """Per regression target: the head's std and, when the run calibrated it, the conformal interval."""
    import yaml

    from .uncertainty import ConformalRegressor, availability_groups

    targets = meta["hparams"]["targets"]
    reg = [t for t, spec in targets.items() if spec["kind"] == "regression"]
    cfg = yaml.safe_load(meta["config"])
    unc = cfg.get("uncertainty") or {}
    edges = tuple(unc.get("availability_edges") or ())
    numeric = {m: a for m, a in feed.items() if a.dtype.kind == "f"}
    chosen = [m for m in unc.get("availability_modalities") or [] if m in numeric] or list(numeric)
    seen = sum((~np.isnan(numeric[m].reshape(len(numeric[m]), -1))).sum(1) for m in chosen)
    size = sum(int(np.prod(numeric[m].shape[1:])) for m in chosen)
    groups = availability_groups(seen / max(size, 1), edges) if edges and size else None
    res: dict[str, dict] = {}
    for j, t in enumerate(reg):
        value, std = outs[list(targets).index(t)], outs[len(targets) + j]
        entry = {"value": value.tolist(), "std": std.tolist()}
        states = (meta.get("conformal") or {}).get(t)
        if states:
            mu, sd = value.reshape(len(value), -1), std.reshape(len(std), -1)
            lo, hi = np.empty_like(mu), np.empty_like(mu)
            for k, st in enumerate(states):
                lo[:, k], hi[:, k] = ConformalRegressor.from_state(st).interval(mu[:, k], sd[:, k], groups)
            entry.update({"lower": lo.reshape(value.shape).tolist(), "upper": hi.reshape(value.shape).tolist(),
                          "interval": f"{round(100 * (1 - states[0]['alpha']))}% split-conformal"})
        res[t] = entry
    return res


@app.command()
def predict(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
            input: Annotated[Path, typer.Option("--input", "-i", help=(
                ".npz with the student's modalities; for coastal models also a CSV of sensor readings with gaps "
                "(columns time, station, and the sensor channels)"))],
            output: Annotated[Path, typer.Option("--output", help="Where to write the predictions JSON.")] = Path(
                "preds.json"),
            int8: Annotated[bool, typer.Option(help="Use the INT8 model instead of FP32.")] = False) -> None:
    """Predict with the exported student (ONNX Runtime); needs only the student's modalities.

    Regression targets come with the head's std and, when the run calibrated them, split-conformal intervals.
    A CSV input (coastal models) gives per-station forecasts, intervals and resilience recommendations.
    """
    import yaml

    from .data import load_npz
    from .export import ort_run, ort_session
    from .pipeline import atomic_write_text
    from .train import safe_load

    d = _model_dir(model)
    if input.suffix.lower() == ".csv":  # sensor readings with gaps: the coastal forecast tool
        meta = safe_load(d / "student.pt")
        recipe = (yaml.safe_load(meta.get("config") or "") or {}).get("recipe")
        if recipe != "coastal":
            raise CmkdError(f"CSV input is for models of the coastal recipe; {d} was trained by "
                            f"{recipe or 'a YAML experiment'}: pass an .npz")
        from .recipes.coastal.forecast import forecast_csv

        result = forecast_csv(d, input)
        atomic_write_text(output, json.dumps(result, indent=1))
        typer.echo(f"wrote {len(result['forecasts'])} station forecast(s) with recommendations to {output}")
        return
    onnx = d / ("student.int8.onnx" if int8 else "student.onnx")
    if not onnx.is_file():
        raise CmkdError(f"{onnx} not found; run `cmkd export --model {d}` first")
    meta = safe_load(d / "student.pt")
    feed = _student_inputs(meta, load_npz(input), str(input))
    outs = ort_run(ort_session(onnx, threads=0), feed)
    result: dict = {"model": str(onnx), "n": len(next(iter(feed.values()))), "targets": {}}
    class_names = meta.get("class_names")
    for (t, spec), o in zip(meta["hparams"]["targets"].items(), outs):
        if spec["kind"] == "classification":
            e = np.exp(o - o.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            classes = meta["classes"][t]
            k = prob.argmax(axis=1)
            entry = {"label": [classes[i] for i in k], "probability": prob.max(axis=1).round(5).tolist(),
                     "probabilities": prob.round(5).tolist(), "classes": classes}
            if class_names and len(class_names) == len(classes):
                entry["class_name"] = [class_names[i] for i in k]
            result["targets"][t] = entry
        else:
            result["targets"][t] = {"value": o.tolist()}
    result["targets"].update(_intervals(meta, feed, outs))
    atomic_write_text(output, json.dumps(result))
    typer.echo(f"wrote {result['n']} predictions to {output}")


@app.command()
def export(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
           int8: Annotated[bool, typer.Option(help="Also write the INT8 model.")] = True) -> None:
    """(Re-)export MODEL/student.pt to MODEL/student.onnx (and student.int8.onnx), with a parity check."""
    import torch

    from .export import export_onnx, ort_run, ort_session, quantize_int8
    from .pipeline import load_model

    d = _model_dir(model)
    net, meta = load_model(d / "student.pt")
    gen = torch.Generator().manual_seed(0)
    example = {}
    for m, spec in meta["hparams"]["modalities"].items():
        shape = (4, *spec["shape"])
        example[m] = (torch.randint(1, 50, (4, 8), generator=gen) if spec["kind"] == "text"
                      else torch.randn(shape, generator=gen))
    export_onnx(net, example, d / "student.onnx")
    with torch.no_grad():
        out = net(example)
    ref = [out[t]["logits"] if k == "classification" else out[t]["value"] for t, k in net.target_kinds.items()]
    got = ort_run(ort_session(d / "student.onnx"), {k: v.numpy() for k, v in example.items()})
    diff = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, ref))
    typer.echo(f"wrote {d / 'student.onnx'} (max |onnx - torch| = {diff:.2e})")
    if int8:
        quantize_int8(d / "student.onnx", d / "student.int8.onnx")
        typer.echo(f"wrote {d / 'student.int8.onnx'}")


@app.command()
def evaluate(model: Annotated[Path, typer.Option("--model", "-m", help="Output folder of `cmkd run`.")],
             data: Annotated[Path, typer.Option("--data", "-d", help=".npz with the model's modalities and the "
                                                                    "targets (labels as in training).")],
             role: Annotated[str, typer.Option(help="Which model: student, student_baseline or teacher.")] = "student",
             split: Annotated[str, typer.Option(help="'all' samples, or 'test' (split == 2 when the npz has "
                                                     "a split key).")] = "all") -> None:
    """Score a saved model on labelled data and print its metrics as JSON."""
    import yaml

    from .data import UNLABELLED, MultimodalData, load_npz
    from .evaluate import predict as predict_torch
    from .evaluate import task_metrics
    from .pipeline import load_model

    d = _model_dir(model)
    if role not in ("student", "student_baseline", "teacher"):
        raise CmkdError(f"--role {role!r}: valid: student, student_baseline, teacher")
    if split not in ("all", "test"):
        raise CmkdError(f"--split {split!r}: valid: all, test")
    net, meta = load_model(d / f"{role}.pt")
    arrays = load_npz(data)
    inputs = _student_inputs(meta, arrays, str(data))  # checks the model's modalities and shapes
    n = len(next(iter(inputs.values())))
    present = {}
    for m, a in inputs.items():
        p = ~np.isnan(a.reshape(n, -1)).all(axis=1) if a.dtype.kind == "f" else (a > 0).any(axis=1)
        present[m] = p & arrays[f"{m}__present"].astype(bool) if f"{m}__present" in arrays else p
    targets, kinds = {}, {}
    for t, spec in meta["hparams"]["targets"].items():
        if t not in arrays or len(arrays[t]) != n:
            raise CmkdError(f"{data}: target '{t}' missing or of the wrong length (need {n} values)")
        kinds[t] = spec["kind"]
        y = arrays[t]
        if spec["kind"] == "classification":
            classes = np.asarray(meta["classes"][t])
            lab = (~np.isnan(y) if y.dtype.kind == "f" else np.ones(n, bool)) & (y != UNLABELLED)
            unknown = np.setdiff1d(np.unique(y[lab]), classes)
            if len(unknown):
                raise CmkdError(f"{data}: target '{t}' has labels unknown to the model: {unknown.tolist()[:5]}")
            targets[t] = np.where(lab, np.searchsorted(classes, np.where(lab, y, classes[0])), UNLABELLED)
        else:
            targets[t] = y.astype(np.float32).reshape(n, -1)
    key = yaml.safe_load(meta["config"])["data"].get("split") or "split"
    part = np.full(n, 2) if split == "all" or key not in arrays else np.asarray(arrays[key])
    ds = MultimodalData(inputs, present, targets, part, {m: s["kind"] for m, s in
                                                         meta["hparams"]["modalities"].items()},
                        kinds, {t: np.asarray(c) for t, c in meta["classes"].items()}, str(data))
    idx = ds.labelled(ds.indices(2))
    if len(idx) == 0:
        raise CmkdError(f"{data}: no labelled sample to evaluate")
    typer.echo(json.dumps({"model": role, "n": int(len(idx)),
                           "metrics": task_metrics(ds, idx, predict_torch(net, ds, idx))}, indent=2))


def main() -> None:
    """Entry point: run the app, turning user mistakes into one-line errors with exit code 2."""
    try:
        app()
    except CmkdError as e:
        msg = " ".join(str(e).splitlines()) or type(e).__name__  # always one line
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
