"""Houston 2013 (REAL data): how test-like the validation split is, and a validation-only sweep of the students.

    python benchmarks/houston_validation.py [--seeds 0 1 2 3 4 5] [--jobs 2] [--render]

1. Distances: for every validation pixel, the distance (pixels) to the nearest training pixel of its class, under
   the old split (10x10-pixel blocks of each class held out) and the recipe's split (whole polygons held out),
   against the same distance for the official test pixels. Only pixel positions and labels are read.
2. Sweep: for each seed the recipe's teacher is trained once, then students of the grid below on the training
   part; each is scored on the validation pixels only (best epoch, and the mean of its last 10 epochs), with
   RandomForest and ExtraTrees (500 trees) fitted on the same training part. No test pixel is scored here.

Writes benchmarks/houston_validation.json and .md (``--render`` rewrites the .md from the .json).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from common import ROOT, save

# name: (student overrides, distillation overrides; None = task loss only, i.e. a student_baseline)
GRID: dict[str, tuple[list[str], list[str] | None]] = {
    "periodic, task only": ([], None),
    "periodic, kd T=2 (recipe default)": ([], ["distill.temperature=2.0"]),
    "periodic, kd T=4": ([], ["distill.temperature=4.0"]),
    "periodic, kd T=2 weight 2": ([], ["distill.weights.kd=2.0"]),
    "MLP encoder, task only": (["student.encoders={}"], None),
    "MLP encoder, kd T=2": (["student.encoders={}"], ["distill.temperature=2.0"]),
    "MLP encoder, kd T=4": (["student.encoders={}"], ["distill.temperature=4.0"]),
}
BASE = "periodic, task only"


def _coords() -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) row, col, label of the training pixels and of the official test pixels."""
    from cmkd.recipes.houston.recipe import default_folder, sample_coords

    tr, te = (sample_coords(default_folder(), part) for part in ("train", "test"))
    return tuple(np.c_[p["row"], p["col"], p["label"]] for p in (tr, te))  # type: ignore[return-value]


