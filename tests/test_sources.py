"""data.sources: tables, timestamped streams on a window grid, cubes and rasters, read from a YAML spec
(cmkd.data.sources / tables / cubes) and `cmkd data inspect`. Tiny files written in tmp_path; the real Samson
and Houston files are read when present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmkd.config import DataConfig
from cmkd.data.sources import build
from cmkd.data.tables import time_split
from cmkd.errors import CmkdError

pd = pytest.importorskip("pandas")
SHARED = Path(os.environ.get("CMKD_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def _cfg(mods: dict[str, str], targets: dict[str, str]) -> DataConfig:
    return DataConfig.model_validate({"modalities": {m: {"kind": k} for m, k in mods.items()},
                                      "targets": {t: {"kind": k} for t, k in targets.items()}})


def _streams(tmp_path: Path) -> dict:
    """Stream A every minute, naive Europe/Berlin local time across the spring change of 2024-03-31 (02:00 CET ->
    03:00 CEST), value = minutes since 00:00 UTC, with the hour 01:00-01:59 UTC missing; stream B hourly at 00, 01,
    02 UTC (offsets in the text) with b = 10, 20, 30 and target y = 1, 2, 3."""
    utc = pd.date_range("2024-03-31 00:00", periods=180, freq="1min", tz="UTC")
    mins = np.arange(180)
    keep = (mins < 60) | (mins >= 120)
    local = utc[keep].tz_convert("Europe/Berlin").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"when": local, "a": mins[keep].astype(float)}).to_csv(tmp_path / "a.csv", index=False)
    hours = pd.date_range("2024-03-31 00:00", periods=3, freq="1h", tz="UTC")
    pd.DataFrame({"t": hours.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "b": [10.0, 20.0, 30.0], "y": [1.0, 2.0, 3.0]}
                 ).to_csv(tmp_path / "b.csv", index=False)
    return {"tables": {"A": {"path": "a.csv", "time": ["when"], "timezone": "Europe/Berlin"},
                       "B": {"path": "b.csv", "time": ["t"]}},
            "grid": {"window": "30min"},
            "modalities": {"a": {"table": "A", "columns": ["a"]},
                           "aseq": {"table": "A", "columns": ["a"], "lookback": 2},
                           "b": {"table": "B", "columns": ["b"], "aggregate": "last"}},
            "targets": {"y": {"table": "B", "columns": ["y"], "horizon": "1h"}},
            "split": {"val": 0.2, "test": 0.2}}


def test_streams_windows_presence_horizon_dst(tmp_path: Path) -> None:
    cfg = _cfg({"a": "vector", "aseq": "sequence", "b": "vector"}, {"y": "regression"})
    b = build(_streams(tmp_path), cfg, tmp_path)
    a = b.arrays
    # windows 00:00 .. 02:30 UTC every 30 min; 01:30 has no reading of A or B and is dropped
    assert a["time"].tolist() == ["2024-03-31T00:00:00", "2024-03-31T00:30:00", "2024-03-31T01:00:00",
                                  "2024-03-31T02:00:00", "2024-03-31T02:30:00"]
    np.testing.assert_array_equal(a["a"][:, 0], [14.5, 44.5, np.nan, 134.5, 164.5])  # mean of minutes
    np.testing.assert_array_equal(a["a__present"], [True, True, False, True, True])
    np.testing.assert_array_equal(a["b"][:, 0], [10, np.nan, 20, 30, np.nan])  # last reading in the window
    np.testing.assert_array_equal(a["b__present"], [True, False, True, True, False])
    np.testing.assert_array_equal(a["y"], [2, np.nan, 3, np.nan, np.nan])  # the window one hour later
    assert a["aseq"].shape == (5, 2, 1)  # the window before, then its own
    np.testing.assert_array_equal(a["aseq"][:, :, 0], [[np.nan, 14.5], [14.5, 44.5], [44.5, np.nan],
                                                       [np.nan, 134.5], [134.5, 164.5]])
    np.testing.assert_array_equal(a["split"], [0, 0, 0, 1, 2])
    assert any("table 'A'" in w and "longer than the window" in w for w in b.warnings)


def test_aggregates_and_time_split_gap(tmp_path: Path) -> None:
    from cmkd.data.tables import aggregate

    t = np.array([0, 1, 2, 5, 6], dtype=np.int64)
    v = np.array([[1.0, 5], [3, np.nan], [2, 7], [4, 1], [np.nan, np.nan]])
    starts = np.array([0, 4, 6, 8], dtype=np.int64)  # windows [0,3) [4,7) [6,9) [8,11)
    mm, pres = aggregate(t, v, starts, 3, "min-max")
    np.testing.assert_array_equal(mm[0], [1, 5, 3, 7])
    np.testing.assert_array_equal(pres, [True, True, False, False])  # [6,9): only an all-NaN reading
    last, _ = aggregate(t, v, starts, 3, "last")
    np.testing.assert_array_equal(last[1], [4, 1])  # the NaN reading at 6 does not hide the last value
    cnt, _ = aggregate(t, v, starts, 3, "count")
    np.testing.assert_array_equal(cnt[0], [3, 2])
    split = time_split(np.arange(10, dtype=np.int64), 0.2, 0.2, gap=2)
    np.testing.assert_array_equal(split, [0, 0, 0, 0, 0, -1, 1, -1, 2, 2])  # within 2 before val/test: dropped


def test_spring_gap_time_refused(tmp_path: Path) -> None:
    pd.DataFrame({"when": ["2024-03-31 01:30:00", "2024-03-31 02:30:00"], "a": [1.0, 2.0]}).to_csv(
        tmp_path / "a.csv", index=False)
    spec = {"tables": {"A": {"path": "a.csv", "time": ["when"], "timezone": "Europe/Berlin"}},
            "grid": {"window": "1h"}, "modalities": {"a": {"table": "A", "columns": ["a"]}},
            "targets": {"y": {"table": "A", "columns": ["a"]}}}
    with pytest.raises(CmkdError, match=r"a\.csv: time column 'when' in zone Europe/Berlin.*daylight-saving"):
        build(spec, _cfg({"a": "vector"}, {"y": "regression"}), tmp_path)


def _rows(tmp_path: Path, parquet: bool = False) -> dict:
    df = pd.DataFrame({"x1": [1.0, -200, 3, 4, 5, 6], "x2": [2.0, 2, -200, 4, 5, 6], "lab": [0, 1, 0, 1, -200, 1]})
    name = "t.parquet" if parquet else "t.csv"
    df.to_parquet(tmp_path / name) if parquet else df.to_csv(tmp_path / name, index=False)
    return {"tables": {"T": {"path": name, "missing": [-200]}},
            "modalities": {"x": {"table": "T", "columns": ["x1", "x2"], "units": "V"}},
            "targets": {"lab": {"table": "T", "columns": ["lab"]}}}


@pytest.mark.parametrize("parquet", [False, True])
def test_rows_with_sentinel(tmp_path: Path, parquet: bool) -> None:
    if parquet:
        pytest.importorskip("pyarrow")
    cfg = _cfg({"x": "vector"}, {"lab": "classification"})
    b = build(_rows(tmp_path, parquet), cfg, tmp_path)
    np.testing.assert_array_equal(b.arrays["x"], [[1, 2], [np.nan, 2], [3, np.nan], [4, 4], [5, 5], [6, 6]])
    np.testing.assert_array_equal(b.arrays["lab"], [0, 1, 0, 1, np.nan, 1])  # -200: an unlabelled row
    assert "split" not in b.arrays and b.units == {"x": "V"}  # no time: the run's seeded split
    spec = _rows(tmp_path, parquet) | {"require": ["x"]}
    assert len(build(spec, cfg, tmp_path).arrays["x"]) == 4  # rows missing a value of x dropped


def test_table_errors(tmp_path: Path) -> None:
    cfg = _cfg({"x": "vector"}, {"lab": "classification"})
    spec = _rows(tmp_path)
    spec["modalities"]["x"]["columns"] = ["x1", "nope"]
    with pytest.raises(CmkdError, match=r"t\.csv: no column 'nope'"):
        build(spec, cfg, tmp_path)
    pd.DataFrame({"t": ["2024-01-01 00:00", "yesterday"], "x1": [1.0, 2], "x2": [1.0, 2], "lab": [0, 1]}).to_csv(
        tmp_path / "t.csv", index=False)
    spec = _rows(tmp_path)
    spec["tables"]["T"]["time"] = ["t"]
    pd.DataFrame({"t": ["2024-01-01 00:00", "yesterday"], "x1": [1.0, 2], "x2": [1.0, 2], "lab": [0, 1]}).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(CmkdError, match=r"t\.csv: time column 't' row 3: 'yesterday' does not parse"):
        build(spec, cfg, tmp_path)
    with pytest.raises(CmkdError, match=r"data\.sources\.modalities\.x\.aggregate"):
        build({**_rows(tmp_path), "modalities": {"x": {"table": "T", "columns": ["x1"], "aggregate": "median"}}},
              cfg, tmp_path)
    with pytest.raises(CmkdError, match="no source for modality 'x'"):
        build({**_rows(tmp_path), "modalities": {}}, cfg, tmp_path)


def _envi(tmp_path: Path) -> np.ndarray:
    """A 4 x 5 x 6 cube as big-endian int16 BIL with wavelengths 400..650 nm; returns it (rows, cols, bands)."""
    cube = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    cube.transpose(0, 2, 1).astype(">i2").tofile(tmp_path / "scene.img")  # BIL: line, band, sample
    (tmp_path / "scene.hdr").write_text(
        "ENVI\nsamples = 5\nlines = 4\nbands = 6\nheader offset = 0\ndata type = 2\ninterleave = bil\n"
        "byte order = 1\nwavelength = {\n 400, 450, 500,\n 550, 600, 650}\n")
    return cube.astype(np.float32)


def test_envi_and_geotiff_cubes(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    cube = _envi(tmp_path)
    labels = np.zeros((4, 5), dtype=np.uint8)
    labels[0, :2], labels[3, 3:] = 1, 2
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "cube.tif", cube.transpose(2, 0, 1))  # bands first, as GDAL writes
    spec = {"cubes": {"hsi": {"path": "scene.hdr"}, "tif": {"path": "cube.tif"},
                      "lab": {"path": "labels.tif", "missing": [0]}},
            "modalities": {"hsi": {"cube": "hsi"}, "rgb": {"cube": "hsi", "wavelengths": [640, 550, 460]},
                           "wide": {"cube": "hsi", "band_ranges": [[400, 500]]}, "t": {"cube": "tif"},
                           "patch": {"cube": "hsi", "bands": [0, 5], "patch": 3}},
            "targets": {"cls": {"cube": "lab"}}, "split": {"block": 2, "val": 0.2, "test": 0.3}}
    cfg = _cfg({"hsi": "vector", "rgb": "vector", "wide": "vector", "t": "vector", "patch": "image"},
               {"cls": "classification"})
    b = build(spec, cfg, tmp_path)
    a = b.arrays
    assert a["hsi"].shape == (20, 6) and a["patch"].shape == (20, 2, 3, 3)
    np.testing.assert_array_equal(a["hsi"], cube.reshape(20, 6))  # every pixel, row-major
    np.testing.assert_array_equal(a["t"], cube.reshape(20, 6))
    np.testing.assert_array_equal(a["rgb"], cube.reshape(20, 6)[:, [5, 3, 1]])  # nearest 650, 550, 450
    assert b.channels["rgb"] == ["650", "550", "450"]
    np.testing.assert_allclose(a["wide"][:, 0], cube.reshape(20, 6)[:, :3].mean(axis=1))
    np.testing.assert_array_equal(a["patch"][7, :, 1, 1], cube[1, 2, [0, 5]])  # centre = its own pixel
    assert np.isnan(a["cls"]).sum() == 16 and np.nansum(a["cls"]) == 2 * 1 + 2 * 2  # 0 = unlabelled, kept
    for part in (0, 1, 2):  # spatially blocked: a 2x2 block never spans two parts
        assert (a["split"] == part).any()
    blocks = (a["row"] // 2) * 3 + a["col"] // 2
    assert all(len(set(a["split"][blocks == k])) == 1 for k in np.unique(blocks))
    labelled = build({**spec, "pixels": "labelled"}, cfg, tmp_path).arrays
    assert len(labelled["cls"]) == 4


def test_cube_errors(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    _envi(tmp_path)
    tifffile.imwrite(tmp_path / "labels.tif", np.ones((4, 5), dtype=np.uint8))
    cfg = _cfg({"hsi": "vector"}, {"cls": "classification"})
    spec = {"cubes": {"hsi": {"path": "scene.hdr"}, "lab": {"path": "labels.tif", "missing": [0]}},
            "modalities": {"hsi": {"cube": "hsi", "bands": [0, 6]}}, "targets": {"cls": {"cube": "lab"}}}
    with pytest.raises(CmkdError, match=r"scene\.hdr \(hsi\): band 6 is outside the cube's 6 bands"):
        build(spec, cfg, tmp_path)
    spec["modalities"]["hsi"] = {"cube": "hsi", "wavelengths": [900]}
    with pytest.raises(CmkdError, match="wavelength 900 is outside the cube's range 400-650"):
        build(spec, cfg, tmp_path)
    spec["modalities"]["hsi"] = {"cube": "hsi"}
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros((3, 5), dtype=np.uint8))
    with pytest.raises(CmkdError, match=r"labels\.tif: 3x5 pixels, but .*scene\.hdr \(cube 'hsi'\) has 4x5"):
        build(spec, cfg, tmp_path)
    (tmp_path / "scene.img").write_bytes(b"\0" * 10)
    with pytest.raises(CmkdError, match=r"scene\.img: 10 bytes, but its header"):
        build(spec, cfg, tmp_path)


def test_samson_scene_from_the_example_yaml() -> None:
    """examples/samson_sources.yaml read through the cube reader: the teacher's 156 bands, the RGB student's bands
    nearest 640/550/460 nm, the abundances as a 3-column target, with the names and units it declares."""
    d = SHARED / "samson_hsi_scene"
    if not (d / "Samson.mat").is_file() or not (d / "end3_Samson.mat").is_file():
        pytest.skip(f"the Samson scene (Samson.mat, end3_Samson.mat) is not in {d}")
    import scipy.io

    import cmkd.nn.losses  # noqa: F401 - the name checks that validate() runs
    from cmkd.pipeline.resolve import resolve

    yml = Path(__file__).resolve().parents[1] / "examples" / "samson_sources.yaml"
    cfg, a, _, _ = resolve(str(yml), [f"data.sources.cubes.y.path={d / 'Samson.mat'}",
                                      f"data.sources.cubes.a.path={d / 'end3_Samson.mat'}",
                                      "data.sources.split.label_fraction=1"])
    assert a["hsi"].shape == (9025, 156) and a["rgb"].shape == (9025, 3) and a["abundance"].shape == (9025, 3)
    y = scipy.io.loadmat(d / "Samson.mat")["Y"]  # the README's layout: Y.T.reshape(95, 95, 156, order='F')
    np.testing.assert_array_equal(a["hsi"], y.T.reshape(95, 95, 156, order="F").reshape(-1, 156).astype(np.float32))
    wl = np.linspace(401, 889, 156)
    nearest = [int(np.argmin(np.abs(wl - w))) for w in (640, 550, 460)]
    assert [round(wl[b]) for b in nearest] == [640, 549, 461]
    np.testing.assert_array_equal(a["rgb"], a["hsi"][:, nearest])
    np.testing.assert_allclose(a["abundance"].sum(axis=1), 1.0, atol=1e-3)  # abundances sum to one
    assert np.bincount(a["abundance"].argmax(axis=1)).tolist() == [3015, 3666, 2344]  # the README's argmax classes
    m = a["abundance"][:, 2].reshape(95, 95)  # water: a smooth map (neighbours along a column correlate at 0.997)
    assert np.corrcoef(m[:-1].ravel(), m[1:].ravel())[0, 1] > 0.99
    blocks = (a["row"] // 19) * 5 + a["col"] // 19  # 19 x 19 blocks, each wholly in one part
    assert all(len(set(a["split"][blocks == k])) == 1 for k in np.unique(blocks))
    assert np.bincount(a["split"]).tolist() == [19 * 19 * 16, 19 * 19 * 3, 19 * 19 * 6]
    # the names and units the YAML declares reach the config the run saves (metrics, report, sidecar)
    assert cfg.data.modalities["rgb"].channels == ["red", "green", "blue"]
    assert cfg.data.modalities["hsi"].channels[:2] == ["401", f"{wl[1]:g}"]
    assert cfg.data.targets["abundance"].columns == ["rock", "tree", "water"]
    assert cfg.data.targets["abundance"].units == "fraction"


@pytest.mark.parametrize("engine", ["h5netcdf", "scipy"])
def test_netcdf_cube(tmp_path: Path, engine: str) -> None:
    """A tiny NetCDF cube (bands first, a wavelength coordinate) and a label variable, read through xarray."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip(engine)
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(5, 4, 6)).astype(np.float32)  # rows x cols x bands
    labels = np.zeros((5, 4), dtype=np.int32)
    labels[0, 0], labels[4, 3], labels[2, 1] = 1, 2, 1
    ds = xr.Dataset({"refl": (("band", "y", "x"), cube.transpose(2, 0, 1)), "cls": (("y", "x"), labels)},
                    coords={"wavelength": ("band", [450.0, 500, 550, 600, 650, 700])})
    ds.to_netcdf(tmp_path / "scene.nc", engine=engine)
    spec = {"cubes": {"s": {"path": "scene.nc", "variable": "refl"},
                      "lab": {"path": "scene.nc", "variable": "cls", "missing": [0]}},
            "modalities": {"hsi": {"cube": "s"}, "rgb": {"cube": "s", "wavelengths": [640, 550, 460]}},
            "targets": {"cls": {"cube": "lab"}}, "split": {"block": 2}}
    b = build(spec, _cfg({"hsi": "vector", "rgb": "vector"}, {"cls": "classification"}), tmp_path)
    np.testing.assert_array_equal(b.arrays["hsi"], cube.reshape(20, 6))  # the band axis found by its name
    np.testing.assert_array_equal(b.arrays["rgb"], cube.reshape(20, 6)[:, [4, 2, 0]])  # by the file's wavelengths
    assert b.channels["rgb"] == ["650", "550", "450"]
    assert np.nansum(b.arrays["cls"]) == 4 and np.isnan(b.arrays["cls"]).sum() == 17
    with pytest.raises(CmkdError, match=r"scene\.nc: no variable 'nope' \(variables: refl, cls\)"):
        build({**spec, "cubes": {**spec["cubes"], "s": {"path": "scene.nc", "variable": "nope"}}},
              _cfg({"hsi": "vector", "rgb": "vector"}, {"cls": "classification"}), tmp_path)
    (tmp_path / "bad.nc").write_bytes(b"CDF\x01 not really")
    with pytest.raises(CmkdError, match=r"bad\.nc: not a readable NetCDF/HDF5 file"):
        build({**spec, "cubes": {**spec["cubes"], "s": {"path": "bad.nc"}}},
              _cfg({"hsi": "vector", "rgb": "vector"}, {"cls": "classification"}), tmp_path)


