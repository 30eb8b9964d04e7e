"""Recipe ``coastal-real``: REAL Rijkswaterstaat tide-gauge data, gap-filling the Vlissingen water level.

Data: hourly water levels (cm relative to NAP) of Vlissingen (Westerschelde) and Hoek van Holland (Nieuwe
Waterweg), 1976-1994, from ``../shared/data/tide_gauge_netherlands_rws`` (or ``$CMKD_DATA``, a folder holding it
or the folder itself, or ``--set data.path=FOLDER``). Both records are complete; outages are simulated.

**Sparse gauge.** Vlissingen keeps ``options.available`` (default 0.2) of its hours in every calendar year. The
rest is removed by outages from :mod:`cmkd.data.missing` (``options.pattern``): ``bursty`` (geometric outages of mean
``options.mean_len`` hours at random starts), ``storm`` (outages start preferentially, and last longer, where the
smoothed storm surge is large: missing not at random) or ``mixed`` (default: ``options.storm_share`` of the
missing hours from storm outages, the rest bursty). The storm severity is the 13-hour running mean of
``|observed - harmonic prediction|`` from a full-year fit: it only drives the simulated outages, it is never a
model input. The mask is seeded by ``options.mask_seed`` (default 0), not by the training seed, so seeds vary
the training only.

**Samples.** One sample per hidden Vlissingen hour ``t`` (a seeded subsample: ``options.n_train`` / ``n_val`` /
``n_test``). Modalities, all built from information a deployed gap-filler has:

- ``vlissingen`` (sequence ``(2W+1, 3)``, ``W = options.window``): per hour ``t - W .. t + W`` the residual
  ``observed - harmonic`` (NaN where missing; ``t`` itself is always hidden), the harmonic prediction, and the
  offset ``(s - t) / W`` so the encoder knows where ``t`` lies in the window.
- ``harmonic`` (vector, 15): the harmonic prediction at ``t - 6 .. t + 6`` and the season (sin, cos of the day of
  the year).
- ``gap`` (vector, 5): the nearest available residuals before and after ``t`` in the window, the hours to them
  and their linear interpolation at ``t`` (NaN where none is in the window).
- ``hoek`` (sequence ``(2H+1, 1)``, ``H = options.hoek_window``, default 12): Hoek van Holland's complete level
  around ``t``, the dense neighbour gauge ~70 km away. **Teacher only.**

Teacher: hoek + vlissingen + harmonic + gap; students: vlissingen + harmonic + gap.

**Target** ``residual``: Vlissingen's level at ``t`` minus the harmonic prediction, in cm. The gap-filled level is
``harmonic + residual``, so RMSE and MAE equal those of the level itself; R2 is of the residual (the part that the
harmonic prediction misses), which is the harder number.

**Harmonic prediction and leakage.** For every calendar year, :func:`cmkd.recipes.coastal.harmonic.fit` is fitted on
that year's AVAILABLE Vlissingen hours only (``options.constituents``: the shallow-water set less the long-period
SA, SSA and MSF, which long storm outages make ill-conditioned), the same in training and test years. A hidden
hour therefore never enters any input, in any split: the test years' fits use the test years' own available hours,
exactly what a gap-filler has in deployment, and exactly the "harmonic baseline fitted on the same available hours"
that is reported as a reference. Splits are by years: train 1976-1987, validation 1988-1989, test 1990-1994; a
sample's whole window (``t +- W``) lies inside its split's years, so no input straddles a boundary.

References (metrics.json ``references``): ``harmonic_same_hours`` (the harmonic prediction alone) and
``hoek_ridge_TEACHER_MODALITY`` (ridge regression on Hoek van Holland's window, fitted on the training samples;
it sees the teacher's modality, so it is a bound, not a competitor).

Where the error lies (metrics.json ``coastal_real.rmse_by_distance_to_reading``, a report table and figure): every
model's test RMSE by the hidden hour's distance to the nearest available reading (1-6 h, 7 h to the window, no
reading in the window). With the default outages almost half of the test hours have no reading within 24 h, and
there a Vlissingen-only model can do little better than the harmonic prediction; ``benchmarks/coastal_real_bound.py``
estimates the floor this puts under any Vlissingen-only gap-filler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmkd.data.missing import make_mask, storm_mask
from cmkd.errors import CmkdError
from cmkd.recipes.base import Recipe, options_model, read_options, register_recipe
from cmkd.recipes.coastal import harmonic

DESCRIPTION = "Dutch tide gauges: Vlissingen gap-filling, Hoek van Holland teacher -> sparse-Vlissingen student"
SYNTHETIC = False
FOLDER = "tide_gauge_netherlands_rws"
FILES = {"vlissingen": "VLISSGN_obs19.csv", "hoek": "HOEKVHLD_obs19.csv"}
TRAIN_YEARS, VAL_YEARS, TEST_YEARS = (1976, 1987), (1988, 1989), (1990, 1994)
CONSTITUENTS = tuple(c for c in harmonic.SHALLOW_WATER if c not in ("SA", "SSA", "MSF"))
QUICK_YEARS = (1986, 1991)
HARM_OFFSETS = np.arange(-6, 7)


def default_folder() -> Path:
    """``$CMKD_DATA`` if set, else ``shared/data`` beside the project (or the working directory)."""
    from cmkd.io import shared_data_folder

    return shared_data_folder(FOLDER)


# options (a full run's defaults): the share of Vlissingen's hours available, the outage pattern, its storm share and
# mean length (h), the outage seed, the half windows (h) of Vlissingen and Hoek, and the samples per split
OPTIONS = options_model("coastal-real", available=(float, 0.2), pattern=(str, "mixed"), storm_share=(float, 0.5),
                        mean_len=(float, 12.0), mask_seed=(int, 0), window=(int, 24), hoek_window=(int, 12),
                        n_train=(int, 12000), n_val=(int, 4000), n_test=(int, 8000))
QUICK = {"n_train": 1500, "n_val": 500, "n_test": 500}  # a quick run's differences


def default_config(quick: bool = False) -> dict:
    """Teacher hoek+vlissingen+harmonic+gap, students vlissingen+harmonic+gap.

    Sized for a full run of about 2-3 minutes on one CPU thread (12,000 training samples, 24-hour half window,
    width 32). On the validation years (1988-1989) the students' RMSE hardly depends on the settings tried
    (window 48 h / width 48 / 24,000 samples, and kd + feature terms, all within 0.3 cm of each other): the
    student's limit is the information left in 20% of Vlissingen's hours, not its capacity. The teacher needs
    more epochs than the students.

    Test RMSE in cm (seed 0; 20% of hours available; the teacher's on the test hours with a reading in the window,
    where all its modalities are present): default ``mixed`` outages (12 h mean, half storm-driven):
    teacher 9.6, student_baseline 29.2, student 29.5, harmonic 32.2, Hoek ridge 9.4 (a gradient-boosting model on
    the same Vlissingen window scores 29.5: long storm gaps leave nothing to interpolate). With short
    ``bursty`` outages (``options.pattern=bursty options.mean_len=4``): teacher 9.2, student_baseline 18.2,
    student 18.0, harmonic 29.3, Hoek ridge 9.0.
    """
    ep_t, ep_s = (3, 3) if quick else (20, 20)
    return {
        "name": "coastal-real", "seed": 0,
        "data": {"path": str(default_folder()),
                 "modalities": {"hoek": {"kind": "sequence", "cost": 10.0},
                                "vlissingen": {"kind": "sequence", "cost": 1.0},
                                "harmonic": {"kind": "vector", "cost": 0.0},
                                "gap": {"kind": "vector", "cost": 0.0}},
                 "targets": {"residual": {"kind": "regression", "units": "cm"}}, "split": "split"},
        "teacher": {"modalities": ["hoek", "vlissingen", "harmonic", "gap"], "width": 32, "epochs": ep_t,
                    "lr": 2e-3, "batch_size": 128, "patience": 6, "dropout": 0.1},
        "student": {"modalities": ["vlissingen", "harmonic", "gap"], "width": 32, "epochs": ep_s, "lr": 2e-3,
                    "batch_size": 128, "patience": 6, "dropout": 0.1},
        "distill": {"temperature": 1.0, "weights": {"task": 1.0, "kd": 0.5, "feature": 0.25}},
        "export": {"latency_runs": 20 if quick else 200},
        "options": read_options(OPTIONS, None, QUICK if quick else None),
    }


def gauge_sources(folder: Path) -> dict:
    """The ``data.sources`` of the two gauges' files in ``folder`` (the recipe's default; a YAML may give its own,
    ``examples/coastal_real_sources.yaml``): each converted RWS csv (``time,waterlevel_cm_NAP,...``, MET times,
    read as fixed time: no daylight saving) a table, aligned on a 1-hour grid, its level the modality of the
    station's name."""
    return {"tables": {k: {"path": str(folder / f), "time": ["time"], "time_format": "%Y-%m-%d %H:%M:%S"}
                       for k, f in FILES.items()},
            "grid": {"window": "1h"},
            "modalities": {k: {"table": k, "columns": ["waterlevel_cm_NAP"], "aggregate": "last"}
                           for k in FILES},
            "require": list(FILES)}


