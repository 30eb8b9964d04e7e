"""Tests of the SYNTHETIC coastal scene generator (:mod:`cmkd.recipes.coastal.scene`): fast, seeded, numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from cmkd.errors import CmkdError
from cmkd.recipes.coastal.scene import (
    BANDS,
    CHANNELS,
    TIDAL_PERIODS_H,
    CoastalScene,
    flood_threshold,
    generate,
)

N_STATIONS, DAYS, PATCH = 3, 365, 8


@pytest.fixture(scope="module")
def scene() -> CoastalScene:
    return generate(seed=0, n_stations=N_STATIONS, days=DAYS, patch=PATCH)


def _design(hours: np.ndarray) -> np.ndarray:
    """Mean, trend and a cosine/sine pair per constituent, in :data:`TIDAL_PERIODS_H` order."""
    cols = [np.ones_like(hours), hours / hours.max()]
    for period in TIDAL_PERIODS_H.values():
        w = 2 * np.pi / period
        cols += [np.cos(w * hours), np.sin(w * hours)]
    return np.stack(cols, axis=1)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def test_names() -> None:
    assert len(CHANNELS) == 8 and CHANNELS[0] == "water_level"
    assert BANDS == ("sediment_plume", "surface_temp", "sar_wetness")
    assert set(TIDAL_PERIODS_H) == {"M2", "S2", "N2", "K1", "O1"}


def test_shapes_and_dtypes(scene: CoastalScene) -> None:
    s, t, d = N_STATIONS, 24 * DAYS, DAYS
    assert scene.hours.shape == (t,)
    np.testing.assert_array_equal(np.diff(scene.hours), 1.0)
    for name in ("level", "tide", "surge", "severity"):
        assert getattr(scene, name).shape == (s, t), name
    assert scene.sensors.shape == (s, t, len(CHANNELS)) and scene.sensors.dtype == np.float32
    assert scene.satellite.shape == (s, d, len(BANDS), PATCH, PATCH) and scene.satellite.dtype == np.float32
    assert scene.cloud.shape == (s, d, PATCH, PATCH) and scene.cloud.dtype == bool
    assert scene.overpass.shape == (s, d) and scene.overpass.dtype == bool
    assert set(scene.amplitudes) == set(scene.phases) == set(TIDAL_PERIODS_H)
    assert all(a.shape == (s,) for a in scene.amplitudes.values())
    assert 0.0 < scene.trend_m_per_year < 0.01
    assert len(scene.storms) > 0
    for storm in scene.storms:
        assert {"peak_hour", "pressure_deficit_hpa", "duration_h", "peak_surge_m"} <= set(storm)
        assert np.shape(storm["peak_surge_m"]) == (s,)


def test_no_nan_and_plausible_ranges(scene: CoastalScene) -> None:
    for name in ("hours", "level", "tide", "surge", "sensors", "severity", "satellite"):
        assert np.isfinite(getattr(scene, name)).all(), name
    # level = datum offset + tide + surge + trend
    rest = scene.level - scene.tide - scene.surge - scene.trend_m_per_year * scene.hours / 8766.0
    assert rest.std(axis=1).max() < 1e-9
    sensors = scene.sensors
    assert (sensors[..., CHANNELS.index("wind_speed")] >= 0).all()
    assert np.abs(sensors[..., CHANNELS.index("wind_dir_onshore")]).max() <= 1.0 + 1e-6
    assert (sensors[..., CHANNELS.index("wave_height")] > 0).all()
    assert (sensors[..., CHANNELS.index("turbidity")] > 0).all()
    pressure = sensors[..., CHANNELS.index("pressure")]
    assert 900 < pressure.min() and pressure.max() < 1060
    # the gauge reading is the true level plus a few centimetres of noise
    noise = sensors[..., 0] - scene.level
    assert 0.015 < noise.std() < 0.04
    # surge is mostly a positive anomaly, with storms reaching tens of centimetres
    assert (scene.surge > -0.3).mean() > 0.99
    assert scene.surge.max() > 0.3
    assert 0.7 < scene.overpass.mean() < 0.9


def test_reproducible_from_seed() -> None:
    a = generate(seed=3, n_stations=2, days=30, patch=4)
    b = generate(seed=3, n_stations=2, days=30, patch=4)
    c = generate(seed=4, n_stations=2, days=30, patch=4)
    for name in ("level", "tide", "surge", "sensors", "severity", "satellite", "cloud", "overpass"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.array_equal(a.level, c.level)
    assert not np.array_equal(a.sensors, c.sensors)
    assert not np.array_equal(a.satellite, c.satellite)


def test_tidal_fit_recovers_m2_amplitude(scene: CoastalScene) -> None:
    x = _design(scene.hours)
    for s in range(N_STATIONS):
        for series in (scene.tide[s], scene.level[s]):  # the clean component, then the full level with surge
            coef, *_ = np.linalg.lstsq(x, series, rcond=None)
            m2 = np.hypot(coef[2], coef[3])
            assert m2 == pytest.approx(scene.amplitudes["M2"][s], rel=0.05)
        coef, *_ = np.linalg.lstsq(x, scene.tide[s], rcond=None)
        for k, name in enumerate(TIDAL_PERIODS_H):
            assert np.hypot(coef[2 + 2 * k], coef[3 + 2 * k]) == pytest.approx(scene.amplitudes[name][s], rel=0.05)
        # phase convention: tide = A cos(w t - phase)
        assert np.arctan2(coef[3], coef[2]) % (2 * np.pi) == pytest.approx(scene.phases["M2"][s], abs=0.02)


def test_surge_follows_severity_and_lags_pressure_and_wind(scene: CoastalScene) -> None:
    lags = np.arange(-48, 49)
    for s in range(N_STATIONS):
        surge = scene.surge[s]
        assert np.corrcoef(surge, scene.severity[s])[0, 1] > 0.3
        drop = _standardise(-scene.sensors[s, :, CHANNELS.index("pressure")].astype(float))
        z = _standardise(surge)
        n = len(z)
        # cc[lag] = corr(pressure drop at t, surge at t + lag): positive lag = pressure leads
        cc = np.array([np.mean(drop[max(0, -k): n - max(0, k)] * z[max(0, k): n - max(0, -k)]) for k in lags])
        best = lags[cc.argmax()]
        assert 1 <= best <= 24, best
        assert cc.max() > 0.5
        wind = _standardise(scene.sensors[s, :, CHANNELS.index("wind_speed")].astype(float))
        cw = np.array([np.mean(wind[max(0, -k): n - max(0, k)] * z[max(0, k): n - max(0, -k)]) for k in lags])
        assert lags[cw.argmax()] >= 1
        assert cw[lags == 6][0] > cw[lags == -6][0]  # wind 6 h ahead says more about surge than wind 6 h later


def test_clouds_thicker_on_storm_days(scene: CoastalScene) -> None:
    passes = 24 * np.arange(DAYS) + 10
    severity = scene.severity[:, passes]
    cover = scene.cloud.mean(axis=(2, 3))
    storm = severity > np.quantile(severity, 0.9)
    calm = severity < np.quantile(severity, 0.5)
    assert cover[storm].mean() > cover[calm].mean() + 0.1
    pressure = scene.sensors[:, passes, CHANNELS.index("pressure")]
    assert cover[pressure < 1000].mean() > cover[pressure > 1015].mean() + 0.2
    # and the blobs are spatially smooth: a cloudy pixel's right neighbour is usually cloudy too
    left, right = scene.cloud[..., :-1], scene.cloud[..., 1:]
    assert (left & right).sum() / left.sum() > 0.75


def test_satellite_tracks_level_and_surge(scene: CoastalScene) -> None:
    passes = 24 * np.arange(DAYS) + 10
    wet = scene.satellite[:, :, BANDS.index("sar_wetness")].mean(axis=(2, 3))
    plume = scene.satellite[:, :, BANDS.index("sediment_plume")].mean(axis=(2, 3))
    for s in range(N_STATIONS):
        assert np.corrcoef(wet[s], scene.level[s, passes])[0, 1] > 0.3
        assert np.corrcoef(plume[s], scene.surge[s, passes])[0, 1] > 0.1


def test_flood_threshold(scene: CoastalScene) -> None:
    for s in range(N_STATIONS):
        thr = flood_threshold(scene, s)
        assert 0.005 < (scene.level[s] > thr).mean() < 0.02
        assert flood_threshold(scene, s, 0.9) < thr
    with pytest.raises(CmkdError):
        flood_threshold(scene, 0, 1.5)


def test_bad_sizes_raise() -> None:
    with pytest.raises(CmkdError):
        generate(n_stations=0)
    with pytest.raises(CmkdError):
        generate(days=1)
