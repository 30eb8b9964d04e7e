"""Where selection by cross-validation stops paying: the threshold ``CV_MAX_LABELS`` measured on REAL data.

Below the threshold a run selects (the recommendation, kd on/off, the teacher) by 5-fold cross-validation over its
labelled samples and refits the networks on all of them; above it, by its validation split
(``cmkd.pipeline.crossval``). For the Samson cases of ``benchmarks/small_real_cases.py`` (REAL hyperspectral scene,
spatially disjoint blocks, the student on 4 bands or RGB) at label shares from 2% to 20% of the training and
validation pixels (144 to 1,444 labels), each seed runs from the same files with the threshold above its labels
(``cv``), at 0 (``validation``), and at 0 with the networks refitted on every labelled sample as cross-validation
mode does (``validation_refit``, ``student.refit=true``): the last tells the effect of the selection from that of
the refit. The threshold is set in the run's process (``python -c`` sets ``cmkd.pipeline.crossval.CV_MAX_LABELS``
and calls the command line); nothing else differs.

Per budget and mode: the recommended model's test figure (mean ± std over seeds), its regret (the recommended
model's test figure minus the best test figure among the run's candidates on the student's inputs, with hindsight:
0 is a perfect choice) and the CPU seconds of the run (user + system, ``os.wait4``).

    python benchmarks/cv_threshold.py [--case samson_4band|samson_rgb] [--modes cv validation validation_refit]
        [--shares 0.02 0.05 0.1 0.2] [--seeds 0 1] [--out DIR] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BENCH, ROOT, append_run, ms, read_runs, save
from small_real_cases import SAMSON_STUDENTS, build

from cmkd.errors import CmkdError

RUNS = BENCH / "cv_threshold_runs.jsonl"
CASE = "samson_4band"
# mode -> (the threshold it runs with, extra --set flags); validation_refit: the validation split selects, then the
# networks are refitted on every labelled sample as cross-validation mode does, which tells the two effects apart
MODES = {"cv": (10**9, []), "validation": (0, []), "validation_refit": (0, ["--set", "student.refit=true"])}
SET = ("import sys; import cmkd.pipeline.crossval as c; c.CV_MAX_LABELS = int(sys.argv[1]); "
       "sys.argv = ['cmkd', *sys.argv[2:]]; from cmkd.cli import main; main()")


def _candidates(m: dict, metric: str) -> dict[str, float]:
    """Test figures of the run's candidates on the student's inputs (models but the teacher, and references)."""
    out = {k: v["metrics"][metric] for k, v in m.get("models", {}).items()
           if k != "teacher" and metric in v.get("metrics", {})}
    for k, v in (m.get("references") or {}).items():
        if isinstance(v, dict) and metric in v and "TEACHER" not in k:
            out[k] = v[metric]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def one(case: str, share: float, seed: int, mode: str, out: Path) -> dict:
    """One run; its record."""
    folder = out / f"{case}_{share:g}_s{seed}"
    _, yml = build(case, share, seed, folder / "data", any_budget=True)
    run_dir = folder / f"run-{mode}"
    threshold, extra = MODES[mode]
    cmd = [sys.executable, "-c", SET, str(threshold), "run", str(yml), "--out", str(run_dir), "--quiet",
           "--overwrite", "--set", "export.enabled=false", *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    t0 = time.time()
    with open(folder / f"stderr-{mode}.txt", "wb") as se:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=se, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = (folder / f"stderr-{mode}.txt").read_text(errors="replace").strip().splitlines()[-2:]
        raise RuntimeError(f"exit code {rc}: {' | '.join(tail)}")
    m = json.loads((run_dir / "metrics.json").read_text())
    metric = m["primary_metric"]
    rec = m["recommended"]["model"]
    cands = _candidates(m, metric)
    best = min(cands, key=cands.get)
    return {"case": case, "share": share, "seed": seed, "mode": mode, "metric": metric,
            "labels": int(m["data"]["n_train"] + m["data"]["n_val"]),  # labelled training + validation samples
            "selected_by": m["recommended"].get("selected_by"), "recommended": rec,
            "recommended_test": cands.get(rec), "best": best, "best_test": cands[best],
            "regret": cands.get(rec, np.nan) - cands[best],
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "wall_s": round(time.time() - t0, 1)}


def report(runs: list[dict]) -> str:
    lines = ["## Where cross-validated selection stops paying (`python benchmarks/cv_threshold.py`)", "",
             "REAL data: the Samson scene (samson_4band / samson_rgb of benchmarks/small_real_cases.py: the student on "
             "4 bands or RGB), test split (spatially disjoint blocks). Each seed runs from the same files with "
             "selection by 5-fold cross-validation (the threshold set above its labels; the networks then refitted "
             "on every labelled sample), by the validation split (threshold 0), and by the validation split with "
             "the same refit (`student.refit=true`). Regret = the recommended model's test RMSE minus the best test "
             "RMSE among the run's candidates on the student's inputs (hindsight; 0 = the best choice). Mean ± std "
             "over seeds.", "",
             "| case | share labelled | labels (train + val) | seeds | mode | recommended (count) | recommended test "
             "RMSE | regret | CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for case, share in sorted({(r.get("case", CASE), r["share"]) for r in runs}):
        for mode in MODES:
            g = [r for r in runs if r.get("case", CASE) == case and r["share"] == share and r["mode"] == mode]
            if not g:
                continue
            recs: dict[str, int] = {}
            for r in g:
                recs[r["recommended"]] = recs.get(r["recommended"], 0) + 1
            lines.append(f"| {case} | {100 * share:g}% | {ms([r['labels'] for r in g], 0)} | {len(g)} | {mode} | "
                         + ", ".join(f"{k} {v}" for k, v in sorted(recs.items())) + f" | "
                         f"{ms([r['recommended_test'] for r in g], 4)} | {ms([r['regret'] for r in g], 4)} | "
                         f"{ms([r['cpu_s'] for r in g], 0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=CASE, choices=sorted(SAMSON_STUDENTS))
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--shares", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cmkd-cv-threshold")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the table from the recorded runs")
    args = ap.parse_args()
    if not args.report_only:
        done = {(r.get("case", CASE), r["share"], r["seed"], r["mode"]) for r in read_runs(RUNS)}
        for seed in args.seeds:
            for share in args.shares:
                for mode in args.modes:
                    if (args.case, share, seed, mode) in done:
                        continue
                    try:
                        r = one(args.case, share, seed, mode, args.out.resolve())
                    except CmkdError as e:
                        sys.exit(f"skipped: {e}")
                    except RuntimeError as e:
                        print(f"{args.case} {share:g} seed {seed} {mode}: FAILED ({e})", flush=True)
                        continue
                    append_run(RUNS, r)
                    print(f"{args.case} {share:g} seed {seed} {mode}: {r['labels']} labels, {r['recommended']} "
                          f"{r['recommended_test']:.4f} (best {r['best']} {r['best_test']:.4f}), {r['cpu_s']} CPU s",
                          flush=True)
    runs = read_runs(RUNS)  # every recorded run: the table covers both cases
    save("cv_threshold", {"runs": runs}, report(runs))


if __name__ == "__main__":
    main()
