"""Sorting analysis, energy per item and folder prediction of the ``recycling`` recipe (SYNTHETIC items).

**Sorting** (:func:`analyse`): every model (teacher, student_baseline, student, and the INT8 ONNX student) predicts
material, quality and degradation of the TEST items; the policy (:class:`~cmkd.recipes.recycling.policy.Policy`)
routes them, and the routes are scored against the routes the true labels imply: purity per route, mis-sort cost
(total and per item), how many PVC items reach the PET stream, and per-class material F1.

**Energy per item** (ILLUSTRATIVE): ``E = sum(sensor power) x acquisition_s + compute_w x latency``. Sensor power is
each modality's ``cost`` in W (RGB camera 1.5, thermal camera 5, NIR spectrometer 12 by default: typical orders of
magnitude, not measured figures), ``acquisition_s`` (0.2 s) the time the sensors are on per item, ``compute_w``
(5 W) the processor's power while inferring and the latency the measured batch-1, one-thread latency (the
teacher's in PyTorch, the student's of the INT8 ONNX model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError
from cmkd.io import dumps
from cmkd.recipes.recycling.policy import Policy
from cmkd.recipes.recycling.scene import DEGRADATION, MATERIALS

ROLES = ("teacher", "student_baseline", "student")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def energy(metrics: dict, acquisition_s: float, compute_w: float) -> dict:
    """Energy per item (J) of the teacher and the students from the sensor power table and measured latency."""
    costs, models = metrics.get("costs", {}), metrics["models"]
    rows = {}
    for role in ROLES:
        m = models[role]
        sensor_w = float(sum(costs.get(x, 0.0) for x in m["modalities"]))
        rows[role] = {"sensors": m["modalities"], "sensor_w": sensor_w, "latency_ms": m["latency_ms"],
                      "runtime": "PyTorch FP32"}
    ex = metrics.get("export") or {}
    if ex.get("int8_latency_ms") is not None:
        st = rows["student"]
        rows["student_int8"] = {**st, "latency_ms": ex["int8_latency_ms"], "runtime": "ONNX Runtime INT8"}
    for r in rows.values():
        r["sensor_j"] = r["sensor_w"] * acquisition_s
        r["compute_j"] = compute_w * r["latency_ms"] / 1e3
        r["energy_j"] = r["sensor_j"] + r["compute_j"]
    deployed = "student_int8" if "student_int8" in rows else "student"
    return {"acquisition_s": acquisition_s, "compute_w": compute_w, "per_model": rows, "deployed_student": deployed,
            "teacher_j": rows["teacher"]["energy_j"], "student_j": rows[deployed]["energy_j"],
            "ratio_teacher_over_student": rows["teacher"]["energy_j"] / rows[deployed]["energy_j"]}


def _outputs(ctx: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per model: material probabilities, quality and degradation ids on the test items."""
    from cmkd.evaluation.metrics import predict
    from cmkd.export.onnx import ort_run, ort_session

    data, test = ctx["data"], ctx["test"]
    out = {}
    for role in ROLES:
        p = predict(ctx["models"][role], data, test, device="cpu")
        out[role] = {"prob": _softmax(p["material/logits"]), "quality": p["quality/value"].reshape(-1),
                     "degradation": p["degradation/logits"].argmax(1)}
    onnx = Path(ctx["out"]) / "student.int8.onnx"
    if onnx.is_file():
        sess = ort_session(onnx)
        res = ort_run(sess, {"visual": data.inputs["visual"][test]})
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, res))
        out["student_int8"] = {"prob": got["material"], "quality": got["quality"].reshape(-1),
                               "degradation": got["degradation"].argmax(1)}
    return out


