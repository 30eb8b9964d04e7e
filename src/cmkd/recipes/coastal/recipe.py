"""Recipe ``coastal``: SYNTHETIC sea-level forecasting for coastal resilience from sparse, storm-damaged gauges.

Storms destroy ground sensors, so gauge records are mostly gaps, often exactly during the extremes that matter.
The teacher sees every sensor channel without gaps plus the daily satellite patches; the student sees the
sparse sensors (and the satellite when a cloud-free pass exists) and must forecast the water level 6 h and 24 h
ahead with calibrated 90% intervals, plus the probability of a flood within 24 h. All data are simulated by
:mod:`cmkd.recipes.coastal.scene` and labelled synthetic everywhere.

Samples: one per station every ``options.stride`` hours (default 6). Modalities:

- ``sensors`` (sequence, 48 h x 8 channels): the gauge station's readings with failures applied (NaN);
- ``sensors_full`` (sequence): the same window without failures (the teacher's privileged view);
- ``satellite`` (image, 3 bands x 8 x 8): the latest daily pass (cloudy pixels NaN; absent without a pass);
- ``tide`` (vector, 3): the harmonic tide prediction at t, t+6 h, t+24 h from a least-squares fit of M2, S2, N2, K1,
  O1 + trend on the station's AVAILABLE water-level readings before the test period (what a harbour master has).

Failures of the training/validation/calibration data: every 30-day block of every station draws a pattern
(random, bursty, storm-correlated; :mod:`cmkd.data.missing`) and a missing rate ~ U(0, 0.95), plus 3% independent
channel failures, so models meet every sparsity level. The test data default to the same mix; the sparsity sweep
(:func:`analyse`) re-applies each pattern at 0/30/60/80/90% missing to the test period and scores every model,
the classic harmonic baseline and the calibrated intervals at each level.

Targets: ``surge`` (m, +6 h and +24 h): the water level minus the ``tide`` input's harmonic prediction, so models
learn the departure from the tide table (storm surge plus the harmonic fit's error) and the forecast level is
``tide + surge``; its error equals the level's error, so RMSEs are level RMSEs. Levels come complete from the
quality-controlled archive. ``flood``: 1 when the level exceeds the station's flood threshold (the 99th
percentile of pre-test hours) within the next 24 h. The classic harmonic baseline predicts a surge of 0.
Split by time in blocks of ``options.block_days`` (15 days) cycling through train, val, test, calibration, train,
train, test, train, train, train (60% / 10% / 20% / 10% of hours; split 3 = calibration for conformal intervals),
so every part sees every season; a sample's window and targets lie inside one block, so no reading is shared
across parts. The harmonic tide of the ``tide`` input is fitted on the available readings of the non-test
hours. Why 15 days and not 30: split-conformal coverage holds when calibration and test samples are
exchangeable, and storms are rare and long, so with 30-day blocks the calibration split held 3 blocks (a few
storms) and on some seeds its storms were much weaker than the test blocks' (90% intervals covered 0.79-0.83 at
storm-correlated 80-90% missing on development seeds 4 and 5); 15-day blocks give 5 calibration and 10 test
blocks spread over the two years (development seeds 3-5: coverage 0.888-0.932 over the whole sweep, against
0.79-0.96 with 30-day blocks), at the price of 3% fewer training samples (a sample's 72 h must fit in one block).
Coverage is marginal over the patterns the calibration meets: at equal availability a storm-correlated gap hides
the extremes, so storm-correlated sweep conditions cover less than random ones (development seeds 6-7: 0.86-0.89
at storm 80-90%, 0.89-0.93 random). Calibration groups by hours since the last water-level reading (alone or
crossed with the availability bands) and validation blocks added to the calibration set did not close the gap on
development seeds 3-7 (post hoc on the same models), nor did availability crossed with the satellite pass or with
terciles of the predicted sigma (seeds 6-7), so the groups stay the availability bands.
A longer simulation (``options.days`` 1095, 50% more storms in every split) did not steady the coverage either
(development seeds 3-6: per-seed ranges 0.91-0.94, 0.80-0.91, 0.88-0.93, 0.93-0.97), so ``days`` stays 730.

Options (``--set options.KEY=VALUE``): ``stations`` (6; quick 3), ``days`` (730; quick 120), ``stride`` (6 h),
``block_days`` (15; quick 5), ``test_pattern`` (``mixed`` | random | bursty | storm) and ``test_missing`` (rate,
with a single pattern), ``sweep`` (true), ``calibrate_sweep`` (true: the calibration samples are repeated under
every sweep condition), ``assets`` (list of {name, kind: road|pump_station|sea_wall, station, elevation_m};
default: three per station relative to its flood threshold, see
:func:`cmkd.recipes.coastal.decisions.default_assets`).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import numpy as np

from cmkd.data.missing import PATTERNS, channel_masks, make_mask
from cmkd.errors import CmkdError
from cmkd.io import dumps
from cmkd.recipes.base import Recipe, options_model, read_options, register_recipe
from cmkd.recipes.coastal import decisions
from cmkd.recipes.coastal.harmonic import fit as harmonic_fit
from cmkd.recipes.coastal.scene import BANDS, CHANNELS, HORIZONS, WINDOW, CoastalScene, generate

DESCRIPTION = "Coastal sea level from sparse storm-damaged gauges: satellite+complete-sensor teacher -> sparse student"
SYNTHETIC = True
LEVELS = (0.0, 0.3, 0.6, 0.8, 0.9)
BLOCK_H = 30 * 24  # failure-pattern blocks of the mixed masks (not the split blocks)
BLOCK_DAYS = 15  # default ``options.block_days`` (split blocks)
# split code of consecutive blocks of ``options.block_days``, repeating: 6 train, 1 val, 2 test, 1 calibration
CYCLE = (0, 1, 2, 3, 0, 0, 2, 0, 0, 0)


# options (a full run's defaults): stations, days of the scene, sample stride (h), split block length (days), the
# failures on the test hours (mixed, or one pattern at test_missing), the sparsity sweep, the calibration samples
# repeated per sweep condition, the assets of the decision table (None: the built-in ones)
OPTIONS = options_model("coastal", stations=(int, 6), days=(int, 730), stride=(int, 6), block_days=(int, BLOCK_DAYS),
                        test_pattern=(str, "mixed"), test_missing=(float, 0.8), sweep=(bool, True),
                        calibrate_sweep=(bool, True), assets=(Any, None))
QUICK = {"stations": 3, "days": 120, "block_days": 5}  # a quick run's differences


def default_config(quick: bool = False) -> dict:
    """Teacher: complete sensors + satellite + tide; student: sparse sensors + satellite + tide."""
    return {
        "name": "coastal-synthetic", "seed": 0,
        "data": {"path": None,
                 "modalities": {"sensors": {"kind": "sequence", "cost": 5.0, "channels": list(CHANNELS)},
                                "sensors_full": {"kind": "sequence", "cost": 60.0, "channels": list(CHANNELS)},
                                "satellite": {"kind": "image", "cost": 0.0},
                                "tide": {"kind": "vector", "cost": 0.0}},
                 "targets": {"surge": {"kind": "regression", "units": "m", "columns": ["+6 h", "+24 h"]},
                             "flood": {"kind": "classification"}},
                 "split": "split", "class_names": ["no flood", "flood"]},
        "teacher": {"modalities": ["sensors_full", "satellite", "tide"], "width": 64, "epochs": 3 if quick else 30,
                    "batch_size": 128, "lr": 2e-3, "patience": 6},
        "student": {"modalities": ["sensors", "satellite", "tide"], "width": 64, "epochs": 3 if quick else 30,
                    "batch_size": 128, "lr": 2e-3, "patience": 6, "modality_dropout": 0.2},
        # relation 0.5 (chosen with 30-day split blocks): val RMSE (storm-80 / mixed, mean seeds 0-2) 0.1164/0.0962
        # vs baseline 0.1187/0.0969
        "distill": {"temperature": 2.0, "weights": {"task": 1.0, "kd": 1.0, "feature": 0.5, "impute": 0.5,
                                                    "relation": 0.5},
                    "adaptive_weights": True, "term_options": {"impute": {"sources": {"sensors": "sensors_full"}}}},
        "export": {"latency_runs": 30 if quick else 200},
        "uncertainty": {"availability_modalities": ["sensors"],
                        "availability_edges": [0.05, 0.15, 0.3, 0.5, 0.7, 0.9]},
        "options": read_options(OPTIONS, None, QUICK if quick else None),
    }


def _opts(config: dict, quick: bool) -> dict:
    o = read_options(OPTIONS, config.get("options"), QUICK if quick else None, recipe="coastal")
    if int(o["stations"]) < 1 or int(o["block_days"]) < 4 or int(o["days"]) < 4 * int(o["block_days"]):
        raise CmkdError("options.stations must be >= 1, options.block_days >= 4 (a sample spans 3 days) and "
                        "options.days >= 4 x block_days (one block each of train, val, test, calibration)")
    if o["test_pattern"] not in ("mixed", *PATTERNS):
        raise CmkdError(f"options.test_pattern must be mixed or one of {', '.join(PATTERNS)}")
    return o


def hour_split(n_hours: int, block_days: int) -> np.ndarray:
    """(T,) split code of every hour: blocks of ``block_days`` cycle through :data:`CYCLE`, so every part of the
    data sees every season."""
    return np.asarray(CYCLE)[(np.arange(n_hours) // (24 * block_days)) % len(CYCLE)]


def _mixed_masks(scene: CoastalScene, rng: np.random.Generator) -> np.ndarray:
    """(S, T, C) failures: per 30-day block a random pattern and rate ~ U(0, 0.95), plus channel failures."""
    s_n, t_n, c_n = scene.sensors.shape
    out = np.zeros((s_n, t_n, c_n), dtype=bool)
    for s in range(s_n):
        down = np.zeros(t_n, dtype=bool)
        for b0 in range(0, t_n, BLOCK_H):
            b1 = min(t_n, b0 + BLOCK_H)
            pat = PATTERNS[rng.integers(len(PATTERNS))]
            down[b0:b1] = make_mask(pat, b1 - b0, float(rng.uniform(0, 0.95)), rng, scene.severity[s, b0:b1])
        out[s] = channel_masks(down, c_n, rng, 0.03)
    return out


def pattern_masks(scene: CoastalScene, pattern: str, rate: float, rng: np.random.Generator,
                  block_days: int = BLOCK_DAYS) -> np.ndarray:
    """(S, T, C) station-wide failures of one pattern at one rate, laid separately on the test hours and on the
    other hours so that each loses exactly ``rate`` of its readings."""
    s_n, t_n, c_n = scene.sensors.shape
    is_test = hour_split(t_n, block_days) == 2
    out = np.zeros((s_n, t_n), dtype=bool)
    for s in range(s_n):
        for part in (np.flatnonzero(is_test), np.flatnonzero(~is_test)):
            out[s, part] = make_mask(pattern, len(part), rate, rng, scene.severity[s, part])
    return np.repeat(out[:, :, None], c_n, axis=2)


def tide_inputs(scene: CoastalScene, observed_level: np.ndarray, fit_hours: np.ndarray, station: np.ndarray,
                hour: np.ndarray) -> np.ndarray:
    """(n, 3) harmonic predictions at t, t+6, t+24 from per-station fits on the available readings of the hours
    flagged in ``fit_hours`` (the non-test hours; NaN where a station has too few readings to fit)."""
    out = np.full((len(station), 1 + len(HORIZONS)), np.nan, dtype=np.float32)
    for s in np.unique(station):
        try:
            model = harmonic_fit(scene.hours[fit_hours], observed_level[s, fit_hours])
        except CmkdError:
            continue
        sel = station == s
        times = scene.hours[hour[sel]][:, None] + np.array([0, *HORIZONS])[None, :]
        out[sel] = model.predict(times)
    return out


@lru_cache(maxsize=4)
def _scene(seed: int, stations: int, days: int) -> CoastalScene:
    return generate(seed=seed, n_stations=stations, days=days)


def _samples(scene: CoastalScene, stride: int, block_days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Station, hour and split of every sample; a sample's window and targets lie in one block."""
    t_n = scene.level.shape[1]
    hours = np.arange(WINDOW - 1, t_n - max(HORIZONS), stride)
    block = 24 * block_days
    ok = ((hours - WINDOW + 1) // block == hours // block) & ((hours + max(HORIZONS)) // block == hours // block)
    hours = hours[ok]
    split = hour_split(t_n, block_days)[hours]
    s_n = scene.level.shape[0]
    return (np.repeat(np.arange(s_n), len(hours)), np.tile(hours, s_n), np.tile(split, s_n))


def _windows(series: np.ndarray, station: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """(n, WINDOW, C) windows ending at each sample's hour from a (S, T, C) series."""
    offs = np.arange(-WINDOW + 1, 1)
    return series[station[:, None], hour[:, None] + offs[None, :]].astype(np.float32)


def _satellite(scene: CoastalScene, station: np.ndarray, hour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The latest pass at or before each sample's hour (clouds NaN) and whether one exists that day."""
    day = (hour - 10) // 24  # passes at 10:00
    day = np.clip(day, 0, scene.satellite.shape[1] - 1)
    img = scene.satellite[station, day].copy()  # (n, B, H, W)
    img[np.repeat(scene.cloud[station, day][:, None], len(BANDS), axis=1)] = np.nan
    present = scene.overpass[station, day] & (hour >= 10) & ~np.isnan(img).all(axis=(1, 2, 3))
    return img.astype(np.float32), present


def flood_thresholds(scene: CoastalScene, block_days: int = BLOCK_DAYS) -> dict[int, float]:
    """Per station: the 99th percentile of the true level over the non-test hours."""
    fit = hour_split(scene.level.shape[1], block_days) != 2
    return {s: float(np.quantile(scene.level[s, fit], 0.99)) for s in range(scene.level.shape[0])}


def _arrays(scene: CoastalScene, masks: np.ndarray, station: np.ndarray, hour: np.ndarray, split: np.ndarray,
            block_days: int) -> dict[str, np.ndarray]:
    """The samples (station, hour) with the sensor failures ``masks`` (S, T, C) applied."""
    observed = np.where(masks, np.nan, scene.sensors)
    tide = tide_inputs(scene, observed[:, :, 0], hour_split(scene.level.shape[1], block_days) != 2, station, hour)
    level = np.stack([scene.level[station, hour + h] for h in HORIZONS], axis=1).astype(np.float32)
    img, present = _satellite(scene, station, hour)
    thr = flood_thresholds(scene, block_days)
    fut = scene.level[station[:, None], hour[:, None] + np.arange(1, max(HORIZONS) + 1)[None, :]]
    flood = (fut.max(axis=1) > np.array([thr[s] for s in station])).astype(np.int64)
    return {"sensors": _windows(observed, station, hour), "sensors_full": _windows(scene.sensors, station, hour),
            "satellite": img, "satellite__present": present, "tide": tide, "level": level,
            "surge": (level - tide[:, 1:]).astype(np.float32), "flood": flood, "split": split,
            "station": station, "hour": hour}


def sweep_conditions() -> list[tuple[str, float]]:
    """(pattern, missing rate) of the sparsity sweep; 0% missing is one condition (``none``)."""
    return [("none", 0.0)] + [(p, r) for p in PATTERNS for r in LEVELS if r > 0]


def build(config: dict, quick: bool = False, masks: np.ndarray | None = None) -> tuple[dict, CoastalScene]:
    """Arrays per the data contract and the scene they came from.

    ``masks`` (S, T, C): failures to apply to every sample. Default: the mixed failures (and
    ``options.test_pattern`` on the test hours); then the calibration samples are also repeated once per sweep
    condition (:func:`sweep_conditions`) with that condition's failures, appended after the other samples, so
    the conformal calibration meets every pattern and sparsity level that deployment (and the sweep) will.
    """
    o = _opts(config, quick)
    seed = int(config["seed"])
    scene = _scene(seed, int(o["stations"]), int(o["days"]))
    bd = int(o["block_days"])
    rng = np.random.default_rng(seed + 104_729)
    station, hour, split = _samples(scene, int(o["stride"]), bd)
    if masks is not None:
        return _arrays(scene, masks, station, hour, split, bd), scene
    masks = _mixed_masks(scene, rng)
    if o["test_pattern"] != "mixed":
        rate = float(o["test_missing"])
        is_test = hour_split(scene.level.shape[1], bd) == 2
        masks[:, is_test] = pattern_masks(scene, o["test_pattern"], rate, rng, bd)[:, is_test]
    parts = [_arrays(scene, masks, station, hour, split, bd)]
    cal = split == 3
    if o["calibrate_sweep"]:
        for pattern, rate in sweep_conditions():
            m = pattern_masks(scene, pattern if rate > 0 else "random", rate, rng, bd)
            parts.append(_arrays(scene, m, station[cal], hour[cal], split[cal], bd))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, scene


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """The recipe's arrays (see the module docstring)."""
    return build(config, quick)[0]


# ---------------------------------------------------------------------------------------------------------------
# analysis: sparsity sweep, harmonic baseline, interval coverage, imputation, recommendations


def analyse(ctx: dict) -> dict:
    """Sparsity sweep (every pattern x 0/30/60/80/90% missing) of the teacher, student_baseline, student and the
    harmonic baseline, calibrated-interval coverage per level, imputation error, and recommendations."""
    from cmkd.evaluation.metrics import predict, rmse
    from cmkd.evaluation.report import escape, figure_html, table_html

    cfg, data, models, out = ctx["cfg"], ctx["data"], ctx["models"], ctx["out"]
    test, dev = ctx["test"], ctx["device"]
    raw = cfg.model_dump(mode="json")
    o = _opts(raw, False)
    arrays0, scene = build(raw)
    rng = np.random.default_rng(int(cfg.seed) + 7)
    yl = arrays0["level"][test]  # the true level (m); models predict its departure from the harmonic tide
    res: dict = {"synthetic": True, "horizons_h": list(HORIZONS), "levels": list(LEVELS), "sweep": []}
    if o["sweep"]:
        res["sweep"] += _sweep(ctx, raw, o, scene, rng, yl)
    tmask = data.all_present(list(models["teacher"].encoders), test)
    pt = predict(models["teacher"], data, tmask, device=dev)
    res["teacher_rmse_complete_sensors"] = rmse(data.targets["surge"][tmask], pt["surge/value"])
    acc = _acceptance(res)
    res["acceptance"] = acc

    # recommendations: the last test forecast of every station, and warning skill over the whole test period
    mu, lo, hi = _forecast_intervals(ctx)
    thr = flood_thresholds(scene, int(o["block_days"]))
    assets = o["assets"] or decisions.default_assets(thr)
    st = arrays0["station"][test]
    recs = _write_recommendations(out, scene, arrays0, test, mu, lo, hi, assets)
    _write_tides(out, scene, int(cfg.seed), int(o["block_days"]), assets)
    road = np.array([next(a["elevation_m"] for a in assets if a["station"] == s and a["kind"] == "road")
                     for s in st])
    res["warning_skill_road"] = {
        f"+{h}h": decisions.warning_skill(mu[:, k], lo[:, k], hi[:, k], yl[:, k], road)
        for k, h in enumerate(HORIZONS)}
    res["recommendations_file"] = "recommendations.json"
    html = [_html(res, recs, figure_html, table_html, escape)]
    return {"metrics": {"coastal": res}, "html": html}


def _score_condition(ctx: dict, d: Any, tag: str, rate: float, yl: np.ndarray) -> dict:
    """One sweep row: RMSE of the harmonic baseline and of both students on the test samples of ``d`` (the
    run's data with one sweep condition's failures), the students' interval coverage and the imputation error."""
    from cmkd.evaluation.metrics import predict, rmse
    from cmkd.evaluation.uncertainty import interval_metrics

    cfg, models, test, dev = ctx["cfg"], ctx["models"], ctx["test"], ctx["device"]
    row: dict = {"pattern": tag, "missing": rate}
    row["harmonic"] = rmse(yl, d.inputs["tide"][test][:, 1:])
    row["available_share"] = float(1 - np.isnan(d.inputs["sensors"][test]).mean())
    for role in ("student_baseline", "student"):
        m = models[role]
        p = predict(m, d, test, device=dev)
        row[role] = rmse(yl, d.inputs["tide"][test][:, 1:] + p["surge/value"])
        if role in ctx["conformal"]:
            iv = interval_metrics(m, d, test, p, ctx["conformal"][role], cfg)
            row[f"{role}_coverage_90"], row[f"{role}_width_90"] = iv["coverage_90"], iv["width_90"]
        if role == "student" and "imputed/sensors" in p:
            gap = np.isnan(d.inputs["sensors"][test][..., 0])
            enc = m.encoders["sensors"]
            mean, std = float(enc.mean[0, 0]), float(enc.std[0, 0])
            rec = p["imputed/sensors"][..., 0] * std + mean
            truth = d.inputs["sensors_full"][test][..., 0]
            row["imputation_rmse_water_level"] = rmse(truth[gap], rec[gap]) if gap.any() else float("nan")
    return row


def _sweep(ctx: dict, raw: dict, o: dict, scene: CoastalScene, rng: np.random.Generator,
           yl: np.ndarray) -> list[dict]:
    """Score every sweep condition (:func:`sweep_conditions`): its failures replace the sensors, tide and surge
    of the run's base samples (a prefix of its samples), in a shallow copy of the run's data."""
    data = ctx["data"]
    rows = []
    for pattern, rate in sweep_conditions():
        masks = pattern_masks(scene, pattern if rate > 0 else "random", rate, rng, int(o["block_days"]))
        arr, _ = build(raw, masks=masks)  # the base samples: a prefix of the run's samples
        d = copy.copy(data)
        d.inputs, d.targets = dict(data.inputs), dict(data.targets)
        n0 = len(arr["split"])
        for key, store in (("sensors", d.inputs), ("tide", d.inputs), ("surge", d.targets)):
            store[key] = store[key].copy()
            store[key][:n0] = arr[key]
        rows.append(_score_condition(ctx, d, pattern, rate, yl))
    return rows


def _forecast_intervals(ctx: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The student's forecast level on the test samples and its 90% interval (split-conformal when calibrated,
    else the Gaussian head's), in metres: ``(mu, lo, hi)``, each (n_test, len(HORIZONS))."""
    from cmkd.evaluation.metrics import predict
    from cmkd.evaluation.uncertainty import intervals, uncertainty_groups

    cfg, data, test = ctx["cfg"], ctx["data"], ctx["test"]
    student = ctx["models"]["student"]
    p = predict(student, data, test, device=ctx["device"])
    groups = uncertainty_groups(data, test, list(student.encoders), cfg)
    cal = ctx["conformal"].get("student", {}).get("surge")
    tide_t = data.inputs["tide"][test][:, 1:]
    mu = tide_t + p["surge/value"]
    if cal:
        lo, hi = intervals(cal, p["surge/value"], p["surge/std"], groups)
    else:  # no calibration: the Gaussian head's 90% interval
        lo, hi = p["surge/value"] - 1.645 * p["surge/std"], p["surge/value"] + 1.645 * p["surge/std"]
    lo, hi = lo + tide_t, hi + tide_t
    return mu, lo, hi


def _write_recommendations(out: Any, scene: CoastalScene, arrays0: dict, test: np.ndarray, mu: np.ndarray,
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


def _write_tides(out: Any, scene: CoastalScene, seed: int, block_days: int, assets: list[dict]) -> None:
    """``coastal_tides.json``: every station's harmonic fit on its available (mixed-failure) pre-test readings."""
    from cmkd.recipes.coastal.forecast import save_tides

    observed = np.where(_mixed_masks(scene, np.random.default_rng(seed + 104_729)), np.nan, scene.sensors)
    fit = hour_split(scene.level.shape[1], block_days) != 2
    save_tides({s: harmonic_fit(scene.hours[fit], observed[s, fit, 0]) for s in range(scene.level.shape[0])},
               assets, out / "coastal_tides.json")


def _acceptance(res: dict) -> dict:
    """The issue's checks on this run."""
    rows = {(r["pattern"], r["missing"]): r for r in res["sweep"]}
    if not rows:
        return {}
    full = next(r for r in res["sweep"] if r["missing"] == 0.0)
    storm = rows.get(("storm", 0.8))
    cov = [r.get("student_coverage_90") for r in res["sweep"] if r.get("student_coverage_90") is not None]
    out = {"student_rmse_complete": full["student"], "coverage_min": min(cov) if cov else None,
           "coverage_max": max(cov) if cov else None}
    if storm:
        out.update({"student_rmse_storm80": storm["student"], "ratio_storm80_to_complete":
                    storm["student"] / full["student"], "baseline_rmse_storm80": storm["student_baseline"],
                    "harmonic_rmse_storm80": storm["harmonic"]})
    return out


def _html(res: dict, recs: list[dict], figure_html, table_html, escape) -> str:  # noqa: ANN001
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
            for role, col in (("student", "C0"), ("student_baseline", "C1"), ("harmonic", "C2")):
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
        cols = ["pattern", "missing", "available_share", "harmonic", "student_baseline", "student",
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


RECIPE = register_recipe(Recipe(
    name="coastal", description=DESCRIPTION, synthetic=SYNTHETIC, default_config=default_config, load=load,
    options=OPTIONS,
    analyse=analyse,
))
