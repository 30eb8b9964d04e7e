"""Forecasts from a CSV of gauge-station readings with gaps: ``cmkd predict --model DIR --input readings.csv``.

The CSV has a ``time`` column (ISO timestamps, hourly; any rows may be missing), an optional ``station``
column (integer id, default 0) and one column per sensor channel named as in
:data:`cmkd.recipes.coastal.scene.CHANNELS` (empty cells = missing readings). For every station the forecast is
issued at its last timestamp from the preceding 48 hours, with the distilled student (no satellite pass is
assumed; the model was trained to work without one), its calibrated 90% intervals and the resilience
recommendations of :mod:`cmkd.recipes.coastal.decisions` for the run's assets.

The synthetic recipe's hour 0 is :data:`EPOCH` (timestamps are converted to hours since then, to evaluate the
station's harmonic tide, saved by the run in ``coastal_tides.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError
from cmkd.io import dumps
from cmkd.recipes.coastal import decisions
from cmkd.recipes.coastal.harmonic import HarmonicModel

EPOCH = np.datetime64("2025-01-01T00:00")
MAX_READING = 1e6  # the largest plausible sensor reading (m, m/s, hPa, ...): beyond it the CSV is refused


def save_tides(models: dict[int, HarmonicModel], assets: list[dict], path: Path) -> None:
    """Write per-station harmonic models and the assets as JSON (atomically)."""
    from cmkd.io import atomic_write_text

    doc = {"epoch": str(EPOCH), "assets": assets, "stations": {
        str(s): {"constituents": list(m.constituents), "speeds": m.speeds.tolist(), "mean": m.mean,
                 "trend": m.trend, "t0": m.t0, "coef": m.coef.tolist(), "n_obs": m.n_obs,
                 "rms_residual": m.rms_residual} for s, m in models.items()}}
    atomic_write_text(path, dumps(doc, indent=1))


def load_tides(path: Path) -> tuple[dict[int, HarmonicModel], list[dict]]:
    """Read :func:`save_tides` output."""
    if not path.is_file():
        raise CmkdError(f"{path} not found: forecasts from CSV need a model folder written by `cmkd run coastal`")
    try:
        doc = json.loads(path.read_text())
        models = {int(s): HarmonicModel(tuple(v["constituents"]), np.asarray(v["speeds"], float), float(v["mean"]),
                                        float(v["trend"]), float(v["t0"]), np.asarray(v["coef"], float),
                                        int(v["n_obs"]), float(v["rms_residual"]))
                  for s, v in doc["stations"].items()}
    except (ValueError, KeyError, TypeError) as e:
        raise CmkdError(f"{path}: damaged tide file ({e})") from None
    return models, doc.get("assets", [])


def read_csv(path: Path, channels: tuple[str, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per station: (hours since EPOCH on a regular hourly grid, (T, C) readings with NaN gaps)."""
    import pandas as pd

    if not path.is_file():
        raise CmkdError(f"input CSV not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any parser failure is a malformed file
        raise CmkdError(f"{path}: not a readable CSV ({str(e).splitlines()[0][:120]})") from None
    need = ["time", *channels]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise CmkdError(f"{path}: missing column(s) {', '.join(missing)}; needs time, optional station, and "
                        f"{', '.join(channels)}")
    try:
        t = pd.to_datetime(df["time"], errors="coerce")
    except (ValueError, TypeError) as e:  # e.g. "Mixed timezones detected"
        raise CmkdError(f"{path}: timestamps in column 'time' cannot be read together ({str(e).split('.')[0]}); "
                        "give every timestamp in one time zone") from None
    if getattr(t.dt, "tz", None) is not None:  # one zone, stated: as UTC, naive like the recipe's EPOCH
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    if t.isna().any():
        bad = int(np.flatnonzero(t.isna().to_numpy())[0])
        raise CmkdError(f"{path}: unparseable timestamp {df['time'].iloc[bad]!r} on data row {bad + 1}")
    try:
        values = df[list(channels)].apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as e:
        raise CmkdError(f"{path}: non-numeric sensor value ({str(e)[:100]})") from None
    if np.isinf(values).any() or (np.abs(np.nan_to_num(values)) > MAX_READING).any():
        i, j = np.argwhere(np.isinf(values) | (np.abs(np.nan_to_num(values)) > MAX_READING))[0]
        raise CmkdError(f"{path}: reading {values[i, j]!r} of '{channels[j]}' on data row {i + 1} is not a plausible "
                        f"value (finite, at most {MAX_READING:g} in size); leave a missing reading empty")
    if np.isnan(values).all():
        raise CmkdError(f"{path}: every sensor reading is empty (all NaN); nothing to forecast from")
    station = _stations(df, path) if "station" in df.columns else np.zeros(len(df), dtype=int)
    hours = ((t.to_numpy().astype("datetime64[m]") - EPOCH) / np.timedelta64(60, "m")).astype(float)
    out = {}
    for s in np.unique(station):
        sel = station == s
        h = np.round(hours[sel]).astype(np.int64)
        grid = np.arange(h.min(), h.max() + 1)
        vals = np.full((len(grid), len(channels)), np.nan)
        vals[h - h.min()] = values[sel]
        out[int(s)] = (grid.astype(float), vals)
    return out


def _stations(df: object, path: Path) -> np.ndarray:
    """The ``station`` column as integer ids: a name, an empty cell or a fraction is a one-line error."""
    col = df["station"]  # type: ignore[index]
    v = np.asarray([_station_id(x) for x in col.tolist()], dtype=object)
    bad = np.flatnonzero([x is None for x in v])
    if len(bad):
        raise CmkdError(f"{path}: station {col.iloc[bad[0]]!r} on data row {bad[0] + 1} is not an integer id "
                        "(every row needs its station's number)")
    return v.astype(np.int64)


def _station_id(x: object) -> int | None:
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(f) if np.isfinite(f) and f == round(f) and abs(f) < 2**31 else None


def forecast_csv(model_dir: Path, csv: Path) -> dict:
    """Forecasts, intervals and recommendations for every station in ``csv`` (see the module docstring), from
    the deployed ``student.onnx`` and its sidecar through :class:`cmkd.runtime.EdgeModel` (no torch)."""
    from cmkd.recipes.coastal.scene import CHANNELS, HORIZONS, WINDOW
    from cmkd.runtime import EdgeModel

    edge = EdgeModel(model_dir / "student.onnx")
    tides, assets = load_tides(model_dir / "coastal_tides.json")
    series = read_csv(csv, CHANNELS)
    mods = edge.modalities
    out: dict = {"synthetic_model": True, "model": str(edge.path), "interval": "90% split-conformal",
                 "forecasts": [], "recommendations": []}
    for s, (hours, vals) in series.items():
        if s not in tides:
            raise CmkdError(f"{csv}: station {s} is unknown to this model (stations {sorted(tides)})")
        win = np.full((WINDOW, len(CHANNELS)), np.nan)
        take = vals[-WINDOW:]
        win[WINDOW - len(take):] = take
        t_now = hours[-1]
        tide_in = tides[s].predict(t_now + np.array([0.0, *HORIZONS]))[None]
        arrays = {"sensors": win[None].astype(np.float32), "tide": tide_in.astype(np.float32)}
        if "satellite" in mods:  # no satellite pass with a CSV of readings: the modality is absent
            arrays["satellite"] = np.full((1, *mods["satellite"]["shape"]), np.nan, np.float32)
            arrays["satellite__present"] = np.array([False])
        res = edge.predict({k: v for k, v in arrays.items() if k.split("__")[0] in mods}, str(csv))["targets"]
        tide = tide_in[0, 1:].astype(float)
        surge = res["surge"]
        mu = np.asarray(surge["value"], float)[0]  # departure from the tide table
        sd = np.asarray(surge["std"], float)[0]
        avail = float(np.mean(~np.isnan(win)))  # the bands are of the sensors' observed share (recipe config)
        if "lower" in surge:
            lo, hi = np.asarray(surge["lower"], float)[0], np.asarray(surge["upper"], float)[0]
        else:  # a model without conformal quantiles (a tree model): the Gaussian 90% interval of its std
            lo, hi = mu - 1.645 * sd, mu + 1.645 * sd
            out["interval"] = "90% Gaussian (std output; no conformal calibration for this model)"
        mu, lo, hi = mu + tide, lo + tide, hi + tide
        if not np.isfinite(np.concatenate([mu, lo, hi])).all():  # never a recommendation from such a forecast
            raise CmkdError(f"{csv}: the forecast of station {s} is not finite (readings far outside the training "
                            "range?); no recommendation issued")
        prob = None
        if "flood" in res:
            fl = res["flood"]
            prob = float(fl["probabilities"][0][fl["classes"].index(1)]) if 1 in fl["classes"] else 0.0
        issued = str(EPOCH + np.timedelta64(int(t_now), "h"))
        out["forecasts"].append({
            "station": s, "issued_at": issued, "readings_available_share": round(avail, 4),
            "horizons_h": list(HORIZONS), "level_m": mu.round(4).tolist(),
            "interval_90_m": [[round(a, 4), round(b, 4)] for a, b in zip(lo, hi)],
            "flood_probability_24h": None if prob is None else round(prob, 4)})
        out["recommendations"] += decisions.recommend(s, t_now, mu, lo, hi, HORIZONS, assets)
    return out
