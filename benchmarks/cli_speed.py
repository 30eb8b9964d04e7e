"""Time `cmkd --help`, `cmkd --version` and `cmkd list` (target: under 1 s; `import cmkd` loads no torch), and how
soon `cmkd run` reports a mistake in its input (a YAML whose data file is missing: torch loads, scikit-learn not).

Run: ``python benchmarks/cli_speed.py [--runs 5]``; writes ``benchmarks/cli_speed.json`` and prints a table.
Each command runs as a fresh process (``python -m cmkd ...``); the figure is the median wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {"cmkd --help": ["--help"], "cmkd --version": ["--version"], "cmkd list": ["list"],
            "cmkd run (data file missing)": ["run", "x.yaml", "--out", "out"]}
BAD_YAML = ("name: x\ndata:\n  path: nothere.npz\n  modalities: {a: {kind: vector}}\n"
            "  targets: {y: {kind: regression}}\nteacher: {modalities: [a]}\nstudent: {modalities: [a]}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    res = {}
    tmp = Path(tempfile.mkdtemp(prefix="cli_speed"))
    (tmp / "x.yaml").write_text(BAD_YAML)
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "cmkd", *argv], capture_output=True, text=True, cwd=tmp)
            times.append(time.perf_counter() - t0)
            if r.returncode != (2 if argv[0] == "run" else 0):
                raise SystemExit(f"{name}: exit code {r.returncode}: {r.stderr.strip()}")
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
