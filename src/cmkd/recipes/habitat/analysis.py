"""The habitat recipe's run analysis: compliance per jurisdiction, ensemble vs student speed, and a re-check of
every rule-engine recommendation on the test designs (SYNTHETIC data, ILLUSTRATIVE rules)."""

from __future__ import annotations

import json

import numpy as np

from .rules import evaluate, fix, load_rules, recommend
from .scene import region_rules

JURISDICTIONS = ("national", "unclos", "isa", "environment")


def _acc(metrics: dict, j: str) -> float | None:
    key = "accuracy" if j == "national" else f"compliance_{j}/accuracy"
    return metrics.get(key)


def compliance_table(models: dict) -> dict[str, dict]:
    """role -> {jurisdiction: accuracy, "mean": mean over the jurisdictions it predicts}."""
    out = {}
    for role, m in models.items():
        accs = {j: _acc(m["metrics"], j) for j in JURISDICTIONS}
        accs = {j: a for j, a in accs.items() if a is not None}
        if accs:
            out[role] = {**accs, "mean": float(np.mean(list(accs.values())))}
    return out


def check_recommendations(records: list[dict], rules: object) -> dict[str, int]:
    """Apply every single recommendation of each design's first check and re-check it; then apply the whole
    iterated set. Counts cleared violations and fully repaired designs."""
    n_rec = n_cleared = n_designs = n_repaired = 0
    for r in records:
        site, design = r["site"], r["design"]
        res = evaluate(rules, site, design)
        if not res["violations"]:
            continue
        n_designs += 1
        for v in res["violations"]:
            change = fix(v, design, site, rules)
            after = evaluate(rules, site, {**design, change["parameter"]: change["to"]})
            n_rec += 1
            n_cleared += all(w["rule"] != v["rule"] for w in after["violations"])
        _, fixed, final = recommend(rules, site, design)
        n_repaired += not final["violations"]
    return {"recommendations_checked": n_rec, "recommendations_clearing_their_violation": n_cleared,
            "designs_with_violations": n_designs, "designs_fully_repaired": n_repaired}


def analyse(ctx: dict) -> dict:
    """Metrics section ``habitat`` and the report's habitat section."""
    from ...report import figure_html, table_html
    from .recipe import _generate

    cfg, metrics, out = ctx["cfg"], ctx["metrics"], ctx["out"]
    o = cfg.options
    n, region, rules_path = int(o.get("n", 5000)), int(o.get("region", 0)), o.get("rules")
    _, records = _generate(n, cfg.seed, region, rules_path)
    rules = region_rules(load_rules(rules_path), region)
    test = [records[i] for i in ctx["test"]]
    table = compliance_table(metrics["models"])
    lat = {r: m["latency_ms"] for r, m in metrics["models"].items()}
    ex = metrics.get("export") or {}
    speed = {"teacher_ensemble_ms": lat["teacher"], "student_ms": lat["student"],
             "speedup_torch": lat["teacher"] / lat["student"]}
    if ex.get("onnx_latency_ms"):
        speed.update({"student_onnx_ms": ex["onnx_latency_ms"], "speedup_onnx": lat["teacher"] / ex["onnx_latency_ms"]})
    if ex.get("int8_latency_ms"):
        speed.update({"student_int8_ms": ex["int8_latency_ms"], "speedup_int8": lat["teacher"] / ex["int8_latency_ms"]})
    checks = check_recommendations(test, rules)
    conflicts = sum(len(r["evaluation"]["conflicts"]) for r in test)
    section = {"compliance_accuracy": table, "speed": speed, "recommendation_check": checks,
               "test_conflicts_resolved": conflicts,
               "compliance_gap_student_vs_ensemble": table["student"]["mean"] - table["teacher"]["mean"],
               "disclaimer": "SYNTHETIC sites; ILLUSTRATIVE rules, not legal advice"}
    from ...pipeline import atomic_write_text

    atomic_write_text(out / "habitat.json", json.dumps(section, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    roles = list(table)
    x = np.arange(len(JURISDICTIONS))
    for k, role in enumerate(roles):
        axes[0].bar(x + k * 0.8 / len(roles), [table[role].get(j, np.nan) for j in JURISDICTIONS],
                    width=0.8 / len(roles), label=role)
    axes[0].set_xticks(x + 0.4 - 0.4 / len(roles), JURISDICTIONS)
    axes[0].set_ylabel("compliance accuracy (test)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    names = ["teacher", *[r for r in lat if r.startswith("teacher_")], "student"]
    vals = [lat[r] for r in names]
    if "student_int8_ms" in speed:
        names.append("student INT8")
        vals.append(speed["student_int8_ms"])
    axes[1].barh(names, vals, color=["#555"] + ["#999"] * (len(names) - 2) + ["#1f77b4"])
    axes[1].set_xlabel("latency per design, ms (batch 1, one thread)")
    fig.suptitle("habitat (SYNTHETIC data, ILLUSTRATIVE rules)")
    fig.tight_layout()
    rows = [[role, *[f"{table[role].get(j, float('nan')):.3f}" for j in JURISDICTIONS], f"{table[role]['mean']:.3f}",
             f"{lat[role]:.2f}"] for role in roles]
    html = ["<h2>Habitat design: compliance and speed (SYNTHETIC, illustrative rules, not legal advice)</h2>",
            table_html(["model", *JURISDICTIONS, "mean", "latency ms"], rows),
            f"<p>Student {speed['speedup_torch']:.1f}x faster than the teacher ensemble (PyTorch, batch 1)"
            + (f", {speed['speedup_int8']:.1f}x as INT8 ONNX" if "speedup_int8" in speed else "")
            + f"; mean compliance accuracy {table['student']['mean']:.3f} vs the ensemble's "
              f"{table['teacher']['mean']:.3f}.</p>",
            f"<p>Rule engine on the {len(test)} test designs: {checks['designs_with_violations']} with violations; "
            f"{checks['recommendations_clearing_their_violation']}/{checks['recommendations_checked']} single "
            f"recommendations clear their violation when applied and re-checked; "
            f"{checks['designs_fully_repaired']}/{checks['designs_with_violations']} designs fully repaired by the "
            f"iterated recommendations; {conflicts} rule conflicts resolved by priority.</p>",
            figure_html(fig, "compliance accuracy and latency")]
    plt.close(fig)
    return {"metrics": {"habitat": section}, "html": html}
