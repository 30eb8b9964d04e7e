"""Survey outputs of the ``minerals`` recipe: a carbonation estimate with its uncertainty, and a deployment table.

**Carbonation** (ILLUSTRATIVE, on SYNTHETIC scenes): a pixel's CO2 uptake is estimated as
``area x capacity x sum_c p_c k_c``, with ``p_c`` the model's class probabilities and ``k_c`` a carbonation
coefficient per mineral (relative reactivity with CO2, 0-1; :data:`COEFFICIENTS`, configurable with
``options.carbonation``). Defaults: olivine 0.85, wollastonite 0.92, serpentine 0.45, basalt 0.28 (from the issue
brief); pyroxene 0.35 (a Mg/Ca chain silicate, slower than olivine), carbonate 0 (already carbonated), clay 0.05,
regolith 0.10 (weathered fines) are plain assumptions. ``capacity`` (``options.capacity_t_per_m2``, 0.01 t CO2 per
m^2) and ``area`` (``options.pixel_area_m2``, 100 m^2, a 10 m ground sample) turn it into tonnes. None of these
values is a real-world figure; they make the arithmetic concrete.

Uncertainty: the class probabilities make each pixel's coefficient a categorical random variable, with variance
``sum_c p_c k_c^2 - (sum_c p_c k_c)^2``; the 90% interval of a pixel is ``mean +- 1.645 sd`` and of the total
``sum mean +- 1.645 sqrt(sum var)`` (pixels independent, an assumption that makes the total's interval narrow).
The generator knows each pixel's true endmember fractions ``f_c``, so the true uptake ``area x capacity x
sum_c f_c k_c`` scores the estimate (error of the total, pixel-level interval coverage).
"""

from __future__ import annotations

import json

import numpy as np

from .minerals_scene import CLASS_NAMES, generate

COEFFICIENTS = {"olivine": 0.85, "pyroxene": 0.35, "serpentine": 0.45, "basalt": 0.28, "wollastonite": 0.92,
                "carbonate": 0.0, "clay": 0.05, "regolith": 0.10}
Z90 = 1.6449


def carbonation(probs: np.ndarray, fractions: np.ndarray, coef: np.ndarray, scale: float) -> dict:
    """Estimate, interval and truth of the uptake of the pixels (rows of ``probs`` and ``fractions``)."""
    mean_k = probs @ coef
    var_k = np.clip(probs @ coef**2 - mean_k**2, 0.0, None)
    est, sd = scale * mean_k, scale * np.sqrt(var_k)
    truth = scale * (fractions @ coef)
    total, total_sd, true_total = float(est.sum()), float(np.sqrt((sd**2).sum())), float(truth.sum())
    lo, hi = total - Z90 * total_sd, total + Z90 * total_sd
    return {"estimate_t": total, "interval_90_t": [lo, hi], "true_t": true_total,
            "relative_error": (total - true_total) / true_total if true_total else float("nan"),
            "interval_covers_truth": bool(lo <= true_total <= hi),
            "pixel_interval_coverage": float(np.mean(np.abs(truth - est) <= Z90 * sd + 1e-12)),
            "pixel_rmse_t": float(np.sqrt(np.mean((truth - est) ** 2))), "_est": est, "_truth": truth}


