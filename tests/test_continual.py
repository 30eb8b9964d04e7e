"""Few-shot site adaptation and EWC (tiny SYNTHETIC data), and `cmkd data`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_arrays, write_case

import cmkd
from cmkd.errors import CmkdError
from cmkd.nn.checkpoint import load_model
from cmkd.pipeline.resolve import original_dataset
from cmkd.training.continual import EWC, fisher_diagonal, model_dataset, sample_shots


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adapt")
    y = write_case(folder, student="vec", teacher=["vec", "img"], epochs=4)
    cmkd.run(str(y), folder / "run", quiet=True, overrides=["export.enabled=false"])  # in-process: no CLI start-up
    site = make_arrays(240, seed=3)
    site["vec"] = site["vec"] * 1.5 + 0.8  # a new site: shifted and rescaled instrument response
    np.savez(folder / "site.npz", **site)
    return folder


def test_ewc_penalty_and_fisher(trained: Path) -> None:
    model, meta = load_model(trained / "run" / "student.pt")
    data = original_dataset(meta)
    assert data is not None
    fisher = fisher_diagonal(model, data, data.labelled(data.indices(0)))
    allf = torch.cat([f.reshape(-1) for f in fisher.values()])
    assert allf.min() >= 0 and allf.mean().item() == pytest.approx(1.0, rel=1e-4)
    ewc = EWC(model, fisher, 10.0)
    assert ewc(model).item() == 0.0
    with torch.no_grad():
        p = next(model.parameters())
        p += 0.1
    assert ewc(model).item() > 0


def test_sample_shots_per_class(trained: Path) -> None:
    _, meta = load_model(trained / "run" / "student.pt")
    arrays = dict(np.load(trained / "site.npz"))
    data = model_dataset(meta, arrays, "site.npz", "keep")
    chosen = sample_shots(data, data.indices(0), 5, seed=1)
    counts = np.bincount(data.targets["y"][chosen])
    assert counts.max() <= 5 and len(chosen) == len(np.unique(chosen))
    assert np.array_equal(chosen, sample_shots(data, data.indices(0), 5, seed=1))
    with pytest.raises(CmkdError, match="shots"):
        sample_shots(data, data.indices(0), 0)


@pytest.mark.slow  # CLI subprocesses (adapt, data) on the trained run
@pytest.mark.parametrize("ewc", ["0", "50"])
def test_cli_adapt(trained: Path, tmp_path: Path, ewc: str) -> None:
    out = tmp_path / "a"
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(trained / "site.npz"), "--shots", "8",
            "--ewc", ewc, "--epochs", "20", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "adapt.json").read_text())
    for when in ("before", "after"):
        assert {"new_site", "original_site"} <= set(rep[when])
        assert 0 <= rep[when]["new_site"]["accuracy"] <= 1
    assert rep["ewc_lambda"] == float(ewc) and rep["n_shots"] <= 3 * 8
    model, meta = load_model(out / "student_adapted.pt")
    assert meta["role"] == "student_adapted" and meta["adaptation"]["shots_per_class"] == 8
    assert "new_site:" in r.stdout


@pytest.mark.slow  # CLI subprocesses (adapt, data) on the trained run
def test_cli_adapt_bad_inputs(trained: Path, tmp_path: Path) -> None:
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(trained / "site.npz"), "--shots", "0")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "shots" in r.stderr
    bad = dict(np.load(trained / "site.npz"))
    bad["y"] = bad["y"] + 7  # labels the model never saw
    np.savez(tmp_path / "bad.npz", **bad)
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(tmp_path / "bad.npz"))
    assert r.returncode == 2 and "unknown to the model" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # CLI subprocesses (adapt, data) on the trained run
def test_cli_data_writes_a_recipe_npz(tmp_path: Path) -> None:
    out = tmp_path / "site1.npz"
    r = cli("data", "minerals", "--out", str(out), "--set", "options.size=40", "--set", "options.site=1")
    assert r.returncode == 0, r.stderr
    with np.load(out) as z:
        assert {"hsi", "lidar", "rgb", "mineral", "split"} <= set(z.files)
        assert len(z["rgb"]) == len(z["mineral"]) > 100
    r = cli("data", "minerals", "--out", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and ".npz" in r.stderr


def test_restandardise_fits_new_site_and_keeps_original(trained: Path) -> None:
    """Restandardisation loads the new site's label-free statistics; the original site keeps (and is scored with)
    its own, and the input model is untouched."""
    from cmkd.training.continual import adapt, input_stats

    model, meta = load_model(trained / "run" / "student.pt")
    original = original_dataset(meta)
    arrays = dict(np.load(trained / "site.npz"))
    arrays["y"] = np.where(np.arange(len(arrays["y"])) % 2 == 0, -1, arrays["y"])  # half unlabelled: still used
    new = model_dataset(meta, arrays, "site.npz", "keep")
    orig_stats = input_stats(model)
    adapted, rep = adapt(model, new, 5, original, epochs=0, restandardise=True)
    vec = arrays["vec"]
    assert np.allclose(adapted.encoders["vec"].mean.numpy(), vec.mean(0), atol=1e-4)
    assert np.allclose(adapted.encoders["vec"].std.numpy(), vec.std(0), atol=1e-4)
    assert np.allclose(model.encoders["vec"].mean.numpy(), orig_stats["in:vec"]["mean"])  # input model unchanged
    assert np.allclose(rep["stats"]["original_site"]["in:vec"]["mean"], orig_stats["in:vec"]["mean"].ravel())
    # no fine-tuning: the original site, scored with its own statistics, scores exactly as before
    assert rep["after"]["original_site"] == rep["before"]["original_site"]
    assert rep["after"]["new_site"] == rep["restandardised_only"]["new_site"]
    # restandardisation undoes the site's affine shift: the new site scores at least as well as before
    assert rep["restandardised_only"]["new_site"]["accuracy"] >= rep["before"]["new_site"]["accuracy"]
    _, plain = adapt(model, new, 5, original, epochs=0, restandardise=False)
    assert "stats" not in plain and plain["after"]["new_site"] == plain["before"]["new_site"]


def test_using_stats_restores(trained: Path) -> None:
    from cmkd.training.continual import input_stats, site_stats, using_stats

    model, meta = load_model(trained / "run" / "student.pt")
    new = model_dataset(meta, dict(np.load(trained / "site.npz")), "site.npz", "keep")
    before = input_stats(model)["in:vec"]["mean"].copy()
    fitted = site_stats(model, new)
    with using_stats(model, fitted):
        assert not np.allclose(model.encoders["vec"].mean.numpy(), before)
    assert np.allclose(model.encoders["vec"].mean.numpy(), before)


def test_pseudo_labels_and_augmentation(trained: Path) -> None:
    from cmkd.training.continual import pseudo_label
    from cmkd.training.fit import dihedral

    model, meta = load_model(trained / "run" / "student.pt")
    arrays = dict(np.load(trained / "site.npz"))
    arrays["y"] = np.full(len(arrays["y"]), -1)  # no labels: pseudo-labels never read them
    data = model_dataset(meta, arrays, "site.npz", "keep")
    pool = np.arange(0, data.n, 2)
    data2, extra = pseudo_label(model, data, pool, 4)
    assert set(extra) <= set(pool) and np.bincount(data2.targets["y"][extra]).max() <= 4
    assert (data2.targets["y"][extra] >= 0).all() and (data.targets["y"] == -1).all()
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    y = dihedral(x)
    assert y.shape == x.shape and torch.equal(y.reshape(2, -1).sort(1).values, x.reshape(2, -1).sort(1).values)
    assert torch.equal(y[:, :, 2, 2], x[:, :, 2, 2])  # the centre pixel stays the centre


@pytest.mark.slow  # CLI subprocesses (adapt, data) on the trained run
def test_cli_adapt_options(trained: Path, tmp_path: Path) -> None:
    import inspect

    from cmkd import cli as cli_mod
    from cmkd.training.continual import adapt

    sig = inspect.signature(adapt).parameters  # the library and the CLI share the defaults chosen on validation
    assert sig["restandardise"].default is cli_mod.RESTANDARDISE_DEFAULT
    assert sig["augment"].default is cli_mod.AUGMENT_DEFAULT
    out = tmp_path / "a"
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(trained / "site.npz"), "--shots", "4",
            "--epochs", "2", "--no-restandardise", "--train", "fusion", "--augment", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "adapt.json").read_text())
    assert rep["restandardise"] is False and rep["train"] == "fusion" and rep["augment"] is True
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(trained / "site.npz"), "--epochs", "1",
            "--out", str(out), "--overwrite")  # the earlier adaptation's folder: replaced only with --overwrite
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "adapt.json").read_text())
    assert rep["restandardise"] is cli_mod.RESTANDARDISE_DEFAULT and rep["augment"] is cli_mod.AUGMENT_DEFAULT
    for bad, word in ((["--train", "encoder"], "--train"), (["--pseudo", "-1"], "--pseudo")):
        r = cli("adapt", "--model", str(trained / "run"), "--data", str(trained / "site.npz"), *bad)
        assert r.returncode == 2 and word in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
