"""Recipe ``minerals``: SYNTHETIC planetary-geology / carbon-sequestration survey scenes.

A rover or survey drone can power an RGB camera, not a hyperspectral imager (10-20x the power). The teacher
sees hyperspectral reflectance + LiDAR elevation/roughness patches + RGB; the student sees RGB patches only.
The scene generator and its physical parameters are in :mod:`cmkd.recipes.minerals.scene`. All data here are
synthetic, and labelled so in metrics.json and the report.

Labels are sparse, as in a real survey: ground-truth sampling (field spectroscopy, cores, XRD) labels only a
fraction of the training area's pixels (``options.label_fraction``, default 0.1), while the instruments image
all of it. The teacher and the baseline student learn from the labelled pixels; the distilled student also
learns from the teacher's outputs on the unlabelled ones. Validation and test pixels are all labelled.
Set ``--set options.label_fraction=1`` for fully labelled training.

Every run also writes ``survey.json`` and a report section: a deployment table (accuracy, sensor power, latency,
size, accuracy preservation) and an ILLUSTRATIVE carbonation estimate with its interval against the generator's
true uptake (:mod:`cmkd.recipes.minerals.analysis`; ``options.carbonation``, ``options.pixel_area_m2``,
``options.capacity_t_per_m2``).

Options (``--set options.KEY=VALUE``): ``label_fraction`` (0-1], ``size`` (scene side in pixels; 96, quick 64),
``site`` (0 = the reference site; a positive id draws a new site with shifted mineral mix, illumination and dust:
``cmkd data minerals --set options.site=1 --set options.label_fraction=1 --out site1.npz`` then ``cmkd adapt``, which
by default re-fits the student's input standardisation on the new site's samples without labels and keeps the
original site's for the original site: per-site, label-free standardisation).
"""

from __future__ import annotations

import numpy as np

from cmkd.errors import CmkdError
from cmkd.recipes.base import Recipe, read_options, register_recipe
from cmkd.recipes.minerals.analysis import analyse as survey_analyse
from cmkd.recipes.minerals.options import OPTIONS, QUICK
from cmkd.recipes.minerals.scene import CLASS_NAMES, generate

DESCRIPTION = "Mineral survey: HSI+LiDAR+RGB teacher -> RGB-only student (planetary geology, carbon sequestration)"
SYNTHETIC = True


def default_config(quick: bool = False) -> dict:
    """Teacher hsi+lidar+rgb (cost: imager power in W), student rgb."""
    return {
        "name": "minerals-synthetic", "seed": 0,
        "data": {"path": None,
                 "modalities": {"hsi": {"kind": "vector", "cost": 15.0}, "lidar": {"kind": "image", "cost": 8.0},
                                "rgb": {"kind": "image", "cost": 1.5}, "msi": {"kind": "vector", "cost": 4.0}},
                 "targets": {"mineral": {"kind": "classification"}}, "split": "split",
                 "class_names": CLASS_NAMES},
        "teacher": {"modalities": ["hsi", "lidar", "rgb"], "width": 64, "epochs": 4 if quick else 30,
                    "batch_size": 128, "lr": 3e-3, "patience": 8},
        "student": {"modalities": ["rgb"], "width": 32, "epochs": 4 if quick else 40, "batch_size": 128,
                    "lr": 3e-3, "patience": 10},
        # progressive distillation (teacher -> msi+rgb assistant -> rgb student) is compared with the direct one
        "distill": {"temperature": 4.0, "weights": {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5},
                    "chain": [["msi", "rgb"]]},
        "export": {"latency_runs": 50 if quick else 200},
        "options": read_options(OPTIONS, None, QUICK if quick else None),
    }


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """Generate the scene for ``config["seed"]`` (a smaller one with ``quick``) and hide the labels of the
    training pixels outside the ground-truth sample (class id -1)."""
    from cmkd.recipes.minerals.analysis import survey_options

    opts = read_options(OPTIONS, config.get("options"), QUICK if quick else None, recipe="minerals")
    survey_options(opts)  # carbonation table and calibration method: fail before training, not after
    frac = float(opts["label_fraction"])
    if not 0 < frac <= 1:
        raise CmkdError(f"options.label_fraction must be in (0, 1], got {frac}")
    size = int(opts["size"])
    if size < 40:
        raise CmkdError(f"options.size must be at least 40 pixels (8 patches), got {size}")
    seed = int(config["seed"])
    site = int(opts["site"])
    if site < 0:
        raise CmkdError(f"options.site must be 0 (the reference site) or a positive new-site id, got {site}")
    arrays = generate(seed=seed, size=size, site=site)
    out = {k: v for k, v in arrays.items() if k in ("hsi", "lidar", "rgb", "msi", "mineral", "split")}
    rng = np.random.default_rng(seed + 7919)
    hidden = (out["split"] == 0) & (rng.random(len(out["split"])) >= frac)
    # a ground-truth campaign samples every mineral it maps: a class present in the training area but left
    # without a label by the draw (at 1-2% labels) keeps the label of one of its pixels, drawn with the same
    # generator (the draw above is unchanged, so fractions that label every class give the same labels as before)
    train_y = out["mineral"][out["split"] == 0]
    for c in np.unique(train_y):
        pool = np.flatnonzero((out["split"] == 0) & (out["mineral"] == c))
        if hidden[pool].all():
            hidden[rng.choice(pool)] = False
    out["mineral"] = np.where(hidden, -1, out["mineral"])
    return out


RECIPE = register_recipe(Recipe(
    name="minerals", description=DESCRIPTION, synthetic=SYNTHETIC, default_config=default_config, load=load,
    options=OPTIONS,
    analyse=survey_analyse,
))