def read_gauges(config: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hours as datetime64[h], Vlissingen's levels, Hoek van Holland's levels in cm) through the generic table
    reader (:func:`cmkd.data.sources.build_inputs`): ``data.sources`` where the config has it (its modalities
    ``vlissingen`` and ``hoek``), else :func:`gauge_sources` of ``data.path`` (or the default folder)."""
    from cmkd.data.sources import build_inputs

    raw = (config.get("data") or {}).get("sources")
    src = "recipe coastal-real"
    if raw is None:
        folder = Path(config["data"].get("path") or default_folder())
        if (folder / FOLDER).is_dir():
            folder = folder / FOLDER
        for f in FILES.values():
            if not (folder / f).is_file():
                raise CmkdError(f"tide-gauge data not found in {folder} (missing {f}); set CMKD_DATA or "
                                "--set data.path=FOLDER")
        raw = gauge_sources(folder)
    elif isinstance(raw, dict) and raw.get("split") is not None:
        raise CmkdError(f"{src}: data.sources.split is not used: the recipe splits by calendar years (train "
                        f"{TRAIN_YEARS[0]}-{TRAIN_YEARS[1]}, validation {VAL_YEARS[0]}-{VAL_YEARS[1]}, test "
                        f"{TEST_YEARS[0]}-{TEST_YEARS[1]}); remove it")
    a = build_inputs(raw, list(FILES), Path.cwd(), src).arrays
    t = np.asarray(a["time"]).astype("datetime64[h]")
    if len(t) < 2 or np.any(np.diff(t).astype(int) != 1):
        raise CmkdError(f"{src}: the gauges do not make one regular hourly series with both levels in every hour "
                        "(the recipe simulates its own outages on complete records)")
    return t, a["vlissingen"][:, 0].astype(np.float64), a["hoek"][:, 0].astype(np.float64)


def outage_mask(level: np.ndarray, t_hours: np.ndarray, missing: float, pattern: str, rng: np.random.Generator,
                mean_len: float = 12.0, storm_share: float = 0.5) -> np.ndarray:
    """Simulated outages of one year of hourly readings: (n,) bool, True = missing, exactly ``missing`` of them.

    Args:
        level: (n,) the complete record (drives the storm severity only).
        t_hours: (n,) times in hours.
        missing: fraction of hours to remove.
        pattern: ``bursty``, ``storm`` or ``mixed``.
        rng: random generator.
        mean_len: mean outage length in hours.
        storm_share: with ``mixed``, the share of the missing hours that storm outages remove.
    """
    n = len(level)
    if pattern == "bursty":
        return make_mask("bursty", n, missing, rng, mean_len=mean_len)
    if pattern not in ("storm", "mixed"):
        raise CmkdError(f"options.pattern must be bursty, storm or mixed, got '{pattern}'")
    surge = level - harmonic.fit(t_hours, level, harmonic.SHALLOW_WATER).predict(t_hours)
    severity = np.convolve(np.abs(surge), np.ones(13) / 13, mode="same")
    if pattern == "storm":
        return storm_mask(severity, missing, rng, mean_len)
    storm = storm_mask(severity, missing * storm_share, rng, mean_len)
    rest = np.flatnonzero(~storm)  # bursty outages laid on the hours the storms left
    more = make_mask("bursty", len(rest), (missing - storm.mean()) / (1.0 - storm.mean()), rng, mean_len=mean_len)
    storm[rest[more]] = True
    return storm


def simulate_outages(level: np.ndarray, t_hours: np.ndarray, year: np.ndarray, years: list[int] | np.ndarray,
                     opts: dict) -> np.ndarray:
    """The recipe's outages of the whole record: (n,) bool, True = missing; each calendar year of ``years`` on its
    own (:func:`outage_mask`, ``1 - options.available`` of its hours), seeded by ``options.mask_seed``; hours of
    other years are False. ``opts``: the recipe's options (``available``, ``pattern``, ``mean_len``,
    ``storm_share``, ``mask_seed``)."""
    rng = np.random.default_rng(int(opts["mask_seed"]))
    miss = np.zeros(len(t_hours), dtype=bool)
    for y in years:
        sel = np.flatnonzero(year == y)
        miss[sel] = outage_mask(level[sel], t_hours[sel], 1.0 - float(opts["available"]), str(opts["pattern"]), rng,
                                float(opts["mean_len"]), float(opts["storm_share"]))
    return miss


def _nearest(obs: np.ndarray, t_idx: np.ndarray, res: np.ndarray, w: int) -> np.ndarray:
    """(n, 5) residual and distance of the nearest available hour before and after each t, and their
    linear interpolation at t; NaN where no available hour lies within ``w`` hours."""
    pos = np.flatnonzero(obs)
    k = np.searchsorted(pos, t_idx)  # pos[k-1] < t <= pos[k]; t itself is hidden, so pos[k] > t
    before = np.where(k > 0, pos[np.clip(k - 1, 0, len(pos) - 1)], -10**9)
    after = np.where(k < len(pos), pos[np.clip(k, 0, len(pos) - 1)], 10**9)
    db, da = (t_idx - before).astype(float), (after - t_idx).astype(float)
    rb = np.where(db <= w, res[np.clip(before, 0, len(res) - 1)], np.nan)
    ra = np.where(da <= w, res[np.clip(after, 0, len(res) - 1)], np.nan)
    db, da = np.where(db <= w, db, np.nan), np.where(da <= w, da, np.nan)
    interp = (rb * da + ra * db) / (da + db)
    interp = np.where(np.isnan(interp), np.where(np.isnan(rb), ra, rb), interp)
    return np.stack([rb, db, ra, da, interp], axis=1)


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """See :func:`_load`; numpy's BLAS is held to one thread (many small solves; shared CPUs)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return _load(config, quick)
    with threadpool_limits(1):
        return _load(config, quick)


