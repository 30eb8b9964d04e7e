"""Fuzzing ``cmkd run``'s inputs (small random npz + YAML files, most of them broken, and states of ``--out``): exit 0,
or exit 2 with exactly one ``error:`` line; never a traceback or a hang; ``--out`` untouched by a failed run, never
written into when it is not cmkd's, and after a run the new run whole (see :mod:`cmkd.fuzz`).
``benchmarks/fuzz_inputs.py`` runs the same property over thousands of cases."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cmkd.fuzz import check_case, make_source_case, run_case

CASES = 240
BUDGET_S = 60.0


@pytest.mark.fake_metrics  # an "earlier run" in --out is a stand-in metrics.json of a few bytes (cmkd.fuzz)
def test_a_few_fuzzed_inputs_fail_cleanly(tmp_path: Path) -> None:
    """The fast tier's share of the property: the first dozen cases."""
    records = [check_case(seed, tmp_path) for seed in range(12)]
    assert not [r["problem"] for r in records if r["problem"]]


@pytest.mark.slow  # 240 fuzzed cases, a budget of 60 s
@pytest.mark.fake_metrics
def test_fuzzed_inputs_fail_cleanly(tmp_path: Path) -> None:
    t0 = time.monotonic()
    records = [check_case(seed, tmp_path) for seed in range(CASES)]
    elapsed = time.monotonic() - t0
    problems = [f"seed {r['seed']}: {r['problem']}" for r in records if r["problem"]]
    assert not problems, "\n".join(problems[:5])
    codes = {r["code"] for r in records}
    assert codes == {0, 2}, codes  # some cases pass validation, most are refused
    # every state of --out is tried, and runs get through into the ones cmkd may write into
    states = {(r["state"], r["code"]) for r in records}
    assert {s for s, _ in states} == {"none", "empty", "results", "older", "interrupted", "foreign", "file"}, states
    assert {("none", 0), ("results", 0), ("older", 0), ("foreign", 2), ("results", 2)} <= states, states
    assert elapsed < BUDGET_S, f"{CASES} cases took {elapsed:.1f} s"


@pytest.mark.fake_metrics
def test_fuzzed_data_sources_fail_cleanly(tmp_path: Path) -> None:
    """Every reader of data.sources (CSV, Parquet, a stream, ENVI, GeoTIFF, .mat, NetCDF), valid and broken each
    way of :mod:`cmkd.data.source_cases`: a valid case runs, a broken one is one error line (exit 2), a damaged
    file either."""
    from cmkd.data.source_cases import MAY_RUN, READERS, all_cases

    t0 = time.monotonic()
    records = [check_case(seed, tmp_path, case) for seed, case in enumerate(all_cases())]
    elapsed = time.monotonic() - t0
    problems = [f"{r['source']}: {r['problem']}" for r in records if r["problem"]]
    assert not problems, "\n".join(problems[:5])
    broken = [r for r in records if r["source"][1] not in MAY_RUN]
    assert all(r["code"] == 2 for r in broken), [r["source"] for r in broken if r["code"] != 2]
    for seed, reader in enumerate(READERS):  # each reader's valid case runs, into a fresh --out
        code, err, _ = run_case(make_source_case(np.random.default_rng(seed), tmp_path / f"valid-{reader}",
                                                 (reader, "none")))
        assert code == 0, (reader, err)
    assert elapsed < BUDGET_S, f"{len(records)} cases took {elapsed:.1f} s"
