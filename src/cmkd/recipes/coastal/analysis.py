"""The coastal recipe's analysis parts (:func:`cmkd.recipes.coastal.recipe.analyse` runs them): one sweep
condition scored, the student's forecast intervals, the resilience recommendations and tide tables written beside
the run, the acceptance checks, and the report section."""

from __future__ import annotations

from typing import Any

import numpy as np

from cmkd.config import Role
from cmkd.data.missing import PATTERNS
from cmkd.io import dumps
from cmkd.recipes.coastal import decisions
from cmkd.recipes.coastal.harmonic import fit as harmonic_fit
from cmkd.recipes.coastal.samples import hour_split, mixed_masks
from cmkd.recipes.coastal.scene import HORIZONS, CoastalScene


def score_condition(ctx: dict, d: Any, tag: str, rate: float, yl: np.ndarray) -> dict:
    """One sweep row: RMSE of the harmonic baseline and of both students on the test samples of ``d`` (the
    run's data with one sweep condition's failures), the students' interval coverage and the imputation error."""
    from cmkd.evaluation.metrics import predict, rmse
    from cmkd.evaluation.uncertainty import interval_metrics

    cfg, models, test, dev = ctx["cfg"], ctx["models"], ctx["test"], ctx["device"]
    row: dict = {"pattern": tag, "missing": rate}
    row["harmonic"] = rmse(yl, d.inputs["tide"][test][:, 1:])
    row["available_share"] = float(1 - np.isnan(d.inputs["sensors"][test]).mean())
    for role in (Role.BASELINE, Role.STUDENT):
        m = models[role]
        p = predict(m, d, test, device=dev)
        row[role] = rmse(yl, d.inputs["tide"][test][:, 1:] + p["surge/value"])
        if role in ctx["conformal"]:
            iv = interval_metrics(m, d, test, p, ctx["conformal"][role], cfg)
            row[f"{role}_coverage_90"], row[f"{role}_width_90"] = iv["coverage_90"], iv["width_90"]
        if role == Role.STUDENT and "imputed/sensors" in p:
            gap = np.isnan(d.inputs["sensors"][test][..., 0])
            enc = m.encoders["sensors"]
            mean, std = float(enc.mean[0, 0]), float(enc.std[0, 0])
            rec = p["imputed/sensors"][..., 0] * std + mean
            truth = d.inputs["sensors_full"][test][..., 0]
            row["imputation_rmse_water_level"] = rmse(truth[gap], rec[gap]) if gap.any() else float("nan")
    return row


