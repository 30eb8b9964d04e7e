"""What every benchmark script shares: the repository root, mean ± std text, and writing its results as
``benchmarks/NAME.json`` + ``benchmarks/NAME.md`` (atomically). Scripts run as ``python benchmarks/x.py``, so
this folder is on ``sys.path`` and ``from common import ...`` is a plain import."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cmkd.io import atomic_write_text, dumps

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
# the recommendation's tie rule of today's runs, in standard errors: 0 = the strictly best on validation (the only rule
# since references.tie_se was removed; records made under tie_se 1 stay readable through rule_holds)
TIE_SE = 0.0


def rule_holds(record: dict, key: str = "recommended", best_key: str = "best_on_val") -> bool:
    """Whether a recorded run's recommendation (``record[key]``, a model name) is what today's rule gives.

    True for a run recorded under today's ``tie_se`` (a record without one was recorded under the strict rule,
    ``tie_se`` 0); under the strict rule, also for a run of another rule whose strictly best candidate
    (``record[best_key]``) is what it recommended; and under any rule for a strict run that recommended a
    reference: the tie rule only moves a choice toward a cheaper model, and among equally cheap (reference)
    candidates to the better validation figure, so a strictly best reference stays recommended
    (tests/test_references.py). Any other run has to run again.
    """
    tie = record.get("tie_se", 0.0)
    rec = record.get(key)
    if tie == TIE_SE:
        return True
    if TIE_SE == 0:
        return rec is not None and record.get(best_key) == rec
    return tie == 0 and isinstance(rec, str) and not rec.startswith("student")


def ms(values: list[float], digits: int = 3) -> str:
    """mean ± sample std as text."""
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


def save(name: str, data: object, md: str | None = None) -> None:
    """Write ``benchmarks/NAME.json`` (``data``) and, when given, ``benchmarks/NAME.md`` (``md``, also printed)."""
    atomic_write_text(BENCH / f"{name}.json", dumps(data, indent=1))
    if md is not None:
        save_md(name, md)


def save_md(name: str, md: str) -> None:
    """Write ``benchmarks/NAME.md`` and print it."""
    atomic_write_text(BENCH / f"{name}.md", md.rstrip("\n") + "\n")
    print(md)


def read_runs(path: Path) -> list[dict]:
    """The records of a sweep's ``.jsonl`` file (one run per line), [] when it does not exist yet."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_run(path: Path, record: dict) -> None:
    """Append one run's record to a sweep's ``.jsonl`` file as it finishes, so an interrupted sweep resumes."""
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def sweep(path: Path, cases: list[str], fractions: list, seeds: list[int], one: Callable[..., dict],
          describe: Callable[[dict], str]) -> None:
    """Run ``one(case, seed, fraction)`` for every case, label fraction and seed not yet recorded in ``path``
    (records keyed by ``recipe``, ``seed``, ``label_fraction``), appending each record as it finishes; a case
    whose data folder is absent (a CmkdError) is skipped with its reason. ``describe(record)`` is the progress
    line's end."""
    from cmkd.errors import CmkdError

    done = {(r["recipe"], r["seed"], r.get("label_fraction")) for r in read_runs(path)}
    skipped: set[str] = set()
    for case in cases:
        for fraction in fractions:
            for seed in seeds:
                if (case, seed, fraction) in done or case in skipped:
                    continue
                try:
                    r = one(case, seed, fraction)
                except CmkdError as e:  # a real-data recipe without its data folder
                    print(f"{case}: skipped ({e})", flush=True)
                    skipped.add(case)
                    continue
                append_run(path, r)
                print(f"{case} label_fraction {fraction} seed {seed}: {describe(r)}", flush=True)


GENERIC = ("random_forest", "extra_trees", "hist_gradient_boosting")  # the run's generic references' names


def gap(value: float, ref: float, metric: str) -> float:
    """Points of accuracy (x100), or percent of the reference's RMSE; + = ``value`` is better."""
    return 100 * (value - ref) if metric != "rmse" else 100 * (ref - value) / ref


def by_case(runs: list[dict]) -> list[tuple[str, list[dict], str, list[float]]]:
    """Records with ``recipe``, ``label_fraction``, ``seed``, ``metric`` and ``test`` figures, grouped per case and
    label fraction: (case label, its runs by seed, metric, each run's best generic reference on test)."""
    out = []
    for key in dict.fromkeys((r["recipe"], r.get("label_fraction")) for r in runs):
        rs = sorted((r for r in runs if (r["recipe"], r.get("label_fraction")) == key), key=lambda r: r["seed"])
        case = key[0] + ("" if key[1] is None else f" ({100 * key[1]:g}% labels)")
        metric = rs[0]["metric"]
        pick = min if metric == "rmse" else max
        best = [pick(v for k, v in r["test"].items() if k.startswith(GENERIC) and v is not None) for r in rs]
        out.append((case, rs, metric, best))
    return out