def test_netcdf_without_an_engine_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xr = pytest.importorskip("xarray")

    def no_engine(*a: object, **k: object) -> None:  # what xarray says with neither h5netcdf nor netCDF4 nor scipy
        raise ValueError("did not find a match in any of xarray's currently installed IO backends ['store']")

    monkeypatch.setattr(xr, "open_dataset", no_engine)
    (tmp_path / "s.nc").write_bytes(b"\x89HDF\r\n")
    spec = {"cubes": {"s": {"path": "s.nc"}}, "modalities": {"a": {"cube": "s"}}, "targets": {"y": {"cube": "s"}}}
    with pytest.raises(CmkdError, match=r"s\.nc: reading a NetCDF/HDF5 cube needs the optional package 'h5netcdf': "
                       r"pip install 'cmkd\[cubes\]'"):
        build(spec, _cfg({"a": "vector"}, {"y": "regression"}), tmp_path)
    spec["cubes"]["s"] |= {"wavelengths": [500.0], "wavelength_range": [400, 900]}
    with pytest.raises(CmkdError, match="data.sources.cubes.s: Value error, give wavelengths or wavelength_range"):
        build(spec, _cfg({"a": "vector"}, {"y": "regression"}), tmp_path)


def test_houston_label_raster() -> None:
    pytest.importorskip("tifffile")
    d = SHARED / "houston2013_mdlrs_subset"
    tr = d / "2013_IEEE_GRSS_DF_Contest_Samples_TR.tif"
    if not tr.is_file():
        pytest.skip(f"the Houston label rasters are not in {d}")
    from cmkd.data.cubes import read_array, to_cube

    a, _, lay = read_array(tr)
    lab = to_cube(a, lay or "auto", str(tr))
    assert lab.shape == (349, 1905, 1)
    assert int((lab > 0).sum()) == 2832 and set(np.unique(lab).tolist()) == set(range(16))


