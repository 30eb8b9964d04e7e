"""The ``recycling`` recipe (SYNTHETIC items) at full settings over several seeds: material accuracy and macro-F1 of
teacher, student_baseline and student, per-class F1, stream purity and mis-sort cost per model, energy per item
and the teacher / student ratio, INT8 size and latency.

Usage:
    python benchmarks/recycling.py [--seeds 0 1 2] [--out runs/recycling-bench]

Writes ``benchmarks/recycling.json`` (every figure per seed) and ``benchmarks/recycling.md`` (mean ± std).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from common import ms, save

import cmkd
from cmkd.recipes.recycling.scene import MATERIALS

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("teacher", "student_baseline", "student", "student_int8")


def one(seed: int, out: Path) -> dict:
    """Run the recipe for one seed and keep the figures the benchmark reports."""
    t0 = time.time()
    m = cmkd.run("recycling", out / f"seed-{seed}", overrides=[f"seed={seed}"], quiet=True)
    rec = m["recycling"]
    models = {r: {k: v for k, v in m["models"][r]["metrics"].items()} for r in ("teacher", "student_baseline",
                                                                               "student")}
    ex = m["export"]
    return {"seed": seed, "seconds": time.time() - t0, "n_test": m["data"]["n_test"], "metrics": models,
            "int8_metrics": ex["int8_metrics"], "int8_bytes": ex["int8_bytes"],
            "int8_latency_ms": ex["int8_latency_ms"], "onnx_latency_ms": ex["onnx_latency_ms"],
            "params": {r: m["models"][r]["params"] for r in ("teacher", "student")},
            "latency_ms": {r: m["models"][r]["latency_ms"] for r in ("teacher", "student_baseline", "student")},
            "per_class_f1": rec["per_class_f1"],
            "sorting": {r: {k: s[k] for k in ("purity", "missort_cost_total", "missort_cost_per_item",
                                              "route_accuracy", "missorted", "pvc_in_pet_stream",
                                              "extra_cost_vs_teacher")}
                        for r, s in rec["sorting"].items()},
            "energy": {k: rec["energy"][k] for k in ("teacher_j", "student_j", "ratio_teacher_over_student",
                                                     "acquisition_s", "compute_w")}}


def markdown(rows: list[dict]) -> str:
    """The benchmark tables (mean ± std over the seeds)."""
    seeds = [r["seed"] for r in rows]
    lines = [f"# recycling (SYNTHETIC items): {len(rows)} seeds ({', '.join(map(str, seeds))}), full settings",
             "", f"Machine: {platform.processor() or platform.machine()}, torch 1 thread. "
             f"Test items per seed: {rows[0]['n_test']}. Wall time per seed: "
             f"{ms([r['seconds'] for r in rows], 0)} s.", "",
             "## Acceptance", "",
             "| line | value (mean ± std) | met |", "| --- | --- | --- |"]
    t_acc = [r["metrics"]["teacher"]["accuracy"] for r in rows]
    s_f1 = [r["metrics"]["student"]["macro_f1"] for r in rows]
    b_f1 = [r["metrics"]["student_baseline"]["macro_f1"] for r in rows]
    ratio = [r["energy"]["ratio_teacher_over_student"] for r in rows]
    lines += [f"| teacher material accuracy >= 0.987 | {ms(t_acc, 4)} | {'yes' if np.mean(t_acc) >= 0.987 else 'NO'} |",
              f"| student material macro-F1 > student_baseline | {ms(s_f1, 4)} vs {ms(b_f1, 4)} | "
              f"{'yes' if np.mean(s_f1) > np.mean(b_f1) else 'NO'} |",
              f"| energy per item teacher / student >= 5x | {ms(ratio, 1)}x | "
              f"{'yes' if np.mean(ratio) >= 5 else 'NO'} |", "",
              "## Material, quality and degradation (test split)", "",
              "| model | material accuracy | material macro-F1 | quality RMSE | degradation accuracy |",
              "| --- | --- | --- | --- | --- |"]
    for role in ("teacher", "student_baseline", "student", "student_int8"):
        get = (lambda r, k, role=role: r["int8_metrics"][k]) if role == "student_int8" else (
            lambda r, k, role=role: r["metrics"][role][k])
        lines.append(f"| {role} | {ms([get(r, 'accuracy') for r in rows], 4)} | "
                     f"{ms([get(r, 'macro_f1') for r in rows], 4)} | {ms([get(r, 'quality/rmse') for r in rows])} | "
                     f"{ms([get(r, 'degradation/accuracy') for r in rows])} |")
    lines += ["", "## Per-class material F1 (test)", "", "| material | teacher | student_baseline | student |",
              "| --- | --- | --- | --- |"]
    for mat in MATERIALS:
        lines.append(f"| {mat} | " + " | ".join(ms([r["per_class_f1"][role][mat] for r in rows])
                                                 for role in ("teacher", "student_baseline", "student")) + " |")
    lines += ["", "## Sorting (test items, routes against the routes the true labels imply)", "",
              "| model | route accuracy | mis-sort cost (total) | cost per item | extra cost vs teacher | "
              "PVC items in the PET stream |", "| --- | --- | --- | --- | --- | --- |"]
    for role in ROLES:
        s = [r["sorting"][role] for r in rows]
        lines.append(f"| {role} | {ms([x['route_accuracy'] for x in s])} | "
                     f"{ms([x['missort_cost_total'] for x in s], 1)} | {ms([x['missort_cost_per_item'] for x in s])} | "
                     f"{ms([x['extra_cost_vs_teacher'] for x in s], 1)} | "
                     f"{ms([x['pvc_in_pet_stream'] for x in s], 1)} |")
    routes = sorted({k for r in rows for s in r["sorting"].values() for k in s["purity"]},
                    key=lambda k: (not k.startswith("re"), k))
    lines += ["", "Purity per route (a seed where a model sends nothing to a route is left out of that mean):", "",
              "| route | " + " | ".join(ROLES) + " |", "| --- |" + " --- |" * len(ROLES)]
    for route in routes:
        cells = []
        for role in ROLES:
            v = [r["sorting"][role]["purity"][route] for r in rows if route in r["sorting"][role]["purity"]]
            cells.append(ms(v) if v else "-")
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    e = rows[0]["energy"]
    lines += ["", f"## Energy per item (illustrative power table; acquisition {e['acquisition_s']} s, processor "
              f"{e['compute_w']} W)", "",
              "| | teacher (RGB + thermal + NIR, PyTorch) | student (RGB, INT8 ONNX) | ratio |",
              "| --- | --- | --- | --- |",
              f"| J / item | {ms([r['energy']['teacher_j'] for r in rows], 4)} | "
              f"{ms([r['energy']['student_j'] for r in rows], 4)} | {ms(ratio, 2)}x |", "",
              "## Edge export", "", "| | value |", "| --- | --- |",
              f"| student params | {ms([r['params']['student'] for r in rows], 0)} |",
              f"| teacher params | {ms([r['params']['teacher'] for r in rows], 0)} |",
              f"| INT8 ONNX size (bytes) | {ms([r['int8_bytes'] for r in rows], 0)} |",
              f"| INT8 latency, batch 1, 1 thread (ms) | {ms([r['int8_latency_ms'] for r in rows])} |",
              f"| FP32 ONNX latency (ms) | {ms([r['onnx_latency_ms'] for r in rows])} |",
              f"| teacher PyTorch latency (ms) | {ms([r['latency_ms']['teacher'] for r in rows])} |", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "runs" / "recycling-bench"))
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        rows.append(one(seed, Path(args.out)))
        print(f"seed {seed}: {rows[-1]['seconds']:.0f} s", flush=True)
    save("recycling", {"synthetic": True, "runs": rows}, markdown(rows))


if __name__ == "__main__":
    main()
