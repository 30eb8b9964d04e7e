"""The coastal recipe's samples (SYNTHETIC): sensor-failure masks (the mixed training failures and the sweep's
single-pattern ones), the split of hours into blocks, the harmonic ``tide`` input, and the arrays of the samples
(:func:`arrays`) from a :class:`~cmkd.recipes.coastal.scene.CoastalScene`. :mod:`cmkd.recipes.coastal.recipe`
documents the design and builds the data contract from these."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cmkd.data.missing import PATTERNS, channel_masks, make_mask
from cmkd.errors import CmkdError
from cmkd.recipes.coastal.harmonic import fit as harmonic_fit
from cmkd.recipes.coastal.scene import BANDS, HORIZONS, WINDOW, CoastalScene, generate

LEVELS = (0.0, 0.3, 0.6, 0.8, 0.9)

BLOCK_H = 30 * 24  # failure-pattern blocks of the mixed masks (not the split blocks)

BLOCK_DAYS = 15  # default ``options.block_days`` (split blocks)

# split code of consecutive blocks of ``options.block_days``, repeating: 6 train, 1 val, 2 test, 1 calibration
CYCLE = (0, 1, 2, 3, 0, 0, 2, 0, 0, 0)


def hour_split(n_hours: int, block_days: int) -> np.ndarray:
    """(T,) split code of every hour: blocks of ``block_days`` cycle through :data:`CYCLE`, so every part of the
    data sees every season."""
    return np.asarray(CYCLE)[(np.arange(n_hours) // (24 * block_days)) % len(CYCLE)]


def mixed_masks(scene: CoastalScene, rng: np.random.Generator) -> np.ndarray:
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
def scene_of(seed: int, stations: int, days: int) -> CoastalScene:
    return generate(seed=seed, n_stations=stations, days=days)


def sample_index(scene: CoastalScene, stride: int, block_days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def arrays(scene: CoastalScene, masks: np.ndarray, station: np.ndarray, hour: np.ndarray, split: np.ndarray,
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
