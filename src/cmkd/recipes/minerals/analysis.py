"""Survey outputs of the ``minerals`` recipe: a carbonation estimate with its uncertainty, and a deployment table.

**Carbonation** (ILLUSTRATIVE, on SYNTHETIC scenes): a pixel's CO2 uptake is estimated as
``area x capacity x sum_c p_c k_c``, with ``p_c`` the model's class probabilities and ``k_c`` a carbonation
coefficient per mineral (relative reactivity with CO2, 0-1; :data:`COEFFICIENTS`, configurable with
``options.carbonation``). Defaults: olivine 0.85, wollastonite 0.92, serpentine 0.45, basalt 0.28 (from the issue
brief); pyroxene 0.35 (a Mg/Ca chain silicate, slower than olivine), carbonate 0 (already carbonated), clay 0.05,
regolith 0.10 (weathered fines) are plain assumptions. ``capacity`` (``options.capacity_t_per_m2``, 0.01 t CO2 per
m^2) and ``area`` (``options.pixel_area_m2``, 100 m^2, a 10 m ground sample) turn it into tonnes. None of these
values is a real-world figure; they make the arithmetic concrete.

Uncertainty, uncalibrated (``uncalibrated`` in the outputs): the class probabilities make each pixel's coefficient a
categorical random variable, with variance ``sum_c p_c k_c^2 - (sum_c p_c k_c)^2``; the 90% interval of a pixel is
``mean +- 1.645 sd`` and of the total ``sum mean +- 1.645 sqrt(sum var)``. Pixels are not independent and the
probabilities are not calibrated, so over thousands of pixels this interval is far too narrow (it missed the truth
in every seed of benchmarks/minerals_workflow.md), and the nominal coefficients ignore sub-pixel mixing and the
model's confusions, which biases the total.

Calibrated (the headline interval when the scene has validation pixels): the validation pixels, whose true uptake
a survey would know from its ground-truth samples (here: the generator's fractions), calibrate the interval
(:func:`calibrated_carbonation`). Their residuals ``u_i - p_i . k`` (``u_i`` the true uptake per unit scale) are
summed in blocks of rows (a third of the validation rows each: the errors are spatially correlated over tens of
rows, so the variance of a block sum grows about 10x faster than independent pixels would give); with ``S_g`` and
``n_g`` a block's residual sum and size and ``G`` blocks, ``s2 = sum_g S_g^2 / n_g / G`` (about 0, so a bias of
the estimate widens the interval), and the total over ``N`` pixels gets ``+- t_{0.95, G} sqrt(s2 N)``; each pixel
gets the split-conformal 90% quantile of the absolute validation residuals. ``options.carbonation_calibration:
class`` also replaces the nominal coefficients by effective ones per predicted class, ``k'`` minimising
``sum_i (u_i - p_i . k')^2 + 20 sum_c (k'_c - k_c)^2`` (absorbing sub-pixel mixing and per-class confusion), with
cross-fitted block residuals and ``+- t_{0.95, G-1} sqrt(s2 N (1 + N / N_cal))``. It is off by default: on
validation half-splits of seeds 0-2 (5 models each, the test split never used) it did not lower the error of the
total (mean |relative error| 0.16 with ridge 20, 0.145 with ridge 100, 0.148 uncalibrated): the total's error
there is mostly spatially correlated misclassification, not a systematic bias. The test pixels are never used
to fit anything.
The generator knows each pixel's true endmember fractions ``f_c``, so the true uptake ``area x capacity x
sum_c f_c k_c`` scores the estimate (error of the total, interval coverage).
"""

from __future__ import annotations

import numpy as np

from cmkd.io import dumps
from cmkd.recipes.minerals.scene import CLASS_NAMES, generate

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


def fit_effective_coefficients(probs: np.ndarray, uptake: np.ndarray, coef: np.ndarray, ridge: float = 20.0
                               ) -> np.ndarray:
    """Effective coefficient per predicted class, ``argmin_k ||probs k - uptake||^2 + ridge ||k - coef||^2``,
    clipped to [0, 1] (``uptake``: true uptake per unit scale of the calibration pixels)."""
    a = probs.T @ probs + ridge * np.eye(len(coef))
    return np.clip(np.linalg.solve(a, probs.T @ uptake + ridge * coef), 0.0, 1.0)


