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

from cmkd.continual import EWC, fisher_diagonal, model_dataset, sample_shots
from cmkd.errors import CmkdError
from cmkd.pipeline import load_model, original_dataset


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adapt")
    y = write_case(folder, student="vec", teacher=["vec", "img"], epochs=4)
    r = cli("run", str(y), "--out", str(folder / "run"), "--quiet", "--set", "export.enabled=false")
    assert r.returncode == 0, r.stderr
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


def test_cli_adapt_bad_inputs(trained: Path, tmp_path: Path) -> None:
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(trained / "site.npz"), "--shots", "0")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "shots" in r.stderr
    bad = dict(np.load(trained / "site.npz"))
    bad["y"] = bad["y"] + 7  # labels the model never saw
    np.savez(tmp_path / "bad.npz", **bad)
    r = cli("adapt", "--model", str(trained / "run"), "--data", str(tmp_path / "bad.npz"))
    assert r.returncode == 2 and "unknown to the model" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_data_writes_a_recipe_npz(tmp_path: Path) -> None:
    out = tmp_path / "site1.npz"
    r = cli("data", "minerals", "--out", str(out), "--set", "options.size=40", "--set", "options.site=1")
    assert r.returncode == 0, r.stderr
    with np.load(out) as z:
        assert {"hsi", "lidar", "rgb", "mineral", "split"} <= set(z.files)
        assert len(z["rgb"]) == len(z["mineral"]) > 100
    r = cli("data", "minerals", "--out", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and ".npz" in r.stderr