def forecast_intervals(ctx: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The student's forecast level on the test samples and its 90% interval (split-conformal when calibrated,
    else the Gaussian head's), in metres: ``(mu, lo, hi)``, each (n_test, len(HORIZONS))."""
    from cmkd.evaluation.metrics import predict
    from cmkd.evaluation.uncertainty import intervals, uncertainty_groups

    cfg, data, test = ctx["cfg"], ctx["data"], ctx["test"]
    student = ctx["models"][Role.STUDENT]
    p = predict(student, data, test, device=ctx["device"])
    groups = uncertainty_groups(data, test, list(student.encoders), cfg)
    cal = ctx["conformal"].get(Role.STUDENT, {}).get("surge")
    tide_t = data.inputs["tide"][test][:, 1:]
    mu = tide_t + p["surge/value"]
    if cal:
        lo, hi = intervals(cal, p["surge/value"], p["surge/std"], groups)
    else:  # no calibration: the Gaussian head's 90% interval
        lo, hi = p["surge/value"] - 1.645 * p["surge/std"], p["surge/value"] + 1.645 * p["surge/std"]
    lo, hi = lo + tide_t, hi + tide_t
    return mu, lo, hi


def write_recommendations(out: Any, scene: CoastalScene, arrays0: dict, test: np.ndarray, mu: np.ndarray,
                           lo: np.ndarray, hi: np.ndarray, assets: list[dict]) -> list[dict]:
    """Recommendations from the last test forecast of every station, written to ``recommendations.json``."""
    from cmkd.io import atomic_write_text

    st, hr = arrays0["station"][test], arrays0["hour"][test]
    recs = []
    for s in np.unique(st):
        i = np.flatnonzero(st == s)[-1]
        recs += decisions.recommend(int(s), float(scene.hours[hr[i]]), mu[i], lo[i], hi[i],
                                    HORIZONS, assets)
    doc = {"synthetic": True, "generated_from": "cmkd coastal recipe (synthetic data), student model",
           "interval": "90% split-conformal", "assets": assets, "recommendations": recs}
    atomic_write_text(out / "recommendations.json", dumps(doc, indent=2))
    return recs


def write_tides(out: Any, scene: CoastalScene, seed: int, block_days: int, assets: list[dict]) -> None:
    """``coastal_tides.json``: every station's harmonic fit on its available (mixed-failure) pre-test readings."""
    from cmkd.recipes.coastal.forecast import save_tides

    observed = np.where(mixed_masks(scene, np.random.default_rng(seed + 104_729)), np.nan, scene.sensors)
    fit = hour_split(scene.level.shape[1], block_days) != 2
    save_tides({s: harmonic_fit(scene.hours[fit], observed[s, fit, 0]) for s in range(scene.level.shape[0])},
               assets, out / "coastal_tides.json")


def acceptance(res: dict) -> dict:
    """The issue's checks on this run."""
    rows = {(r["pattern"], r["missing"]): r for r in res["sweep"]}
    if not rows:
        return {}
    full = next(r for r in res["sweep"] if r["missing"] == 0.0)
    storm = rows.get(("storm", 0.8))
    cov = [r.get("student_coverage_90") for r in res["sweep"] if r.get("student_coverage_90") is not None]
    out = {"student_rmse_complete": full[Role.STUDENT], "coverage_min": min(cov) if cov else None,
           "coverage_max": max(cov) if cov else None}
    if storm:
        out.update({"student_rmse_storm80": storm[Role.STUDENT], "ratio_storm80_to_complete":
                    storm[Role.STUDENT] / full[Role.STUDENT], "baseline_rmse_storm80": storm[Role.BASELINE],
                    "harmonic_rmse_storm80": storm["harmonic"]})
    return out


def section_html(res: dict, recs: list[dict], figure_html, table_html, escape) -> str:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ["<h2>Coastal: sparsity sweep (synthetic data)</h2>",
             "<p>Every model scored on the test period with sensors failing in each pattern at each missing rate. "
             f"The teacher, which sees complete sensors, scores RMSE {res['teacher_rmse_complete_sensors']:.4f} m."
             "</p>"]
    sweep = res["sweep"]
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        full = next(r for r in sweep if r["missing"] == 0.0)
        styles = {"random": ":", "bursty": "--", "storm": "-"}
        for pat in PATTERNS:
            rows = [full] + [r for r in sweep if r["pattern"] == pat and r["missing"] > 0]
            x = [100 * r["missing"] for r in rows]
            for role, col in ((Role.STUDENT, "C0"), (Role.BASELINE, "C1"), ("harmonic", "C2")):
                axes[0].plot(x, [r[role] for r in rows], styles[pat], color=col, marker="o", ms=3,
                             label=f"{role} ({pat})")
            if "student_coverage_90" in full:
                axes[1].plot(x, [r["student_coverage_90"] for r in rows], styles[pat], color="C0", marker="o",
                             ms=3, label=f"student ({pat})")
        axes[0].set(xlabel="sensor readings missing (%)", ylabel="RMSE (m), mean of +6 h and +24 h",
                    title="Forecast error vs sparsity")
        axes[0].legend(fontsize=6, ncol=2, title="colour: model; line: failure pattern", title_fontsize=6)
        axes[1].axhspan(0.87, 0.93, color="0.9")
        axes[1].axhline(0.9, color="k", lw=0.8)
        cov = [r["student_coverage_90"] for r in sweep if isinstance(r.get("student_coverage_90"), float)]
        top = max([1.0, *cov]) + 0.02  # a margin: coverage 1.0 must not sit on the frame
        axes[1].set(xlabel="sensor readings missing (%)", ylabel="coverage of 90% intervals",
                    ylim=(min([0.7, *cov]) - 0.02, top), title="Calibrated interval coverage")
        axes[1].legend(fontsize=7)
        parts.append(figure_html(fig, "RMSE and coverage against missing rate"))
        plt.close(fig)
        cols = ["pattern", "missing", "available_share", "harmonic", Role.BASELINE, Role.STUDENT,
                "student_coverage_90", "student_width_90", "imputation_rmse_water_level"]
        parts.append(table_html(cols, [[r.get(c) for c in cols] for r in sweep]))
    acc = res.get("acceptance") or {}
    if acc:
        parts.append("<p>" + escape(", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                                              for k, v in acc.items())) + "</p>")
    parts.append("<h2>Coastal: resilience recommendations (synthetic data)</h2>")
    parts.append("<p>The last forecast of each station in the test period, against each asset (full list in "
                 "recommendations.json; rules in <code>cmkd.recipes.coastal.decisions</code>). Road warnings over "
                 "the test period:</p>")
    skill = res.get("warning_skill_road") or {}
    cols = list(dict.fromkeys(k for v in skill.values() for k in v))
    parts.append(table_html(["horizon", *cols], [[h, *[v.get(c) for c in cols]] for h, v in skill.items()]))
    rows = [[r["station"], r["asset"], f"+{r['horizon_h']} h", r["risk"], r["evidence"]["predicted_level_m"],
             str(r["evidence"]["interval_90_m"]), r["evidence"]["exceedance_probability"], r["action"]]
            for r in recs]
    parts.append(table_html(["station", "asset", "horizon", "risk", "level (m)", "90% interval", "P(exceed)",
                             "action"], rows))
    return "".join(parts)