CALIBRATION_METHODS = ("none", "class")


def calibrated_carbonation(probs: np.ndarray, fractions: np.ndarray, coef: np.ndarray, scale: float,
                           cal_probs: np.ndarray, cal_fractions: np.ndarray, cal_rows: np.ndarray,
                           method: str = "none", block_rows: int | None = None, ridge: float = 20.0) -> dict:
    """Estimate, 90% intervals (total and per pixel) and truth of the uptake of the pixels ``probs``, the
    intervals calibrated on pixels with known fractions (see the module docstring).

    ``cal_rows`` (the calibration pixels' scene rows) define blocks of ``block_rows`` rows (default: a third of
    their row span, the largest giving 3 blocks, since the errors are correlated over tens of rows). ``method``:
    ``none`` keeps the nominal coefficients (the estimate is :func:`carbonation`'s) and calibrates the interval
    only; ``class`` also fits effective coefficients per predicted class.
    """
    from scipy.stats import t as student_t

    from cmkd.errors import CmkdError

    if method not in CALIBRATION_METHODS:
        raise CmkdError(f"carbonation calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                        f"got '{method}'")
    if len(cal_probs) == 0 or len(cal_probs) != len(cal_fractions) or len(cal_rows) != len(cal_probs):
        raise CmkdError("carbonation calibration needs calibration pixels with probabilities, fractions and rows")
    u_cal = cal_fractions @ coef
    cal_rows = np.asarray(cal_rows)
    if block_rows is None:
        block_rows = max(1, -(-(int(cal_rows.max()) - int(cal_rows.min()) + 1) // 3))
    blocks = (cal_rows - cal_rows.min()) // block_rows
    ids = np.unique(blocks)
    if len(ids) < 3:
        raise CmkdError(f"carbonation calibration needs at least 3 blocks of {block_rows} rows, got {len(ids)}")
    n, n_cal = len(probs), len(u_cal)
    if method == "class":
        k_eff = fit_effective_coefficients(cal_probs, u_cal, coef, ridge)
        resid = np.empty(n_cal)
        for g in ids:  # cross-fitted: each block scored by k' fitted on the other blocks
            out = blocks == g
            resid[out] = u_cal[out] - cal_probs[out] @ fit_effective_coefficients(cal_probs[~out], u_cal[~out],
                                                                                  coef, ridge)
    else:
        k_eff = np.asarray(coef, dtype=float)
        resid = u_cal - cal_probs @ k_eff
    sums = np.array([resid[blocks == g].sum() for g in ids])
    sizes = np.array([(blocks == g).sum() for g in ids])
    if method == "class":  # centred, G - 1 degrees of freedom; + the error of k' fitted on n_cal pixels
        m = sums.sum() / sizes.sum()
        s2 = float(np.sum((sums - sizes * m) ** 2 / sizes) / (len(ids) - 1))
        half = float(student_t.ppf(0.95, len(ids) - 1) * np.sqrt(s2 * n * (1 + n / n_cal))) * scale
    else:  # about 0, not the mean: a bias of the nominal coefficients widens the interval
        s2 = float(np.sum(sums**2 / sizes) / len(ids))
        half = float(student_t.ppf(0.95, len(ids)) * np.sqrt(s2 * n)) * scale
    q = float(np.quantile(np.abs(resid), min(1.0, 0.9 * (1 + 1 / n_cal)))) * scale  # split-conformal, per pixel
    est = scale * (probs @ k_eff)
    truth = scale * (fractions @ coef)
    total, true_total = float(est.sum()), float(truth.sum())
    lo, hi = total - half, total + half
    return {"estimate_t": total, "interval_90_t": [lo, hi], "true_t": true_total,
            "relative_error": (total - true_total) / true_total if true_total else float("nan"),
            "interval_covers_truth": bool(lo <= true_total <= hi),
            "pixel_interval_coverage": float(np.mean(np.abs(truth - est) <= q + 1e-12)),
            "pixel_rmse_t": float(np.sqrt(np.mean((truth - est) ** 2))), "method": method,
            "coefficients_used": [float(x) for x in k_eff], "n_calibration": int(n_cal),
            "calibration_blocks": int(len(ids)), "_est": est, "_truth": truth}


def survey_options(opts: dict) -> tuple[dict[str, float], str]:
    """The carbonation coefficient table and calibration method of a run's ``options``, checked (the recipe's
    ``load`` calls this too, so a bad value stops the run before any training)."""
    from cmkd.errors import CmkdError

    table = {**COEFFICIENTS, **(opts.get("carbonation") or {})}
    unknown = sorted(set(table) - set(CLASS_NAMES))
    if unknown:
        raise CmkdError(f"options.carbonation: unknown mineral(s) {unknown}; valid: {', '.join(CLASS_NAMES)}")
    method = str(opts.get("carbonation_calibration", "none"))
    if method not in CALIBRATION_METHODS:
        raise CmkdError(f"options.carbonation_calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
                        f"got '{method}'")
    return table, method


def analyse(ctx: dict) -> dict:
    """Carbonation estimates of the teacher and the students on the test pixels, and the deployment table."""
    from cmkd.errors import CmkdError
    from cmkd.evaluation.metrics import predict

    cfg, data, models, test, out = ctx["cfg"], ctx["data"], ctx["models"], ctx["test"], ctx["out"]
    from cmkd.recipes.base import read_options
    from cmkd.recipes.minerals.options import OPTIONS

    given = cfg.options or {}
    opts = read_options(OPTIONS, given, recipe="minerals")
    table, method = survey_options(opts)
    coef = np.array([float(table[c]) for c in CLASS_NAMES])
    scale = float(opts["pixel_area_m2"]) * float(opts["capacity_t_per_m2"])
    scene = None
    for size in ([int(given["size"])] if "size" in given else [96, 64]):  # 64: a quick run's scene
        scene = generate(seed=int(cfg.seed), size=size, site=int(opts["site"]), return_fractions=True)
        if len(scene["mineral"]) == data.n:
            break
    if scene is None or len(scene["mineral"]) != data.n:
        return {"metrics": {}, "html": []}
    fractions = scene["fractions"][test]
    truth = scale * (fractions @ coef)
    val = data.indices(1)
    carb, maps = {}, {}
    for role, model in models.items():
        mods = list(model.encoders)
        idx = data.all_present(mods, test)
        if len(idx) != len(test):
            continue
        cal = data.all_present(mods, val)
        p = _probs(predict(model, data, test, device=ctx["device"])["mineral/logits"])
        res = carbonation(p, fractions, coef, scale)
        res.pop("_truth")
        est = res.pop("_est")
        if len(cal):
            pc = _probs(predict(model, data, cal, device=ctx["device"])["mineral/logits"])
            try:
                cres = calibrated_carbonation(p, fractions, coef, scale, pc, scene["fractions"][cal],
                                              scene["coord_row"][cal], method=method)
            except CmkdError as e:  # too few validation rows: keep the uncalibrated figures, say why
                res["calibration_skipped"] = str(e)
            else:
                cres.pop("_truth")
                est = cres.pop("_est")
                res = {**cres, "calibrated_on": "validation pixels", "uncalibrated": res}
        maps[role] = est
        carb[role] = res
    deployment = _deployment(ctx["metrics"])
    section = {"synthetic": True, "coefficients": table, "t_per_pixel_at_full_coefficient": scale,
               "carbonation": carb, "deployment": deployment}
    from cmkd.io import atomic_write_text

    atomic_write_text(out / "survey.json", dumps(section, indent=1))
    html = _html(section, scene["coord_row"][test], scene["coord_col"][test], truth, maps)
    return {"metrics": {"survey": section}, "html": [html]}


def _probs(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _deployment(metrics: dict) -> list[dict]:
    """What a survey team weighs: accuracy, sensor power, inference time, model size, preservation."""
    models, costs = metrics["models"], metrics.get("costs", {})
    t = models["teacher"]
    ex = metrics.get("export") or {}
    rows = []
    for role, m in models.items():
        # the student's size is its exported FP32 ONNX file (comparable with the INT8 file); others params x 4 B
        file_size = role == "student" and isinstance(ex.get("onnx_bytes"), int)
        power = float(sum(costs.get(x, 0.0) for x in m["modalities"]))
        rows.append({"model": role, "modalities": m["modalities"], "accuracy": m["metrics"].get("accuracy"),
                     "scored_on": m.get("scored_on", "test"), "sensor_power_w": power,
                     "latency_ms": m["latency_ms"],
                     "size_bytes": int(ex["onnx_bytes"]) if file_size else 4 * int(m["params"]),
                     "size_from": "ONNX FP32 file" if file_size else "params x 4 B",
                     "accuracy_preservation": (m["metrics"].get("accuracy", 0) / t["metrics"]["accuracy"]
                                               if t["metrics"].get("accuracy") else None),
                     "power_reduction": 1 - power / t["cost"] if t.get("cost") else None,
                     "speedup_vs_teacher": t["latency_ms"] / m["latency_ms"] if m["latency_ms"] else None})
    if ex.get("int8_metrics"):
        st = models["student"]
        power = float(sum(costs.get(x, 0.0) for x in st["modalities"]))
        acc = ex["int8_metrics"].get("accuracy")
        rows.append({"model": "student INT8 (ONNX Runtime)", "modalities": st["modalities"], "accuracy": acc,
                     "scored_on": "test", "sensor_power_w": power, "latency_ms": ex["int8_latency_ms"],
                     "size_bytes": int(ex["int8_bytes"]), "size_from": "ONNX INT8 file",
                     "accuracy_preservation": acc / t["metrics"]["accuracy"] if acc is not None else None,
                     "power_reduction": 1 - power / t["cost"] if t.get("cost") else None,
                     "speedup_vs_teacher": t["latency_ms"] / ex["int8_latency_ms"]})
    return rows


def _html(section: dict, rows: np.ndarray, cols: np.ndarray, truth: np.ndarray, maps: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cmkd.evaluation.report import figure_html, table_html

    parts = ["<h2>Survey: deployment (synthetic data)</h2>",
             table_html(["model", "accuracy", "sensor power (W)", "latency ms", "size (bytes)", "accuracy / teacher",
                         "power saved", "speed-up"],
                        [[r["model"], r["accuracy"], r["sensor_power_w"], r["latency_ms"], r["size_bytes"],
                          r["accuracy_preservation"], r["power_reduction"], r["speedup_vs_teacher"]]
                         for r in section["deployment"]]),
             "<h2>Survey: carbonation estimate (illustrative coefficients, synthetic data)</h2>",
             "<p>Interval calibrated on the validation pixels' known uptake (spatially correlated errors, "
             "blocks of rows; see cmkd.recipes.minerals.analysis); the uncalibrated estimate (nominal "
             "coefficients, independent-pixel interval) for comparison.</p>",
             table_html(["model", "estimate (t)", "90% interval (t)", "true (t)", "relative error",
                         "interval covers truth", "pixel interval coverage", "uncalibrated estimate (t)",
                         "uncalibrated interval (t)", "uncalibrated covers truth"],
                        [[k, v["estimate_t"], str([round(x, 2) for x in v["interval_90_t"]]), v["true_t"],
                          v["relative_error"], str(v["interval_covers_truth"]), v["pixel_interval_coverage"],
                          u["estimate_t"], str([round(x, 2) for x in u["interval_90_t"]]),
                          str(u["interval_covers_truth"])]
                         for k, v in section["carbonation"].items() for u in [v.get("uncalibrated", v)]])]
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
        parts.append("<p class='note'>Carbonation maps: only the test pixels are drawn (the scene's held-out "
                     f"area, {len(rows):,} pixels); training and validation pixels are left blank.</p>")
        parts.append(figure_html(fig, "carbonation maps of the test pixels"))
        plt.close(fig)
    return "".join(parts)
