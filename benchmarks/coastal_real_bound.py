"""How low can a Vlissingen-only gap-filler's RMSE go under coastal-real's outages? An information floor (REAL data).

coastal-real hides 80% of Vlissingen's hours (``cmkd.recipes.coastal_real.recipe``). A hidden hour far from any
remaining reading has an unobserved surge: the gauge's own record says little about it. This script measures, for
the recipe's outage patterns (the same masks as the recipe: ``mask_seed`` 0, each calendar year on its own), on
the hidden hours of the test years 1990-1994:

- how far each hidden hour is from the nearest available reading (share beyond 24 h and beyond 72 h);
- an optimistic floor on the RMSE of a predictor that sees only Vlissingen's available readings: error 0 on
  every hidden hour within D hours of a reading (no model achieves that), and on the hours farther away the
  better of two predictors that know more than a gap-filler does: the exact tide alone (a harmonic fit on ALL
  hours; the recipe's gap-filler only has the available ones) and simple kriging of the residual from every
  reading within +-240 h with the autocovariance of the training years' complete record. It is an estimate, not
  a proof against every model: a nonlinear model could beat kriging on the far hours; there kriging hardly beats
  the exact tide alone, and a gradient-boosting model on the recipe's window did no better than the student
  (recipe docstring).
- the same kriging on every hidden hour (a linear gap-filler that knows the tide exactly), for scale;
- what the recipe's students score under each pattern (``cmkd run coastal-real`` with ``options.pattern`` /
  ``options.mean_len`` set, seeds 0-2, export off), and the harmonic prediction on the same hours.

Usage:
    python benchmarks/coastal_real_bound.py [--sample 2000] [--seeds 0 1 2] [--no-students]
    python benchmarks/coastal_real_bound.py --render   # rewrite the .md from the .json

Writes ``benchmarks/coastal_real_bound.json`` and ``benchmarks/coastal_real_bound.md``. Needs
../shared/data/tide_gauge_netherlands_rws (or ``$CMKD_DATA``); the floor takes about a minute, the students about
2 minutes per pattern and seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from common import ms, save

import cmkd
from cmkd.errors import CmkdError
from cmkd.recipes.coastal import harmonic
from cmkd.recipes.coastal_real import recipe as real

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = [("mixed", 12.0, "recipe default: half storm-driven, half bursty, 12 h mean"),
            ("storm", 12.0, "storm-driven only"), ("bursty", 12.0, "bursty only, 12 h mean"),
            ("bursty", 4.0, "bursty only, 4 h mean")]
WINDOW = 240  # hours either side that the kriging predictor may use
TARGET_CM = 18.0


def rms(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(e))))


def krige(resid: np.ndarray, miss: np.ndarray, hours: np.ndarray, acov: np.ndarray) -> np.ndarray:
    """Errors of simple kriging of ``resid`` at ``hours`` from the available hours within +-WINDOW."""
    errs = np.empty(len(hours))
    for i, t in enumerate(hours):
        s = np.arange(max(t - WINDOW, 0), min(t + WINDOW + 1, len(resid)))
        s = s[~miss[s]]
        if len(s) == 0:
            errs[i] = resid[t]
            continue
        c = acov[np.abs(s[:, None] - s[None, :])] + 1e-6 * acov[0] * np.eye(len(s))
        errs[i] = resid[t] - np.linalg.solve(c, acov[np.abs(s - t)]) @ resid[s]
    return errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=2000, help="hidden hours (seeded) scored by kriging per set")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of the students")
    ap.add_argument("--no-students", action="store_true", help="the floor only, no training")
    ap.add_argument("--out", default=str(ROOT / "runs" / "coastal-real-patterns"))
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = ap.parse_args()
    if args.render:
        rows = json.loads((ROOT / "benchmarks" / "coastal_real_bound.json").read_text())
        save("coastal_real_bound", rows, report(rows))
        return
    folder = real.default_folder()
    try:
        tv, lv, _ = real.read_gauges({"data": {"path": str(folder)}})
    except CmkdError as e:
        sys.exit(f"error: {e} (set CMKD_DATA to the folder holding {real.FOLDER})")
    t = (tv - np.datetime64("1976-01-01T00", "h")).astype(float)
    year = tv.astype("datetime64[Y]").astype(int) + 1970
    tide = np.zeros(len(t))  # the generous tide: fitted on every hour of each year
    for y in np.unique(year):
        sel = np.flatnonzero(year == y)
        tide[sel] = harmonic.fit(t[sel], lv[sel], harmonic.SHALLOW_WATER).predict(t[sel])
    resid = lv - tide
    x = resid[year <= real.TRAIN_YEARS[1]]
    x = x - x.mean()
    acov = np.array([np.mean(x[:len(x) - k] * x[k:]) for k in range(2 * WINDOW + 1)])
    opts = real.default_config()["options"]
    rows = []
    for pattern, mean_len, label in PATTERNS:
        miss = real.simulate_outages(lv, t, year, np.unique(year),  # the recipe's masks
                                     {**opts, "pattern": pattern, "mean_len": mean_len})
        test = np.flatnonzero(miss & (year >= real.TEST_YEARS[0]) & (year <= real.TEST_YEARS[1]))
        pos = np.flatnonzero(~miss)
        k = np.searchsorted(pos, test)
        before = np.where(k > 0, pos[np.clip(k - 1, 0, None)], -10**9)
        after = np.where(k < len(pos), pos[np.clip(k, None, len(pos) - 1)], 10**9)
        dist = np.minimum(test - before, after - test)
        pick = np.random.default_rng(1)
        row = {"pattern": pattern, "mean_len_h": mean_len, "label": label, "hidden_test_hours": int(len(test)),
               "available_fraction": float(1 - miss.mean())}
        for d in (24, 72):
            far = test[dist > d]
            share = len(far) / len(test)
            sub = pick.choice(far, min(args.sample, len(far)), replace=False) if len(far) else far
            e = min(rms(krige(resid, miss, sub, acov)), rms(resid[sub])) if len(sub) else 0.0
            row[f"share_beyond_{d}h"] = share
            row[f"far_rms_beyond_{d}h"] = rms(resid[far]) if len(far) else 0.0
            row[f"far_best_rmse_beyond_{d}h"] = e  # the better of kriging and the exact tide alone
            row[f"floor_exact_within_{d}h"] = float(np.sqrt(share) * e)
        sub = pick.choice(test, min(args.sample, len(test)), replace=False)
        row["kriging_all_hidden_rmse"] = rms(krige(resid, miss, sub, acov))
        for seed in [] if args.no_students else args.seeds:
            m = cmkd.run("coastal-real", Path(args.out) / f"{pattern}-{mean_len:g}-seed{seed}", quiet=True,
                         overrides=[f"seed={seed}", f"options.pattern={pattern}", f"options.mean_len={mean_len}",
                                    "export.enabled=false"])
            for role in ("student_baseline", "student"):
                row.setdefault(role, []).append(m["models"][role]["metrics"]["rmse"])
            row["harmonic_same_hours"] = m["references"]["harmonic_same_hours"]["rmse"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    save("coastal_real_bound", rows, report(rows))


def report(rows: list[dict]) -> str:
    """Markdown table and reading."""
    lines = ["REAL data (Vlissingen, 1990-1994 hidden hours, 20% of hours available). RMSE in cm.", "",
             "| outages | hidden hours > 24 h from a reading | > 72 h | floor: exact within 24 h | "
             "floor: exact within 72 h | kriging, exact tide, all hidden hours |", "|---|---|---|---|---|---|"]
    students = all("student" in r for r in rows)
    if students:
        lines[-2] += " harmonic, same hours | student_baseline | student |"
        lines[-1] += "---|---|---|"
    for r in rows:
        lines.append(f"| {r['pattern']} ({r['label']}) | {r['share_beyond_24h']:.3f} | {r['share_beyond_72h']:.3f} | "
                     f"{r['floor_exact_within_24h']:.1f} | {r['floor_exact_within_72h']:.1f} | "
                     f"{r['kriging_all_hidden_rmse']:.1f} |"
                     + (f" {r['harmonic_same_hours']:.1f} | {ms(r['student_baseline'], 1)} | {ms(r['student'], 1)} |"
                        if students else ""))
    d = rows[0]
    lines += ["", f"Floor (optimistic, an estimate rather than a proof): error 0 on every hidden hour within D "
              f"hours of a reading, and on the rest the better of the exact tide alone and kriging from every "
              f"reading within ±{WINDOW} h, with the tide fitted on all hours and the residual's autocovariance "
              f"from the complete 1976-1987 record (both more than a gap-filler has). "
              f"Under the recipe's default outages {100 * d['share_beyond_72h']:.0f}% of the hidden test hours "
              f"are more than 3 days from any reading; there the better predictor's RMSE is "
              f"{d['far_best_rmse_beyond_72h']:.1f} cm against the residual's own RMS of "
              f"{d['far_rms_beyond_72h']:.1f} cm, so even a gap-filler exact on every other hour would score "
              f"{d['floor_exact_within_72h']:.1f} cm, above the issue's {TARGET_CM:.0f} cm target. Under bursty "
              "outages only, the far hours are few and the floor is no constraint."]
    if students:
        b = rows[-1]
        lines += ["", f"The students (mean ± std over {len(d['student'])} seeds) are scored on the recipe's test set, "
                  "8,000 of the hidden test hours drawn at random, so their RMSE and the floor refer to the same "
                  "hours. Distillation from Hoek van Holland does not lower it under any pattern (student vs "
                  "student_baseline). Only with readings every few hours "
                  f"({b['pattern']}, {b['mean_len_h']:g} h mean outages) does the student come near 18 cm: "
                  f"{np.mean(b['student']):.3f} cm (per seed {', '.join(f'{x:.2f}' for x in b['student'])})."]
    lines += ["", "Regenerate with `python benchmarks/coastal_real_bound.py` (`--render`: the text from the json)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
