"""Carbonation estimate of the minerals survey: calibration on validation pixels and its interval (constructed
SYNTHETIC cases whose answer is known)."""

from __future__ import annotations

import numpy as np
import pytest

from cmkd.errors import CmkdError
from cmkd.recipes.minerals.analysis import calibrated_carbonation, carbonation, fit_effective_coefficients


def _pixels(rng: np.random.Generator, n_rows: int, n_cols: int, one_way: bool = False) -> tuple[np.ndarray, ...]:
    """Two classes, coefficients (1, 0); each pixel 70% its class + 30% an even mix (true uptake 0.85 or 0.15);
    overconfident probabilities; the class share and the classifier's confusion rate (0-40%) vary in runs of
    4 rows, so errors are spatially correlated. ``one_way``: only class-1 pixels are confused (a biased total)."""
    rows = np.repeat(np.arange(n_rows), n_cols)
    runs = rows // 4
    share = np.clip(0.5 + 0.2 * rng.standard_normal(n_rows // 4 + 1), 0.05, 0.95)[runs]
    label = (rng.random(len(rows)) >= share).astype(int)  # class 0 with probability `share`
    frac = 0.7 * np.eye(2)[label] + 0.15
    wrong = rng.random(len(rows)) < rng.uniform(0, 0.4, n_rows // 4 + 1)[runs]
    if one_way:
        wrong &= label == 1
    pred = np.where(wrong, 1 - label, label)
    probs = 0.95 * np.eye(2)[pred] + 0.025
    return probs, frac, rows


def test_effective_coefficients_absorb_sub_pixel_mixing() -> None:
    probs = np.repeat(np.eye(2), 50, axis=0)
    uptake = np.repeat([0.85, 0.15], 50)
    k = fit_effective_coefficients(probs, uptake, np.array([1.0, 0.0]), ridge=1e-6)
    assert k == pytest.approx([0.85, 0.15], abs=1e-6)
    # ridge pulls a class without calibration pixels to its nominal coefficient
    k = fit_effective_coefficients(np.tile([1.0, 0.0], (50, 1)), np.full(50, 0.85), np.array([1.0, 0.3]), 20.0)
    assert k[1] == pytest.approx(0.3)


@pytest.mark.parametrize("method", ["none", "class"])
def test_calibrated_interval_covers_where_independent_pixels_do_not(method: str) -> None:
    """Over 60 constructed scenes (a calibration band of 12 columns and a target band of 20 from the same
    process), the calibrated 90% interval of the total covers the truth about 90% of the time; the
    independent-pixel interval, blind to the spatially correlated errors, seldom does."""
    rng = np.random.default_rng(0)
    coef = np.array([1.0, 0.0])
    cov, cov_raw = [], []
    for _ in range(60):
        pc, fc, rc = _pixels(rng, 96, 12)
        pt, ft, _ = _pixels(rng, 96, 20)
        cal = calibrated_carbonation(pt, ft, coef, 2.0, pc, fc, rc, method=method)
        raw = carbonation(pt, ft, coef, 2.0)
        cov.append(cal["interval_covers_truth"])
        cov_raw.append(raw["interval_covers_truth"])
        lo, hi = cal["interval_90_t"]
        assert lo <= cal["estimate_t"] <= hi and cal["true_t"] == pytest.approx(raw["true_t"])
        if method == "none":
            assert cal["estimate_t"] == pytest.approx(raw["estimate_t"])
    assert 0.8 <= np.mean(cov) and np.mean(cov_raw) <= np.mean(cov) - 0.4
    assert 0.8 <= cal["pixel_interval_coverage"] <= 1.0


def test_class_calibration_removes_a_confusion_bias() -> None:
    """Class-1 pixels taken for class 0 inflate the nominal total; effective coefficients fitted on calibration
    pixels of the same process remove most of that bias."""
    rng = np.random.default_rng(1)
    coef = np.array([1.0, 0.0])
    err, err_raw = [], []
    for _ in range(20):
        pc, fc, rc = _pixels(rng, 96, 12, one_way=True)
        pt, ft, _ = _pixels(rng, 96, 20, one_way=True)
        err.append(calibrated_carbonation(pt, ft, coef, 1.0, pc, fc, rc, method="class")["relative_error"])
        err_raw.append(carbonation(pt, ft, coef, 1.0)["relative_error"])
    assert np.mean(err_raw) > 0.15 and abs(np.mean(err)) < 0.3 * np.mean(err_raw)


def test_calibration_bad_inputs() -> None:
    p = np.full((30, 2), 0.5)
    f = np.full((30, 2), 0.5)
    with pytest.raises(CmkdError, match="at least 3 blocks"):
        calibrated_carbonation(p, f, np.ones(2), 1.0, p, f, np.zeros(30, int))
    with pytest.raises(CmkdError, match="method"):
        calibrated_carbonation(p, f, np.ones(2), 1.0, p, f, np.arange(30), method="isotonic")
    with pytest.raises(CmkdError, match="calibration pixels"):
        calibrated_carbonation(p, f, np.ones(2), 1.0, p[:0], f[:0], np.zeros(0, int))


def test_scene_is_seeded_and_shaped_as_documented() -> None:
    """The minerals generator (a tiny scene): the documented arrays and shapes, the same arrays from the same seed."""
    from cmkd.recipes.minerals.scene import generate

    a, b = generate(seed=1, size=24, patch=3, n_bands=16), generate(seed=1, size=24, patch=3, n_bands=16)
    n = len(a["mineral"])
    assert a["hsi"].shape == (n, 16) and a["lidar"].shape == (n, 2, 3, 3) and a["rgb"].shape == (n, 3, 3, 3)
    assert a["msi"].shape == (n, 10) and n > 0 and set(np.unique(a["split"])) <= {0, 1, 2, 3}
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_bad_survey_options_stop_the_run_before_training() -> None:
    from cmkd.recipes.minerals.recipe import load

    for opts, msg in (({"carbonation_calibration": "foo"}, "carbonation_calibration"),
                      ({"carbonation": {"quartz": 0.1}}, "unknown mineral")):
        with pytest.raises(CmkdError, match=msg):
            load({"seed": 0, "options": opts}, quick=True)
