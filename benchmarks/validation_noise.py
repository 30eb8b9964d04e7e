"""Selection on a validation split: a label-only choice within noise of a distilled one.

Above the cross-validation threshold the run recommends the best candidate on its validation split; where that is a
model trained on the labels alone and the best candidate that learnt from the teacher trails it by no more than one
paired standard error of the split's parts (``cmkd.evaluation.metrics.VAL_PARTS``), the latter is recommended (the
same rule as cross-validated selection: ``cmkd.pipeline.crossval.distilled_within_noise``).

The rule only changes the recommendation where a label-only model was the strictly best on validation. This script
re-runs, with today's code and default settings, every recorded run where that happened: the label-fraction runs
(``benchmarks/label_fraction_runs.jsonl``, houston with ``student.refit=false`` as there; the airquality run where
the safe fallback made ``student`` the baseline's copy) and the recipes' default runs
(``benchmarks/recommended_runs.jsonl``) with a single target (coastal-real REAL, coastal SYNTHETIC; habitat and
microgrid have several targets and are measured by ``benchmarks/recommended.py``). Per run: the strictly best on
validation (``recommended.best_on_val``: what the run recommended before the rule), what it recommends now and why,
and both models' test figures. The rule changes nothing else in a run, so one run gives both.

    python benchmarks/validation_noise.py

Records go to ``benchmarks/validation_noise_runs.jsonl`` as they finish (a re-run resumes); writes
``benchmarks/validation_noise.json`` / ``.md``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import BENCH, gap, read_runs, save, sweep

import cmkd

RUNS = BENCH / "validation_noise_runs.jsonl"
# (recipe, label fraction or None, seed): the recorded runs whose recommendation on validation was label-only
PLAN = [("houston", 0.01, 4), ("houston", 0.02, 1), ("houston", 0.05, 1), ("houston", 0.05, 3),
        ("houston", 0.2, 3), ("houston", 1.0, 1), ("airquality", 0.02, 1), ("coastal-real", None, 0),
        ("coastal", None, 0)]
EXTRA = {"houston": ["student.refit=false"]}  # as benchmarks/label_fraction.py runs it
SYNTHETIC = {"coastal"}


def _test(m: dict, name: str | None) -> float | None:
    """``name``'s test figure on the run's primary metric (a network, the tree student or a reference)."""
    if not name:
        return None
    metric = m["primary_metric"]
    if name in m["models"]:
        return m["models"][name]["metrics"].get(metric)
    return (m.get("references") or {}).get(name, {}).get(metric)


def one(case: str, seed: int, fraction: float | None) -> dict:
    """One default run; the recommendation before and after the rule, and their test figures."""
    t0 = time.time()
    over = [f"seed={seed}", "export.enabled=false", *EXTRA.get(case, [])]
    if fraction is not None:
        over.append(f"options.label_fraction={fraction}")
    with tempfile.TemporaryDirectory() as tmp:
        m = cmkd.run(case, Path(tmp) / "run", quiet=True, overrides=over)
    rec = m["recommended"]
    return {"recipe": case, "label_fraction": fraction, "seed": seed, "metric": m["primary_metric"],
            "synthetic": case in SYNTHETIC, "seconds": round(time.time() - t0, 1),
            "selected_by": rec.get("selected_by"), "best_on_val": rec["best_on_val"],
            "best_on_val_test": _test(m, rec["best_on_val"]), "recommended": rec["model"],
            "recommended_test": _test(m, rec["model"]), "why": rec["why"],
            "val": {k: rec["val"].get(k) for k in {rec["model"], rec["best_on_val"]}}}


def report(runs: list[dict]) -> str:
    """The markdown table: one row per run; the change on test in points of accuracy or % of the RMSE."""
    rows = ["| recipe | data | labels | seed | metric | strictly best on validation (before) | its test | "
            "recommended now | its test | change on test (+ = better) |", "|---|---|---|---|---|---|---|---|---|---|"]
    changed, better = 0, 0
    for r in runs:
        same = r["recommended"] == r["best_on_val"]
        d = 0.0 if same else gap(r["recommended_test"], r["best_on_val_test"], r["metric"])
        changed += not same
        better += (not same) and d > 0
        lab = "default" if r["label_fraction"] is None else f"{r['label_fraction']:.0%}"
        rows.append(f"| {r['recipe']} | {'SYNTHETIC' if r['synthetic'] else 'real'} | {lab} | {r['seed']} | "
                    f"{r['metric']} | {r['best_on_val']} | {r['best_on_val_test']:.4g} | "
                    f"{'(same)' if same else r['recommended']} | {r['recommended_test']:.4g} | "
                    f"{'-' if same else f'{d:+.2f}'} |")
    unit = "points of accuracy, or % of the RMSE"
    return "\n".join([
        "## Selection on validation: a label-only choice within noise (`python benchmarks/validation_noise.py`)", "",
        "Default runs, today's code, on every recorded run whose recommendation on validation was, when it was "
        "recorded, a model trained on the labels alone (`benchmarks/label_fraction_runs.jsonl`, "
        "`benchmarks/recommended_runs.jsonl`); with today's code most of them recommend the network student "
        "before the rule applies. The rule changes no run whose strictly best candidate learnt from the teacher. "
        "Before: the strictly best on validation "
        "(`recommended.best_on_val`). Now: the best candidate that learnt from the teacher where it trails that "
        "model by no more than one paired standard error of the validation split's 10 parts. Test figures; change "
        f"in {unit}.", "", *rows, "",
        f"The rule changed the recommendation in {changed} of {len(runs)} runs: better on test in {better}, worse "
        f"in {changed - better}.", ""])


def main() -> None:
    for case, fraction, seed in PLAN:
        sweep(RUNS, [case], [fraction], [seed], one,
              lambda r: f"{r['best_on_val']} -> {r['recommended']} ({r['best_on_val_test']:.4g} -> "
                        f"{r['recommended_test']:.4g})")
    runs = {(r["recipe"], r["label_fraction"], r["seed"]): r for r in read_runs(RUNS)}
    ordered = [runs[k] for k in PLAN if k in runs]
    save("validation_noise", {"runs": ordered}, report(ordered))


if __name__ == "__main__":
    main()
