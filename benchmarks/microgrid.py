"""The microgrid recipe (SYNTHETIC farm microgrid) at full settings over several seeds: closed-loop grid import of
the rule-based controller, the pruned INT8 student (and with each stream missing) and the perfect-foresight oracle
on 72 h of held-out weather per seed; INT8 size and the latency of one control step.

Usage:
    python benchmarks/microgrid.py [--seeds 0 1 2] [--out runs/microgrid-bench]
    python benchmarks/microgrid.py --render     # rewrite microgrid.md from microgrid.json, no training

Writes ``benchmarks/microgrid.json`` (every figure per seed) and ``benchmarks/microgrid.md`` (mean ± std).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import ms as _ms
from common import save, save_md

import cmkd

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = ("student", "student_no_sky", "student_no_audio", "student_no_history", "student_torch_unpruned")


def ms(values: list[float], digits: int = 1) -> str:
    """mean ± sample std as text, 1 digits by default."""
    return _ms(values, digits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "runs" / "microgrid-bench"))
    ap.add_argument("--render", action="store_true", help="only rewrite microgrid.md from microgrid.json")
    args = ap.parse_args()
    if args.render:
        render(json.loads((ROOT / "benchmarks" / "microgrid.json").read_text())["runs"])
        return
    rows = []
    for seed in args.seeds:
        t0 = time.time()
        m = cmkd.run("microgrid", Path(args.out) / f"seed{seed}", overrides=[f"seed={seed}"], quiet=True)
        mg = m["microgrid"]
        rows.append({"seed": seed, "seconds": time.time() - t0, "controllers": mg["controllers"],
                     "acceptance": mg["acceptance"], "edge": mg["edge"],
                     "student_rmse_actions": m["models"]["student"]["metrics"]["rmse"],
                     "baseline_rmse_actions": m["models"]["student_baseline"]["metrics"]["rmse"],
                     "int8_rmse_actions": m["export"]["int8_metrics"]["rmse"],
                     "n_train": m["data"]["n_train"], "n_train_aggregated": m["data"].get("n_train_aggregated", [])})
        print(f"seed {seed}: {rows[-1]['seconds']:.0f} s, student reduction "
              f"{mg['acceptance']['student']['reduction_vs_rule_pct']:.1f}%", flush=True)
    save("microgrid", {"synthetic": True, "runs": rows})
    render(rows)


def render(rows: list[dict]) -> None:
    """Write benchmarks/microgrid.md (mean ± std over the seeds of ``rows``) and print it."""
    seeds = [r["seed"] for r in rows]

    def col(f) -> list[float]:  # noqa: ANN001
        return [f(r) for r in rows]

    lines = ["# microgrid benchmark (SYNTHETIC farm microgrid)", "",
             f"Seeds {' '.join(map(str, seeds))}; each seed trains its own models and is evaluated in closed "
             "loop on its own 72 h of held-out weather (never used in training). Mean ± std over seeds. The student "
             "runs as the 40%-pruned INT8 ONNX model, one batch-1 inference per 5-minute step, with the recipe's "
             "defaults: retrained after one DAgger round on training weather (`options.dagger_rounds`), behind the "
             "inverter's zero-export / no-grid-charging limits (`options.inverter_limits`), with any PV surplus "
             "stored in the battery rather than curtailed (`options.store_surplus`) and with the day's crop "
             "and flow requirements as hard stops (`options.stop_when_met`); the rule-based controller and the "
             "oracle are unchanged. Regenerate with `python benchmarks/microgrid.py`.", "",
             "Grid import is SOC-adjusted (the battery energy a run used up over the 72 h counts as imported, "
             "through the efficiency) so that controllers ending at different SOC compare fairly; raw import also "
             "shown.", "",
             "Development disclosure: the plant sizes and the rule-based controller were set on development weather "
             "(seeds outside every run's windows); seed 0's evaluation weather was used for two diagnostics while "
             "developing (the INT8 reduced-range fix and the number of training windows); seeds 1 and 2's "
             "evaluation weather was first seen in the first version of this benchmark. DAgger, the inverter limits "
             "and the requirement stops were developed on runs with seeds 3 and 4 (their own training and evaluation "
             "weather); nothing was tuned on seeds 0-2's evaluation weather (seed 0 was rerun once unchanged, to "
             "time it and check it reproduces). The student's width (64, was 32) was chosen on development seeds "
             "3-6: reduction vs rule-based 38.6 / 30.6 / 29.4 / 11.9% against 38.9 / 23.8 / 29.6 / 12.0% with width "
             "32 (the gain is one seed's); these rows are the first run of seeds 0-2 with it. Tried on development "
             "seeds 3 / 4 and not adopted (reduction vs rule-based; the defaults give 38.6 / 30.6): 30 epochs "
             "32.3 / 23.4, two DAgger rounds 36.0 / 24.9, 16 DAgger windows 27.5 (seed 3), 32 training windows "
             "31.6 / 17.1; the mean action of those students, post hoc, 33.6 / 25.7. One student's closed-loop figure "
             "moves by several points with any change of its training, and the students' closed loops on the "
             "validation weather rank them differently: none of the variants is better beyond that noise.", "",
             "Surplus storage (`options.store_surplus`) is new since the previous version of this table, which had "
             "the student at 22.3 ± 6.1% (seeds 0-2, the same code without it). There the student's extra "
             "curtailment against the oracle's matched nearly all of its extra grid import (development seeds 3 / "
             "4: 104 vs 60 and 72 vs 45 kWh curtailed; 228 vs 183 and 308 vs 280 kWh imported), partly PV that its "
             "battery could have stored (storing it cut the curtailment from 72.0 to 68.4 kWh on seed 4 and from "
             "116.6 to 102.2 on seed 5) and partly PV that met a full battery (seed 3: no change); the rule-based "
             "controller already charges with any surplus. Evidence, on "
             "development seeds only (reduction vs rule-based, %): the same trained students in closed loop "
             "without / with it (paired, post hoc), seeds 3-8: 38.6 / 38.5, 30.6 / 31.6, 29.4 / 34.9, 11.9 / 12.0, "
             "19.0 / 19.9, 36.5 / 36.2; retrained with it (it also shapes the DAgger rollouts) against without, on "
             "fresh seeds 7 / 8: 20.3 / 37.1 vs 19.0 / 36.5, and on seeds 3 / 4, on which the other defaults had "
             "been chosen (so they favour the old defaults): 37.6 / 22.0 vs 38.6 / 30.6. The closed loop is not "
             "monotone in it (a battery filled earlier changes the student's later actions: the students retrained "
             "with it score 37.9 / 24.8 on seeds 3 / 4 with it switched off). It was adopted for the physics (a "
             "surplus not stored is thrown away) and the paired evidence; the rows below are the first run of "
             "seeds 0-2 with it.", "",
             "| controller | grid import kWh (SOC-adjusted) | raw grid import kWh | PV curtailed kWh | cost $ | "
             "CO2 kg | crop proxy vs requirement | final SOC |", "|---|---|---|---|---|---|---|---|"]
    for c in ("rule_based", *STUDENTS, "oracle"):
        def ctl(key: str, c: str = c) -> list[float]:
            return [r["controllers"][c][key] for r in rows]

        lines.append(f"| {c} | {ms(ctl('grid_import_adj_kwh'))} | {ms(ctl('grid_import_kwh'))} | "
                     f"{ms(ctl('curtailed_kwh'))} | {ms(ctl('cost_usd'))} | {ms(ctl('co2_kg'))} | "
                     f"{ms(ctl('crop_vs_requirement'), 3)} | {ms(ctl('final_soc'), 2)} |")
    red = col(lambda r: r["acceptance"]["student"]["reduction_vs_rule_pct"])
    gap = col(lambda r: r["acceptance"]["student"]["gap_to_oracle_pct"])
    size = col(lambda r: r["edge"]["int8_bytes"])
    lat = col(lambda r: r["edge"]["int8_latency_ms"])
    step = col(lambda r: r["edge"]["control_step_ms"])
    se = float(np.std(red, ddof=1) / np.sqrt(len(red))) if len(red) > 1 else float("nan")
    lines += ["", "| acceptance line | target | measured | met |", "|---|---|---|---|",
              f"| student grid-import reduction vs rule-based | >= 23% | {ms(red)}% | "
              f"{'yes' if np.mean(red) >= 23 else 'no'} |",
              f"| student gap to oracle grid import | <= 10% | {ms(gap)}% | {'yes' if np.mean(gap) <= 10 else 'no'} |"]
    for s in ("sky", "audio", "history"):
        r_s = [r["acceptance"][f"student_no_{s}"]["reduction_vs_rule_pct"] for r in rows]
        lines.append(f"| student without {s}: reduction vs rule-based | > 0% | {ms(r_s)}% | "
                     f"{'yes' if np.mean(r_s) > 0 else 'no'} ({sum(v > 0 for v in r_s)}/{len(r_s)} seeds) |")
    lines += [f"| INT8 model size | <= 4.2 MB | {ms([b / 1e6 for b in size], 3)} MB | "
              f"{'yes' if np.mean(size) <= 4.2e6 else 'no'} |",
              f"| one control step (INT8 inference, batch 1, 1 thread, median) | <= 5 ms | {ms(lat, 3)} ms | "
              f"{'yes' if np.mean(lat) <= 5 else 'no'} |",
              f"| one control step incl. building the inputs (mean over the 72 h loop) | - | {ms(step, 3)} ms | - |",
              "", f"Student reduction vs rule-based per seed: {' / '.join(f'{v:.1f}' for v in red)}% (mean "
              f"{np.mean(red):.1f}%, {np.mean(red) - 23:+.1f} points from the 23% line; the standard error of that "
              f"mean over {len(red)} seeds is {se:.1f} points, so the margin is "
              f"{'within' if abs(np.mean(red) - 23) < se else 'beyond'} the seed-to-seed noise). "
              "Oracle reduction vs rule-based: "
              f"{ms(col(lambda r: r['acceptance']['oracle_reduction_vs_rule_pct']))}%. Sparsity after pruning: "
              f"{ms(col(lambda r: r['edge']['sparsity']), 3)}. Action RMSE on the test windows (oracle's actions): "
              f"student {ms(col(lambda r: r['student_rmse_actions']), 3)}, student without distillation "
              f"{ms(col(lambda r: r['baseline_rmse_actions']), 3)}, INT8 student "
              f"{ms(col(lambda r: r['int8_rmse_actions']), 3)}. Training samples: "
              f"{ms(col(lambda r: r['n_train']), 0)}, of which DAgger-labelled "
              f"{ms(col(lambda r: sum(r['n_train_aggregated'])), 0)}. Wall time per seed (one core, shared): "
              f"{ms(col(lambda r: r['seconds']), 0)} s."]
    save_md("microgrid", "\n".join(lines))


if __name__ == "__main__":
    main()
