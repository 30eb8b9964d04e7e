"""Tidal harmonic analysis and the ``coastal-real`` recipe (Rijkswaterstaat tide gauges)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmkd.errors import CmkdError
from cmkd.recipes.coastal import harmonic

TRUE = {"M2": (175.0, 40.0), "S2": (48.0, 100.0), "N2": (28.0, 250.0), "K1": (8.0, 300.0), "O1": (11.0, 170.0),
        "M4": (12.0, 20.0)}


def _synthetic(n_hours: int) -> tuple[np.ndarray, np.ndarray]:
    """Times and the noise-free level: mean 5, trend 0.001/h and the constituents of ``TRUE``."""
    t = np.arange(n_hours, dtype=float)
    y = 5.0 + 0.001 * t
    for c, (a, g) in TRUE.items():
        y = y + a * np.cos(np.deg2rad(harmonic.CONSTITUENTS[c] * t - g))
    return t, y


def test_fit_recovers_constituents_with_80_percent_missing() -> None:
    rng = np.random.default_rng(0)
    t, clean = _synthetic(24 * 365)
    y = clean + rng.normal(0.0, 10.0, len(t))
    gappy = np.where(rng.random(len(y)) < 0.8, np.nan, y)
    model = harmonic.fit(t, gappy, tuple(TRUE), trend=True)
    assert model.n_obs == int(np.isfinite(gappy).sum())
    for c, (a, g) in TRUE.items():
        assert model.amplitudes[c] == pytest.approx(a, abs=1.5), c
        dg = (model.phases[c] - g + 180.0) % 360.0 - 180.0
        assert abs(dg) < 10.0 if a < 15 else abs(dg) < 2.0, c
    assert model.trend == pytest.approx(0.001, abs=3e-4)
    # predictions on the hidden hours are as good as the noise allows
    hidden = np.isnan(gappy)
    rmse = np.sqrt(np.mean((model.predict(t[hidden]) - clean[hidden]) ** 2))
    assert rmse < 2.0
    assert model.rms_residual == pytest.approx(10.0, abs=1.0)


def test_fit_default_set_and_predict_shape() -> None:
    t, y = _synthetic(24 * 60)
    model = harmonic.fit(t, y)
    assert model.constituents == harmonic.DEFAULT
    assert model.predict(t.reshape(-1, 24)).shape == (60, 24)
    assert set(harmonic.DEFAULT) <= set(harmonic.CONSTITUENTS)


def test_fit_too_few_readings_and_bad_names() -> None:
    t = np.arange(100.0)
    y = np.full(100, np.nan)
    y[:15] = 1.0  # 15 readings, 12 unknowns (5 constituents, mean, trend) need 24
    with pytest.raises(CmkdError, match="too few"):
        harmonic.fit(t, y)
    with pytest.raises(CmkdError, match="unknown tidal constituent 'XX2'"):
        harmonic.fit(t, np.ones(100), ["M2", "XX2"])
    with pytest.raises(CmkdError, match="times but"):
        harmonic.fit(t, np.ones(99))


def _data_or_skip():  # noqa: ANN202
    from cmkd.recipes.coastal_real import recipe as real

    folder = real.default_folder()
    if not all((folder / f).is_file() for f in real.FILES.values()):
        pytest.skip(f"tide-gauge data {real.FOLDER} not found ({folder}); set CMKD_DATA")
    return real


def test_real_loader_split_and_availability() -> None:
    real = _data_or_skip()
    cfg = real.default_config(quick=True)
    a = real.load(cfg, quick=True)
    assert float(a["available_fraction"]) <= 0.2 + 1e-3
    w = cfg["options"]["window"]
    n = len(a["split"])
    assert a["vlissingen"].shape == (n, 2 * w + 1, 3) and a["hoek"].shape[0] == n
    assert np.isnan(a["vlissingen"][:, w, 0]).all()  # the target hour is always hidden
    assert not np.isnan(a["hoek"]).any()
    # no window straddles a split boundary: every hour of a window lies in its split's years
    bounds = {0: real.TRAIN_YEARS, 1: real.VAL_YEARS, 2: real.TEST_YEARS}
    for edge in (-w, 0, w):
        t_edge = a["time"].astype("datetime64[h]") + np.timedelta64(edge, "h")
        y_edge = t_edge.astype("datetime64[Y]").astype(int) + 1970
        for s, (lo, hi) in bounds.items():
            sel = a["split"] == s
            assert sel.any() and ((y_edge[sel] >= lo) & (y_edge[sel] <= hi)).all(), (s, edge)
    # the target is the level minus the harmonic prediction
    np.testing.assert_allclose(a["residual"], a["level"] - a["harmonic_at_t"], atol=1e-3)


@pytest.mark.slow  # a quick run on the real data
def test_real_quick_run_writes_references(tmp_path) -> None:  # noqa: ANN001
    _data_or_skip()
    import cmkd

    cmkd.run("coastal-real", out=tmp_path, quick=True, quiet=True,
             overrides=["export.enabled=false", "options.n_train=600", "options.n_val=200", "options.n_test=200"])
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["recipe"] == "coastal-real" and m["primary_metric"] == "rmse"
    refs = m["references"]
    assert {"harmonic_same_hours", "hoek_ridge_TEACHER_MODALITY"} <= set(refs)
    assert refs["hoek_ridge_TEACHER_MODALITY"]["rmse"] < refs["harmonic_same_hours"]["rmse"]
    for role in ("teacher", "student_baseline", "student"):
        assert np.isfinite(m["models"][role]["metrics"]["rmse"])
    assert m["coastal_real"]["available_fraction"] <= 0.2
    rows = m["coastal_real"]["rmse_by_distance_to_reading"]
    assert rows and abs(sum(r["share"] for r in rows) - 1) < 1e-9
    assert sum(r["n"] for r in rows) == m["data"]["n_test"]
    for r in rows:  # the harmonic prediction alone misses the whole residual
        assert r["rmse"]["harmonic"] == pytest.approx(r["residual_rms"], rel=1e-5)
        assert set(r["rmse"]) == {"harmonic", "teacher", "student_baseline", "student"}
    assert "by distance to the nearest reading" in (tmp_path / "report.html").read_text()


def test_error_by_distance_bands() -> None:
    """Bands by the nearer of the two gap distances; no reading in the window is the last band."""
    from cmkd.recipes.coastal_real import recipe as real

    nan = np.nan
    gap = np.array([[0, 1, 0, 9, 0], [0, 7, 0, nan, 0], [0, nan, 0, nan, 0], [0, 30, 0, 3, 0]], float)
    y = np.array([1.0, 2.0, 3.0, 4.0])
    rows = real.error_by_distance(gap, y, {"zero": np.zeros(4), "exact": y.copy()}, window=24)
    assert [r["band"] for r in rows] == ["1-6 h", "7-24 h", "> 24 h (no reading in the window)"]
    assert [r["n"] for r in rows] == [2, 1, 1]
    assert rows[0]["rmse"]["zero"] == pytest.approx(np.sqrt((1 + 16) / 2))
    assert all(r["rmse"]["exact"] == 0 for r in rows)


def test_example_yaml_from_the_raw_csvs_equals_the_recipe() -> None:
    """examples/coastal_real_sources.yaml (the two stations' raw CSVs declared in data.sources, read by the generic
    table reader onto an hourly grid) gives the recipe's arrays; a split in those sources is refused (the recipe
    splits by calendar years)."""
    real = _data_or_skip()
    from pathlib import Path

    import cmkd.nn.losses  # noqa: F401 - the name checks that validate() runs
    from cmkd.pipeline.resolve import resolve

    folder = real.default_folder()
    yml = Path(__file__).resolve().parents[1] / "examples" / "coastal_real_sources.yaml"
    paths = [f"data.sources.tables.{k}.path={folder / f}" for k, f in real.FILES.items()]
    cfg, a, _, _ = resolve(str(yml), paths, quick=True)
    _, b, _, _ = resolve("coastal-real", [f"data.path={folder}"], quick=True)
    assert cfg.recipe == "coastal-real" and set(a) == set(b)
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with pytest.raises(CmkdError, match="splits by calendar years"):
        resolve(str(yml), [*paths, "data.sources.split.val=0.1"], quick=True)


def test_long_nanosecond_grid_keeps_its_last_window() -> None:
    """19 years of hourly windows in ns: the grid ends at the last reading (np.arange sized in float64 dropped it)."""
    from cmkd.data.tables import grid_starts

    h = 3600 * 10**9
    first = int(np.datetime64("1976-01-01T00", "ns").astype(np.int64))
    starts = grid_starts(first, first + 166559 * h, h)
    assert len(starts) == 166560 and starts[-1] == first + 166559 * h and (np.diff(starts) == h).all()
