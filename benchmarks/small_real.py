"""The distillation dividend on small REAL cases: does the run's recommended model beat labels alone?

For every case, label budget and seed (``small_real_cases.py``: the Samson hyperspectral scene with RGB and
4-band students, Tecator spectra with a 4-band student, Japanese Vowels with a 3-channel student, the built-in
``airquality`` and ``houston`` recipes at label fractions; all REAL data from ``../shared/data``), one default
``python -m cmkd run <yaml or recipe> --out DIR --quiet --set export.enabled=false`` runs as a subprocess (its
peak RSS from ``os.wait4``, its wall time). From its ``metrics.json``, on the TEST split:

- the recommended model (the run's own choice on validation) and its test figure;
- the best label-only model on the student's inputs, chosen with hindsight ON TEST: ``student_baseline`` and every
  reference with ``trained_on == "labels"``;
- the dividend: recommended minus best label-only (for RMSE: best label-only minus recommended; positive = the
  recommendation is better), and relative to the label-only figure: the run's own ``metrics["dividend"]``
  (:func:`cmkd.evaluation.dividend.dividend`); the teacher's figure, the recommended model's validation figure
  and ``selected_by``.

The hindsight makes the label-only side an upper bound of what a user choosing on validation would get, so a
positive dividend here is conservative. Every run is appended to ``benchmarks/small_real_runs.jsonl`` as it
finishes; a run already there is skipped (an interrupted or extended sweep resumes). Writes
``benchmarks/small_real.json`` / ``.md``: per case and budget, mean ± std over seeds.

Usage:
    python benchmarks/small_real.py [--cases samson_rgb samson_4band tecator vowels airquality houston]
        [--budgets 20 27 0.01 | smallest | largest] [--seeds 0 1 2] [--quick] [--out /tmp/cmkd-small-real]
        [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import BENCH, ROOT, append_run, ms, read_runs, save
from small_real_cases import BUDGETS, CASES, CEILING_BUDGET, ceiling, run_args

from cmkd.errors import CmkdError

RUNS = BENCH / "small_real_runs.jsonl"
CEILINGS = BENCH / "small_real_ceilings.json"  # case -> seed -> small_real_cases.ceiling(case, seed)
FIXED = ["--set", "export.enabled=false"]  # the ONNX export changes no figure compared here
NOISE_ABS, NOISE_REL = 0.01, 0.02  # "beyond noise": 1 point of accuracy, 2% of the label-only RMSE


def _budget_text(budget: float) -> str:
    return f"{100 * budget:g}%" if budget < 1 else f"{int(budget)}"


def _key(r: dict) -> tuple:
    return r["case"], float(r["budget"]), int(r["seed"]), bool(r.get("quick"))


def _test_figure(m: dict, name: str | None, metric: str) -> float | None:
    """``name``'s test ``metric``: a model of ``metrics["models"]`` or a reference."""
    if name is None:
        return None
    if name in m.get("models", {}):
        return m["models"][name]["metrics"].get(metric)
    return (m.get("references") or {}).get(name, {}).get(metric)


def summarise(m: dict) -> dict:
    """The figures this benchmark keeps from one run's ``metrics.json``; the dividend is the run's own
    (:func:`cmkd.evaluation.dividend.dividend`: its ``test`` field is the recommended model against the best
    label-only model on test, with hindsight)."""
    from cmkd.evaluation.dividend import dividend, label_only_candidates

    metric = m["primary_metric"]
    rec = (m.get("recommended") or {}).get("model")
    label_only = {k: _test_figure(m, k, metric) for k in label_only_candidates(m)}
    label_only = {k: v for k, v in label_only.items() if v is not None}
    dv = dividend(m) or {}
    best = (dv.get("label_only_test") or {}).get("model")
    out = {"metric": metric, "recommended_model": rec, "recommended_test": _test_figure(m, rec, metric),
           "recommended_val": dv.get("recommended_val"),
           "selected_by": (m.get("recommended") or {}).get("selected_by"),
           "label_only_best_model": best, "label_only_best_test": label_only.get(best), "label_only_test": label_only,
           "teacher_test": _test_figure(m, "teacher", metric),
           "student_baseline_test": label_only.get("student_baseline"),
           "student_test": _test_figure(m, "student", metric),
           "n_train": m["data"]["n_train"], "n_val": m["data"]["n_val"], "n_test": m["data"]["n_test"],
           "n_train_unlabelled": m["data"].get("n_train_unlabelled")}
    if dv.get("test") is not None:
        out["dividend"], out["dividend_rel"] = dv["test"], dv.get("relative_test")
    return out