def _block_split(rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, fraction: float, seed: int,
                 block: int = 10) -> np.ndarray:
    """The split the recipe used before: whole ``block`` x ``block`` cells of each class held out."""
    from cmkd.data.regions import hold_out_groups

    return hold_out_groups(rows // block * 100_000 + cols // block, labels, fraction, seed)


def _nearest_same_class(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    out = []
    for c in np.unique(queries[:, 2]):
        out.append(cKDTree(pool[pool[:, 2] == c, :2]).query(queries[queries[:, 2] == c, :2])[0])
    return np.concatenate(out)


def distances(seeds: list[int]) -> dict:
    from cmkd.recipes.houston.recipe import spatial_val_split

    tr, te = _coords()
    q = [10, 25, 50, 75, 90]
    out = {"quantiles": q, "test": np.percentile(_nearest_same_class(te, tr), q).round(1).tolist()}
    for name, fn in (("blocks_10px", _block_split), ("polygons", spatial_val_split)):
        rows = []
        for s in seeds:
            v = fn(tr[:, 0], tr[:, 1], tr[:, 2], 0.15, s)
            rows.append(np.percentile(_nearest_same_class(tr[v], tr[~v]), q))
        out[name] = np.mean(rows, axis=0).round(1).tolist()
    return out


def sweep_seed(seed: int) -> dict:
    """Teacher once, then every student of GRID, scored on validation; the trees on the same parts."""
    import torch
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    from cmkd.data.arrays import build_data, fit_stats
    from cmkd.nn.checkpoint import build_model
    from cmkd.pipeline.resolve import resolve
    from cmkd.training.distill import make_loss
    from cmkd.training.fit import FitSettings, fit, set_seed
    from cmkd.training.teachers import teacher_targets, train_teachers

    torch.set_num_threads(1)
    cfg, arrays, src, _ = resolve("houston", [f"seed={seed}"])
    smods = list(cfg.student.modalities)
    data = build_data(arrays, cfg.data, cfg.seed, src, modalities=list(cfg.teacher.modalities))
    tr, va = data.labelled(data.indices(0)), data.labelled(data.indices(1))
    stats = fit_stats(data, data.indices(0))
    x, y = data.inputs["lidar"].reshape(data.n, -1), data.targets["label"]
    out: dict = {"n_train": len(tr), "n_val": len(va)}
    for name, cls in (("RandomForest", RandomForestClassifier), ("ExtraTrees", ExtraTreesClassifier)):
        pred = cls(n_estimators=500, random_state=seed, n_jobs=1).fit(x[tr], y[tr]).predict(x[va])
        out[name] = {"best": float((pred == y[va]).mean())}
    hist: dict = {}
    teacher, _ = train_teachers(cfg, data, tr, va, stats, hist, quiet=True)
    out["teacher (HSI + LiDAR)"] = {"best": max(r["val_metric"] for r in hist["teacher"])}
    cache, mask = teacher_targets(teacher, data, list(data.target_kinds))
    # what the soft targets hold: kd acts only on training pixels (the only ones with HSI)
    probs = torch.softmax(cache["label"]["logits"] / cfg.distill.temperature, -1).numpy()
    out["soft_targets"] = {part: {"agree": float((probs[i].argmax(1) == y[i]).mean()),
                                  "p_true": float(probs[i, y[i]].mean())} for part, i in (("train", tr), ("val", va))}
    for name, (s_over, d_over) in GRID.items():
        c, _, _, _ = resolve("houston", [f"seed={seed}"] + s_over + (d_over or []))
        # the same order of seeding and construction as cmkd.pipeline.core's students (the loss is built after the
        # second seed, as there), so each entry's validation curve is the one `cmkd run` would record
        set_seed(seed + 1)
        model = build_model(data, smods, c.student, c)
        model.set_stats(stats)
        set_seed(seed + 2)
        loss = make_loss(c, c.student.width, teacher.width, baseline=d_over is None)
        h = fit(model, data, tr, va, c.student, loss,
                FitSettings(seed=seed + 1, target_stats=stats, teacher_cache=cache if d_over else None, kd_mask=mask,
                            quiet=True, desc=name))
        vm = [r["val_metric"] for r in h]
        out[name] = {"best": max(vm), "epoch": int(np.argmax(vm)) + 1, "last10": float(np.mean(vm[-10:]))}
        print(f"seed {seed}: {name}: {out[name]}", flush=True)
    return out


def render(res: dict) -> str:
    d = res["distances"]
    q = " / ".join(f"{p}%" for p in d["quantiles"])
    lines = ["Houston 2013 (REAL data). Distance in pixels from each held-out pixel to the nearest training pixel of "
             f"its class ({q} quantiles; validation splits: mean over seeds {d['seeds']}):", "",
             "| pixels | distance to the nearest same-class training pixel |", "|---|---|",
             f"| official test pixels | {' / '.join(map(str, d['test']))} |",
             f"| validation, 10x10-pixel blocks (old split) | {' / '.join(map(str, d['blocks_10px']))} |",
             f"| validation, whole polygons (recipe's split) | {' / '.join(map(str, d['polygons']))} |", ""]
    runs, seeds = res["sweep"], res["sweep_seeds"]
    lines += [f"Validation accuracy on the polygon split, seeds {seeds} (mean ± std; each seed is its own split and "
              "teacher). `best`: best epoch (what early stopping picks; optimistic), `last 10`: mean of the last 10 "
              f"epochs; difference: paired, against `{BASE}`. No test pixel was scored.", "",
              "| model | best | last 10 | best - baseline |", "|---|---|---|---|"]
    for name in runs[0]:
        if not isinstance(runs[0][name], dict) or "best" not in runs[0][name]:
            continue
        b = np.array([r[name]["best"] for r in runs])
        last = (f"{np.mean([r[name]['last10'] for r in runs]):.3f}" if "last10" in runs[0][name] else "-")
        diff = "-"
        if "epoch" in runs[0][name] and name != BASE:
            dd = b - np.array([r[BASE]["best"] for r in runs])
            diff = f"{dd.mean():+.3f} ± {dd.std():.3f}"
        lines.append(f"| {name} | {b.mean():.3f} ± {b.std():.3f} | {last} | {diff} |")
    st = [r["soft_targets"] for r in runs]
    agree = {part: np.mean([s[part]["agree"] for s in st]) for part in ("train", "val")}
    p_true = {part: np.mean([s[part]["p_true"] for s in st]) for part in ("train", "val")}
    lines += ["", "The teacher's soft targets (T=2), which kd matches on the training pixels, the only ones with "
              "hyperspectral data: the teacher's class agrees with the label on "
              f"{agree['train']:.3f} of them (mean probability of the labelled class {p_true['train']:.3f}), and on "
              f"{agree['val']:.3f} of the validation pixels ({p_true['val']:.3f}): beyond the labels they "
              "add little more than smoothing, and the teacher has nothing to say where the students are tested."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--jobs", type=int, default=2, help="seeds trained in parallel (one thread each)")
    ap.add_argument("--render", action="store_true", help="rewrite the .md from the .json, no training")
    args = ap.parse_args()
    path = ROOT / "benchmarks" / "houston_validation.json"
    if args.render:
        res = json.loads(path.read_text())
    else:
        from cmkd.recipes.houston import recipe as houston

        if not (houston.default_folder() / "sample_coords.csv").is_file():
            sys.exit(f"Houston 2013 data not found in {houston.default_folder()}; set CMKD_DATA")
        res = {"distances": {**distances(args.seeds[:3]), "seeds": args.seeds[:3]}, "sweep_seeds": args.seeds}
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            res["sweep"] = list(pool.map(sweep_seed, args.seeds))
    save("houston_validation", res, render(res))


if __name__ == "__main__":
    main()
