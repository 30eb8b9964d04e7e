"""Does the fold networks' epoch count make cross-validation optimistic? (REAL Japanese Vowels, 270 labels.)

In cross-validated selection (:mod:`cmkd.pipeline.crossval`) each fold's network trains for the epoch count the
run's own early stopping chose on its validation split, and that split is part of the pool the folds are cut from.
On Vowels with 270 labels (every training recording labelled) the network's cross-validated accuracy was 3-5
points above its test accuracy where the forests' matched theirs, and the run recommended it over ridge (test
0.881), so the dividend was negative (benchmarks/small_real.md). If the shared epoch count leaks the held-out
samples into the folds, choosing it inside each fold should remove the optimism.

Two arms per seed, the same built data (``benchmarks/small_real_cases.py``), export off:

- ``default``: ``cmkd run`` as shipped;
- ``nested``: each fold network's epoch count chosen by early stopping on a fifth of the fold's own labelled
  training samples (the rest trained on, the held-out fold never seen), then the network retrained on the whole
  fold for that count. An experiment: it lives here, not in cmkd.

Per run: every candidate's cross-validated figure, the recommended model, its TEST accuracy and the dividend (the
recommended model against the best label-only model on test, with hindsight). Writes
``benchmarks/fold_epochs.json`` / ``.md``; records in ``fold_epochs_runs.jsonl`` (a recorded run is skipped).

    python benchmarks/fold_epochs.py [--seeds 0 1 2] [--out /tmp/cmkd-fold-epochs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import BENCH, ROOT, append_run, read_runs, save
from small_real_cases import build

RUNS = BENCH / "fold_epochs_runs.jsonl"
CASE, BUDGET = "vowels", 270
SHOW = ("student_baseline", "student", "student_trees", "ridge", "extra_trees")


def nested_main(argv: list[str]) -> None:
    """``cmkd`` with the fold networks' epoch count chosen inside each fold (the ``nested`` arm)."""
    import cmkd.pipeline.crossval as cv
    from cmkd.data.arrays import UNLABELLED
    from cmkd.evaluation.metrics import predict
    from cmkd.nn.checkpoint import build_model
    from cmkd.training.fit import FitSettings, batch_size_for, fit, set_seed

    def fold_net(st, role, mods, mcfg, loss, fit_idx, seed, cache=None, mask=None):  # noqa: ANN001, ANN202
        data = st.data
        y = np.asarray(data.targets[next(iter(data.target_kinds))])[fit_idx]
        labelled = fit_idx[~np.isnan(y.astype(float))] if y.dtype.kind == "f" else fit_idx[y != UNLABELLED]
        inner = np.sort(np.random.default_rng(seed).choice(labelled, max(2, len(labelled) // 5), replace=False))
        outer = np.setdiff1d(fit_idx, inner)

        def train(idx: np.ndarray, val: np.ndarray, mc) -> tuple:  # noqa: ANN001
            set_seed(seed)
            net = build_model(data, mods, mc, st.cfg)
            net.set_stats(st.stats)
            h = fit(net, data, idx, val, mc.model_copy(update={"batch_size": batch_size_for(mc, len(idx))}), loss,
                    FitSettings(seed=seed, target_stats=st.stats, teacher_cache=cache, kd_mask=mask, quiet=True,
                                device=st.dev, select_best=False))
            return net, h

        _, h = train(outer, inner, mcfg)
        ep = int(np.argmax([st.sign * r["val_metric"] for r in h])) + 1
        net, _ = train(fit_idx, fit_idx[:0], mcfg.model_copy(update={"epochs": ep, "patience": ep + 1}))
        return predict(net, data, np.arange(data.n), device=st.dev)

    cv._fold_net = fold_net
    from cmkd.cli import main

    sys.argv = ["cmkd", *argv]
    main()


def one(arm: str, seed: int, out: Path) -> dict:
    """One run of ``arm`` at ``seed``: its record."""
    from small_real import summarise

    data_dir = out / f"s{seed}" / "data"
    _, yaml = build(CASE, BUDGET, seed, data_dir)
    run_dir = out / f"s{seed}" / arm
    args = ["run", str(yaml), "--out", str(run_dir), "--quiet", "--overwrite", "--set", "export.enabled=false"]
    cmd = [sys.executable, *(["-m", "cmkd"] if arm == "default" else [__file__, "--nested"]), *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} s{seed}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    m = json.loads((run_dir / "metrics.json").read_text())
    cands = {k: v["mean"] for k, v in m["selection"]["candidates"].items()}
    return {"arm": arm, "seed": seed, "cv": cands, "teacher": m["selection"]["teacher"]["chosen"],
            **summarise(m)}


def table(runs: list[dict]) -> str:
    head = ("| seed | arm | " + " | ".join(f"{k} (CV)" for k in SHOW)
            + " | recommended | its test | student_baseline test | ridge test | dividend (test) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(runs, key=lambda r: (r["seed"], r["arm"])):
        cv = " | ".join(f"{r['cv'][k]:.3f}" if k in r["cv"] else "-" for k in SHOW)
        lines.append(f"| {r['seed']} | {r['arm']} | {cv} | {r['recommended_model']} | {r['recommended_test']:.3f} | "
                     f"{r['student_baseline_test']:.3f} | {r['label_only_test']['ridge']:.3f} | "
                     f"{r['dividend']:+.3f} |")
    for arm in ("default", "nested"):
        g = [r for r in runs if r["arm"] == arm]
        if g:
            sb = [r["cv"]["student_baseline"] for r in g]
            dv = [r["dividend"] for r in g]
            rec = np.mean([r["recommended_test"] for r in g])
            spread = np.std(dv, ddof=1) if len(dv) > 1 else 0.0
            lines.append(f"| mean | {arm} | {np.mean(sb):.3f} | | | | | | {rec:.3f} | | | "
                         f"{np.mean(dv):+.3f} ± {spread:.3f} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--nested"]:
        nested_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cmkd-fold-epochs")
    args = ap.parse_args()
    runs = read_runs(RUNS)
    done = {(r["arm"], r["seed"]) for r in runs}
    for seed in args.seeds:
        for arm in ("default", "nested"):
            if (arm, seed) not in done:
                rec = one(arm, seed, args.out)
                append_run(RUNS, rec)
                runs.append(rec)
                print(f"{arm} s{seed}: {rec['recommended_model']} {rec['recommended_test']:.3f}", flush=True)
    md = ("## The fold networks' epoch count (`python benchmarks/fold_epochs.py`)\n\n"
          f"REAL Japanese Vowels, {BUDGET} labels (every training recording labelled), 3 of 12 channels on the "
          "student; accuracy. CV: the candidate's cross-validated figure in the run; test: the official test split. "
          "`nested`: each fold network's epoch count chosen inside the fold (an experiment, not in cmkd).\n\n"
          + table(runs) + "\n")
    save("fold_epochs", runs, md)


if __name__ == "__main__":
    main()