def analyse(ctx: dict) -> dict:
    """The recipe's report section and ``sorting.json`` / ``policy.json`` (see the module docstring)."""
    from sklearn.metrics import f1_score

    from cmkd.io import atomic_write_text

    cfg, data, test, out = ctx["cfg"], ctx["data"], ctx["test"], Path(ctx["out"])
    from cmkd.recipes.base import read_options
    from cmkd.recipes.recycling.options import OPTIONS

    opts = read_options(OPTIONS, cfg.options, recipe="recycling")
    policy = Policy(opts["policy"])
    # class ids of the data are the generator's ids (every class is in training); map through data.classes
    mat_cls, deg_cls = data.classes["material"], data.classes["degradation"]
    y_mat = mat_cls[data.targets["material"][test]]
    y_deg = deg_cls[data.targets["degradation"][test]]
    y_q = data.targets["quality"][test].reshape(-1)
    true_route = policy.route(y_mat, y_q, y_deg)
    outputs = _outputs(ctx)
    sorting, per_class = {}, {}
    for role, o in outputs.items():
        mat = mat_cls[o["prob"].argmax(1)]
        deg = deg_cls[o["degradation"]]
        routes = policy.route(mat, o["quality"], deg)
        res = policy.evaluate(y_mat, true_route, routes)
        res["material_accuracy"] = float(np.mean(mat == y_mat))
        res["material_macro_f1"] = float(f1_score(y_mat, mat, average="macro", labels=range(len(MATERIALS)),
                                                  zero_division=0))
        sorting[role] = res
        f1 = f1_score(y_mat, mat, average=None, labels=range(len(MATERIALS)), zero_division=0)
        per_class[role] = {MATERIALS[i]: float(v) for i, v in enumerate(f1)}
    truth = policy.evaluate(y_mat, true_route, true_route)
    t_cost = sorting["teacher"]["missort_cost_total"]
    for res in sorting.values():
        res["extra_cost_vs_teacher"] = res["missort_cost_total"] - t_cost
    en = energy(ctx["metrics"], float(opts["acquisition_s"]), float(opts["compute_w"]))
    section = {"synthetic": True, "n_test": int(len(test)),
               "true_routes": {r: int(v) for r, v in truth["sent"].items()},
               "sorting": sorting, "per_class_f1": per_class, "energy": en,
               "cost_matrix": policy.cost_matrix()}
    atomic_write_text(out / "sorting.json", dumps(section, indent=1))
    atomic_write_text(out / "policy.json", dumps({"synthetic": True, "materials": MATERIALS,
                                                       "degradation": DEGRADATION, "policy": policy.to_json()},
                                                      indent=1))
    return {"metrics": {"recycling": section}, "html": [_html(section, policy)]}


