"""Sensor selection benchmark: ``cmkd select`` on the minerals recipe (SYNTHETIC) over its four modalities (RGB
camera 1.5 W, multispectral 4 W, LiDAR 8 W, hyperspectral 15 W) with a 6 W budget, one seed (each of the 15
subsets trains a distilled student).

Usage:
    python benchmarks/sensor_select.py [--budget 6] [--seed 0] [--out runs/select-bench]

Writes ``benchmarks/sensor_select.json``, ``benchmarks/sensor_select.md`` and ``benchmarks/sensor_select.png``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import ROOT, save

from cmkd.pipeline.resolve import resolve
from cmkd.pipeline.select import select


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "select-bench"))
    args = ap.parse_args()
    cfg, arrays, _, _ = resolve("minerals", [f"seed={args.seed}", "distill.chain=[]", "export.enabled=false"])
    t0 = time.time()
    res = select(cfg, arrays, args.budget, None, Path(args.out), quiet=True)
    res["wall_s"] = time.time() - t0
    shutil.copy(Path(args.out) / "pareto.png", ROOT / "benchmarks" / "sensor_select.png")
    m = res["metric"]
    lines = [f"`cmkd select minerals --budget {args.budget:g}` (SYNTHETIC, seed {args.seed}, {len(res['subsets'])} "
             f"subsets, {res['search']}, {res['wall_s'] / 60:.0f} min). Pareto front of sensor power (W) against "
             f"validation {m} (test {m} for reference); figure: `benchmarks/sensor_select.png`.", "",
             f"| modalities | power W | validation {m} | test {m} | within budget |", "|---|---|---|---|---|"]
    for r in res["pareto_front"]:
        lines.append(f"| {'+'.join(r['modalities'])} | {r['cost']:g} | {r['val_' + m]:.3f} | "
                     f"{r['test_' + m]:.3f} | {'yes' if r['cost'] <= args.budget else 'no'} |")
    b = res["best_within_budget"]
    lines += ["", f"Best within {args.budget:g} W: {'+'.join(b['modalities'])} ({b['cost']:g} W, validation "
              f"{m} {b['val_' + m]:.3f}, test {b['test_' + m]:.3f})."]
    save("sensor_select", res, "\n".join(lines))


if __name__ == "__main__":
    main()
