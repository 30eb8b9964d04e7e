"""Does the blended student (``references.blend``: the network and its best tree partner averaged) pay?

For each case and seed, one default ``cmkd run`` with ``references.blend=true`` (export off). The run is the same
with the option off but for the extra candidate (every other figure is computed before it), so one run gives
both recommendations: with the blend among the candidates, and without (the best of the other candidates on
validation, as a run with the option off recommends). Both are scored on the TEST split, beside the best generic
reference on test (chosen with hindsight: the strictest comparison). Gap: points of accuracy (x100) or percent
of that reference's RMSE; + = better.

Cases: minerals (SYNTHETIC), airquality (real, 5% labels), coastal-real (real), houston (real; its network is
refit on train + validation, so the blend's validation figure uses the network from before the refit); any other
built-in recipe with ``--cases``. A real case whose data folder is absent is skipped.

Writes ``benchmarks/blend.json`` / ``.md``; runs are appended to ``benchmarks/blend_runs.jsonl`` as they finish,
so an interrupted sweep resumes.

Usage:
    python benchmarks/blend.py [--cases minerals airquality coastal-real houston] [--seeds 0 1 2 3 4]
                               [--label-fractions 0.01 0.2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BENCH, GENERIC, by_case, gap, ms, read_runs, save, sweep

import cmkd
from cmkd.classical.references import recommend
from cmkd.recipes import recipe_names

RUNS = BENCH / "blend_runs.jsonl"
CASES = ("minerals", "airquality", "coastal-real", "houston")


def one(recipe: str, seed: int, fraction: float | None = None) -> dict:
    """One run with the blend on (``options.label_fraction`` = ``fraction`` unless None): every candidate's
    validation and test figure."""
    t0 = time.time()
    over = [f"seed={seed}", "export.enabled=false", "references.blend=true"]
    over += [] if fraction is None else [f"options.label_fraction={fraction}"]
    with tempfile.TemporaryDirectory() as tmp:
        m = cmkd.run(recipe, Path(tmp) / "run", quiet=True, overrides=over)
    metric = m["primary_metric"]
    rec = m["recommended"]
    test = {k: m["models"][k]["metrics"].get(metric) for k in ("student", "student_baseline", "student_trees")
            if k in m["models"]}
    test.update({k: r.get(metric) for k, r in (m.get("references") or {}).items()
                 if k.startswith(GENERIC) and isinstance(r, dict)})
    blend = m.get("student_blend") or {}
    test["student_blend"] = (blend.get("metrics") or {}).get(metric)
    return {"recipe": recipe, "seed": seed, "label_fraction": fraction, "metric": metric,
            "synthetic": m.get("synthetic"),
            "seconds": round(time.time() - t0, 1), "val": rec["val"], "test": test,
            "recommended": rec["model"], "partner": blend.get("partner"),
            "recommended_without": recommend({k: v for k, v in rec["val"].items() if k != "student_blend"}, metric)}


def table(runs: list[dict]) -> str:
    lines = ["## The blended student: the network and its best tree partner averaged (`python benchmarks/blend.py`)",
             "", "Test figures, mean ± std over seeds; one run per seed with `references.blend=true` (export off) "
             "gives the recommendation with the blend among the candidates and without it (the run is otherwise "
             "the same). Best reference: the best generic reference of each run on test (hindsight). Gap: points "
             "of accuracy, or % of that reference's RMSE; + = better.", "",
             "| case | data | metric | seeds | network student | blend | recommended, without blend | its gap | "
             "recommended, with blend | its gap | best reference on test | blend recommended | partners |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, rs, metric, best in by_case(runs):
        without = [r["test"][r["recommended_without"]] for r in rs]
        with_ = [r["test"][r["recommended"]] for r in rs]
        d = 1 if metric == "rmse" and np.median(best) >= 1 else 3  # decimals: ug/m3 or cm, else 4
        partners = ", ".join(f"{p} {n}" for p, n in sorted(
            {p: sum(r["partner"] == p for r in rs) for p in {r["partner"] for r in rs}}.items()))
        lines.append(
            f"| {case} | {'SYNTHETIC' if rs[0]['synthetic'] else 'real'} | {metric} | {len(rs)} | "
            f"{ms([r['test']['student'] for r in rs], d + 1)} | "
            f"{ms([r['test']['student_blend'] for r in rs], d + 1)} | "
            f"{ms(without, d + 1)} | {ms([gap(w, b, metric) for w, b in zip(without, best)], 2)} | "
            f"{ms(with_, d + 1)} | {ms([gap(w, b, metric) for w, b in zip(with_, best)], 2)} | {ms(best, d + 1)} | "
            f"{sum(r['recommended'] == 'student_blend' for r in rs)} of {len(rs)} | {partners} |")
    diffs = [gap(r["test"][r["recommended"]], r["test"][r["recommended_without"]], r["metric"]) for r in runs]
    moved = [d for d, r in zip(diffs, runs) if r["recommended"] != r["recommended_without"]]
    above = [r for r in runs if r["test"]["student_blend"] is not None
             and gap(r["test"]["student_blend"], r["test"]["student"], r["metric"]) > 0]
    lines += ["", f"Over {len(runs)} runs the blend changed the recommendation in {len(moved)} (better on test in "
              f"{sum(d > 0 for d in moved)}, worse in {sum(d < 0 for d in moved)}); the recommended student's test "
              f"figure moved by {np.mean(diffs):+.2f} on average (best {max(diffs):+.2f}, worst {min(diffs):+.2f}; "
              "points or % of the RMSE, + = better with the blend). The blend itself scored above the network "
              f"student on test in {len(above)} of {len(runs)} runs."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(recipe_names()),
                    help="built-in recipes (default: the four above)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--label-fractions", nargs="+", type=float, default=[None],
                    help="options.label_fraction values to run (recipes that have it: airquality, minerals, "
                         "houston); default: the recipe's own")
    ap.add_argument("--report-only", action="store_true", help="rebuild the table from every recorded run")
    args = ap.parse_args()
    if not args.report_only:
        sweep(RUNS, args.cases, args.label_fractions, args.seeds, one,
              lambda r: f"recommended {r['recommended']} (without the blend {r['recommended_without']}), "
                        f"{r['seconds']} s")
    runs = read_runs(RUNS)  # every recorded case
    save("blend", {"runs": runs}, table(runs))


if __name__ == "__main__":
    main()
