"""Recipe ``houston``: REAL data, the IEEE GRSS 2013 Data Fusion Contest (University of Houston campus).

Teacher: CASI hyperspectral (144 bands) + LiDAR features (21), trained on the official training pixels (2,832;
a stratified validation split is taken from them). Students: LiDAR only, scored on the official 12,197 test
pixels, which have no hyperspectral data (``hsi__present`` is False there). The teacher is scored on the
held-out training pixels that have both modalities... no: the teacher needs HSI, which the official test pixels
lack, so it is scored on the validation pixels only (reported as such in metrics.json: ``n_test_teacher``).

Data folder: ``../shared/data/houston2013_mdlrs_subset`` relative to the project, or ``$CMKD_DATA`` (a folder
holding ``houston2013_mdlrs_subset`` or the subset folder itself), or ``--set data.path=FOLDER``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CmkdError

DESCRIPTION = "Houston 2013 land cover: HSI+LiDAR teacher -> LiDAR-only student, official test pixels"
SYNTHETIC = False
FOLDER = "houston2013_mdlrs_subset"
CLASS_NAMES = ["Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water", "Residential",
               "Commercial", "Road", "Highway", "Railway", "Parking lot 1", "Parking lot 2", "Tennis court",
               "Running track"]
FILES = ["HSI_TrSet.mat", "LiDAR_TrSet.mat", "LiDAR_TeSet.mat", "TrLabel.mat", "TeLabel.mat"]


def default_folder() -> Path:
    """``$CMKD_DATA`` if set, else ``shared/data`` beside the project (or the working directory)."""
    env = os.environ.get("CMKD_DATA")
    if env:
        p = Path(env)
        return p / FOLDER if (p / FOLDER).is_dir() else p
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        cand = base.parent / "shared" / "data" / FOLDER
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data" / FOLDER


def default_config(quick: bool = False) -> dict:
    """Teacher HSI+LiDAR, student LiDAR; widths and epochs chosen on the validation split."""
    ep_t, ep_s = (8, 8) if quick else (150, 200)
    return {
        "name": "houston2013", "seed": 0,
        "data": {"path": str(default_folder()),
                 "modalities": {"hsi": {"kind": "vector", "cost": 20.0}, "lidar": {"kind": "vector", "cost": 2.0}},
                 "targets": {"label": {"kind": "classification"}}, "split": "split",
                 "class_names": CLASS_NAMES},
        "teacher": {"modalities": ["hsi", "lidar"], "width": 128, "epochs": ep_t, "lr": 2e-3, "batch_size": 64,
                    "patience": 40, "dropout": 0.2},
        "student": {"modalities": ["lidar"], "width": 128, "epochs": ep_s, "lr": 2e-3, "batch_size": 64,
                    "patience": 50, "dropout": 0.2},
        "distill": {"temperature": 4.0, "weights": {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5}},
        "export": {"latency_runs": 50 if quick else 200},
    }


def _mat(path: Path) -> np.ndarray:
    import scipy.io as sio

    try:
        m = sio.loadmat(path)
    except Exception as e:  # noqa: BLE001
        raise CmkdError(f"{path}: not a readable .mat file ({type(e).__name__})") from None
    keys = [k for k in m if not k.startswith("__")]
    if len(keys) != 1:
        raise CmkdError(f"{path}: expected one variable, found {keys}")
    return m[keys[0]]


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """Arrays: hsi (N, 144; NaN on test pixels), hsi__present, lidar (N, 21), label (N,) 1..15, split.

    Official training pixels are split 85/15 (stratified, seeded) into train/val; the official test pixels
    are the test split.
    """
    from sklearn.model_selection import train_test_split

    folder = Path(config["data"]["path"] or default_folder())
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise CmkdError(f"Houston 2013 data not found in {folder} (missing {missing[0]}); set CMKD_DATA or "
                        "--set data.path=FOLDER")
    hsi_tr, lid_tr, lid_te = (_mat(folder / f).astype(np.float32) for f in FILES[:3])
    y_tr, y_te = (_mat(folder / f).reshape(-1).astype(np.int64) for f in FILES[3:])
    n_tr, n_te = len(y_tr), len(y_te)
    if not (len(hsi_tr) == len(lid_tr) == n_tr and len(lid_te) == n_te):
        raise CmkdError(f"{folder}: sample counts of the .mat files disagree")
    split = np.concatenate([np.zeros(n_tr, np.int64), np.full(n_te, 2, np.int64)])
    _, val = train_test_split(np.arange(n_tr), test_size=0.15, random_state=config["seed"], stratify=y_tr)
    split[val] = 1
    hsi = np.concatenate([hsi_tr, np.full((n_te, hsi_tr.shape[1]), np.nan, np.float32)])
    return {"hsi": hsi, "hsi__present": np.arange(n_tr + n_te) < n_tr, "lidar": np.concatenate([lid_tr, lid_te]),
            "label": np.concatenate([y_tr, y_te]), "split": split}


def references(data, modalities: list[str], seed: int) -> dict[str, dict]:  # noqa: ANN001
    """RandomForest and ExtraTrees (500 trees) on the student's modalities: train -> official test."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    from ..evaluate import classification_metrics

    tr, te = np.flatnonzero(data.split != 2), data.indices(2)
    x = np.concatenate([data.inputs[m].reshape(data.n, -1) for m in modalities], axis=1)
    y = data.targets["label"]
    out = {}
    for name, cls in (("random_forest", RandomForestClassifier), ("extra_trees", ExtraTreesClassifier)):
        clf = cls(n_estimators=500, random_state=seed, n_jobs=-1).fit(x[tr], y[tr])
        out[name] = classification_metrics(y[te], clf.predict(x[te]))
    return out
