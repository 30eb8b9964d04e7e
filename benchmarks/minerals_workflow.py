"""The minerals survey workflow on SYNTHETIC scenes, over several seeds: direct vs progressive distillation,
the recall of the rarest classes (the class-balanced variant of earlier tables went with distill.class_balance),
few-shot site adaptation (plain fine-tuning, and with the new site's label-free input restandardisation +
augmentation, with and without EWC; the original site is scored with its own statistics), carbonation error and
interval coverage (independent-pixel interval and the interval calibrated on validation pixels), and `cmkd tune`
(validation gain over the defaults).

Usage:
    python benchmarks/minerals_workflow.py [--seeds 0 1 2] [--tune-trials 20] [--out runs/minerals-workflow]

Writes ``benchmarks/minerals_workflow.json`` (every figure per seed) and ``benchmarks/minerals_workflow.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import ms, save

import cmkd
from cmkd.evaluation.metrics import predict
from cmkd.nn.checkpoint import load_model
from cmkd.pipeline.resolve import original_dataset, resolve
from cmkd.pipeline.tune import tune
from cmkd.training.continual import adapt, model_dataset

ROOT = Path(__file__).resolve().parents[1]
EWC_LAMBDAS = (0.0, 1.0, 10.0, 100.0)


def rare_recall(run: Path, role: str) -> dict:
    """Test recall of the two classes rarest in the training labels."""
    model, meta = load_model(run / f"{role}.pt")
    data = original_dataset(meta)
    y_tr = data.targets["mineral"][data.labelled(data.indices(0))]
    counts = np.bincount(y_tr, minlength=len(data.classes["mineral"]))
    rare = np.argsort(counts)[:2]
    te = data.labelled(data.indices(2))
    pred = predict(model, data, te)["mineral/logits"].argmax(1)
    y = data.targets["mineral"][te]
    names = meta["class_names"]
    return {names[c]: float(np.mean(pred[y == c] == c)) if (y == c).any() else float("nan") for c in rare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tune-trials", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "runs" / "minerals-workflow"))
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        t0 = time.time()
        r: dict = {"seed": seed}
        plain = cmkd.run("minerals", out / f"plain-{seed}", overrides=[f"seed={seed}", "export.enabled=false"],
                         quiet=True)
        acc = {k: v["metrics"]["accuracy"] for k, v in plain["models"].items()}
        r["accuracy"] = acc
        r["carbonation"] = {k: {**{kk: v[kk] for kk in ("relative_error", "interval_covers_truth",
                                                        "pixel_interval_coverage", "interval_90_t", "true_t")},
                                "uncalibrated": {kk: v.get("uncalibrated", v)[kk] for kk in
                                                 ("relative_error", "interval_covers_truth", "interval_90_t")}}
                            for k, v in plain["survey"]["carbonation"].items()}
        r["rare_recall_plain"] = rare_recall(out / f"plain-{seed}", "student")
        # few-shot adaptation to site 1 (labelled), 10 shots per class, with and without EWC
        _, site, _, _ = resolve("minerals", [f"seed={seed}", "options.site=1", "options.label_fraction=1"])
        net, meta = load_model(out / f"plain-{seed}" / "student.pt")
        new = model_dataset(meta, site, "site1", "keep")
        orig = original_dataset(meta)
        r["adapt"] = {}
        settings = [("plain fine-tuning, EWC 0", 0.0, False, False)] + [
            (f"restandardised + augmented, EWC {lam:g}", lam, True, True) for lam in EWC_LAMBDAS]
        for label, lam, rs, aug in settings:
            _, rep = adapt(net, new, 10, orig, lam, epochs=50, lr=1e-3, seed=seed, restandardise=rs, augment=aug)
            r["adapt"][label] = {k: {s: v[s]["accuracy"] for s in v} for k, v in
                                 (("before", rep["before"]), ("after", rep["after"]),
                                  ("restandardised_only", rep.get("restandardised_only", {})))}
        r["wall_s"] = time.time() - t0
        rows.append(r)
        print(json.dumps(r), flush=True)
    cfg, arrays, _, _ = resolve("minerals", [f"seed={args.seeds[0]}", "distill.chain=[]"])
    tuned = tune(cfg, arrays, args.tune_trials, "tpe", out / "tune", quiet=True)
    tuned_de = tune(cfg, arrays, args.tune_trials, "de", out / "tune-de", quiet=True)
    res = {"runs": rows, "tune_tpe": {k: tuned[k] for k in ("default", "best", "gain", "best_params")},
           "tune_de": {k: tuned_de[k] for k in ("default", "best", "gain", "best_params")}}
    save("minerals_workflow", res, report(res))


def report(res: dict) -> str:
    """Markdown summary (mean ± std over seeds)."""
    runs = res["runs"]
    acc = {k: [r["accuracy"][k] for r in runs] for k in runs[0]["accuracy"]}
    t = acc["teacher"]
    lines = ["| quantity | mean ± std over seeds |", "|---|---|"]
    for k, v in acc.items():
        lines.append(f"| accuracy: {k} | {ms(v)} |")
    lines.append(f"| direct student / teacher (accuracy preservation) | "
                 f"{ms([s / tt for s, tt in zip(acc['student'], t)])} |")
    if "student_progressive" in acc:
        lines.append(f"| progressive - direct student (accuracy) | "
                     f"{ms([p - s for p, s in zip(acc['student_progressive'], acc['student'])])} |")
    plain = [np.nanmean(list(r["rare_recall_plain"].values())) for r in runs]
    lines.append(f"| recall of the 2 rarest classes | {ms(plain)} |")
    for lab in runs[0]["adapt"]:
        a = [r["adapt"][lab] for r in runs]
        lost = [x["before"]["original_site"] - x["before"]["new_site"] for x in a]
        gained = [x["after"]["new_site"] - x["before"]["new_site"] for x in a]
        drop = [x["before"]["original_site"] - x["after"]["original_site"] for x in a]
        lines.append(f"| adapt 10 shots, {lab}: new-site accuracy before -> after | "
                     f"{ms([x['before']['new_site'] for x in a])} -> {ms([x['after']['new_site'] for x in a])} |")
        lines.append(f"| adapt 10 shots, {lab}: share of the lost accuracy recovered; original-site drop | "
                     f"{ms([g / lo for g, lo in zip(gained, lost)])}; {ms(drop)} |")
    rs_only = [next((x["restandardised_only"] for x in r["adapt"].values() if x.get("restandardised_only")), None)
               for r in runs]
    if all(rs_only):
        lines.append(f"| restandardisation alone (no fine-tuning): new-site accuracy | "
                     f"{ms([x['new_site'] for x in rs_only])} |")
    for role in ("teacher", "student"):
        c = [r["carbonation"][role] for r in runs]
        unc = [x.get("uncalibrated", x) for x in c]
        err = [x["relative_error"] for x in c]
        cov = [float(x["interval_covers_truth"]) for x in c]
        width = [(x["interval_90_t"][1] - x["interval_90_t"][0]) / 2 / x["true_t"] for x in c if "true_t" in x]
        lines.append(f"| carbonation ({role}): relative error of the total; mean abs | "
                     f"{ms(err)}; {np.mean(np.abs(err)):.3f} |")
        lines.append(f"| carbonation ({role}): independent-pixel interval covers truth | "
                     f"{sum(float(x['interval_covers_truth']) for x in unc):.0f} of {len(unc)} |")
        if width:
            lines.append(f"| carbonation ({role}): calibrated 90% interval covers truth; half-width / true total | "
                         f"{sum(cov):.0f} of {len(cov)}; {ms(width)} |")
    for name in ("tune_tpe", "tune_de"):
        tr = res[name]
        lines.append(f"| cmkd tune ({name[5:]}), validation accuracy: defaults -> best | "
                     f"{tr['default']:.3f} -> {tr['best']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
