"""Recipe ``airquality``: REAL data, UCI Air Quality (De Vito et al., 2008), hourly, an Italian road-side station.

Teacher: the five metal-oxide sensors + T, RH, AH (``sensors``) and the reference analysers for CO, NOx and
C6H6 (``reference``, the expensive station). Student: ``sensors`` only. Target: NO2(GT) in µg/m3, regression
with intervals. Hours with any of these columns missing (-200) are dropped (6,941 remain). Chronological
split (the sensors drift): first 60% train, next 10% validation, last 30% test.

Label-sparse regime: only ``options.label_fraction`` of the training hours (default 0.05, seeded) keep their
NO2 label, as when a reference NO2 analyser is co-located only now and then; the other training hours keep
both modalities and serve the distilled student's teacher terms (target NaN = unlabelled).

Data folder: ``../shared/data/air_quality_uci_cheap_vs_reference`` relative to the project, or ``$CMKD_DATA``,
or ``--set data.path=FOLDER``.
"""

from __future__ import annotations

import numpy as np

from cmkd.recipes.airquality.data import chronological_split, default_folder, read_table
from cmkd.recipes.base import Recipe, label_mask, options_model, read_options, register_recipe

DESCRIPTION = "Air quality: MOX sensors + reference analysers teacher -> MOX-sensor student, NO2, 5% labels"
SYNTHETIC = False


# options: the share of training hours that keep their label
OPTIONS = options_model("airquality", label_fraction=(float, 0.05))


def default_config(quick: bool = False) -> dict:
    """Teacher sensors+reference, student sensors; settings chosen on the validation hours.

    ``benchmarks/airquality_distill.py`` (seeds 0-2, 5% labels, validation RMSE of the best epoch): kd weight 8
    24.5, 2 24.7, 4 24.9, 1 25.1; the library default terms (kd + feature + relation) 25.4; ``distill.kd_ramp``
    0.3 26.8, ``kd_confidence`` 26.1, ``kd_gate`` 0.05 + ``fallback`` 26.4 (the teacher is hardly better than the
    baseline student on validation, so the gate switches kd off though kd helps); the baseline student 25.8.
    The differences between kd weights 2-8 are within the seed spread. Over seeds 0-4 (``airquality_distill.md``)
    validation 26.3 ± 2.8 (baseline) -> 24.1 ± 1.6 (distilled), test 33.7 ± 3.0 -> 32.9 ± 3.8: the test hours
    (the last 30%, after months of sensor drift) are far noisier than validation, and the gain there is within
    the seed spread. The networks are well below the tree references on test (RF on the labels ~52, on the
    teacher's pseudo-labels ~48, see ``airquality_classical.md``), and even below RF with every label (34):
    trees cannot extrapolate past the drift.

    At 2% labels (seeds 0-2, ``airquality_distill_2pct.md``) kd hurt on test (32.7 ± 1.9 -> 34.4 ± 5.0): on
    seed 1 the teacher is worse than the baseline student on validation (30.0 vs 27.9) and the student, which
    copies it closely at kd weight 8, as well. The safe fallback (always on now) hands over the baseline there; applied
    to the same runs it gives 32.7 ± 2.5 (at 5% labels it never triggers).
    """
    ep_t, ep_s = (6, 6) if quick else (100, 100)
    return {
        "name": "airquality", "seed": 0,
        "data": {"path": str(default_folder()),
                 "modalities": {"sensors": {"kind": "vector", "cost": 1.0},
                                "reference": {"kind": "vector", "cost": 50.0}},
                 "targets": {"no2": {"kind": "regression", "units": "µg/m3"}}, "split": "split"},
        "teacher": {"modalities": ["sensors", "reference"], "width": 64, "epochs": ep_t, "lr": 3e-3,
                    "batch_size": 64, "patience": 20, "dropout": 0.1},
        "student": {"modalities": ["sensors"], "width": 64, "epochs": ep_s, "lr": 3e-3, "batch_size": 64,
                    "patience": 20, "dropout": 0.1},
        # chosen on validation RMSE, seeds 0-2 at 5% labels (benchmarks/airquality_distill_sweep*.md): kd weight 8
        # (24.5) over 2 (24.7), 4 (24.9), 1 (25.1), the library default with feature + relation (25.4), task only (25.8)
        # fallback: keep student_baseline where the distilled student is worse on validation (at 2% labels, seed 1,
        # the teacher is worse than the baseline on validation and the distilled student too: 39.8 vs 34.8 on test)
        "distill": {"weights": {"task": 1.0, "kd": 8.0}},
        "export": {"latency_runs": 50 if quick else 200},
        "options": read_options(OPTIONS, None),
    }


def load(config: dict, quick: bool = False) -> dict[str, np.ndarray]:
    """Arrays: sensors (N, 8), reference (N, 3), no2 (N,) NaN on unlabelled training hours, split (N,)."""
    opts = read_options(OPTIONS, config.get("options"), recipe="airquality")
    t = read_table(config["data"].get("path") or None)
    split = chronological_split(len(t["no2"]))
    keep = label_mask(split, float(opts["label_fraction"]), int(config["seed"]))
    return {"sensors": t["sensors"], "reference": t["reference"],
            "no2": np.where(keep, t["no2"], np.nan).astype(np.float32), "split": split}


RECIPE = register_recipe(Recipe(
    name="airquality", description=DESCRIPTION, synthetic=SYNTHETIC, default_config=default_config, load=load,
    options=OPTIONS,
))
