"""Is the recommended student ever worse than a one-line classical model? Every built-in recipe, default settings.

For each recipe and seed, a default ``cmkd run`` (export off: the recommendation does not depend on it; on for
microgrid, whose closed-loop analysis needs the INT8 student) gives on
the TEST split the recommended student (the run's choice on validation among the distilled network, the tree
student and the references), the best reference on test (the strictest comparison: the maximum over every
generic reference of the run) and the best reference chosen on validation; the gap is in points of accuracy
(x100) or in percent of the reference's RMSE. Real-data recipes whose data folder is absent are skipped.

Writes ``benchmarks/recommended.json`` / ``.md``; every run is appended to ``benchmarks/recommended_runs.jsonl``
as it finishes, so an interrupted sweep resumes. A recorded run is reused while its recommendation holds under
today's tie rule (``references.tie_se``; ``common.rule_holds``): one recorded under another rule that had
recommended a network or the tree student runs again.

Usage:
    python benchmarks/recommended.py [--recipes minerals houston ...] [--seeds 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import BENCH, TIE_SE, append_run, read_runs, rule_holds, save

import cmkd
from cmkd.errors import CmkdError
from cmkd.evaluation.metrics import yardstick_figure
from cmkd.recipes import recipe_names

RUNS = BENCH / "recommended_runs.jsonl"
GENERIC = ("random_forest", "extra_trees", "hist_gradient_boosting")


NEEDS_EXPORT = ("microgrid",)  # its closed-loop analysis runs the exported INT8 student
SEVERAL_TARGETS = ("habitat", "microgrid", "recycling")  # recipes whose data have more than one target


def one(recipe: str, seed: int) -> dict:
    """One default run; the recommended student's and the references' test figures."""
    t0 = time.time()
    over = [f"seed={seed}"] + ([] if recipe in NEEDS_EXPORT else ["export.enabled=false"])
    with tempfile.TemporaryDirectory() as tmp:
        m = cmkd.run(recipe, Path(tmp) / "run", quiet=True, overrides=over)
    metric = m["primary_metric"]
    higher = metric != "rmse"
    refs = {k: r for k, r in (m.get("references") or {}).items()
            if k.startswith(GENERIC) and isinstance(r, dict) and r.get(metric) is not None}
    pick = max if higher else min
    best_test = pick(refs, key=lambda k: refs[k][metric]) if refs else None
    with_val = [k for k in refs if (refs[k].get("val") or {}).get(metric) is not None]
    best_val = pick(with_val, key=lambda k: refs[k]["val"][metric]) if with_val else None
    rec = (m.get("recommended") or {}).get("model")
    rec_test = (m["models"][rec]["metrics"].get(metric) if rec in m["models"]
                else refs.get(rec, {}).get(metric) if rec else None)
    out = {"recipe": recipe, "seed": seed, "metric": metric, "seconds": round(time.time() - t0, 1),
           "classical_stage_s": m.get("classical_stage_s"), "synthetic": m.get("synthetic"),
           "recommended": rec, "recommended_test": rec_test, "deployed": (m.get("deployed") or {}).get("model"),
           "student_test": m["models"]["student"]["metrics"].get(metric),
           "student_baseline_test": m["models"]["student_baseline"]["metrics"].get(metric),
           "student_trees_test": (m["models"].get("student_trees") or {}).get("metrics", {}).get(metric),
           "best_reference_test": best_test,
           "best_reference_test_value": refs[best_test][metric] if best_test else None,
           "best_reference_val": best_val, "best_reference_val_test": refs[best_val][metric] if best_val else None,
           "tie_se": TIE_SE, "best_on_val": (m.get("recommended") or {}).get("best_on_val"),
           "val": (m.get("recommended") or {}).get("val"),  # every candidate's validation figure
           "selection_metric": (m.get("recommended") or {}).get("metric")}
    yard = (m.get("recommended") or {}).get("yardstick")
    if yard:  # several targets: every candidate's test figure on the yardstick the recommendation compared
        out["selection_test"] = {k: yardstick_figure((m["models"].get(k) or {}).get("metrics")
                                                     or (m.get("references") or {}).get(k) or {}, yard)
                                 for k in out["val"] or {}}
    if rec_test is not None and best_test is not None:
        ref = refs[best_test][metric]
        out["gap"] = (100 * (rec_test - ref) if higher else 100 * (ref - rec_test) / ref)  # + = recommended better
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=[r for r in recipe_names()])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = ap.parse_args()
    done = {(r["recipe"], r["seed"]) for r in read_runs(RUNS) if rule_holds(r)}
    for seed in args.seeds:
        for recipe in args.recipes:
            if (recipe, seed) in done:
                continue
            try:
                r = one(recipe, seed)
            except CmkdError as e:  # a real-data recipe without its data folder
                print(f"{recipe}: skipped ({e})", flush=True)
                continue
            append_run(RUNS, r)
            print(f"{recipe} seed {seed}: recommended {r['recommended']} {r['recommended_test']:.4f}, best reference "
                  f"{r['best_reference_test']} {r['best_reference_test_value']:.4f} ({r['seconds']} s)", flush=True)
    latest = {(r["recipe"], r["seed"]): r for r in read_runs(RUNS) if rule_holds(r)}  # the last valid record
    runs = [latest[(rcp, s)] for s in args.seeds for rcp in args.recipes if (rcp, s) in latest]
    other = other_rule(read_runs(RUNS), runs)
    save("recommended", {"runs": runs, "other_rule": other}, table(runs) + (f"\n{other}\n" if other else ""))


def other_rule(records: list[dict], runs: list[dict]) -> str:
    """Where a run recorded under another ``references.tie_se`` recommended something else than the table's."""
    now = {(r["recipe"], r["seed"]): r for r in runs}
    diff = {}
    for r in records:
        k = (r["recipe"], r["seed"])
        if r.get("tie_se", 0.0) != TIE_SE and k in now and r["recommended"] != now[k]["recommended"]:
            diff[(k, r["tie_se"])] = (f"{r['recipe']} (seed {r['seed']}) would take {r['recommended']} "
                                      f"({r['recommended_test']:.4f} on test, against "
                                      f"{now[k]['recommended_test']:.4f})")
    if not diff:
        return ""
    return "Under another tie rule (`references.tie_se`, runs recorded with it): " + "; ".join(
        f"tie_se {t:g}: {v}" for (_, t), v in diff.items()) + "."


