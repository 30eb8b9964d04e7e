"""Recipe houston (REAL data): the polygon grouping and validation split, the loader and a quick run.

The tests that read the data skip where ../shared/data/houston2013_mdlrs_subset is absent.
"""

import json

import numpy as np
import pytest

from cmkd.data.regions import polygons
from cmkd.recipes.base import label_mask
from cmkd.recipes.houston import recipe as houston


def test_polygons_are_same_class_connected_components() -> None:
    # a 3x3 class-1 square, a class-1 pixel touching it diagonally, a separate class-1 pair, and a class-2
    # pixel inside the square's bounding row: three class-1 polygons would be wrong, two are right
    pix = [(0, 0, 1), (0, 1, 1), (0, 2, 1), (1, 0, 1), (1, 1, 1), (1, 2, 1), (2, 0, 1), (2, 1, 1), (2, 2, 1),
           (3, 3, 1),  # diagonal neighbour of (2, 2): same polygon
           (0, 6, 1), (0, 7, 1),  # apart: a second polygon
           (0, 3, 2)]  # touches the square but is another class
    rows, cols, labels = (np.array(v) for v in zip(*pix))
    ids = polygons(rows, cols, labels)
    assert len(set(ids[:10])) == 1
    assert ids[10] == ids[11] != ids[0]
    assert ids[12] not in set(ids[:12])


def test_split_holds_out_whole_polygons() -> None:
    rng = np.random.default_rng(0)
    rows, cols, labels = [], [], []
    for k in range(40):  # 40 square polygons of 4-16 pixels, 4 classes, 10 pixels apart
        side = int(rng.integers(2, 5))
        r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        rows.append(r.ravel() + 10 * (k // 8))
        cols.append(c.ravel() + 10 * (k % 8))
        labels.append(np.full(side * side, k % 4))
    rows, cols, labels = (np.concatenate(v) for v in (rows, cols, labels))
    val = houston.spatial_val_split(rows, cols, labels, 0.2, seed=3)
    ids = polygons(rows, cols, labels)
    assert not set(ids[val]) & set(ids[~val])  # no polygon on both sides
    for c in range(4):
        share = val[labels == c].mean()
        assert 0 < share < 0.5, (c, share)
    np.testing.assert_array_equal(val, houston.spatial_val_split(rows, cols, labels, 0.2, seed=3))
    assert not np.array_equal(val, houston.spatial_val_split(rows, cols, labels, 0.2, seed=4))


def _config_or_skip(quick: bool = False) -> dict:
    folder = houston.default_folder()
    if not all((folder / f).is_file() for f in houston.FILES + ["sample_coords.csv"]):
        pytest.skip(f"Houston 2013 data {houston.FOLDER} not found ({folder}); set CMKD_DATA")
    return houston.default_config(quick=quick)


def test_loader_official_split_and_spatial_validation() -> None:
    cfg = _config_or_skip()
    a = houston.load(cfg)
    split, y = a["split"], a["label"]
    assert (split == 2).sum() == 12197 and (split < 2).sum() == 2832
    assert a["hsi"].shape == (15029, 144) and a["lidar"].shape == (15029, 21)
    assert np.isnan(a["hsi"][split == 2]).all() and a["hsi__present"].sum() == 2832
    # validation holds whole polygons of every class: no validation pixel has a training pixel of its class
    # within one pixel (8-neighbourhood), and every class keeps training pixels
    tr = houston.sample_coords(houston.default_folder(), "train")
    np.testing.assert_array_equal(tr["label"], y[:2832])  # the csv's order is the .mat files'
    rows, cols = tr["row"], tr["col"]
    val = split[:2832] == 1
    for c in range(1, 16):
        assert ((split[:2832] == 0) & (y[:2832] == c)).any() and (val & (y[:2832] == c)).any()
        v, k = np.flatnonzero(val & (y[:2832] == c)), np.flatnonzero(~val & (y[:2832] == c))
        gap = np.maximum(np.abs(rows[v, None] - rows[None, k]), np.abs(cols[v, None] - cols[None, k]))
        assert gap.min() > 1, c
    assert 0.15 <= val.mean() <= 0.3


@pytest.mark.slow  # a quick run on the real data
def test_quick_run_scores_the_official_test_pixels(tmp_path) -> None:  # noqa: ANN001
    _config_or_skip(quick=True)
    import cmkd

    cmkd.run("houston", out=tmp_path, quick=True, quiet=True, overrides=["export.enabled=false"])
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["synthetic"] is False and m["data"]["n_test"] == 12197 and m["data"]["n_test_teacher"] == 0
    assert m["models"]["teacher"]["scored_on"] == "val"
    for role in ("student_baseline", "student"):
        assert m["models"][role]["scored_on"] == "test" and m["models"][role]["n_test"] == 12197
        assert 1 / 15 < m["models"][role]["metrics"]["accuracy"] <= 1
    assert {"random_forest", "extra_trees"} <= set(m["references"])


def test_label_mask_keeps_a_share_of_every_class() -> None:
    """options.label_fraction: per class max(2, round(f * n)) training labels, every val/test label, seeded."""
    labels = np.repeat(np.arange(5), [200, 100, 50, 10, 3])
    split = np.zeros(len(labels), np.int64)
    split[::7] = 1
    split[1::7] = 2
    keep = label_mask(split, 0.05, seed=0, labels=labels)
    assert keep[split != 0].all()
    for c in range(5):
        n = ((labels == c) & (split == 0)).sum()
        assert keep[(labels == c) & (split == 0)].sum() == min(n, max(2, round(0.05 * n))), c
    np.testing.assert_array_equal(keep, label_mask(split, 0.05, seed=0, labels=labels))
    assert not np.array_equal(keep, label_mask(split, 0.05, seed=1, labels=labels))
    assert label_mask(split, 1.0, seed=0, labels=labels).all()
    with pytest.raises(houston.CmkdError, match="label_fraction"):
        label_mask(split, 0.0, seed=0, labels=labels)


def test_sparse_labels_leave_paired_unlabelled_pixels() -> None:
    cfg = _config_or_skip()
    cfg["options"] = {"label_fraction": 0.02}
    with pytest.raises(houston.CmkdError, match="student.refit=false"):  # the recipe's refit would use val labels
        houston.load(cfg)
    cfg["student"]["refit"] = False
    a = houston.load(cfg)
    tr = a["split"] == 0
    lab = a["label"] != -1
    assert (a["label"][a["split"] != 0] != -1).all()  # validation and test keep every label
    assert set(np.unique(a["label"][tr & lab])) == set(range(1, 16))  # every class has labels
    assert 0.015 < (tr & lab).sum() / tr.sum() < 0.04
    assert a["hsi__present"][tr & ~lab].all()  # the unlabelled pixels are paired (hyperspectral + LiDAR)