def one(case: str, budget: float, seed: int, out: Path, quick: bool) -> dict:
    """One ``cmkd run`` of ``case`` at ``budget`` and ``seed`` as a subprocess; its record."""
    folder = out / f"{case}_{_budget_text(budget).rstrip('%')}{'pct' if budget < 1 else ''}_s{seed}"
    run_dir = folder / "run"
    cmd = [sys.executable, "-m", "cmkd", "run", *run_args(case, budget, seed, folder / "data"), "--out", str(run_dir),
           "--quiet", "--overwrite", *FIXED, *(["--quick"] if quick else [])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(folder / "stdout.txt", "wb") as so, open(folder / "stderr.txt", "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    wall = time.time() - t0
    if rc != 0:
        tail = (folder / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"exit code {rc}: {' | '.join(tail)}")
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"case": case, "budget": budget, "seed": seed, "quick": quick,
            "command": " ".join(["python", *cmd[1:]]), "wall_s": round(wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), **summarise(m)}


def _pick_budgets(case: str, wanted: list[str] | None) -> list[float]:
    """The case's budgets among ``wanted`` (numbers, ``smallest`` or ``largest``; None = all)."""
    have = list(BUDGETS[case])
    if not wanted:
        return have
    out = []
    for w in wanted:
        if w == "smallest":
            out.append(have[0])
        elif w == "largest":
            out.append(have[-1])
        else:
            out += [b for b in have if np.isclose(b, float(w))]
    return list(dict.fromkeys(out))


def _negative_beyond_noise(g: list[dict]) -> int:
    """Runs whose dividend is below minus its std over the seeds and worse than the noise floor (1 point of accuracy,
    2% of the label-only RMSE)."""
    d = [r["dividend"] for r in g]
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    floor = (lambda r: r["dividend_rel"] < -NOISE_REL) if g[0]["metric"] == "rmse" else (
        lambda r: r["dividend"] < -NOISE_ABS)
    return sum(r["dividend"] < -sd and floor(r) for r in g)


def ceilings(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Every file case's every-label ceiling at each seed it ran (:func:`small_real_cases.ceiling`), kept in
    ``benchmarks/small_real_ceilings.json``; those missing are computed (seconds each)."""
    have = json.loads(CEILINGS.read_text()) if CEILINGS.is_file() else {}
    todo = sorted({(r["case"], str(r["seed"])) for r in runs if r["case"] in CEILING_BUDGET} -
                  {(c, s) for c, per in have.items() for s in per})
    for case, seed in todo:
        have.setdefault(case, {})[seed] = ceiling(case, int(seed))
    if todo:
        CEILINGS.write_text(json.dumps(have, indent=1, sort_keys=True) + "\n")
    return have


def table(runs: list[dict], cases: list[str]) -> str:
    """Markdown: one row per case and budget, mean ± std over seeds."""
    ceil = ceilings(runs)
    head = ("| case | budget | labels: train / val | seeds | recommended (count) | recommended test | "
            "best label-only test (hindsight) | dividend | dividend (relative) | negative beyond noise | "
            "student_baseline test | teacher test | every-label classical ceiling (same splits) | "
            "recommended, its figure when chosen (val / CV) | "
            "peak RSS max (MB) | wall s mean |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for case in cases:
        for budget in BUDGETS[case]:
            g = sorted((r for r in runs if r["case"] == case and np.isclose(r["budget"], budget)
                        and r.get("dividend") is not None), key=lambda r: r["seed"])
            if not g:
                continue
            metric = g[0]["metric"]
            d = 3 if metric != "rmse" or case.startswith("samson") else 2
            recs = ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["recommended_model"] for r in g).items()))
            labels = sorted({f"{r['n_train']} / {r['n_val']}" for r in g})
            quick = " (quick)" if any(r.get("quick") for r in g) else ""
            lines.append(
                f"| {case}{quick} ({metric}) | {_budget_text(budget)} | {', '.join(labels)} | {len(g)} | "
                f"{recs} | {ms([r['recommended_test'] for r in g], d)} | "
                f"{ms([r['label_only_best_test'] for r in g], d)} | {ms([r['dividend'] for r in g], d)} | "
                f"{ms([100 * r['dividend_rel'] for r in g], 1)}% | {_negative_beyond_noise(g)}/{len(g)} | "
                f"{np.mean([r['student_baseline_test'] for r in g]):.{d}f} | "
                f"{np.mean([r['teacher_test'] for r in g if r['teacher_test'] is not None]):.{d}f} | "
                f"{ms([ceil[case][str(r['seed'])]['best'] for r in g], d) if case in ceil else '-'} | "
                f"{ms([r['recommended_val'] for r in g if r.get('recommended_val') is not None], d)} | "
                f"{max(r['peak_rss_mb'] for r in g):.0f} | {np.mean([r['wall_s'] for r in g]):.0f} |")
    return "\n".join(lines)


def report(runs: list[dict], cases: list[str]) -> str:
    seeds = sorted({r["seed"] for r in runs})
    return "\n".join([
        "## The distillation dividend on small REAL cases (`python benchmarks/small_real.py`)", "",
        f"REAL data (not synthetic), seeds {seeds}, test split. Dividend = recommended model's test figure minus the "
        "best label-only model on the student's inputs (`student_baseline` and the references trained on labels, "
        "the best chosen ON TEST with hindsight); for RMSE label-only minus recommended; positive = the "
        "recommendation is better. Negative beyond noise: dividend below minus its std over the seeds and worse "
        "than -1 point of accuracy / -2% of the label-only RMSE. Default settings everywhere "
        "(`cmkd run <yaml or recipe> --quiet --set export.enabled=false`; the recipes as "
        "`benchmarks/label_fraction.py` runs them). Peak RSS: the `cmkd run` process (`os.wait4`). Every-label "
        "ceiling: on the student's inputs, the best on test of ExtraTrees, ridge and (regression) PLS fitted on every "
        "training and validation sample with its true label, at the same seeds and splits "
        "(`small_real_cases.ceiling`).", "",
        table(runs, cases), ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--budgets", nargs="+", default=None,
                    help="budgets to run where a case has them (label counts, fractions such as 0.01, or the words "
                         "smallest / largest); default: every budget of each case")
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="seeds to run (default 0 1 2); the table: these, or every recorded seed when not given")
    ap.add_argument("--quick", action="store_true", help="pass --quick to cmkd run (recorded apart)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cmkd-small-real",
                    help="folder for the built data and the run folders")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the table from the recorded runs")
    args = ap.parse_args()
    plan = [(c, b) for c in args.cases for b in _pick_budgets(c, args.budgets)]
    if not args.report_only:
        done = {_key(r) for r in read_runs(RUNS)}
        skipped: set[str] = set()
        for seed in args.seeds or [0, 1, 2]:  # seed-major: an interrupted sweep still covers every case
            for case, budget in plan:
                if (case, float(budget), seed, args.quick) in done or case in skipped:
                    continue
                try:
                    r = one(case, budget, seed, args.out.resolve(), args.quick)
                except CmkdError as e:  # the data folder absent, ...
                    print(f"{case}: skipped ({e})", flush=True)
                    skipped.add(case)
                    continue
                except RuntimeError as e:
                    print(f"{case} {_budget_text(budget)} seed {seed}: FAILED ({e})", flush=True)
                    continue
                append_run(RUNS, r)
                print(f"{case} {_budget_text(budget)} seed {seed}: recommended {r['recommended_model']} "
                      f"{r['recommended_test']:.4f}, best label-only {r['label_only_best_model']} "
                      f"{r['label_only_best_test']:.4f}, dividend {r['dividend']:+.4f} ({r['wall_s']} s, "
                      f"{r['peak_rss_mb']:.0f} MB)", flush=True)
    wanted = {(c, float(b)) for c, b in plan}
    runs: dict[tuple, dict] = {}
    for r in read_runs(RUNS):  # the last record of each run; quick ones only when asked for
        if ((r["case"], float(r["budget"])) in wanted and (args.seeds is None or r["seed"] in args.seeds)
                and bool(r.get("quick")) == args.quick):
            runs[_key(r)] = r
    seeds = sorted({r["seed"] for r in runs.values()})
    save("small_real", {"cases": args.cases, "seeds": seeds, "quick": args.quick, "runs": list(runs.values())},
         report(list(runs.values()), args.cases))


if __name__ == "__main__":
    main()
