"""Sharded, memory-mapped datasets (a directory of .npy shards): gathering rows across shards, absent rows, and a
run on shards that matches the same data as one .npz (tiny SYNTHETIC data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import make_arrays, make_config, write_case

import cmkd
from cmkd.data.shards import ShardedArray, load_shards, write_shards
from cmkd.errors import CmkdError


def shard_arrays(arrays: dict, folder: Path, sizes: list[int]) -> Path:
    start = 0
    for i, size in enumerate(sizes):
        write_shards(folder, {k: v[start:start + size] for k, v in arrays.items()}, i)
        start += size
    assert start == len(arrays["y"])
    return folder


def test_gather_across_shards(tmp_path: Path) -> None:
    a = np.arange(40, dtype=np.float64).reshape(20, 2)
    for i, (lo, hi) in enumerate([(0, 7), (7, 8), (8, 20)]):
        write_shards(tmp_path, {"x": a[lo:hi]}, i)
    sa = ShardedArray(sorted(tmp_path.glob("shard_*/x.npy")), "x")
    assert sa.shape == (20, 2) and sa.dtype == np.float32 and len(sa) == 20
    idx = np.array([19, 0, 7, 8, 3, 7])
    assert np.array_equal(sa[idx], a[idx].astype(np.float32))
    assert np.array_equal(sa[5:9], a[5:9]) and np.array_equal(sa[-1], a[-1])
    assert np.array_equal(sa[np.arange(20) % 3 == 0], a[::3])
    sa.absent = np.zeros(20, dtype=bool)
    sa.absent[[0, 8]] = True
    got = sa[np.array([0, 1, 8])]
    assert np.isnan(got[0]).all() and np.isnan(got[2]).all() and np.array_equal(got[1], a[1])
    assert [len(r) for r, _ in sa.chunks(size=8)] == [8, 8, 4]


def test_bad_shards(tmp_path: Path) -> None:
    write_shards(tmp_path / "d", {"x": np.zeros((3, 2)), "y": np.zeros(3)}, 0)
    write_shards(tmp_path / "d", {"x": np.zeros((3, 2))}, 1)
    with pytest.raises(CmkdError, match="differ"):
        load_shards(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(CmkdError, match="sub-folders"):
        load_shards(tmp_path / "e")


@pytest.mark.slow  # two full runs
def test_run_on_shards_matches_npz(tmp_path: Path) -> None:
    arrays = make_arrays(n=240)
    cfg = make_config(student="img", teacher=["seq", "img", "txt"], epochs=2)
    y_npz = write_case(tmp_path / "npz", arrays, cfg)
    shard_arrays(arrays, tmp_path / "shards" / "data", [100, 60, 80])
    cfg_sh = {**cfg, "data": {**cfg["data"], "path": "data"}}
    (tmp_path / "shards" / "exp.yaml").write_text(yaml.safe_dump(cfg_sh))
    loaded = load_shards(tmp_path / "shards" / "data")
    assert isinstance(loaded["img"], ShardedArray) and isinstance(loaded["y"], np.ndarray)
    a = cmkd.run(str(y_npz), tmp_path / "out-npz", quiet=True)
    b = cmkd.run(str(tmp_path / "shards" / "exp.yaml"), tmp_path / "out-shards", quiet=True)
    for role in ("teacher", "student_baseline", "student"):
        for k, v in a["models"][role]["metrics"].items():
            assert b["models"][role]["metrics"][k] == pytest.approx(v, abs=1e-6), (role, k)
    assert json.loads((tmp_path / "out-shards" / "metrics.json").read_text())["data"]["n_test"] == a["data"]["n_test"]