def analyse(ctx: dict) -> dict:
    """Carbonation estimates of the teacher and the students on the test pixels, and the deployment table."""
    from ..evaluate import predict

    cfg, data, models, test, out = ctx["cfg"], ctx["data"], ctx["models"], ctx["test"], ctx["out"]
    opts = cfg.options or {}
    table = {**COEFFICIENTS, **(opts.get("carbonation") or {})}
    unknown = sorted(set(table) - set(CLASS_NAMES))
    if unknown:
        from ..errors import CmkdError

        raise CmkdError(f"options.carbonation: unknown mineral(s) {unknown}; valid: {', '.join(CLASS_NAMES)}")
    coef = np.array([float(table[c]) for c in CLASS_NAMES])
    scale = float(opts.get("pixel_area_m2", 100.0)) * float(opts.get("capacity_t_per_m2", 0.01))
    scene = None
    for size in ([int(opts["size"])] if "size" in opts else [96, 64]):  # 64: a quick run's scene
        scene = generate(seed=int(cfg.seed), size=size, site=int(opts.get("site", 0)), return_fractions=True)
        if len(scene["mineral"]) == data.n:
            break
    if scene is None or len(scene["mineral"]) != data.n:
        return {"metrics": {}, "html": []}
    fractions = scene["fractions"][test]
    truth = scale * (fractions @ coef)
    carb, maps = {}, {}
    for role, model in models.items():
        mods = list(model.encoders)
        idx = data.all_present(mods, test)
        if len(idx) != len(test):
            continue
        logits = predict(model, data, test, device=ctx["device"])["mineral/logits"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        res = carbonation(p, fractions, coef, scale)
        maps[role] = res.pop("_est")
        res.pop("_truth")
        carb[role] = res
    deployment = _deployment(ctx["metrics"])
    section = {"synthetic": True, "coefficients": table, "t_per_pixel_at_full_coefficient": scale,
               "carbonation": carb, "deployment": deployment}
    from ..pipeline import atomic_write_text

    atomic_write_text(out / "survey.json", json.dumps(section, indent=1))
    html = _html(section, scene["coord_row"][test], scene["coord_col"][test], truth, maps)
    return {"metrics": {"survey": section}, "html": [html]}


def _deployment(metrics: dict) -> list[dict]:
    """What a survey team weighs: accuracy, sensor power, inference time, model size, preservation."""
    models, costs = metrics["models"], metrics.get("costs", {})
    t = models["teacher"]
    rows = []
    for role, m in models.items():
        power = float(sum(costs.get(x, 0.0) for x in m["modalities"]))
        rows.append({"model": role, "modalities": m["modalities"], "accuracy": m["metrics"].get("accuracy"),
                     "scored_on": m.get("scored_on", "test"), "sensor_power_w": power,
                     "latency_ms": m["latency_ms"], "size_bytes": 4 * int(m["params"]),
                     "accuracy_preservation": (m["metrics"].get("accuracy", 0) / t["metrics"]["accuracy"]
                                               if t["metrics"].get("accuracy") else None),
                     "power_reduction": 1 - power / t["cost"] if t.get("cost") else None,
                     "speedup_vs_teacher": t["latency_ms"] / m["latency_ms"] if m["latency_ms"] else None})
    ex = metrics.get("export") or {}
    if ex.get("int8_metrics"):
        st = models["student"]
        power = float(sum(costs.get(x, 0.0) for x in st["modalities"]))
        acc = ex["int8_metrics"].get("accuracy")
        rows.append({"model": "student INT8 (ONNX Runtime)", "modalities": st["modalities"], "accuracy": acc,
                     "scored_on": "test", "sensor_power_w": power, "latency_ms": ex["int8_latency_ms"],
                     "size_bytes": int(ex["int8_bytes"]),
                     "accuracy_preservation": acc / t["metrics"]["accuracy"] if acc is not None else None,
                     "power_reduction": 1 - power / t["cost"] if t.get("cost") else None,
                     "speedup_vs_teacher": t["latency_ms"] / ex["int8_latency_ms"]})
    return rows


def _html(section: dict, rows: np.ndarray, cols: np.ndarray, truth: np.ndarray, maps: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report import figure_html, table_html

    parts = ["<h2>Survey: deployment (synthetic data)</h2>",
             table_html(["model", "accuracy", "sensor power (W)", "latency ms", "size (bytes)", "accuracy / teacher",
                         "power saved", "speed-up"],
                        [[r["model"], r["accuracy"], r["sensor_power_w"], r["latency_ms"], r["size_bytes"],
                          r["accuracy_preservation"], r["power_reduction"], r["speedup_vs_teacher"]]
                         for r in section["deployment"]]),
             "<h2>Survey: carbonation estimate (illustrative coefficients, synthetic data)</h2>",
             table_html(["model", "estimate (t)", "90% interval (t)", "true (t)", "relative error",
                         "interval covers truth", "pixel interval coverage"],
                        [[k, v["estimate_t"], str([round(x, 2) for x in v["interval_90_t"]]), v["true_t"],
                          v["relative_error"], str(v["interval_covers_truth"]), v["pixel_interval_coverage"]]
                         for k, v in section["carbonation"].items()])]
    if maps:
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        panels = [("true uptake", truth)] + [(f"{k} estimate", v) for k, v in maps.items()]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
        vmax = float(max(np.nanmax(v) for _, v in panels))
        for ax, (title, values) in zip(np.atleast_1d(axes), panels):
            grid = np.full(shape, np.nan)
            grid[rows, cols] = values
            im = ax.imshow(grid, vmin=0, vmax=vmax, cmap="viridis", interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=np.atleast_1d(axes).tolist(), shrink=0.8, label="t CO2 per pixel (illustrative)")
        parts.append(figure_html(fig, "carbonation maps of the test pixels"))
        plt.close(fig)
    return "".join(parts)