def test_cli_inspect_and_build(tmp_path: Path) -> None:
    cfg = {"name": "tiny", "seed": 0,
           "data": {"modalities": {"a": {"kind": "vector"}, "b": {"kind": "vector"}},
                    "targets": {"y": {"kind": "regression"}}, "sources": None},
           "teacher": {"modalities": ["a", "b"]}, "student": {"modalities": ["a"]}}
    n = 200
    utc = pd.date_range("2024-01-01", periods=n, freq="10min", tz="UTC")
    rng = np.random.default_rng(0)
    pd.DataFrame({"t": utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "a": rng.normal(size=n), "b": rng.normal(size=n),
                  "y": rng.normal(size=n)}).to_csv(tmp_path / "s.csv", index=False)
    cfg["data"]["sources"] = {"tables": {"S": {"path": "s.csv", "time": ["t"]}}, "grid": {"window": "30min"},
                              "modalities": {"a": {"table": "S", "columns": ["a"]},
                                             "b": {"table": "S", "columns": ["b"], "aggregate": "min-max"}},
                              "targets": {"y": {"table": "S", "columns": ["y"], "horizon": "30min"}},
                              "split": {"val": 0.2, "test": 0.2, "gap": "1h"}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "cmkd", "data"]
    r = subprocess.run([*cmd, "inspect", str(tmp_path / "tiny.yaml")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    from cmkd.pipeline.inspect import inspect

    summary, warnings = inspect(str(tmp_path / "tiny.yaml"))
    # 67 windows of 30 min over 200 readings every 10 min; 40/13/14 in time order; the 1 h gap drops the last
    # train window (19:30, within 1 h of validation's 20:00) and the last validation one
    assert summary["parts"] == {"train": 39, "val": 12, "test": 14} and warnings == []
    assert summary["modalities"]["b"]["shape"] == (2,)
    assert summary["time"]["val"] == ("2024-01-01 20:00", "2024-01-02 01:30")
    for word in ("train", "val", "test", "paired unlabelled", "regression", "(2,)", "no warnings"):
        assert word in r.stdout, (word, r.stdout)
    r = subprocess.run([*cmd, "build", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "x.npz")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "x.npz") as z:
        assert z["b"].shape[1] == 2 and set(np.unique(z["split"])) == {0, 1, 2}
    bad = tmp_path / "bad.yaml"
    cfg["data"]["sources"]["modalities"]["a"]["columns"] = ["zz"]
    bad.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([*cmd, "inspect", str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "no column 'zz'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_airquality_example_equals_recipe() -> None:
    csv = SHARED / "air_quality_uci_cheap_vs_reference" / "AirQualityUCI.csv"
    if not csv.is_file():
        pytest.skip(f"the UCI air quality file is not in {csv.parent}")
    import cmkd.nn.losses  # noqa: F401 - the name checks that validate() runs
    from cmkd.pipeline.resolve import resolve

    yml = Path(__file__).resolve().parents[1] / "examples" / "airquality_sources.yaml"
    _, a, _, _ = resolve(str(yml), [f"data.sources.tables.uci.path={csv}"])
    _, b, _, _ = resolve("airquality", [f"data.path={csv.parent}"])
    for k in ("sensors", "reference", "no2", "split"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # the generic reader gives the recipe's arrays


@pytest.mark.slow  # a tiny run with the student's export (about 20 s)
def test_declared_names_and_units_reach_the_sidecar_and_report(tmp_path: Path) -> None:
    """Channel names and units declared in data.sources end in student.json, metrics.json and the report after a
    tiny run (one epoch, student export only)."""
    pytest.importorskip("onnx")
    jsonschema = pytest.importorskip("jsonschema")
    import json

    import cmkd
    from cmkd.export.sidecar import schema

    n = 120
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    pd.DataFrame({"v1": x[:, 0], "v2": x[:, 1], "temp": x[:, 2], "north": x[:, 0] + 0.1 * rng.normal(size=n),
                  "east": x[:, 1] - x[:, 2]}).to_csv(tmp_path / "t.csv", index=False)
    cfg = {"name": "named", "seed": 0,
           "data": {"modalities": {"volts": {"kind": "vector"}, "temp": {"kind": "vector"}},
                    "targets": {"drift": {"kind": "regression"}},
                    "sources": {"tables": {"T": {"path": "t.csv"}},
                                "modalities": {"volts": {"table": "T", "columns": ["v1", "v2"],
                                                         "channels": ["left", "right"], "units": "V"},
                                               "temp": {"table": "T", "columns": ["temp"], "units": "degC"}},
                                "targets": {"drift": {"table": "T", "columns": ["north", "east"], "units": "mm"}}}},
           "teacher": {"modalities": ["volts", "temp"], "width": 8, "heads": 2, "epochs": 1},
           "student": {"modalities": ["volts"], "width": 8, "heads": 2, "epochs": 1},
           "references": False, "trees": False, "export": {"latency_runs": 5, "model": "student"}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    cmkd.run(str(tmp_path / "exp.yaml"), out, quiet=True)
    card = json.loads((out / "student.json").read_text())
    jsonschema.validate(card, schema())
    assert card["inputs"] == [{**card["inputs"][0], "name": "volts", "channels": ["left", "right"], "units": "V"}]
    (drift,) = card["targets"]
    assert drift["units"] == "mm" and drift["columns"] == ["north", "east"] and drift["dims"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["channels"] == {"volts": ["left", "right"], "temp": ["temp"]}
    report = (out / "report.html").read_text()
    assert "<b>volts</b>: left, right" in report