def summary(runs: list[dict]) -> str:
    """The table read plainly: where a classical model is recommended, and where the recommended student is
    behind the best reference on test by more than 1 point / 2% of the RMSE (what the classical stage adds to a
    run's wall time: benchmarks/classical_overhead.py)."""
    def val(r: dict, key: str) -> str:
        v = r[key]
        return f"{v:.3f}" if r["metric"] != "rmse" or v < 1 else f"{v:.1f}"

    def gap(r: dict) -> str:
        return f"{-r['gap']:.1f} points" if r["metric"] != "rmse" else f"{-r['gap']:.1f}% of the RMSE"

    refs = [r for r in runs if r["recommended"] and not r["recommended"].startswith("student")]
    behind = [r for r in runs if r.get("gap") is not None
              and r["gap"] < (-1.0 if r["metric"] != "rmse" else -2.0)]
    close = [r for r in runs if r.get("gap") is not None and r not in behind and r["gap"] < 0]
    ahead = [r for r in runs if r.get("gap") is not None and r["gap"] > 0]
    tag = {True: "SYNTHETIC", False: "real"}
    out = []
    if refs:
        out.append("Where a classical model is better on validation"
                   + (f", or within {TIE_SE:g} standard error(s) of the best validation figure (then the cheaper "
                      "model is preferred)" if TIE_SE else "") + ", the run recommends it: " + "; ".join(
            f"{r['recipe']} ({tag[bool(r['synthetic'])]}) {r['recommended']} {val(r, 'recommended_test')} against "
            f"{val(r, 'student_test')} for the network student" for r in refs)
            + " (`student.onnx` then holds that model"
            + "".join(f"; {r['recipe']} pins the network student, `export.model: student`, see its recipe"
                      for r in refs if r.get("deployed") == "student") + ").")
    if behind:
        out.append("Behind the best reference on test by more than 1 point / 2% of the RMSE: " + "; ".join(
            f"{r['recipe']} {gap(r)} ({r['recommended']} {val(r, 'recommended_test')} vs "
            f"{r['best_reference_test']} {val(r, 'best_reference_test_value')})" for r in behind)
            + ". The run chose on validation, where the network was ahead; its validation figure is that of the "
              "epoch early stopping chose on the same samples (optimistic), and validation and test differ"
            + (" (houston's validation pixels are whole polygons of the training scene, its test pixels the "
               "official test area)." if any(r["recipe"] == "houston" for r in behind) else ".")
            + "".join(f" For {', '.join(n)} the figure here is the first target's alone; the run compared the "
                      "standardised error over all targets." for n in [[r["recipe"] for r in behind
                                                                       if r["recipe"] in SEVERAL_TARGETS]] if n))
    if close:
        out.append("Within 1 point / 2%: " + "; ".join(f"{r['recipe']} {gap(r)}" for r in close) + ".")
    if ahead:
        out.append("Ahead of every reference on test: " + "; ".join(
            f"{r['recipe']} by {r['gap']:.1f}{'%' if r['metric'] == 'rmse' else ' points'}" for r in ahead) + ".")
    return "\n\n".join(out)


def table(runs: list[dict]) -> str:
    """The markdown section: the table and :func:`summary`."""
    lines = ["## Recommended student against the best classical reference (`python benchmarks/recommended.py`)", "",
             "Every built-in recipe at its default settings (export off, except for microgrid, whose closed-loop "
             "analysis runs the exported INT8 student; its run time includes the export). Gap: points of "
             "accuracy, or % of the reference's RMSE; + = the recommended student is better. \"Best reference on "
             "test\" is the best of the run's references on the test split, chosen with hindsight: the strictest "
             "comparison. What the classical stage adds to a run's wall time: `benchmarks/classical_overhead.py`.", "",
             "| recipe | data | seed | metric | recommended | its test | student | student_baseline | student_trees "
             "| best reference on test | its test | gap |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    several = [r for r in runs if r["recipe"] in SEVERAL_TARGETS]
    if several:
        lines[2] += (" The metric is the first target's; " + ", ".join(r["recipe"] for r in several) + " have "
                     "several targets, and their recommendation compares the standardised error over all of them on "
                     "validation (`recommended.metric`; runs recorded since it does), so the first target's test "
                     "figure can favour a model the run did not recommend.")
    for r in runs:
        lines.append(f"| {r['recipe']} | {'SYNTHETIC' if r['synthetic'] else 'real'} | {r['seed']} | {r['metric']} | "
                     f"{r['recommended']} | {f(r['recommended_test'])} | {f(r['student_test'])} | "
                     f"{f(r['student_baseline_test'])} | {f(r['student_trees_test'])} | {r['best_reference_test']} | "
                     f"{f(r['best_reference_test_value'])} | {r.get('gap', 0):+.2f} |")
    return "\n".join(lines) + "\n\n" + summary(runs) + "\n"


if __name__ == "__main__":
    main()
