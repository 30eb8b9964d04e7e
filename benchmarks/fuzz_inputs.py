"""Fuzzing ``cmkd run``'s inputs at length: thousands of small random npz + YAML cases (the generator and the
property of ``tests/fuzz_inputs.py``: exit 0, or exit 2 with exactly one ``error:`` line; no traceback, no hang;
``--out`` untouched on failure). Writes benchmarks/fuzz_inputs.json and .md.

    python benchmarks/fuzz_inputs.py [--cases 3000] [--seed 100000]
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

from common import save

from cmkd.fuzz import TIME_LIMIT_S, check_case


def _kind(line: str | None) -> str:
    """A refusal's message without paths and numbers, to count refusals by kind."""
    if not line:
        return ""
    msg = re.sub(r"/\S+", "PATH", line.removeprefix("error: "))
    return re.sub(r"\d+", "N", msg)[:70]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=100_000, help="first case seed (the test suite uses 0..239)")
    args = ap.parse_args()
    records = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seed, args.seed + args.cases):
            records.append(check_case(seed, Path(tmp)))
    elapsed = time.monotonic() - t0
    problems = [r for r in records if r["problem"]]
    codes = collections.Counter(r["code"] for r in records)
    slowest = max(r["seconds"] for r in records)
    kinds = collections.Counter(_kind(r["error"]) for r in records if r["code"] == 2).most_common(12)
    states = collections.Counter(f"{r['state']}: exit {r['code']}" for r in records)
    result = {"cases": len(records), "first_seed": args.seed, "seconds": round(elapsed, 1),
              "exit_codes": {str(k): v for k, v in sorted(codes.items())}, "failures": len(problems),
              "slowest_case_s": round(slowest, 3), "time_limit_s": TIME_LIMIT_S,
              "problems": [{"seed": r["seed"], "problem": r["problem"][:500]} for r in problems[:20]],
              "top_refusals": [{"message": k, "count": v} for k, v in kinds],
              "out_states": dict(sorted(states.items()))}
    md = "\n".join([
        "# Fuzzing `cmkd run`'s inputs", "",
        f"{len(records)} random npz + YAML cases (seeds {args.seed}..{args.seed + args.cases - 1}) in "
        f"{elapsed:.0f} s, in-process, the pipeline cut after its data stage, then one output file and the real "
        "swap (`cmkd.fuzz`).", "",
        "| outcome | cases |", "|---|---|",
        f"| exit 0 (accepted) | {codes.get(0, 0)} |", f"| exit 2, one `error:` line, --out untouched | "
        f"{codes.get(2, 0) - sum(1 for r in problems if r['code'] == 2)} |",
        f"| property violated (traceback, hang, not one line, --out changed) | {len(problems)} |", "",
        f"Slowest case: {slowest:.2f} s (limit {TIME_LIMIT_S:.0f} s).", "",
        "State of `--out` before the case, and the outcome (`foreign`: a folder of the user's own, never written "
        "into; `results`, and `older` (a run folder from before the marker), replaced only with `--overwrite`; a "
        "tenth of the cases make the swap's `os.rename` fail):",
        "", *[f"- {k}: {v}" for k, v in sorted(states.items())], "",
        "Most frequent refusals (paths and numbers masked):", "",
        *[f"- {v} x `{k}`" for k, v in kinds]])
    save("fuzz_inputs", result, md)


if __name__ == "__main__":
    main()
