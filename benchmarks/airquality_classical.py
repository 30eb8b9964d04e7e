"""Classical references on the ``airquality`` recipe's exact split (REAL data), to check it against issue 21's
table: RandomForest / ExtraTrees on the student's sensors with the kept labels only, a RandomForest teacher on
sensors + reference analysers, a RandomForest on the teacher's pseudo-labels of every training hour (true
labels where kept) and a RandomForest with every training label. Test RMSE in µg/m3.

Usage:
    python benchmarks/airquality_classical.py [--seeds 0 1 2] [--fractions 0.02 0.05 0.2] [--trees 300]

Writes ``benchmarks/airquality_classical.json`` and ``.md`` (mean ± std over seeds).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import ms, save
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

from cmkd.recipes.airquality.data import chronological_split, read_table
from cmkd.recipes.base import label_mask


def main() -> None:
    """Fit every reference per (fraction, seed) and write the tables."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.05, 0.2])
    ap.add_argument("--trees", type=int, default=300)
    a = ap.parse_args()
    t = read_table()
    s = chronological_split(len(t["no2"]))
    xs, y = t["sensors"], t["no2"]
    xt = np.concatenate([xs, t["reference"]], axis=1)
    tr, te = np.flatnonzero(s == 0), np.flatnonzero(s == 2)

    def rmse(p: np.ndarray) -> float:
        return float(np.sqrt(np.mean((p - y[te]) ** 2)))

    def rf(seed: int) -> RandomForestRegressor:
        return RandomForestRegressor(a.trees, random_state=seed, n_jobs=-1)

    rows = []
    every = rmse(rf(0).fit(xs[tr], y[tr]).predict(xs[te]))
    for frac in a.fractions:
        for seed in a.seeds:
            keep = label_mask(s, frac, seed)  # the recipe's labels for this seed
            lab = tr[keep[tr]]
            teacher = rf(seed).fit(xt[lab], y[lab])
            pseudo = teacher.predict(xt[tr])
            pseudo[keep[tr]] = y[lab]
            rows.append({"fraction": frac, "seed": seed, "n_labels": int(len(lab)),
                         "rf_labels": rmse(rf(seed).fit(xs[lab], y[lab]).predict(xs[te])),
                         "et_labels": rmse(ExtraTreesRegressor(a.trees, random_state=seed, n_jobs=-1)
                                           .fit(xs[lab], y[lab]).predict(xs[te])),
                         "teacher_rf": rmse(teacher.predict(xt[te])),
                         "rf_pseudo": rmse(rf(seed).fit(xs[tr], pseudo).predict(xs[te])), "rf_every_label": every})
            print(rows[-1], flush=True)
    keys = ["rf_labels", "et_labels", "teacher_rf", "rf_pseudo"]
    md = [f"# airquality classical references (REAL data), test RMSE µg/m3, seeds {a.seeds}, {a.trees} trees", "",
          "| labels | n | RF, labels only | ExtraTrees, labels only | teacher (RF, all teacher inputs) | "
          "RF on the teacher's pseudo-labels | RF, every label |", "|---|---|---|---|---|---|---|"]
    for frac in a.fractions:
        r = [x for x in rows if x["fraction"] == frac]
        md.append(f"| {frac:.0%} | {r[0]['n_labels']} | " + " | ".join(ms([x[k] for x in r], 1) for k in keys)
                  + f" | {every:.1f} |")
    save("airquality_classical", {"seeds": a.seeds, "trees": a.trees, "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
