"""How much longer does the classical stage (references + tree student) make a default run? Wall clock.

For each built-in recipe (seed 0, the settings of ``benchmarks/recommended.py``: export off, except for microgrid,
whose closed-loop analysis runs the exported INT8 student), one default ``cmkd run`` and one with
``references=false trees=false``, back to back on an otherwise idle machine; the overhead is their difference
over the second. A run fits the references and the tree student in a background thread beside the teacher and the
students. Each run also records ``classical_added_s`` (what the run waited for the stage once the networks had
trained). Earlier records also hold a third run per recipe with the stage in sequence after the networks (the
since removed ``references.background=false``); the table still shows them.

One seed: wall-clock figures on a shared 2-core machine move by a few percent from run to run.
Writes ``benchmarks/classical_overhead.json`` / ``.md``; runs are appended to
``benchmarks/classical_overhead_runs.jsonl`` as they finish, so an interrupted sweep resumes.

Usage:
    python benchmarks/classical_overhead.py [--recipes airquality recycling ...] [--no-sequential]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import BENCH, append_run, read_runs, save

import cmkd
from cmkd.errors import CmkdError
from cmkd.recipes import recipe_names

RUNS = BENCH / "classical_overhead_runs.jsonl"
NEEDS_EXPORT = ("microgrid",)  # its closed-loop analysis runs the exported INT8 student
MODES = {"background": [], "off": ["references=false", "trees=false"]}


def one(recipe: str, mode: str, repeat: int = 0) -> dict:
    """One run of ``recipe`` in ``mode``: wall seconds and the figures to compare."""
    over = ["seed=0"] + ([] if recipe in NEEDS_EXPORT else ["export.enabled=false"]) + MODES[mode]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        m = cmkd.run(recipe, Path(tmp) / "run", quiet=True, overrides=over)
    metric = m["primary_metric"]
    return {"recipe": recipe, "mode": mode, "repeat": repeat, "seconds": round(time.perf_counter() - t0, 1),
            "metric": metric, "synthetic": m.get("synthetic"), "cpus": len(os.sched_getaffinity(0)),
            "classical_stage_s": m.get("classical_stage_s"), "classical_added_s": m.get("classical_added_s"),
            "student_test": m["models"]["student"]["metrics"].get(metric),
            "references_test": {k: r.get(metric) for k, r in (m.get("references") or {}).items()
                                if isinstance(r, dict)},
            "student_trees_test": (m["models"].get("student_trees") or {}).get("metrics", {}).get(metric),
            "recommended": (m.get("recommended") or {}).get("model")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=list(recipe_names()))
    ap.add_argument("--repeats", type=int, default=1, help="runs per recipe and mode (the table has the median)")
    args = ap.parse_args()
    modes = ["off", "background"]
    done = {(r["recipe"], r["mode"], r.get("repeat", 0)) for r in read_runs(RUNS)}
    for recipe in args.recipes:
        for rep in range(args.repeats):
            for mode in modes:
                if (recipe, mode, rep) in done:
                    continue
                try:
                    r = one(recipe, mode, rep)
                except CmkdError as e:  # a real-data recipe without its data folder
                    print(f"{recipe}: skipped ({e})", flush=True)
                    break
                append_run(RUNS, r)
                print(f"{recipe} {mode}: {r['seconds']} s (classical {r['classical_stage_s']} s, added "
                      f"{r['classical_added_s']} s)", flush=True)
    runs = [r for r in read_runs(RUNS) if r["recipe"] in args.recipes]
    save("classical_overhead", {"runs": runs}, table(runs))


def table(runs: list[dict]) -> str:
    """The markdown section: per recipe the run without the stage, with it (background, sequential), overhead."""
    by: dict[tuple[str, str], dict] = {}
    for k, mode in {(r["recipe"], r["mode"]) for r in runs}:  # the median run of each recipe and mode
        rs = sorted((r for r in runs if (r["recipe"], r["mode"]) == (k, mode)), key=lambda r: r["seconds"])
        by[(k, mode)] = {**rs[(len(rs) - 1) // 2], "n": len(rs)}
    recipes = list(dict.fromkeys(r["recipe"] for r in runs))
    has_seq = any(m == "sequential" for _, m in by)
    lines = ["## What the classical stage adds to a run (`python benchmarks/classical_overhead.py`)", "",
             "Wall seconds of a default run (seed 0; export off except for microgrid) without the classical stage "
             "(`references=false trees=false`), with it as it runs by default (fitted in a "
             "background thread beside the teacher and the students)"
             + (" and with it in sequence after the networks (`references.background=false`, since removed)"
                if has_seq else "")
             + ". Overhead: seconds over the run without the stage; \"waited s\": "
             "what the default run waited for the stage once the networks had trained (`classical_added_s`). On a "
             "2-core machine; the median of n runs where n > 1.", "",
             "| recipe | data | n | without s | default s | overhead | waited s |"
             + (" sequential s | overhead | same figures |" if has_seq else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|---|" if has_seq else "")]
    over = []
    for k in recipes:
        off, bg, seq = by.get((k, "off")), by.get((k, "background")), by.get((k, "sequential"))
        if off is None or bg is None:
            continue

        def pct(r: dict | None, off: dict = off) -> str:
            return "-" if r is None else f"{round(100 * (r['seconds'] - off['seconds']) / off['seconds']):+d}%"

        same = "-" if seq is None else ("yes" if (bg["references_test"], bg["student_trees_test"], bg["student_test"])
                                        == (seq["references_test"], seq["student_trees_test"],
                                            seq["student_test"]) else "NO")
        over.append((100 * (bg["seconds"] - off["seconds"]) / off["seconds"], k))
        lines.append(f"| {k} | {'SYNTHETIC' if bg['synthetic'] else 'real'} | {min(off['n'], bg['n'])} | "
                     f"{off['seconds']} | {bg['seconds']} | "
                     f"{pct(bg)} | {bg['classical_added_s']} |"
                     + (f" {seq['seconds'] if seq else '-'} | {pct(seq)} | {same} |" if has_seq else ""))
    spread = []
    for k in recipes:
        for mode, what in (("off", "without the stage"), ("background", "default")):
            sec = [r["seconds"] for r in runs if (r["recipe"], r["mode"]) == (k, mode)]
            if len(sec) > 1:
                spread.append(f"{k} {what} {min(sec)}-{max(sec)} s")
    if spread:
        lines += ["", "Runs of one setting differ on this shared machine (read one run's overhead loosely; the table "
                  "has the median): " + ", ".join(spread) + "."]
    if over:
        over.sort(reverse=True)
        lines += ["", "A default run takes longer by " + ", ".join(f"{round(p):d}% ({k})" for p, k in over)
                  + " than the same run without the classical stage. `references.algorithms`, "
                    "`references.n_estimators` or `references: false` cut it further."]
        from cmkd.recipes import get_recipe

        late = [k for k in recipes if (k, "background") in by and get_recipe(k).aggregate is not None]
        if late:
            lines += ["", "In " + ", ".join(late) + " the fits wait for the recipe's dataset-aggregation rounds, "
                      "which add labelled training samples: they start once the last round's samples are in "
                      "(`aggregate_rounds` announces how many rounds there are), beside that round's retraining, "
                      "and beside the pruned student's fine-tuning (`export.prune_epochs`, which runs before the "
                      "wait); what is left of them then runs with every core of the machine while the run waits "
                      "(the \"waited s\" column; HistGradientBoosting, fitted per output column, takes the freed "
                      "cores from its next column on). "
                      "Elsewhere the run waits a few seconds at most; what remains of the "
                      "overhead is the background thread slowing the networks' training on the shared cores (most "
                      "on short runs: airquality's networks train in about 15 s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
