"""Sparse-data and uncertainty machinery: missingness patterns, the mask-aware sequence encoder, conformal
intervals, cross-modal imputation and availability-adaptive weights end to end (tiny SYNTHETIC data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_arrays, make_config

import cmkd
from cmkd.config import validate
from cmkd.data.arrays import availability, build_data
from cmkd.data.missing import PATTERNS, channel_masks, make_mask
from cmkd.errors import CmkdError
from cmkd.evaluation.uncertainty import ConformalRegressor, availability_groups, conformal_quantile, conformal_sets
from cmkd.nn.encoders import SequenceEncoder
from cmkd.nn.models import drop_modalities


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8, 0.9])
def test_mask_rates_are_exact(pattern: str, rate: float) -> None:
    rng = np.random.default_rng(0)
    sev = np.abs(np.sin(np.arange(3000) / 200.0))
    m = make_mask(pattern, 3000, rate, rng, severity=sev)
    assert m.dtype == bool and m.shape == (3000,)
    assert abs(m.mean() - rate) <= 1 / 3000


def test_storm_mask_hits_extremes_and_bursty_is_clustered() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    sev = np.convolve(rng.normal(size=n), np.ones(48) / 48, "same")
    storm = make_mask("storm", n, 0.5, rng, severity=sev)
    top = sev > np.quantile(sev, 0.95)
    assert storm[top].mean() > 0.8  # readings in the worst 5% are mostly lost
    rand, burst = make_mask("random", n, 0.5, rng), make_mask("bursty", n, 0.5, rng)
    edges = [np.flatnonzero(np.diff(np.r_[0, m.astype(int), 0])).reshape(-1, 2) for m in (rand, burst)]
    runs = [(e[:, 1] - e[:, 0]).mean() for e in edges]  # mean outage length
    assert runs[1] > 5 * runs[0]  # outages come in long runs


def test_mask_errors_and_helpers() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(CmkdError, match="unknown missingness pattern"):
        make_mask("flood", 10, 0.5, rng)
    with pytest.raises(CmkdError, match="severity"):
        make_mask("storm", 10, 0.5, rng)
    with pytest.raises(CmkdError, match="rate"):
        make_mask("random", 10, 1.5, rng)
    ch = channel_masks(np.array([True, False, False, False] * 50), 3, rng, 0.1)
    assert ch.shape == (200, 3) and ch[::4].all()


def test_modality_dropout_keeps_one_modality_and_never_restores_one() -> None:
    torch.manual_seed(0)
    absent = torch.zeros(4000, 2, dtype=torch.bool)
    absent[:1000, 1] = True  # these samples have only their first modality
    out = drop_modalities(absent, 0.2)
    assert (out | ~absent).all()  # an absent modality stays absent
    assert (~out).any(dim=1).all()  # every sample keeps at least one modality
    assert not out[:1000, 0].any()  # a sample's only modality is never dropped
    # both present: each dropped with p = 0.2, unless both are (then neither): 0.2 - 0.2 ** 2 = 0.16
    assert out[1000:].float().mean().item() == pytest.approx(0.16, abs=0.02)


def test_sequence_encoder_time_since_last_observation() -> None:
    enc = SequenceEncoder((7, 2), 8)
    m = torch.tensor([[[0, 1], [1, 0], [0, 0], [0, 0], [0, 1], [1, 0], [0, 0]]], dtype=torch.float32)
    got = enc.time_since(m)[0].T.tolist()
    assert got == [[1, 0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 0, 1, 2]]
    x = torch.randn(4, 7, 2)
    x[0, :3, 0] = float("nan")
    assert torch.isfinite(enc(x)).all()


def test_conformal_quantile_and_coverage() -> None:
    assert conformal_quantile(np.arange(1, 10), 0.1) == 9  # ceil(10 * 0.9) = 9th of 9
    assert conformal_quantile(np.arange(1, 5), 0.1) == float("inf")  # too few scores for 90%
    rng = np.random.default_rng(0)
    # heteroscedastic truth, a model whose sigma is right in shape but 2x too small
    n = 4000
    g = rng.integers(0, 3, size=2 * n)
    scale = np.array([0.5, 1.0, 3.0])[g]
    y = rng.normal(size=2 * n) * scale
    mu, sigma = np.zeros(2 * n), scale / 2
    c = ConformalRegressor(0.1).fit(mu[:n], sigma[:n], y[:n], g[:n])
    lo, hi = c.interval(mu[n:], sigma[n:], g[n:])
    cov = np.mean((y[n:] >= lo) & (y[n:] <= hi))
    assert 0.88 <= cov <= 0.92
    for k in range(3):  # per group too (Mondrian)
        sel = g[n:] == k
        assert 0.86 <= np.mean((y[n:][sel] >= lo[sel]) & (y[n:][sel] <= hi[sel])) <= 0.94
    back = ConformalRegressor.from_state(json.loads(json.dumps(c.state())))
    assert np.allclose(back.interval(mu[n:], sigma[n:], g[n:])[1], hi)
    assert availability_groups(np.array([0.0, 0.2, 0.99]), (0.15, 0.5, 0.95)).tolist() == [0, 1, 3]


def test_conformal_sets_cover() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3000, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    sets = conformal_sets(p[:1500], y[:1500], p[1500:], 0.1)
    assert 0.87 <= sets[np.arange(1500), y[1500:]].mean() <= 0.93


def test_availability_counts_absent_modalities_as_missing() -> None:
    arrays = make_arrays(40)
    arrays["vec__present"] = np.arange(40) >= 20
    cfg = validate(make_config(task="classification", student="seq"))
    data = build_data(arrays, cfg.data, 0, "t", modalities=["vec", "seq"])
    a = availability(data, np.arange(40), ["vec", "seq"])
    seq_obs = (~np.isnan(arrays["seq"])).reshape(40, -1).sum(1)
    assert np.allclose(a[:20], seq_obs[:20] / (6 + 36))
    assert np.allclose(a[20:], (6 + seq_obs[20:]) / (6 + 36))


@pytest.mark.slow  # a full run
def test_regression_run_with_imputation_adaptive_weights_and_conformal(tmp_path: Path) -> None:
    arrays = make_arrays(300, task="regression")
    full = arrays["seq"].copy()
    full[np.isnan(full)] = 0.5  # the complete record the teacher sees (synthetic)
    arrays["seq_full"] = full
    arrays["split"] = np.random.default_rng(0).choice([0, 1, 2, 3], size=300, p=[0.5, 0.15, 0.2, 0.15])
    cfg = make_config(task="regression", student="seq", teacher=["vec", "seq_full"], epochs=3)
    cfg["data"]["modalities"]["seq_full"] = {"kind": "sequence", "cost": 5.0}
    cfg["distill"] = {"weights": {"task": 1.0, "kd": 1.0, "impute": 0.5}, "adaptive_weights": True,
                      "term_options": {"impute": {"sources": {"seq": "seq_full"}}}}
    m = cmkd.run(validate(cfg), tmp_path / "out", arrays=arrays, quiet=True)
    st = m["models"]["student"]["metrics"]
    assert 0 < st["imputation_rmse"] < 10
    assert "imputation_rmse" not in m["models"]["student_baseline"]["metrics"]
    for role in ("teacher", "student_baseline", "student"):
        mm = m["models"][role]["metrics"]
        assert 0 <= mm["coverage_90"] <= 1 and mm["width_90"] > 0
    assert m["uncertainty"]["calibrated_on"] == "calibration"
    meta = torch.load(tmp_path / "out" / "student.pt", weights_only=True)
    assert len(meta["conformal"]["y"]) == 1 and np.isfinite(meta["conformal"]["y"][0]["q"])
    hist = json.loads((tmp_path / "out" / "histories.json").read_text())
    assert "train_impute" in hist["student"][0]


def test_impute_config_errors() -> None:
    cfg = make_config(task="regression", student="seq")
    cfg["distill"] = {"term_options": {"impute": {"sources": {"vec": "seq"}}}}
    with pytest.raises(CmkdError, match="not a student modality"):
        validate(cfg)
    cfg["distill"] = {"term_options": {"impute": {"sources": {"seq": "nope"}}}}
    with pytest.raises(CmkdError, match="not declared"):
        validate(cfg)
    cfg["distill"] = {"impute": {"seq": "seq"}}  # an older YAML's key
    with pytest.raises(CmkdError, match="moved to 'distill.term_options.impute.sources'"):
        validate(cfg)
