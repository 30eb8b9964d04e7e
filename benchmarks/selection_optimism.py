"""How optimistic is the network's validation figure when the recommendation compares it with the references?

Early stopping keeps the network's best epoch on the validation samples, and the recommendation then compares
that same best figure with the references' validation figures, which nothing was selected on. Over a noisy
validation curve the best epoch's figure is biased upward (the maximum of many noisy figures), so the network
can win on validation and lose on test. This benchmark measures that bias and what a less optimistic figure for
the network would have recommended.

For each case and seed, one default ``cmkd run`` (export off) records every candidate's validation and TEST
figure and the deployed network's validation curve (its training history; with ``student.refit`` the history
from before the refit, which is what the recommendation uses). Rules for the network's figure, each scored on
test with the same candidates:

- ``best``: the best epoch's figure (what a run uses now);
- ``window k``: the mean of the validation figures of the epochs within ``k`` of the best one (the same weights
  are deployed; only the figure compared with the references changes).

Gap: the recommended student's test figure against the best generic reference on test (hindsight), points of
accuracy or % of that reference's RMSE; + = better.

Writes ``benchmarks/selection_optimism.json`` / ``.md``; runs are appended to
``benchmarks/selection_optimism_runs.jsonl`` as they finish, so an interrupted sweep resumes.

Usage:
    python benchmarks/selection_optimism.py [--cases houston minerals airquality coastal-real] [--seeds 0 1 2]
                                            [--label-fractions 0.02] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BENCH, GENERIC, by_case, gap, ms, read_runs, save, sweep

import cmkd
from cmkd.classical.references import recommend
from cmkd.recipes import recipe_names

RUNS = BENCH / "selection_optimism_runs.jsonl"
CASES = ("houston", "minerals", "airquality", "coastal-real")
WINDOWS = (1, 2, 3)


def one(recipe: str, seed: int, fraction: float | None = None) -> dict:
    """One default run: candidates' validation and test figures, the deployed network's validation curve."""
    t0 = time.time()
    over = [f"seed={seed}", "export.enabled=false"]
    over += [] if fraction is None else [f"options.label_fraction={fraction}"]
    with tempfile.TemporaryDirectory() as tmp:
        m = cmkd.run(recipe, Path(tmp) / "run", quiet=True, overrides=over)
        hist = json.loads((Path(tmp) / "run" / "histories.json").read_text())
    metric = m["primary_metric"]
    rec = m["recommended"]
    net = "student_baseline" if (m.get("distill") or {}).get("fallback") else "student"
    test = {k: m["models"][k]["metrics"].get(metric) for k in ("student", "student_baseline", "student_trees")
            if k in m["models"]}
    test.update({k: r.get(metric) for k, r in (m.get("references") or {}).items()
                 if k.startswith(GENERIC) and isinstance(r, dict)})
    curve = [r["val_metric"] for r in hist.get(net, []) if r.get("val_metric") is not None]
    return {"recipe": recipe, "seed": seed, "label_fraction": fraction, "metric": metric,
            "synthetic": m.get("synthetic"), "seconds": round(time.time() - t0, 1), "val": rec["val"],
            "test": test, "recommended": rec["model"], "network": net, "curve": curve}


def window_figure(curve: list[float], metric: str, k: int) -> float:
    """The mean validation figure of the epochs within ``k`` of the best one."""
    c = np.asarray(curve, float)
    b = int(np.argmin(c) if metric == "rmse" else np.argmax(c))
    return float(c[max(0, b - k): b + k + 1].mean())


def pick(r: dict, rule: str) -> str:
    """The recommendation of run ``r`` when the network's figure follows ``rule`` (``best`` or ``window k``)."""
    val = dict(r["val"])
    if rule != "best" and r["curve"] and "student" in val:
        val["student"] = window_figure(r["curve"], r["metric"], int(rule.split()[1]))
    return recommend(val, r["metric"])


def table(runs: list[dict]) -> str:
    rules = ["best"] + [f"window {k}" for k in WINDOWS]
    lines = ["## How optimistic is the network's validation figure? (`python benchmarks/selection_optimism.py`)", "",
             "One default run per case and seed (export off). Optimism: the network's best-epoch validation figure "
             "minus the mean of the epochs within 2 of it (points of accuracy, or % of the RMSE; + = the best "
             "figure flatters). Each rule's recommended student is scored on TEST; gap to the best generic "
             "reference on test (hindsight); + = better; mean ± std over seeds, and how many runs recommend the "
             "network.", "",
             "| case | data | metric | seeds | optimism | " + " | ".join(f"`{x}` gap (network chosen)" for x in rules)
             + " |", "|---|---|---|---|---|" + "---|" * len(rules)]
    for case, rs, metric, best in by_case(runs):
        opt = [gap(r["val"]["student"], window_figure(r["curve"], metric, 2), metric) for r in rs if r["curve"]]
        cells = []
        for rule in rules:
            chosen = [pick(r, rule) for r in rs]
            g = [gap(r["test"][c], b, metric) for r, c, b in zip(rs, chosen, best)]
            cells.append(f"{ms(g, 2)} ({sum(c == 'student' for c in chosen)})")
        lines.append(f"| {case} | {'SYNTHETIC' if rs[0]['synthetic'] else 'real'} | {metric} | {len(rs)} | "
                     f"{ms(opt, 2)} | " + " | ".join(cells) + " |")
    for rule in rules[1:]:
        moved = [(r, pick(r, rule)) for r in runs if pick(r, rule) != pick(r, "best")]
        diffs = [gap(r["test"][c], r["test"][pick(r, "best")], r["metric"]) for r, c in moved]
        lines += ["", f"`{rule}` against `best`: changed {len(moved)} of {len(runs)} recommendations, better on "
                  f"test in {sum(d > 0 for d in diffs)}, worse in {sum(d < 0 for d in diffs)}"
                  + (f" (mean {np.mean(diffs):+.2f}, worst {min(diffs):+.2f})." if diffs else ".")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(recipe_names()))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--label-fractions", nargs="+", type=float, default=[None],
                    help="options.label_fraction values (airquality, minerals, houston); default: the recipe's own")
    ap.add_argument("--report-only", action="store_true", help="rebuild the table from every recorded run")
    args = ap.parse_args()
    if not args.report_only:
        sweep(RUNS, args.cases, args.label_fractions, args.seeds, one,
              lambda r: f"recommended {r['recommended']}, {r['seconds']} s")
    runs = read_runs(RUNS)
    save("selection_optimism", {"runs": runs}, table(runs))


if __name__ == "__main__":
    main()
