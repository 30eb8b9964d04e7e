"""Recipe ``recycling``: SYNTHETIC visual-only material sorting for circular manufacturing on low-power robots.

Sorting robots on solar-charged batteries cannot power a thermal camera and an NIR spectrometer for every item.
The teacher sees an RGB image, an active-thermography curve and an NIR spectrum of each item
(:mod:`cmkd.recipes.recycling.scene`, all simulated and labelled synthetic everywhere) and predicts three
targets: ``material`` (12 classes, the primary metric), ``quality`` (0-1 regression) and ``degradation``
(5 states). The student sees the RGB image only, through a small MobileNet-like encoder
(``encoders: {image: mobilenet}``), and is distilled with soft-target (``kd``), ``feature`` and ``relation``
terms. A sorting policy (:mod:`cmkd.recipes.recycling.policy`) routes each item to reuse, repair, a recycling
stream or disposal; the report gives each model's stream purity and mis-sort cost on the test split, and the
energy per item of the teacher's three sensors against the INT8 student on the camera alone
(:mod:`cmkd.recipes.recycling.analysis`).

Usage::

    cmkd run recycling --out runs/recycling                  # full run, a few minutes on one CPU core
    cmkd data recycling --out items.npz --set options.png_dir=items_png   # arrays + test items as PNGs
    cmkd predict --model runs/recycling --input items_png --output routes.json   # one route per PNG

``cmkd predict`` on a folder reads every ``*.png`` (RGB; resized to the student's image size), runs the ONNX
student and applies the sorting policy saved with the run (``OUT/policy.json``): one entry per file with the
material, its probability, quality, degradation and route.

Split: a seeded stratified 60% train / 15% validation / 25% test of the items (validation and test items are all
labelled). Labels are scarce, as on a real sorting line: lab analysis (or a grader) labels only
``options.label_fraction`` (default 0.6) of the training items, while the pilot line's sensors see all of them.
The teacher and the baseline student learn from the labelled items; the distilled student also learns from the
teacher's outputs on the unlabelled ones. ``--set options.label_fraction=1`` labels every training item.

Options (``--set options.KEY=VALUE``): ``n_items`` (3000; quick 600), ``size`` (image side, 16), ``bands`` (64),
``frames`` (36), ``label_fraction`` (0.6), ``acquisition_s`` (sensor time per item, 0.2 s), ``compute_w`` (the
robot's processor while inferring, 5 W), ``png_dir`` (with ``cmkd data``: write the test items as PNGs there),
``png_count`` (48), ``policy`` (overrides of :data:`cmkd.recipes.recycling.policy.DEFAULT_POLICY`, e.g.
``--set options.policy.q_reuse=0.8``). Sensor power per modality is ``data.modalities.<m>.cost`` in W
(ILLUSTRATIVE: RGB camera 1.5, thermal camera 5, NIR spectrometer 12).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError
from cmkd.io import dumps
from cmkd.recipes.base import Recipe, read_options, register_recipe
from cmkd.recipes.recycling.analysis import analyse as analyse_sorting
from cmkd.recipes.recycling.options import OPTIONS, QUICK
from cmkd.recipes.recycling.scene import DEGRADATION, MATERIALS, generate

DESCRIPTION = "Material sorting: RGB+thermal+NIR teacher -> RGB-only MobileNet student with a sorting policy"
SYNTHETIC = True
SPLIT_P = (0.6, 0.15, 0.25)


def default_config(quick: bool = False) -> dict:
    """Teacher visual+thermal+spectral, student visual (MobileNet-like); costs are sensor power in W."""
    return {
        "name": "recycling-synthetic", "seed": 0,
        "data": {"path": None,
                 "modalities": {"visual": {"kind": "image", "cost": 1.5},
                                "thermal": {"kind": "sequence", "cost": 5.0},
                                "spectral": {"kind": "vector", "cost": 12.0}},
                 "targets": {"material": {"kind": "classification"}, "quality": {"kind": "regression"},
                             "degradation": {"kind": "classification"}},
                 "split": "split", "class_names": MATERIALS},
        "teacher": {"modalities": ["visual", "thermal", "spectral"], "width": 48, "epochs": 3 if quick else 40,
                    "batch_size": 128, "lr": 3e-3, "patience": 10, "encoders": {"image": "mobilenet"}},
        "student": {"modalities": ["visual"], "width": 32, "epochs": 3 if quick else 40, "batch_size": 128,
                    "lr": 3e-3, "patience": 10, "encoders": {"image": "mobilenet"}},
        "distill": {"temperature": 4.0, "weights": {"task": 1.0, "kd": 1.0, "feature": 0.5, "relation": 0.5}},
        "export": {"latency_runs": 30 if quick else 200},
        "uncertainty": {"availability_edges": []},
        "options": read_options(OPTIONS, None, QUICK if quick else None),
    }


def _opts(config: dict, quick: bool) -> dict:
    o = read_options(OPTIONS, config.get("options"), QUICK if quick else None, recipe="recycling")
    if int(o["n_items"]) < 10 * len(MATERIALS):
        raise CmkdError(f"options.n_items must be at least {10 * len(MATERIALS)} (10 per material)")
    if int(o["size"]) < 8 or int(o["bands"]) < 16 or int(o["frames"]) < 6:
        raise CmkdError("options.size must be >= 8, options.bands >= 16 and options.frames >= 6")
    if not 0 < float(o["label_fraction"]) <= 1:
        raise CmkdError(f"options.label_fraction must be in (0, 1], got {o['label_fraction']}")
    return o


def split_items(material: np.ndarray, seed: int) -> np.ndarray:
    """Stratified 60/15/25 split code per item (0 train, 1 val, 2 test)."""
    rng = np.random.default_rng(seed + 31_337)
    out = np.zeros(len(material), dtype=np.int64)
    for c in np.unique(material):
        idx = rng.permutation(np.flatnonzero(material == c))
        n_tr, n_va = round(SPLIT_P[0] * len(idx)), round(SPLIT_P[1] * len(idx))
        out[idx[n_tr:n_tr + n_va]] = 1
        out[idx[n_tr + n_va:]] = 2
    return out


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """The items of ``config["seed"]`` as arrays per the data contract (see the module docstring)."""
    o = _opts(config, quick)
    seed = int(config["seed"])
    items = generate(int(o["n_items"]), seed, int(o["size"]), int(o["bands"]), int(o["frames"]))
    split = split_items(items.material, seed)
    material, degradation = items.material.copy(), items.degradation.copy()
    quality = items.quality.copy()
    frac = float(o["label_fraction"])
    if frac < 1:  # training items without lab labels: only the teacher's outputs teach the student there
        rng = np.random.default_rng(seed + 7_919)
        hidden = (split == 0) & (rng.random(len(split)) >= frac)
        material[hidden], degradation[hidden], quality[hidden] = -1, -1, np.nan
    if o["png_dir"]:
        test = np.flatnonzero(split == 2)[: int(o["png_count"])]
        write_pngs(Path(o["png_dir"]), items.visual[test], items.material[test], items.degradation[test],
                   items.quality[test])
    return {"visual": items.visual, "thermal": items.thermal, "spectral": items.spectral, "material": material,
            "quality": quality, "degradation": degradation, "split": split}


def write_pngs(folder: Path, visual: np.ndarray, material: np.ndarray, degradation: np.ndarray,
               quality: np.ndarray) -> list[Path]:
    """Write items' RGB images (N, 3, H, W in [0, 1]) as 8-bit PNGs ``item_0000.png``, ... plus ``labels.json``
    (the true material, degradation and quality of each file: SYNTHETIC items)."""
    from PIL import Image

    from cmkd.io import atomic_write, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], {}
    for i, img in enumerate(visual):
        p = folder / f"item_{i:04d}.png"
        arr = (np.clip(img.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
        atomic_write(p, Image.fromarray(arr, mode="RGB").save)
        paths.append(p)
        labels[p.name] = {"material": MATERIALS[int(material[i])], "degradation": DEGRADATION[int(degradation[i])],
                          "quality": round(float(quality[i]), 4)}
    atomic_write_text(folder / "labels.json", dumps({"synthetic": True, "items": labels}, indent=1))
    return paths


RECIPE = register_recipe(Recipe(
    name="recycling", description=DESCRIPTION, synthetic=SYNTHETIC, default_config=default_config, load=load,
    options=OPTIONS,
    analyse=analyse_sorting,
))
