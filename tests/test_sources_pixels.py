"""Cube sources for labelled-pixel sets (cmkd.data.cubes): pixel lists placed ``at`` the pixels a label map labels,
a source from several cubes (training map, then test map), an official test map (``split.test_cube``) and
validation by whole class regions (``split.regions``); the Houston example YAML against the recipe."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from cmkd.config import DataConfig
from cmkd.data.regions import polygons
from cmkd.data.sources import build
from cmkd.errors import CmkdError

SHARED = Path(os.environ.get("CMKD_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def _cfg() -> DataConfig:
    return DataConfig.model_validate({"modalities": {"hsi": {"kind": "vector"}, "lid": {"kind": "vector"}},
                                      "targets": {"y": {"kind": "classification"}}})


def _scene(tmp_path: Path) -> dict:
    """A 6 x 12 scene: the training map has four 2 x 2 polygons (classes 1, 2, 1, 2 from left to right, rows 0-1)
    and the test map two pixels of each class (row 4); pixel lists hold, per labelled pixel in row-major order,
    [row, col] (hsi, training pixels only) and [100 + row] (lidar, training and test lists)."""
    tr, te = np.zeros((6, 12), np.uint8), np.zeros((6, 12), np.uint8)
    for k in range(4):
        tr[0:2, 3 * k:3 * k + 2] = 1 + k % 2
    te[4, [0, 3]] = 1
    te[4, [6, 9]] = 2
    rt, ct = np.nonzero(tr)
    re, ce = np.nonzero(te)
    mats = {"tr": tr, "te": te, "hsi": np.stack([rt, ct], 1).astype(float), "lid_tr": 100.0 + rt[:, None],
            "lid_te": 100.0 + re[:, None]}
    for k, v in mats.items():
        scipy.io.savemat(tmp_path / f"{k}.mat", {"x": v})
    return {"cubes": {"train_map": {"path": "tr.mat", "missing": [0]}, "test_map": {"path": "te.mat", "missing": [0]},
                      "hsi_tr": {"path": "hsi.mat", "layout": "pixels-bands", "at": "train_map"},
                      "lid_tr": {"path": "lid_tr.mat", "layout": "pixels-bands", "at": "train_map"},
                      "lid_te": {"path": "lid_te.mat", "layout": "pixels-bands", "at": "test_map"}},
            "modalities": {"hsi": {"cube": "hsi_tr"}, "lid": {"cube": ["lid_tr", "lid_te"]}},
            "targets": {"y": {"cube": ["train_map", "test_map"]}},
            "pixels": "labelled", "split": {"test_cube": "test_map", "regions": True, "val": 0.45, "seed": 1}}


def test_pixel_lists_official_test_map_and_region_split(tmp_path: Path) -> None:
    a = build(_scene(tmp_path), _cfg(), tmp_path).arrays
    n_tr = 16
    assert len(a["y"]) == n_tr + 4
    # the training map's pixels (row-major), then the test map's
    assert (a["row"][:n_tr] <= 1).all() and (a["row"][n_tr:] == 4).all()
    assert np.array_equal(np.lexsort((a["col"][:n_tr], a["row"][:n_tr])), np.arange(n_tr))
    # every pixel list's row landed on its own pixel; HSI only where the training list has it
    np.testing.assert_array_equal(a["hsi"][:n_tr], np.stack([a["row"], a["col"]], 1)[:n_tr])
    assert np.isnan(a["hsi"][n_tr:]).all() and not a["hsi__present"][n_tr:].any()
    np.testing.assert_array_equal(a["lid"][:, 0], 100 + a["row"])
    np.testing.assert_array_equal(a["y"], [1, 1, 2, 2, 1, 1, 2, 2] * 2 + [1, 1, 2, 2])
    # test = the test map; validation = whole polygons, about 45% of each class's training pixels
    np.testing.assert_array_equal(a["split"] == 2, a["row"] == 4)
    tr = a["split"] != 2
    ids = polygons(a["row"][tr], a["col"][tr], a["y"][tr])
    val = a["split"][tr] == 1
    assert not set(ids[val]) & set(ids[~val])
    for c in (1, 2):
        assert val[a["y"][tr] == c].sum() == 4


def test_pixel_list_errors(tmp_path: Path) -> None:
    spec = _scene(tmp_path)
    scipy.io.savemat(tmp_path / "short.mat", {"x": np.zeros((15, 2))})
    spec["cubes"]["hsi_tr"]["path"] = "short.mat"
    with pytest.raises(CmkdError, match=r"short\.mat: 15 pixels, but .*tr\.mat \(cube 'train_map'\) labels 16"):
        build(spec, _cfg(), tmp_path)
    spec = _scene(tmp_path)
    spec["cubes"]["hsi_tr"]["at"] = "nowhere"
    with pytest.raises(CmkdError, match="cubes.hsi_tr.at: 'nowhere' must be another cube"):
        build(spec, _cfg(), tmp_path)
    spec = _scene(tmp_path)
    del spec["cubes"]["hsi_tr"]["layout"]
    with pytest.raises(CmkdError, match="at places a pixel list: give layout pixels-bands"):
        build(spec, _cfg(), tmp_path)
    spec = _scene(tmp_path)
    spec["split"]["test_cube"] = "nope"
    with pytest.raises(CmkdError, match="split.test_cube: no cube 'nope'"):
        build(spec, _cfg(), tmp_path)
    spec = _scene(tmp_path)
    spec["modalities"]["lid"]["cube"] = ["lid_tr", "hsi_tr"]
    with pytest.raises(CmkdError, match=r"hsi\.mat \(lid\): 2 bands, but the cube before it in the list gives 1"):
        build(spec, _cfg(), tmp_path)
    spec = _scene(tmp_path)
    scipy.io.savemat(tmp_path / "frac.mat", {"x": np.where(scipy.io.loadmat(tmp_path / "tr.mat")["x"] > 0, 0.5, 0)})
    spec["cubes"]["train_map"]["path"] = "frac.mat"
    cfg = DataConfig.model_validate({"modalities": {"hsi": {"kind": "vector"}, "lid": {"kind": "vector"}},
                                     "targets": {"y": {"kind": "regression"}}})
    with pytest.raises(CmkdError, match="split.regions holds out regions of one class"):
        build(spec, cfg, tmp_path)


def test_houston_example_equals_recipe() -> None:
    """examples/houston_sources.yaml (label maps as rasters, the shipped sample matrices placed at their pixels)
    gives the houston recipe's arrays at seed 0."""
    pytest.importorskip("tifffile")
    d = SHARED / "houston2013_mdlrs_subset"
    if not (d / "2013_IEEE_GRSS_DF_Contest_Samples_TR.tif").is_file() or not (d / "HSI_TrSet.mat").is_file():
        pytest.skip(f"the Houston 2013 files are not in {d}")
    import cmkd.nn.losses  # noqa: F401 - the name checks that validate() runs
    from cmkd.pipeline.resolve import resolve

    yml = Path(__file__).resolve().parents[1] / "examples" / "houston_sources.yaml"
    maps = "2013_IEEE_GRSS_DF_Contest_Samples_{}.tif"
    names = {"train_map": maps.format("TR"), "test_map": maps.format("VA"),
             "hsi_train": "HSI_TrSet.mat", "lidar_train": "LiDAR_TrSet.mat", "lidar_test": "LiDAR_TeSet.mat"}
    _, a, _, _ = resolve(str(yml), [f"data.sources.cubes.{k}.path={d / f}" for k, f in names.items()])
    _, b, _, _ = resolve("houston", [f"data.path={d}"])
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
