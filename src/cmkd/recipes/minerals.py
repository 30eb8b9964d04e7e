"""Recipe ``minerals``: SYNTHETIC planetary-geology / carbon-sequestration survey scenes.

A rover or survey drone can power an RGB camera, not a hyperspectral imager (10-20x the power). The teacher
sees hyperspectral reflectance + LiDAR elevation/roughness patches + RGB; the student sees RGB patches only.
The scene generator and its physical parameters are in :mod:`cmkd.recipes.minerals_scene`. All data here are
synthetic, and labelled so in metrics.json and the report.
"""

from __future__ import annotations

import numpy as np

from .minerals_scene import CLASS_NAMES, generate

DESCRIPTION = "Mineral survey: HSI+LiDAR+RGB teacher -> RGB-only student (planetary geology, carbon sequestration)"
SYNTHETIC = True


def default_config(quick: bool = False) -> dict:
    """Teacher hsi+lidar+rgb (cost: imager power in W), student rgb."""
    return {
        "name": "minerals-synthetic", "seed": 0,
        "data": {"path": None,
                 "modalities": {"hsi": {"kind": "vector", "cost": 15.0}, "lidar": {"kind": "image", "cost": 8.0},
                                "rgb": {"kind": "image", "cost": 1.5}},
                 "targets": {"mineral": {"kind": "classification"}}, "split": "split",
                 "class_names": CLASS_NAMES},
        "teacher": {"modalities": ["hsi", "lidar", "rgb"], "width": 64, "epochs": 4 if quick else 30,
                    "batch_size": 128, "lr": 3e-3, "patience": 8},
        "student": {"modalities": ["rgb"], "width": 32, "epochs": 4 if quick else 40, "batch_size": 128,
                    "lr": 3e-3, "patience": 10},
        "distill": {"temperature": 4.0, "weights": {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5}},
        "export": {"latency_runs": 50 if quick else 200},
    }


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """Generate the scene for ``config["seed"]`` (a smaller one with ``quick``)."""
    size = 64 if quick else 96
    arrays = generate(seed=int(config["seed"]), size=size)
    return {k: v for k, v in arrays.items() if k in ("hsi", "lidar", "rgb", "mineral", "split")}
