"""Habitat recipe benchmark (SYNTHETIC data, ILLUSTRATIVE rules): compliance accuracy of the teacher ensemble, its
members, the baseline and the distilled student; latency (student vs ensemble); the rule engine's recommendation
re-check; and continual learning on a new region with and without EWC. Several seeds.

Usage:
    python benchmarks/habitat.py [--seeds 0 1 2] [--shots 20] [--out runs/habitat-bench]
    python benchmarks/habitat.py --speed-only     # re-time the saved models of an earlier full run

Latency ratios want a quiet machine: ``--speed-only`` re-measures the ensemble and the student of every seed's
saved run (``OUT/seed-N``) and replaces the speed figures in ``habitat.json`` / ``habitat.md``.

Writes ``benchmarks/habitat.json`` and ``benchmarks/habitat.md`` (mean ± std over the seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import ms, save

import cmkd
from cmkd.nn.checkpoint import load_model
from cmkd.pipeline.resolve import original_dataset, resolve
from cmkd.recipes.habitat.analysis import measure_speed
from cmkd.training.continual import adapt, model_dataset

ROOT = Path(__file__).resolve().parents[1]
JUR = ("national", "unclos", "isa", "environment")


def compliance_mean(metrics: dict) -> float:
    """Mean accuracy over the four compliance targets in a task_metrics dict."""
    return float(np.mean([metrics["accuracy"], *[metrics[f"compliance_{j}/accuracy"] for j in JUR[1:]]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--shots", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "runs" / "habitat-bench"))
    ap.add_argument("--speed-only", action="store_true", help="re-time the saved models of an earlier full run")
    args = ap.parse_args()
    out = Path(args.out)
    if args.speed_only:
        res = json.loads((ROOT / "benchmarks" / "habitat.json").read_text())
        for r in res["runs"]:
            r["speed"] = speed(out / f"seed-{r['seed']}", r["seed"])
            print(r["seed"], json.dumps(r["speed"]), flush=True)
        res["speed_retimed"] = True
        save("habitat", res, report(res))
        return
    rows = []
    for seed in args.seeds:
        t0 = time.time()
        m = cmkd.run("habitat", out / f"seed-{seed}", overrides=[f"seed={seed}"], quiet=True)
        h = m["habitat"]
        r: dict = {"seed": seed, "compliance": h["compliance_accuracy"], "speed": h["speed"],
                   "recommendation_check": h["recommendation_check"],
                   "regression": {role: {t: m["models"][role]["metrics"].get(f"{t}/r2") for t in
                                         ("hull_thickness", "waste_capacity", "emergency_buoyancy")}
                                  for role in ("teacher", "student_baseline", "student")},
                   "seabed": {role: m["models"][role]["metrics"].get("seabed/accuracy")
                              for role in ("teacher", "student_baseline", "student")}}
        # continual learning: the student fine-tuned on a few labelled designs of the new region (region 1)
        _, region1, _, _ = resolve("habitat", [f"seed={seed}", "options.region=1"])
        net, meta = load_model(out / f"seed-{seed}" / "student.pt")
        new = model_dataset(meta, region1, "region1", "keep")
        orig = original_dataset(meta)
        r["adapt"] = {}
        for lam in (0.0, 100.0, 1000.0):
            # plain fine-tuning (+ EWC): no input restandardisation, no image augmentation (no images here)
            _, rep = adapt(net, new, args.shots, orig, lam, epochs=50, lr=1e-3, seed=seed, restandardise=False,
                           augment=False)
            r["adapt"][str(lam)] = {k: {s: compliance_mean(v[s]) for s in v} for k, v in
                                    (("before", rep["before"]), ("after", rep["after"]))}
            r["adapt"][str(lam)]["n_shots"] = rep["n_shots"]
        r["wall_s"] = time.time() - t0
        rows.append(r)
        print(json.dumps(r), flush=True)
    res = {"runs": rows, "shots_per_class": args.shots}
    save("habitat", res, report(res))


def speed(run_dir: Path, seed: int) -> dict:
    """The habitat speed figures of a saved run (default config, ``seed``), measured again."""
    from cmkd.data.arrays import build_data

    cfg, arrays, source, _ = resolve("habitat", [f"seed={seed}"])
    data = build_data(arrays, cfg.data, cfg.seed, source, modalities=list(cfg.data.modalities))
    models = {r: load_model(run_dir / f"{r}.pt")[0] for r in ("teacher", "student")}
    ctx = {"data": data, "test": data.labelled(data.indices(2)), "cfg": cfg, "out": run_dir, "models": models}
    return measure_speed(ctx)


def report(res: dict) -> str:
    """Markdown tables (mean ± std over seeds)."""
    runs = res["runs"]
    n = len(runs)
    timing = ("Latency: medians per design (batch 1, one thread), the ensemble and the student timed in round-robin "
              "blocks" + (", re-timed on an otherwise idle machine (`--speed-only`)" if res.get("speed_retimed")
                          else "") + "; speed-ups are ratios of the best runs (robust to other load).")
    lines = [f"Habitat (SYNTHETIC sites, ILLUSTRATIVE rules), mean ± std over {n} seeds, test split. {timing}", "",
             "| model | " + " | ".join(JUR) + " | mean compliance accuracy | latency ms |",
             "|---|" + "---|" * (len(JUR) + 2)]
    for role in runs[0]["compliance"]:
        c = [r["compliance"][role] for r in runs]
        lat = [r["speed"]["teacher_ensemble_ms"] if role == "teacher" else np.nan for r in runs]
        lat_s = ms(lat, 2) if role == "teacher" else (ms([r["speed"]["student_ms"] for r in runs], 2)
                                                      if role == "student" else "-")
        lines.append(f"| {role} | " + " | ".join(ms([x[j] for x in c]) for j in JUR)
                     + f" | {ms([x['mean'] for x in c])} | {lat_s} |")
    sp = [r["speed"]["speedup_torch"] for r in runs]
    sp8 = [r["speed"].get("speedup_int8", np.nan) for r in runs]
    gap = [r["compliance"]["student"]["mean"] - r["compliance"]["teacher"]["mean"] for r in runs]
    rc = [r["recommendation_check"] for r in runs]
    spo = [r["speed"].get("speedup_onnx_both", np.nan) for r in runs]
    lines += ["", "| quantity | value |", "|---|---|",
              f"| student speed-up over the teacher ensemble, both exported to ONNX (ONNX Runtime), batch 1, one "
              f"thread | {ms(spo, 1)}x ({ms([r['speed'].get('ensemble_onnx_ms', np.nan) for r in runs], 2)} ms vs "
              f"{ms([r['speed'].get('student_onnx_ms', np.nan) for r in runs], 2)} ms) |",
              f"| student speed-up over the teacher ensemble, PyTorch both, batch 1, one thread | {ms(sp, 1)}x |",
              f"| student FP32 ONNX (the design tool's model) speed-up over the ensemble (PyTorch) | "
              f"{ms([r['speed'].get('speedup_onnx', np.nan) for r in runs], 1)}x |",
              f"| student INT8 ONNX speed-up over the ensemble (PyTorch) | {ms(sp8, 1)}x |",
              f"| student - ensemble, mean compliance accuracy | {ms(gap)} |",
              f"| single recommendations that clear their violation when applied and re-checked | "
              f"{sum(x['recommendations_clearing_their_violation'] for x in rc)} of "
              f"{sum(x['recommendations_checked'] for x in rc)} |",
              f"| test designs fully repaired by the iterated recommendations | "
              f"{sum(x['designs_fully_repaired'] for x in rc)} of {sum(x['designs_with_violations'] for x in rc)} |"]
    for role in ("teacher", "student_baseline", "student"):
        reg = [r["regression"][role] for r in runs]
        lines.append(f"| {role}: R² hull / waste / buoyancy; seabed accuracy | "
                     + " / ".join(ms([x[t] for x in reg]) for t in ("hull_thickness", "waste_capacity",
                                                                      "emergency_buoyancy"))
                     + f"; {ms([r['seabed'][role] for r in runs])} |")
    for lam in runs[0]["adapt"]:
        a = [r["adapt"][lam] for r in runs]
        drop = [x["before"]["original_site"] - x["after"]["original_site"] for x in a]
        lines.append(f"| new region, {res['shots_per_class']} shots/class ({a[0]['n_shots']} designs), "
                     f"plain fine-tuning, EWC {lam}: "
                     f"new-region compliance before -> after; original-region drop (forgetting) | "
                     f"{ms([x['before']['new_site'] for x in a])} -> {ms([x['after']['new_site'] for x in a])}; "
                     f"{ms(drop)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