def _load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """Arrays: hoek, vlissingen, harmonic, gap, residual (cm), split, plus ``time`` (ISO text, the gauges' MET),
    ``level`` (cm) and ``harmonic_at_t`` (cm) of every sample and the 0-d ``available_fraction`` of all hours;
    see the module docstring."""
    opts = read_options(OPTIONS, config.get("options"), QUICK if quick else None, recipe="coastal-real")
    avail = float(opts["available"])
    if not 0.01 <= avail <= 0.9:
        raise CmkdError(f"options.available must be in [0.01, 0.9], got {avail}")
    w, hw = int(opts["window"]), int(opts["hoek_window"])
    if not (1 <= hw <= w <= 24 * 14):
        raise CmkdError(f"need 1 <= options.hoek_window <= options.window <= 336, got {hw}, {w}")
    tv, lv, lh = read_gauges(config)
    t = (tv - np.datetime64("1976-01-01T00", "h")).astype(float)
    year = tv.astype("datetime64[Y]").astype(int) + 1970
    # quick: two years per split only (a few seconds of preparation)
    years = [y for y in np.unique(year) if not quick or QUICK_YEARS[0] <= y <= QUICK_YEARS[1]]

    # outages and harmonic prediction, one calendar year at a time
    miss = simulate_outages(lv, t, year, years, opts)
    harm = np.zeros(len(t))
    for y in years:
        sel = np.flatnonzero(year == y)
        harm[sel] = harmonic.fit(t[sel], np.where(miss[sel], np.nan, lv[sel]), CONSTITUENTS).predict(t[sel])
    res = np.where(miss, np.nan, lv - harm)  # what the sparse gauge reports, as a residual

    # hour -> split by years; a sample needs its whole window inside its split's years
    split_h = np.full(len(t), -1)
    for s, (a, b) in enumerate((TRAIN_YEARS, VAL_YEARS, TEST_YEARS)):
        split_h[(year >= a) & (year <= b) & np.isin(year, years)] = s
    idx = np.arange(w, len(t) - w)
    ok = miss[idx] & (split_h[idx] >= 0) & (split_h[idx - w] == split_h[idx]) & (split_h[idx + w] == split_h[idx])
    idx = idx[ok]
    pick = np.random.default_rng(int(opts["mask_seed"]) + 1)
    chosen = []
    for s, key in enumerate(("n_train", "n_val", "n_test")):
        cand = idx[split_h[idx] == s]
        chosen.append(np.sort(pick.choice(cand, size=min(int(opts[key]), len(cand)), replace=False)))
    t_idx = np.concatenate(chosen)

    off = np.arange(-w, w + 1)
    win = t_idx[:, None] + off  # (N, 2W+1)
    vl = np.stack([res[win], harm[win], np.broadcast_to(off / w, win.shape)], axis=2)
    doy = 2 * np.pi * (t[t_idx] % 8765.8) / 8765.8
    hv = np.concatenate([harm[t_idx[:, None] + HARM_OFFSETS], np.stack([np.sin(doy), np.cos(doy)], 1)], axis=1)
    hoek = lh[t_idx[:, None] + np.arange(-hw, hw + 1)][:, :, None]
    f32 = np.float32
    return {"hoek": hoek.astype(f32), "vlissingen": vl.astype(f32), "harmonic": hv.astype(f32),
            "gap": _nearest(~miss, t_idx, lv - harm, w).astype(f32),
            "residual": (lv - harm)[t_idx].astype(f32), "split": split_h[t_idx].astype(np.int64),
            "time": np.datetime_as_string(tv[t_idx].astype("datetime64[s]"), unit="s"),  # the gauges' MET
            "level": lv[t_idx].astype(f32), "harmonic_at_t": harm[t_idx].astype(f32),
            "available_fraction": np.asarray(1.0 - miss[np.isin(year, years)].mean())}


