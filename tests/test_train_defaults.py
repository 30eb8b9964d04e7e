"""Training defaults that hold on small data (ModelConfig.batch_size auto; benchmarks/small_data.md)."""

from __future__ import annotations

import pytest
from helpers import make_config

from cmkd.config import ModelConfig, validate
from cmkd.training.fit import batch_size_for, schedule_for


def test_auto_batch_size_gives_at_least_eight_batches_on_small_data():
    auto = ModelConfig()
    assert auto.batch_size is None  # the default is auto
    assert [batch_size_for(auto, n) for n in (10, 30, 100, 300, 1000, 5000)] == [8, 8, 13, 38, 125, 128]
    for n in (30, 100, 300, 1000):  # at least 8 batches an epoch up to 128 per batch
        assert -(-n // batch_size_for(auto, n)) >= 8 or batch_size_for(auto, n) == 8
    assert batch_size_for(ModelConfig(batch_size=64), 30) == 64  # a pinned size is kept


def test_a_config_may_pin_or_leave_the_batch_size():
    raw = make_config()
    raw["student"].pop("batch_size", None)
    cfg = validate(raw)
    assert cfg.student.batch_size is None and cfg.teacher.batch_size == 64


def test_auto_epochs_and_patience_aim_at_enough_steps():
    auto = ModelConfig()
    assert auto.epochs is None and auto.patience is None
    got = {n: (c.batch_size, c.epochs, c.patience) for n in (100, 2000, 5000, 50000)
           for c in [schedule_for(auto, n)]}
    assert got == {100: (13, 200, 40), 2000: (128, 100, 20), 5000: (128, 60, 12), 50000: (128, 60, 12)}
    pinned = schedule_for(ModelConfig(epochs=7, patience=3, batch_size=32), 100)
    assert (pinned.batch_size, pinned.epochs, pinned.patience) == (32, 7, 3)


@pytest.mark.slow  # a full run
def test_refit_keeps_the_batch_size_of_the_run_that_chose_the_epochs(tmp_path, monkeypatch):
    """student.refit retrains on train + validation for the chosen epoch count; with an auto batch size it keeps
    the first run's batch size (not the one the larger set would get)."""
    from helpers import write_case

    import cmkd
    import cmkd.pipeline.students as students

    seen: list = []
    real_fit = students.fit

    def spy(model, data, idx, val, mcfg, loss, settings):  # noqa: ANN001, ANN202
        seen.append((settings.desc, len(idx), mcfg.batch_size))
        return real_fit(model, data, idx, val, mcfg, loss, settings)

    monkeypatch.setattr(students, "fit", spy)  # every network of a run trains through it
    cfg = make_config(epochs=2)
    cfg["student"].pop("batch_size")
    cfg["student"]["refit"] = True
    cfg.update({"references": False, "trees": False, "export": {"enabled": False}})
    cmkd.run(str(write_case(tmp_path, config=cfg)), tmp_path / "out", quiet=True)
    first = {d: (n, b) for d, n, b in seen}
    n, b = first["student_baseline"]
    assert b is None  # auto: made concrete inside fit
    assert first["student_baseline_refit"][1] == batch_size_for(ModelConfig(), n)
    assert first["student_baseline_refit"][0] > n


def test_turn_images_turns_each_image_sample_by_one_of_the_eight_symmetries_and_leaves_other_inputs():
    """The flip / quarter-turn augmentation ``cmkd adapt --augment`` applies (:mod:`cmkd.training.continual`)."""
    import torch

    from cmkd.nn.models import MultimodalNet
    from cmkd.training.fit import turn_images

    net = MultimodalNet({"img": {"kind": "image", "shape": (2, 4, 4)}, "vec": {"kind": "vector", "shape": (3,)}},
                        {"y": {"kind": "classification", "n_out": 2}})
    torch.manual_seed(0)
    img, vec = torch.randn(64, 2, 4, 4), torch.randn(64, 3)
    out = turn_images({"img": img, "vec": vec}, net, True)
    assert out["vec"] is vec
    seen = set()
    for a, b in zip(img, out["img"]):
        forms = [torch.rot90(a, k, dims=(1, 2)) for k in range(4)]
        forms += [f.flip(-1) for f in forms]
        hits = [i for i, f in enumerate(forms) if torch.equal(f, b)]
        assert len(hits) == 1  # exactly one of the 8 flips / quarter turns, the channels turned together
        seen.add(hits[0])
    assert len(seen) == 8  # every symmetry is drawn (64 samples)
    assert turn_images({"img": img}, net, False)["img"] is img


def test_fit_without_validation_samples_runs_every_epoch_and_trains_the_same_weights():
    """A fold of cross-validation trains for a chosen epoch count with no validation samples: no per-epoch scoring,
    every epoch runs, the last state stays, and the weights are those of the same training scored each epoch."""
    import numpy as np
    import torch
    from helpers import make_arrays

    from cmkd.data.arrays import build_data, fit_stats
    from cmkd.nn.checkpoint import build_model
    from cmkd.training.distill import teacher_loss
    from cmkd.training.fit import FitSettings, fit, set_seed

    cfg = validate(make_config(epochs=3), source="test")
    data = build_data(make_arrays(n=80), cfg.data, 0)
    train, val = np.arange(60), np.arange(60, 80)
    stats = fit_stats(data, train)
    mcfg = cfg.student.model_copy(update={"patience": 10})
    mods = list(cfg.student.modalities)
    weights, hists = [], []
    for v in (val, train[:0]):
        set_seed(0)
        net = build_model(data, mods, mcfg, cfg)
        net.set_stats(stats)
        hist = fit(net, data, train, v, mcfg, teacher_loss(mcfg),
                   FitSettings(seed=0, target_stats=stats, quiet=True, select_best=False))
        hists.append(hist)
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert [len(h) for h in hists] == [3, 3]
    assert all("val_metric" in r for r in hists[0])
    assert all("val_metric" not in r and "train_loss" in r for r in hists[1])
    assert torch.equal(weights[0], weights[1])
