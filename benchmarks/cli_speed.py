"""Time `cmkd --help`, `cmkd --version` and `cmkd list` (target: under 1 s; `import cmkd` loads no torch).

Run: ``python benchmarks/cli_speed.py [--runs 5]``; writes ``benchmarks/cli_speed.json`` and prints a table.
Each command runs as a fresh process (``python -m cmkd ...``); the figure is the median wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {"cmkd --help": ["--help"], "cmkd --version": ["--version"], "cmkd list": ["list"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    res = {}
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cmkd", *argv], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        res[name] = {"median_s": statistics.median(times), "min_s": min(times), "runs": args.runs}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    res["python startup (reference)"] = {"median_s": time.perf_counter() - t0, "min_s": None, "runs": 1}
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(res, indent=1))
    for name, r in res.items():
        print(f"{name:28s} median {r['median_s']:.3f} s" + (f" (best {r['min_s']:.3f} s)" if r["min_s"] else ""))
    print(f"target < 1 s for cmkd --help: {'met' if res['cmkd --help']['median_s'] < 1 else 'NOT met'}; wrote {out}")


if __name__ == "__main__":
    main()