def references(data, modalities: list[str], seed: int) -> dict[str, dict]:  # noqa: ANN001
    """The harmonic prediction alone, and ridge regression on Hoek van Holland's window (teacher modality)."""
    from sklearn.linear_model import RidgeCV

    from cmkd.evaluation.metrics import regression_metrics

    y = data.targets["residual"].reshape(-1)
    tr, te = data.indices(0), data.indices(2)
    out = {"harmonic_same_hours": regression_metrics(y[te], np.zeros(len(te)))}
    if "hoek" in data.inputs:
        x = data.inputs["hoek"].reshape(data.n, -1)
        # the harmonic prediction at t is known to the gap-filler; the ridge maps Hoek's level to Vlissingen's
        hv = data.inputs["harmonic"] if "harmonic" in data.inputs else np.zeros((data.n, 0), np.float32)
        x = np.concatenate([x, hv], axis=1)
        reg = RidgeCV(alphas=np.logspace(-2, 3, 6)).fit(x[tr], y[tr])
        out["hoek_ridge_TEACHER_MODALITY"] = regression_metrics(y[te], reg.predict(x[te]))
    return out


def error_by_distance(gap: np.ndarray, y: np.ndarray, preds: dict[str, np.ndarray], window: int) -> list[dict]:
    """RMSE of each prediction by the hidden hour's distance to the nearest Vlissingen reading.

    Args:
        gap: (n, 5) the ``gap`` modality of the samples (hours to the nearest reading before / after are columns 1
            and 3, NaN where none lies within the window).
        y: (n,) true residuals (cm).
        preds: name -> (n,) predicted residuals (cm); the harmonic prediction alone is the residual 0.
        window: the half window in hours (beyond it no reading is seen, so the last band is "> window h").

    Returns:
        One row per band: ``band``, ``n``, ``share`` of the samples, ``residual_rms`` (what the harmonic
        prediction misses there) and ``rmse`` per prediction.
    """
    with np.errstate(all="ignore"):
        d = np.fmin(gap[:, 1], gap[:, 3])  # NaN only where neither side has a reading in the window
    edges = [e for e in (0, 6, window) if e <= window]
    masks = [(f"{lo + 1}-{hi} h", (d > lo) & (d <= hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    masks.append((f"> {window} h (no reading in the window)", ~(d <= window)))
    rows = []
    for lab, m in masks:
        if not m.any():
            continue
        rows.append({"band": lab, "n": int(m.sum()), "share": float(m.mean()),
                     "residual_rms": float(np.sqrt(np.mean(y[m] ** 2))),
                     "rmse": {k: float(np.sqrt(np.mean((y[m] - p[m]) ** 2))) for k, p in preds.items()}})
    return rows


def analyse(ctx: dict) -> dict:
    """metrics.json ``coastal_real``: the sparse gauge's availability, the outage settings, and every model's test
    RMSE by the hidden hour's distance to the nearest reading (with a report table and figure)."""
    from cmkd.evaluation.metrics import predict

    cfg, data = ctx["cfg"], ctx["data"]
    opts = read_options(OPTIONS, cfg.options, recipe="coastal-real")
    te = data.indices(2)
    vl = data.inputs["vlissingen"][te, :, 0]
    w = vl.shape[1] // 2
    around = np.delete(vl, w, axis=1)  # the hour t itself is always hidden
    y = data.targets["residual"][te].reshape(-1)
    preds = {"harmonic": np.zeros(len(te))}
    for role, m in ctx["models"].items():
        p = ctx["predictions"].get(role)
        if p is not None and len(p["y_pred"]) == len(te):  # the pipeline's test predictions cover every test sample
            preds[role] = np.asarray(p["y_pred"]).reshape(-1)
        else:  # the teacher was scored only where all its modalities are present (gap: a reading in the window)
            preds[role] = predict(m, data, te, device=ctx["device"])["residual/value"].reshape(-1)
    by_distance = error_by_distance(data.inputs["gap"][te], y, preds, w)
    res = {"available_fraction": float(opts["available"]),  # exact in every calendar year (rounded to one hour)
           "available_in_test_windows": float(np.mean(~np.isnan(around))),
           "pattern": opts["pattern"], "mean_len_h": float(opts["mean_len"]), "window_h": int(opts["window"]),
           "target": "Vlissingen level minus harmonic prediction at a hidden hour, cm (RMSE = gap-filled level RMSE)",
           "split_years": {"train": list(TRAIN_YEARS), "val": list(VAL_YEARS), "test": list(TEST_YEARS)},
           "rmse_by_distance_to_reading": by_distance}
    return {"metrics": {"coastal_real": res}, "html": [_html(by_distance, w)]}


def _html(rows: list[dict], w: int) -> str:
    """Report section: the by-distance table and a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cmkd.evaluation.report import figure_html, table_html

    names = list(rows[0]["rmse"]) if rows else []
    parts = ["<h2>Coastal (real): gap-fill error by distance to the nearest reading</h2>",
             "<p>Test hours grouped by how far the nearest available Vlissingen reading is (within the "
             f"{w} h half window the models see). Far from any reading the surge is unobserved and no "
             "Vlissingen-only model can do much better than the harmonic prediction; the teacher sees Hoek van "
             "Holland there.</p>"]
    parts.append(table_html(["band", "test samples", "share", "residual RMS (cm)", *[f"{k} RMSE (cm)" for k in names]],
                            [[r["band"], r["n"], r["share"], r["residual_rms"],
                              *[r["rmse"][k] for k in names]] for r in rows]))
    if rows:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        x = np.arange(len(rows))
        bw = 0.8 / max(len(names), 1)
        for i, k in enumerate(names):
            ax.bar(x + (i - (len(names) - 1) / 2) * bw, [r["rmse"][k] for r in rows], bw, label=k)
        ax.set_xticks(x, [r["band"].split(" (")[0] for r in rows])
        ax.set(xlabel="distance of the hidden hour to the nearest reading", ylabel="RMSE (cm)",
               title="Gap-fill error by distance to a reading (test years)")
        ax.legend(fontsize=7)
        parts.append(figure_html(fig, "gap-fill RMSE by distance to the nearest reading"))
        plt.close(fig)
    return "".join(parts)


RECIPE = register_recipe(Recipe(
    name="coastal-real", description=DESCRIPTION, synthetic=SYNTHETIC, default_config=default_config, load=load,
    options=OPTIONS,
    references=references, analyse=analyse,
))
