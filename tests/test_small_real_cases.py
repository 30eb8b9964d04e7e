"""The small REAL cases of ``benchmarks/small_real.py`` (``benchmarks/small_real_cases.py``): built as a user would
bring them (npz + YAML), with the label budgets and splits they promise, and accepted by the loader ``cmkd run``
uses (``cmkd.pipeline.resolve.resolve`` + ``cmkd.data.arrays.build_data``). No training here."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmkd.data.arrays import build_data
from cmkd.errors import CmkdError
from cmkd.pipeline.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("small_real_cases", ROOT / "benchmarks" / "small_real_cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def _needs(case: str) -> None:
    try:
        cases.data_folder(case)
    except CmkdError as e:
        pytest.skip(f"real data absent: {e}")


def _load(path: Path):
    """What ``cmkd run path`` loads and checks before training."""
    cfg, arrays, source, _ = resolve(str(path))
    return cfg, build_data(arrays, cfg.data, cfg.seed, source)


def _counts(data) -> list[int]:
    """Labelled samples per split part (train, val, test)."""
    return [len(data.labelled(data.indices(p))) for p in (0, 1, 2)]


def test_tecator_20_labels(tmp_path: Path) -> None:
    _needs("tecator")
    npz, path = cases.build("tecator", 20, 0, tmp_path)
    a = dict(np.load(npz))
    assert a["spectrum"].shape == (215, 100) and a["bands4"].shape == (215, 4)
    np.testing.assert_array_equal(a["bands4"], a["spectrum"][:, [0, 25, 50, 75]])
    split, fat = a["split"], a["fat"]
    assert np.bincount(split).tolist() == [168, 4, 43]  # 16 labelled + 152 unlabelled training, 4 val, 43 test
    assert (~np.isnan(fat[split == 0])).sum() == 16 and not np.isnan(fat[split >= 1]).any()
    cfg, data = _load(path)
    assert cfg.teacher.modalities == ["spectrum"] and cfg.student.modalities == ["bands4"]
    assert data.target_kinds == {"fat": "regression"} and _counts(data) == [16, 4, 43]
    # another seed draws other labels, the same counts
    a1 = dict(np.load(cases.build("tecator", 20, 1, tmp_path / "s1")[0]))
    assert not np.array_equal(np.isnan(a1["fat"]), np.isnan(fat))


def test_vowels_27_labels(tmp_path: Path) -> None:
    _needs("vowels")
    npz, path = cases.build("vowels", 27, 0, tmp_path)
    a = dict(np.load(npz))
    assert a["lpc12"].shape == (640, 29, 12) and a["lpc3"].shape == (640, 29, 3)
    # unequal lengths padded with NaN (7 to 29 frames); no frame inside an utterance is missing
    frames = (~np.isnan(a["lpc12"][:, :, 0])).sum(axis=1)
    assert frames.min() == 7 and frames.max() == 29
    assert all(not np.isnan(a["lpc12"][i, :t]).any() for i, t in enumerate(frames))
    split, y = a["split"], a["speaker"]
    assert np.bincount(split).tolist() == [261, 9, 370]
    lab = y >= 0
    # 3 labels per speaker: 2 train + 1 validation each; every test sample labelled
    assert np.bincount(y[lab & (split == 0)], minlength=9).tolist() == [2] * 9
    assert np.bincount(y[split == 1], minlength=9).tolist() == [1] * 9
    assert lab[split == 2].all() and (y[split == 0] >= 0).sum() == 18
    cfg, data = _load(path)
    assert cfg.data.modalities["lpc12"].kind == "sequence" and len(cfg.data.class_names) == 9
    assert data.present["lpc3"].all() and _counts(data) == [18, 9, 370]
    assert len(data.classes["speaker"]) == 9


def test_samson_rgb_1pct(tmp_path: Path) -> None:
    _needs("samson_rgb")
    npz, path = cases.build("samson_rgb", 0.01, 0, tmp_path)
    a = dict(np.load(npz))
    assert a["spectrum"].shape == (9025, 156) and a["rgb"].shape == (9025, 3) and a["abundance"].shape == (9025, 3)
    wl = cases.samson_wavelengths()
    assert wl[0] == 401 and wl[-1] == 889
    bands = [int(np.argmin(np.abs(wl - c))) for c in (640, 550, 460)]
    np.testing.assert_array_equal(a["rgb"], a["spectrum"][:, bands])
    split, block = a["split"], a["block"]
    assert np.bincount(block).tolist() == [361] * 25
    # spatially disjoint: no block in two parts; 15 / 5 / 5 blocks
    parts = [set(block[split == p].tolist()) for p in (0, 1, 2)]
    assert [len(p) for p in parts] == [15, 5, 5]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    labelled = ~np.isnan(a["abundance"]).any(axis=1)
    assert labelled[split == 0].sum() == 54 and labelled[split == 1].sum() == 18 and labelled[split == 2].all()
    # a labelled pixel's abundances sum to one (rock, tree, water)
    np.testing.assert_allclose(a["abundance"][labelled].sum(axis=1), 1.0, atol=1e-4)
    cfg, data = _load(path)
    assert cfg.data.targets["abundance"].columns == ["rock", "tree", "water"]
    assert ("groups" in yaml.safe_load(path.read_text())["data"]) == ("groups" in type(cfg.data).model_fields)
    assert _counts(data) == [54, 18, 1805]
    # another seed: other blocks
    b1 = dict(np.load(cases.build("samson_rgb", 0.01, 1, tmp_path / "s1")[0]))
    assert set(b1["block"][b1["split"] == 2].tolist()) != parts[2]


def test_bad_case_or_budget_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CmkdError, match="unknown case"):
        cases.build("nope", 20, 0, tmp_path)
    with pytest.raises(CmkdError, match="budget 21"):
        cases.build("tecator", 21, 0, tmp_path)
    with pytest.raises(CmkdError, match="built-in recipe"):
        cases.build("airquality", 0.01, 0, tmp_path)


def test_recipe_cases_run_as_label_fraction_runs_them(tmp_path: Path) -> None:
    _needs("houston")
    args = cases.run_args("houston", 0.02, 1, tmp_path)
    assert args == ["houston", "--set", "seed=1", "--set", "options.label_fraction=0.02", "--set",
                    "student.refit=false"]
