"""When does distillation pay? Recipes at several label fractions, several seeds.

For each case and share of labelled training samples (``options.label_fraction``; the other training samples
stay paired but unlabelled), a default ``cmkd run`` (export off) gives on the TEST split: the distilled
``student``, ``student_baseline`` (labels only), the tree student ``student_trees``, the best classical
reference (chosen on validation among every reference of the run, its test figure reported) and the
recommended student (the run's own choice on validation, the strictly best there) and, beside it, what
``references.tie_se: 1`` recommends (candidates within one standard error of the best validation figure tied,
the cheapest wins; recorded when the sweep ran with it). Cases: ``airquality`` (REAL data, NO2 RMSE),
``minerals`` (SYNTHETIC data, accuracy), ``houston`` (REAL data, accuracy on the official test pixels: teacher on
hyperspectral + LiDAR, students on LiDAR; every training pixel has both, the unlabelled ones too; run with
``student.refit=false`` so that the networks, like the references on the labels, never train on validation
labels); the real hyperspectral scene of issue 21 is not in ``../shared/data`` (its line says so).

Every run is appended to ``benchmarks/label_fraction_runs.jsonl`` as it finishes, so an interrupted or extended
sweep (more seeds) reuses what is there. Writes ``benchmarks/label_fraction.json`` / ``.md`` and the figure
``benchmarks/label_fraction.png`` (mean ± std over seeds against the label fraction).

Usage:
    python benchmarks/label_fraction.py [--cases airquality minerals houston] [--fractions 0.01 0.02 0.05 0.2 1.0]
        [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BENCH, TIE_SE, append_run, ms, read_runs, rule_holds, save

import cmkd
from cmkd.errors import CmkdError

RUNS = BENCH / "label_fraction_runs.jsonl"
REAL = ("airquality", "houston")
EXTRA = {"houston": ["student.refit=false"]}  # the networks train on the labelled training pixels only
ROLES = ("student", "student_baseline", "student_trees", "best_reference", "recommended")


def _best_reference(m: dict, metric: str, higher: bool) -> tuple[str | None, float | None]:
    """The reference with the best validation ``metric``; its name and test figure."""
    best, name = None, None
    for k, r in (m.get("references") or {}).items():
        v = (r.get("val") or {}).get(metric) if isinstance(r, dict) else None
        if v is None or metric not in r:
            continue
        if best is None or (v > best if higher else v < best):
            best, name = v, k
    return name, (m["references"][name][metric] if name else None)


def one(case: str, fraction: float, seed: int) -> dict:
    """One default run of ``case`` at ``fraction`` labels; test figures of every role in :data:`ROLES`."""
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        m = cmkd.run(case, Path(tmp) / "run", quiet=True,
                     overrides=[f"seed={seed}", f"options.label_fraction={fraction}", "export.enabled=false",
                                *EXTRA.get(case, [])])
    metric = m["primary_metric"]
    higher = metric != "rmse"
    out = {"case": case, "fraction": fraction, "seed": seed, "metric": metric,
           "seconds": round(time.time() - t0, 1), "n_train": m["data"]["n_train"],
           "n_train_unlabelled": m["data"]["n_train_unlabelled"], "fallback": m["distill"].get("fallback"),
           "classical_stage_s": m.get("classical_stage_s")}
    for role in ("student", "student_baseline", "student_trees", "teacher"):
        if role in m["models"]:
            out[role] = m["models"][role]["metrics"].get(metric)
    out["best_reference_name"], out["best_reference"] = _best_reference(m, metric, higher)
    # every candidate's validation and test figure, so that another choice rule can be replayed on these runs
    out["candidates"] = {k: {"val": v, "test": (m["models"][k]["metrics"].get(metric) if k in m["models"]
                                                else (m.get("references") or {}).get(k, {}).get(metric))}
                         for k, v in ((m.get("recommended") or {}).get("val") or {}).items()}
    rec = (m.get("recommended") or {}).get("model")
    out["recommended_name"] = rec
    if rec in out["candidates"]:
        out["recommended"] = out["candidates"][rec]["test"]
    # the strictly best on validation (what ``references.tie_se: 0`` would recommend) and today's rule
    best = (m.get("recommended") or {}).get("best_on_val")
    out["best_on_val_name"] = best
    out["best_on_val"] = out["candidates"].get(best, {}).get("test")
    out["tie_se"] = TIE_SE
    out["outlook"] = m.get("distillation_outlook")
    return out


def load_runs() -> list[dict]:
    """The last usable record of every (case, fraction, seed), seen under today's tie rule.

    A record whose recommendation holds under today's rule (``common.rule_holds``) as it is; under the strict
    rule (``tie_se`` 0) also one recorded under another rule that holds its strictly best candidate's test figure
    (``best_on_val``), with that candidate as its recommendation. ``recommended_tie1``: what ``tie_se`` 1
    recommended, where known (recorded under it, or a strict run that recommended a reference, which any tie
    rule keeps)."""
    out: dict[tuple, dict] = {}
    for r in read_runs(RUNS):
        tie = r.get("tie_se", 0.0)
        r.setdefault("best_on_val_name", r.get("recommended_name") if tie == 0 else None)
        r.setdefault("best_on_val", r.get("recommended") if tie == 0 else None)
        if tie == 1.0 or (tie == 0 and not str(r.get("recommended_name")).startswith("student")):
            r["recommended_tie1"] = r.get("recommended")
        if not rule_holds(r, "recommended_name", "best_on_val_name"):
            if not (TIE_SE == 0 and r["best_on_val_name"] and r["best_on_val"] is not None):
                continue
            r["recommended_name"], r["recommended"] = r["best_on_val_name"], r["best_on_val"]
        out[(r["case"], r["fraction"], r["seed"])] = r
    return list(out.values())


def table(runs: list[dict], cases: list[str], fractions: list[float]) -> str:
    """The markdown table: mean ± std per case, fraction and role, plus the paired student - baseline."""
    lines = []
    for case in cases:
        rs = [r for r in runs if r["case"] == case]
        if not rs:
            continue
        metric = rs[0]["metric"]
        d = 1 if metric == "rmse" else 3
        seeds = sorted({r["seed"] for r in rs})
        lines += [f"### {case} ({'REAL' if case in REAL else 'SYNTHETIC'} data): test {metric}, seeds "
                  f"{seeds}", "",
                  "| labels | n labelled | student | student_baseline | student - baseline (paired) | student_trees "
                  "| best reference (on val) | recommended | recommended, `tie_se` 1 | fallbacks |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for f in fractions:
            g = [r for r in rs if r["fraction"] == f]
            if not g:
                continue

            def col(k: str, g: list[dict] = g, d: int = d) -> str:
                v = [r[k] for r in g if r.get(k) is not None]
                return ms(v, d) if v else "-"

            diff = [r["student"] - r["student_baseline"] for r in g]
            refs = sorted({r["best_reference_name"] for r in g if r.get("best_reference_name")})
            recs = sorted({r["recommended_name"] for r in g if r.get("recommended_name")})
            lines.append(f"| {f:.0%} | {int(np.mean([r['n_train'] for r in g]))} | {col('student')} | "
                         f"{col('student_baseline')} | {ms(diff, d)} | {col('student_trees')} | "
                         f"{col('best_reference')} ({', '.join(refs)}) | {col('recommended')} ({', '.join(recs)}) | "
                         f"{col('recommended_tie1')} | "
                         f"{sum(bool(r.get('fallback')) for r in g)}/{len(g)} |")
        lines.append("")
    lines.append("The real hyperspectral scene (teacher on every pixel's spectrum, RGB / Sentinel-2-like students) "
                 "is not run: ../shared/data holds no full hyperspectral scene (only the Houston 2013 subset, whose "
                 "test pixels have no spectra).")
    return "\n".join(lines)


def plot(runs: list[dict], cases: list[str], fractions: list[float], path: Path) -> None:
    """Mean ± std of each role against the label fraction, one panel per case."""
    from matplotlib.figure import Figure

    cases = [c for c in cases if any(r["case"] == c for r in runs)]
    fig = Figure(figsize=(5.2 * max(len(cases), 1), 3.8))
    axes = np.atleast_1d(fig.subplots(1, max(len(cases), 1)))
    for ax, case in zip(axes, cases):
        rs = [r for r in runs if r["case"] == case]
        for role, style in zip(ROLES, ("o-", "s--", "^-.", "d:", "x-")):
            xs, mu, sd = [], [], []
            for f in fractions:
                v = [r[role] for r in rs if r["fraction"] == f and r.get(role) is not None]
                if v:
                    xs.append(100 * f)
                    mu.append(np.mean(v))
                    sd.append(np.std(v, ddof=1) if len(v) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, mu, yerr=sd, fmt=style, capsize=3, label=role.replace("_", " "))
        ax.set_xscale("log")
        ax.set_xlabel("labelled share of the training samples (%)")
        ax.set_ylabel(f"test {rs[0]['metric']}")
        ax.set_title(f"{case} ({'real' if case in REAL else 'SYNTHETIC'} data)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["airquality", "minerals", "houston"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.02, 0.05, 0.2, 1.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--report-only", action="store_true", help="Only rebuild the table and figure from the runs.")
    args = ap.parse_args()
    done = {(r["case"], r["fraction"], r["seed"]) for r in load_runs()}
    if not args.report_only:
        for seed in args.seeds:  # seed-major: an interrupted sweep still covers every fraction
            for case in args.cases:
                for f in args.fractions:
                    if (case, f, seed) in done:
                        continue
                    try:
                        r = one(case, f, seed)
                    except CmkdError as e:  # e.g. a real recipe's data folder absent
                        print(f"{case} {f:.0%} seed {seed}: not run ({e})", flush=True)
                        continue
                    append_run(RUNS, r)
                    print(f"{case} {f:.0%} seed {seed}: student {r.get('student'):.4f} baseline "
                          f"{r.get('student_baseline'):.4f} ({r['seconds']} s)", flush=True)
    runs = [r for r in load_runs() if r["case"] in args.cases and r["fraction"] in args.fractions]
    md = "## When does distillation pay? (`python benchmarks/label_fraction.py`)\n\n" + table(
        runs, args.cases, args.fractions)
    save("label_fraction", {"cases": args.cases, "fractions": args.fractions, "runs": runs}, md)
    plot(runs, args.cases, args.fractions, BENCH / "label_fraction.png")


if __name__ == "__main__":
    main()