def _html(section: dict, policy: Policy) -> str:
    from matplotlib.figure import Figure

    from cmkd.evaluation.report import figure_html, table_html

    sorting, en = section["sorting"], section["energy"]
    roles = list(sorting)
    routes = [r for r in policy.routes if any(r in s["purity"] for s in sorting.values())]
    fig = Figure(figsize=(max(6.0, 0.7 * len(routes) + 2), 3.4))
    ax = fig.subplots()
    w = 0.8 / len(roles)
    for k, role in enumerate(roles):
        vals = [sorting[role]["purity"].get(r, np.nan) for r in routes]
        ax.bar(np.arange(len(routes)) + (k - (len(roles) - 1) / 2) * w, vals, w, label=role)
    ax.set_xticks(range(len(routes)), [r.replace("recycle:", "") for r in routes], rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylim(min(0.5, float(np.nanmin([v for s in sorting.values() for v in s["purity"].values()])) - 0.02), 1.15)
    ax.set_ylabel("purity (test)")
    ax.legend(fontsize=7, ncol=len(roles), loc="upper center")
    ax.set_title("purity of each route (synthetic items)", fontsize=10)
    fig.tight_layout()
    parts = [
        "<h2>Recycling: sorting policy (synthetic data)</h2>",
        "<p>Routes from predicted material, quality and degradation, scored on the test items against the routes "
        "the true labels imply. Mis-sort costs are illustrative relative units (PVC in the PET stream: "
        f"{policy.cost('PVC', 'x', 'recycle:' + policy.cfg['streams']['PET']):g}).</p>",
        table_html(["model", "material accuracy", "material macro-F1", "route accuracy", "mis-sorted",
                    "mis-sort cost", "cost per item", "extra cost vs teacher", "PVC in PET stream"],
                   [[r, s["material_accuracy"], s["material_macro_f1"], s["route_accuracy"], s["missorted"],
                     s["missort_cost_total"], s["missort_cost_per_item"], s["extra_cost_vs_teacher"],
                     s["pvc_in_pet_stream"]] for r, s in sorting.items()]),
        figure_html(fig, "purity per route and model"),
        "<h3>Per-class material F1 (test)</h3>",
        table_html(["material", *roles], [[m, *[section["per_class_f1"][r][m] for r in roles]] for m in MATERIALS]),
        "<h2>Recycling: energy per item (illustrative power table, synthetic data)</h2>",
        table_html(["model", "sensors", "sensor power (W)", "runtime", "latency ms", "sensor J", "compute J",
                    "energy J / item"],
                   [[r, "+".join(v["sensors"]), v["sensor_w"], v["runtime"], v["latency_ms"], v["sensor_j"],
                     v["compute_j"], v["energy_j"]] for r, v in en["per_model"].items()]),
        f"<p>Acquisition {en['acquisition_s']:g} s per item, processor {en['compute_w']:g} W while inferring. "
        f"Teacher / deployed student ({en['deployed_student']}) energy per item: "
        f"<b>{en['ratio_teacher_over_student']:.1f}x</b>.</p>",
    ]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# cmkd predict --model OUT --input FOLDER: one route per PNG


def read_png(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] of an image file, converted to RGB and resized to the model's ``shape``."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    if c != 3:
        raise CmkdError(f"the model's image modality has {c} channels; PNG input needs 3 (RGB)")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CmkdError(f"{path}: not a readable PNG image ({str(e).splitlines()[0][:100] if str(e) else ''})"
                        ) from None
    return arr.transpose(2, 0, 1)


def predict_folder(model_dir: Path, folder: Path, int8: bool = False) -> dict:
    """Routes of every ``*.png`` in ``folder`` by the run in ``model_dir`` (its ONNX student, the student's sidecar
    and policy.json), without torch: :class:`cmkd.runtime.EdgeModel` and the numpy :class:`Policy`."""
    from cmkd.runtime import EdgeModel, read_card, sidecar_path

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise CmkdError(f"{folder}: no .png file in the folder")
    onnx = model_dir / ("student.int8.onnx" if int8 else "student.onnx")
    if not onnx.is_file():
        raise CmkdError(f"{onnx} not found (the --model folder must be the --out folder of `cmkd run recycling`; "
                        f"or run `cmkd export --model {model_dir}`)")
    card = read_card(sidecar_path(onnx))
    if card.get("recipe") != "recycling":
        raise CmkdError(f"a folder of PNGs is input for models of the recycling recipe; {model_dir} was trained by "
                        f"{card.get('recipe') or 'a YAML experiment'}: pass an .npz")
    pol_path = model_dir / "policy.json"
    try:
        saved = json.loads(pol_path.read_text())["policy"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CmkdError(f"{pol_path}: missing or damaged (re-run `cmkd run recycling`)") from None
    policy = Policy(saved)
    (spec,) = card["inputs"]
    name, shape = spec["name"], tuple(spec["shape"])
    x = np.stack([read_png(p, shape) for p in files]).astype(np.float32)
    got = EdgeModel(onnx).run({name: x})
    classes = {t["name"]: [c["id"] for c in t.get("classes", [])] for t in card["targets"]}
    mat_cls, deg_cls = np.asarray(classes["material"]), np.asarray(classes["degradation"])
    prob = got["material"]  # class probabilities (softmax inside the graph)
    mat = mat_cls[prob.argmax(1)]
    deg = deg_cls[got["degradation"].argmax(1)]
    quality = np.clip(got["quality"].reshape(-1), 0.0, 1.0)
    routes = policy.route(mat, quality, deg)
    items = [{"file": p.name, "material": MATERIALS[int(m)], "probability": round(float(pr.max()), 5),
              "quality": round(float(q), 4), "degradation": DEGRADATION[int(d)], "route": str(r)}
             for p, m, pr, q, d, r in zip(files, mat, prob, quality, deg, routes)]
    return {"model": str(onnx), "synthetic_training_data": True, "n": len(items), "items": items}
