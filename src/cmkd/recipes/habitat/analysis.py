"""The habitat recipe's run analysis: compliance per jurisdiction, ensemble vs student speed, and a re-check of
every rule-engine recommendation on the test designs (SYNTHETIC data, ILLUSTRATIVE rules)."""

from __future__ import annotations

import numpy as np

from cmkd.io import dumps
from cmkd.recipes.habitat.rules import evaluate, fix, load_rules, recommend
from cmkd.recipes.habitat.scene import generate, region_rules

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


def measure_speed(ctx: dict) -> dict[str, float]:
    """Latency of the teacher ensemble and the student, batch 1, one thread, timed in round-robin.

    Like for like twice: PyTorch against PyTorch, and both exported to ONNX and run by ONNX Runtime (the
    ensemble is exported here, to a temporary file, exactly as the student is; its parity with the PyTorch
    ensemble on the first test samples is returned as ``ensemble_onnx_max_abs_diff``). The student's INT8 model
    (the design tool's) is timed in the same rounds. Round-robin timing
    (:func:`cmkd.evaluation.metrics.paired_latency_ms`)
    keeps the ratios fair on a machine that other work is loading. ``<name>_ms`` are medians and
    ``<name>_min_ms`` the best runs; the speed-ups are ratios of the best runs.
    """
    import tempfile
    from pathlib import Path

    from cmkd.evaluation.metrics import example_inputs, paired_latency_ms, predict
    from cmkd.export.onnx import export_onnx, ort_run, ort_session, reference_outputs

    data, test, cfg, out = ctx["data"], ctx["test"], ctx["cfg"], ctx["out"]
    ens, student = ctx["models"]["teacher"].cpu().eval(), ctx["models"]["student"].cpu().eval()
    mods, smods = list(ens.encoders), list(student.encoders)
    x_ens, x_st = example_inputs(data, mods), example_inputs(data, smods)
    calls = {"teacher_ensemble_ms": lambda: ens(x_ens), "student_ms": lambda: student(x_st)}
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(export_onnx(ens, example_inputs(data, mods, 2), Path(tmp) / "ensemble.onnx"))
        first = test[:256]
        ref = predict(ens, data, first)
        got = ort_run(sess, {m: data.inputs[m][first] for m in mods})
        res["ensemble_onnx_max_abs_diff"] = max(  # probabilities for classification, values for regression
            float(np.max(np.abs(g - r))) for g, r in zip(got, reference_outputs(ref, ens.target_kinds)))
        f_ens = {m: x_ens[m].numpy() for m in mods}
        f_st = {m: x_st[m].numpy() for m in smods}
        calls["ensemble_onnx_ms"] = lambda: sess.run(None, f_ens)
        for key, name in (("student_onnx_ms", "student.onnx"), ("student_int8_ms", "student.int8.onnx")):
            if (out / name).is_file():
                s = ort_session(out / name)
                calls[key] = lambda s=s: s.run(None, f_st)
        lat = paired_latency_ms(calls, cfg.export.latency_runs)
    for k, v in lat.items():
        res[k], res[k.replace("_ms", "_min_ms")] = v["median"], v["min"]
    best = {k: v["min"] for k, v in lat.items()}  # speed-ups from the best runs (robust to other load)
    res["speedup_torch"] = best["teacher_ensemble_ms"] / best["student_ms"]
    if "student_onnx_ms" in best:
        res["speedup_onnx_both"] = best["ensemble_onnx_ms"] / best["student_onnx_ms"]
        res["speedup_onnx"] = best["teacher_ensemble_ms"] / best["student_onnx_ms"]
    if "student_int8_ms" in best:
        res["speedup_int8"] = best["teacher_ensemble_ms"] / best["student_int8_ms"]
        res["speedup_int8_vs_ensemble_onnx"] = best["ensemble_onnx_ms"] / best["student_int8_ms"]
    return res


def analyse(ctx: dict) -> dict:
    """Metrics section ``habitat`` and the report's habitat section."""
    from cmkd.evaluation.report import figure_html, table_html

    cfg, metrics, out = ctx["cfg"], ctx["metrics"], ctx["out"]
    from cmkd.recipes.base import read_options
    from cmkd.recipes.habitat.options import OPTIONS

    o = read_options(OPTIONS, cfg.options, recipe="habitat")
    n, region, rules_path = int(o["n"]), int(o["region"]), o["rules"]
    _, records = generate(n, cfg.seed, region, load_rules(rules_path))
    rules = region_rules(load_rules(rules_path), region)
    test = [records[i] for i in ctx["test"]]
    table = compliance_table(metrics["models"])
    lat = {r: m["latency_ms"] for r, m in metrics["models"].items()}
    speed = measure_speed(ctx)
    checks = check_recommendations(test, rules)
    conflicts = sum(len(r["evaluation"]["conflicts"]) for r in test)
    section = {"compliance_accuracy": table, "speed": speed, "recommendation_check": checks,
               "test_conflicts_resolved": conflicts,
               "compliance_gap_student_vs_ensemble": table["student"]["mean"] - table["teacher"]["mean"],
               "disclaimer": "SYNTHETIC sites; ILLUSTRATIVE rules, not legal advice"}
    from cmkd.io import atomic_write_text

    atomic_write_text(out / "habitat.json", dumps(section, indent=1))
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
    names = ["ensemble (PyTorch)", *[f"{r} (PyTorch)" for r in lat if r.startswith("teacher_")],
             "student (PyTorch)"]
    vals = [speed["teacher_ensemble_ms"], *[lat[r] for r in lat if r.startswith("teacher_")], speed["student_ms"]]
    for key, label in (("ensemble_onnx_ms", "ensemble ONNX"), ("student_onnx_ms", "student ONNX"),
                       ("student_int8_ms", "student INT8 ONNX")):
        if key in speed:
            names.append(label)
            vals.append(speed[key])
    axes[1].barh(names, vals, color=["#1f77b4" if n.startswith("student") else "#777" for n in names])
    axes[1].set_xlabel("latency per design, ms (batch 1, one thread)")
    fig.suptitle("habitat (SYNTHETIC data, ILLUSTRATIVE rules)")
    fig.tight_layout()
    rows = [[role, *[f"{table[role].get(j, float('nan')):.3f}" for j in JURISDICTIONS], f"{table[role]['mean']:.3f}",
             f"{lat[role]:.2f}"] for role in roles]
    html = ["<h2>Habitat design: compliance and speed (SYNTHETIC, illustrative rules, not legal advice)</h2>",
            table_html(["model", *JURISDICTIONS, "mean", "latency ms"], rows),
            f"<p>Student {speed['speedup_torch']:.1f}x faster than the teacher ensemble with both in PyTorch"
            + (f", {speed['speedup_onnx_both']:.1f}x with both exported to ONNX" if "speedup_onnx_both" in speed
               else "")
            + (f" ({speed['speedup_int8_vs_ensemble_onnx']:.1f}x as INT8)" if "speedup_int8_vs_ensemble_onnx" in speed
               else "")
            + " (batch 1, one thread, timed in round-robin)"
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
