"""Fuzzing ``cmkd run``'s inputs (small random npz + YAML files, most of them broken): exit 0, or exit 2 with exactly
one ``error:`` line; never a traceback or a hang; ``--out`` untouched by a failed run (see ``fuzz_inputs``).
``benchmarks/fuzz_inputs.py`` runs the same property over thousands of cases."""

from __future__ import annotations

import time
from pathlib import Path

from cmkd.fuzz import check_case

CASES = 240
BUDGET_S = 60.0


def test_fuzzed_inputs_fail_cleanly(tmp_path: Path) -> None:
    t0 = time.monotonic()
    records = [check_case(seed, tmp_path) for seed in range(CASES)]
    elapsed = time.monotonic() - t0
    problems = [f"seed {r['seed']}: {r['problem']}" for r in records if r["problem"]]
    assert not problems, "\n".join(problems[:5])
    codes = {r["code"] for r in records}
    assert codes == {0, 2}, codes  # some cases pass validation, most are refused
    assert elapsed < BUDGET_S, f"{CASES} cases took {elapsed:.1f} s"
