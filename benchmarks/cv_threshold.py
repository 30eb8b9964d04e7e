"""Where selection by cross-validation stops paying: the threshold ``CV_MAX_LABELS`` measured on REAL data.

Below the threshold a run selects (the recommendation, kd on/off, the teacher) by 5-fold cross-validation over its
labelled samples; above it, by its validation split (``cmkd.pipeline.crossval``). For the Samson 4-band case of
``benchmarks/small_real_cases.py`` (REAL hyperspectral scene, spatially disjoint blocks, the student on 4 bands) at
label shares from 2% to 20% of the training and validation pixels (144 to 1,444 labels), every seed is run twice
from the same files: once with the threshold above its labels (selection by cross-validation) and once with it at
0 (selection by the validation split). The threshold is set in the run's process (``python -c`` sets
``cmkd.pipeline.crossval.CV_MAX_LABELS`` and calls the command line); nothing else differs.

Per budget and mode: the recommended model's test figure (mean ± std over seeds), its regret (the recommended
model's test figure minus the best test figure among the run's candidates on the student's inputs, with hindsight:
0 is a perfect choice) and the CPU seconds of the run (user + system, ``os.wait4``).

    python benchmarks/cv_threshold.py [--shares 0.02 0.05 0.1 0.2] [--seeds 0 1] [--out DIR] [--report-only]
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
from small_real_cases import build

from cmkd.errors import CmkdError

RUNS = BENCH / "cv_threshold_runs.jsonl"
CASE = "samson_4band"
MODES = {"cv": 10**9, "validation": 0}  # the threshold each mode runs with
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


def one(share: float, seed: int, mode: str, out: Path) -> dict:
    """One run; its record."""
    folder = out / f"{CASE}_{share:g}_s{seed}"
    _, yml = build(CASE, share, seed, folder / "data", any_budget=True)
    run_dir = folder / f"run-{mode}"
    cmd = [sys.executable, "-c", SET, str(MODES[mode]), "run", str(yml), "--out", str(run_dir), "--quiet",
           "--overwrite", "--set", "export.enabled=false"]
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
    return {"case": CASE, "share": share, "seed": seed, "mode": mode, "metric": metric,
            "labels": int(m["data"]["n_train"] + m["data"]["n_val"]),  # labelled training + validation samples
            "selected_by": m["recommended"].get("selected_by"), "recommended": rec,
            "recommended_test": cands.get(rec), "best": best, "best_test": cands[best],
            "regret": cands.get(rec, np.nan) - cands[best],
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "wall_s": round(time.time() - t0, 1)}


def report(runs: list[dict]) -> str:
    lines = ["## Where cross-validated selection stops paying (`python benchmarks/cv_threshold.py`)", "",
             f"REAL data: the Samson scene, student on 4 bands ({CASE} of benchmarks/small_real_cases.py), test split "
             "(spatially disjoint blocks). Each seed runs twice from the same files: selection by 5-fold "
             "cross-validation (the threshold set above its labels) and by the validation split (threshold 0). "
             "Regret = the recommended model's test RMSE minus the best test RMSE among the run's candidates on "
             "the student's inputs (hindsight; 0 = the best choice). Mean ± std over seeds.", "",
             "| share labelled | labels (train + val) | seeds | mode | recommended (count) | recommended test RMSE "
             "| regret | CPU s |", "|---|---|---|---|---|---|---|---|"]
    for share in sorted({r["share"] for r in runs}):
        for mode in MODES:
            g = [r for r in runs if r["share"] == share and r["mode"] == mode]
            if not g:
                continue
            recs: dict[str, int] = {}
            for r in g:
                recs[r["recommended"]] = recs.get(r["recommended"], 0) + 1
            lines.append(f"| {100 * share:g}% | {ms([r['labels'] for r in g], 0)} | {len(g)} | {mode} | "
                         + ", ".join(f"{k} {v}" for k, v in sorted(recs.items())) + f" | "
                         f"{ms([r['recommended_test'] for r in g], 4)} | {ms([r['regret'] for r in g], 4)} | "
                         f"{ms([r['cpu_s'] for r in g], 0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shares", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cmkd-cv-threshold")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the table from the recorded runs")
    args = ap.parse_args()
    if not args.report_only:
        done = {(r["share"], r["seed"], r["mode"]) for r in read_runs(RUNS)}
        for seed in args.seeds:
            for share in args.shares:
                for mode in MODES:
                    if (share, seed, mode) in done:
                        continue
                    try:
                        r = one(share, seed, mode, args.out.resolve())
                    except CmkdError as e:
                        sys.exit(f"skipped: {e}")
                    except RuntimeError as e:
                        print(f"{share:g} seed {seed} {mode}: FAILED ({e})", flush=True)
                        continue
                    append_run(RUNS, r)
                    print(f"{share:g} seed {seed} {mode}: {r['labels']} labels, {r['recommended']} "
                          f"{r['recommended_test']:.4f} (best {r['best']} {r['best_test']:.4f}), {r['cpu_s']} CPU s",
                          flush=True)
    runs = [r for r in read_runs(RUNS) if r["share"] in args.shares and r["seed"] in args.seeds]
    save("cv_threshold", {"case": CASE, "shares": args.shares, "seeds": args.seeds, "runs": runs}, report(runs))


if __name__ == "__main__":
    main()
