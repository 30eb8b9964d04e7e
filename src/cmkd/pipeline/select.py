"""Sensor selection under a budget: ``cmkd select CONFIG --budget X``.

Which of the deployable modalities should a field unit carry? The teacher is trained once; a distilled student
is trained for candidate subsets of the candidate modalities (every non-empty subset up to 6 candidates; greedy
forward selection beyond: add, at each step, the modality whose student scores best), each scored on the
VALIDATION split (its best epoch) and, for reference, on the test split. A subset's cost is the sum of its
modalities' ``cost`` (data.modalities). The Pareto front holds the subsets that no cheaper-or-equal subset beats;
the best subset under the budget is chosen on validation. Writes ``select.json`` and ``pareto.png``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from cmkd.config import ExperimentConfig
from cmkd.errors import CmkdError
from cmkd.io import dumps

EXHAUSTIVE_MAX = 6


def pareto_front(rows: list[dict], key: str, higher: bool) -> list[dict]:
    """Rows not dominated by another row of lower-or-equal cost and a better-or-equal score (strictly better in
    one), sorted by cost."""
    sign = 1.0 if higher else -1.0
    front = []
    for r in rows:
        dominated = any(o is not r and o["cost"] <= r["cost"] and sign * o[key] >= sign * r[key]
                        and (o["cost"] < r["cost"] or sign * o[key] > sign * r[key]) for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r["cost"], -sign * r[key]))


def select(cfg: ExperimentConfig, arrays: dict[str, np.ndarray], budget: float, candidates: list[str] | None = None,
           out: Path | None = None, quiet: bool = True) -> dict[str, Any]:
    """Train students on subsets of ``candidates`` (default: every declared modality; each costs its ``cost``)
    and return every subset's cost and scores, the Pareto front and the best subset within
    ``budget``."""
    from cmkd.evaluation.metrics import predict, task_metrics
    from cmkd.pipeline.tune import _Objective

    declared = list(cfg.data.modalities)
    candidates = list(candidates or declared)
    bad = [m for m in candidates if m not in declared]
    if bad:
        raise CmkdError(f"--candidates: '{bad[0]}' is not a declared modality ({', '.join(declared)})")
    if not candidates:
        raise CmkdError("--candidates: name at least one modality")
    costs = {m: float(cfg.data.modalities[m].cost) for m in candidates}
    if budget < min(costs.values()):
        raise CmkdError(f"--budget {budget:g} is below the cheapest candidate ({min(costs, key=costs.get)}: "
                        f"{min(costs.values()):g}); no subset fits")
    obj = _Objective(cfg, arrays, quiet, extra_modalities=candidates)
    data, metric, higher = obj.data, obj.metric, obj.sign > 0
    test = data.labelled(data.indices(2))
    rows: list[dict] = []
    done: dict[tuple[str, ...], dict] = {}

    def score(subset: tuple[str, ...]) -> dict:
        if subset in done:
            return done[subset]
        sub_cfg = cfg.model_copy(deep=True)
        sub_cfg.student.modalities = list(subset)
        sub_cfg.distill.term_options["impute"] = {"sources": {k: v for k, v in cfg.distill.impute.items()
                                                              if k in subset}}
        model, val = obj.train_student(sub_cfg)
        row = {"modalities": list(subset), "cost": float(sum(costs[m] for m in subset)), f"val_{metric}": val}
        if len(test):
            row[f"test_{metric}"] = float(task_metrics(data, test, predict(model, data, test))[metric])
        rows.append(row)
        done[subset] = row
        if not quiet:
            print(f"{'+'.join(subset)}: cost {row['cost']:g}, val {metric} {val:.4f}", flush=True)
        return row

    if len(candidates) <= EXHAUSTIVE_MAX:
        search = "exhaustive"
        for k in range(1, len(candidates) + 1):
            for subset in itertools.combinations(candidates, k):
                score(subset)
    else:
        search = "greedy forward selection"
        chosen: tuple[str, ...] = ()
        sign = 1.0 if higher else -1.0
        while len(chosen) < len(candidates):
            trial = [score(tuple(sorted((*chosen, m), key=candidates.index))) for m in candidates if m not in chosen]
            best = max(trial, key=lambda r: sign * r[f"val_{metric}"])
            chosen = tuple(best["modalities"])
    key = f"val_{metric}"
    front = pareto_front(rows, key, higher)
    within = [r for r in rows if r["cost"] <= budget + 1e-12]
    sign = 1.0 if higher else -1.0
    best = max(within, key=lambda r: (sign * r[key], -r["cost"]))
    result = {"metric": metric, "higher_is_better": higher, "selected_on": "validation", "search": search,
              "budget": budget, "candidates": candidates, "costs": costs, "subsets": rows, "pareto_front": front,
              "best_within_budget": best}
    if out is not None:
        from cmkd.io import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "select.json", dumps(result, indent=1))
        plot(result, out / "pareto.png")
    return result


def plot(result: dict, path: Path) -> None:
    """Cost against the validation metric of every subset, the Pareto front, the budget and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cmkd.io import atomic_write

    key = f"val_{result['metric']}"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = [r["cost"] for r in result["subsets"]]
    ys = [r[key] for r in result["subsets"]]
    ax.scatter(xs, ys, color="#999", label="subsets")
    front = result["pareto_front"]
    ax.step([r["cost"] for r in front], [r[key] for r in front], where="post", color="#1f77b4", label="Pareto front")
    for r in front:
        ax.annotate("+".join(r["modalities"]), (r["cost"], r[key]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.axvline(result["budget"], color="#d62728", ls="--", label=f"budget {result['budget']:g}")
    b = result["best_within_budget"]
    ax.scatter([b["cost"]], [b[key]], s=120, facecolors="none", edgecolors="#d62728", label="best within budget")
    ax.set_xlabel("sensor cost (sum of modality costs)")
    ax.set_ylabel(f"validation {result['metric']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
