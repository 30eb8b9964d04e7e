"""Distributed data-parallel check: a tiny SYNTHETIC experiment run with 2 CPU processes under torchrun (gloo),
``--runs`` times, against the single-process run: exit codes, wall time and the largest accuracy difference.

Usage:
    python benchmarks/ddp.py [--runs 10] [--out runs/ddp-bench]

Writes ``benchmarks/ddp.json`` and ``benchmarks/ddp.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import ROOT, save

import cmkd
from cmkd.data.cases import DDP_TOLERANCE as TOLERANCE
from cmkd.data.cases import ddp_case
from cmkd.training.distributed import torchrun


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "runs" / "ddp-bench"))
    args = ap.parse_args()
    out = Path(args.out)
    y = ddp_case(out / "case")
    t0 = time.time()
    one = cmkd.run(str(y), out / "single", quiet=True)
    single_s = time.time() - t0
    rows = []
    for i in range(args.runs):
        t0 = time.time()
        r = torchrun(["run", str(y), "--out", str(out / f"ddp-{i}"), "--quiet"])
        row = {"run": i, "returncode": r.returncode, "wall_s": time.time() - t0}
        if r.returncode == 0:
            two = json.loads((out / f"ddp-{i}" / "metrics.json").read_text())
            row["accuracy_diff"] = {role: abs(one["models"][role]["metrics"]["accuracy"]
                                              - two["models"][role]["metrics"]["accuracy"])
                                    for role in ("teacher", "student_baseline", "student")}
        else:
            row["stderr_tail"] = r.stderr[-500:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = sum(r["returncode"] == 0 for r in rows)
    worst = max((max(r["accuracy_diff"].values()) for r in rows if "accuracy_diff" in r), default=float("nan"))
    res = {"runs": rows, "single_process_s": single_s, "clean_exits": ok, "max_accuracy_diff": worst,
           "tolerance": TOLERANCE}
    md = (f"2-process DDP (gloo, CPU) on a tiny SYNTHETIC experiment, {args.runs} runs: {ok}/{args.runs} clean exits "
          f"(exit code 0); largest accuracy difference from the single-process run {worst:.3f} (tolerance "
          f"{TOLERANCE}); mean wall time {sum(r['wall_s'] for r in rows) / len(rows):.1f} s vs {single_s:.1f} s "
          "single-process (2 shared cores, tiny model: process start-up dominates).")
    save("ddp", res, md)


if __name__ == "__main__":
    main()
