"""Fixed vs learned (homoscedastic-uncertainty) loss weights for the distilled student, over several seeds.

Usage:
    python benchmarks/learned_weights.py [--recipes minerals coastal] [--seeds 0 1 2] [--out runs/learned-weights]

Writes ``benchmarks/learned_weights_<recipe>.json`` and prints a markdown table (the student's primary test
metric with each weighting, and the baseline student for scale). Export and the coastal sparsity sweep are off:
only training differs between the two arms.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ms as _ms

import cmkd

ROOT = Path(__file__).resolve().parents[1]


def ms(values: list[float], digits: int = 4) -> str:
    """mean ± sample std as text, 4 digits by default."""
    return _ms(values, digits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["minerals", "coastal"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "runs" / "learned-weights"))
    args = ap.parse_args()
    for recipe in args.recipes:
        rows = []
        for seed in args.seeds:
            row: dict = {"seed": seed}
            for arm, flag in (("fixed", "false"), ("learned", "true")):
                over = [f"seed={seed}", "export.enabled=false", f"distill.learned_weights={flag}"]
                if recipe == "coastal":
                    over.append("options.sweep=false")
                m = cmkd.run(recipe, Path(args.out) / f"{recipe}-{arm}-{seed}", overrides=over, quiet=True)
                pm = m["primary_metric"]
                row[arm] = m["models"]["student"]["metrics"][pm]
                row["baseline"] = m["models"]["student_baseline"]["metrics"][pm]
                row["metric"] = pm
            rows.append(row)
            print(json.dumps({"recipe": recipe, **row}), flush=True)
        (ROOT / "benchmarks" / f"learned_weights_{recipe}.json").write_text(json.dumps(rows, indent=1))
        pm = rows[0]["metric"]
        print(f"| {recipe} | {pm} | student_baseline {ms([r['baseline'] for r in rows])} | fixed weights "
              f"{ms([r['fixed'] for r in rows])} | learned weights {ms([r['learned'] for r in rows])} |")


if __name__ == "__main__":
    main()
