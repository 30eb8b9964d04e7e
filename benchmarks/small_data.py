"""Do the default networks hold against one-line classical models on small data? One case per modality kind.

For each case, training size ``n`` and seed, a bring-your-own-data run (``cmkd.run`` on an ``.npz`` + config with
the library's default model settings; teacher and student on the same modality, so the comparison is the plain
network ``student_baseline`` against RandomForest / ExtraTrees / HistGradientBoosting on the same inputs and
labels) is scored on a large held-out test set. Validation is small, as a small-data user's would be
(``max(15, n // 3)`` samples). Variants are config overrides of the model settings (``--variants``).

Cases (REAL data from ``../shared/data`` where present, else skipped; SYNTHETIC ones say so):

- ``aq-vector`` REAL: UCI air quality, 8 cheap-sensor features -> NO2 (regression; chronological: training
  samples from the first 60% of the hours, validation from the next 10%, test the last 30%);
- ``houston-vector`` REAL: Houston 2013, 21 LiDAR features -> 15 land-cover classes (test: the official test pixels);
- ``houston-image`` REAL: 21 x 7 x 7 LiDAR patches -> 15 classes (test: training pixels not drawn);
- ``houston-hsi`` REAL: 144 hyperspectral bands as a vector -> 15 classes (test: training pixels not drawn);
- ``signal`` SYNTHETIC: 6-channel, 64-step wearable-like signals -> 4 activities;
- ``sequence`` SYNTHETIC: 24-step, 3-channel series with gaps -> regression of a trend.

Usage:
    python benchmarks/small_data.py [--cases ...] [--sizes 30 100 300] [--seeds 0 1 2] [--variants ...]

Writes ``benchmarks/small_data.json`` / ``.md``; every run is appended to ``benchmarks/small_data_runs.jsonl``
as it finishes (an interrupted sweep resumes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import BENCH, TIE_SE, append_run, gap, ms, read_runs, rule_holds, save
from selection_optimism import pick

import cmkd
from cmkd.config import ModelConfig
from cmkd.errors import CmkdError
from cmkd.training.fit import batch_size_for

RUNS = BENCH / "small_data_runs.jsonl"
REFS = ("random_forest", "extra_trees", "hist_gradient_boosting")
N_TEST = 3000


def _auto(n: int) -> int:  # the library's auto batch size for n training samples
    return batch_size_for(ModelConfig(), n)


OLD = ["teacher.epochs=60", "student.epochs=60", "teacher.patience=12", "student.patience=12"]  # former defaults


def _batch(n: int | None) -> list[str]:
    return [f"teacher.batch_size={n}", f"student.batch_size={n}"]


# variant -> function of the training size giving config overrides; every variant but ``default`` pins the settings
# it was run with, so a rerun reproduces it whatever the library's defaults become
VARIANTS = {
    "batch128": lambda n: _batch(128) + OLD,  # the former defaults: batch 128, 60 epochs, patience 12
    "batch_auto": lambda n: _batch(_auto(n)) + OLD,
    "auto_long": lambda n: _batch(_auto(n)) + ["teacher.epochs=200", "student.epochs=200", "teacher.patience=40",
                                               "student.patience=40"],
    "auto_periodic": lambda n: _batch(_auto(n)) + OLD + ["teacher.encoders={vector: periodic}",
                                                         "student.encoders={vector: periodic}"],
    "default": lambda n: [],  # the library's defaults now: auto batch size, epochs and patience
    "mobilenet": lambda n: ["teacher.encoders={image: mobilenet}", "student.encoders={image: mobilenet}"],
    "flat": lambda n: ["teacher.encoders={image: flat}", "student.encoders={image: flat}"],
    "ensemble5": lambda n: ["student.ensemble=5"],
}
LABELS = {"batch128": "former defaults (batch 128, 60 epochs, patience 12)", "batch_auto": "auto batch, 60 epochs",
          "auto_long": "auto batch, 200 epochs, patience 40", "auto_periodic": "auto batch, periodic vector encoder",
          "default": "defaults now (auto batch, epochs, patience)",
          "mobilenet": "defaults now, MobileNet image encoder",
          "augment": "defaults now, flips / quarter turns of the image patches (model.augment, since removed)",
          "flat": "defaults now, image patch flattened into an MLP",
          "ensemble5": "defaults now, 5 networks averaged (student.ensemble=5)"}


def _houston() -> dict[str, np.ndarray]:
    from cmkd.recipes.houston.recipe import _mat, default_folder

    p = Path(default_folder())
    if not (p / "LiDAR_TrSet_patch7x7.mat").is_file():
        raise CmkdError(f"Houston 2013 data not found in {p}")
    return {"lidar": _mat(p / "LiDAR_TrSet.mat").astype(np.float32),
            "patch": _mat(p / "LiDAR_TrSet_patch7x7.mat").reshape(-1, 21, 7, 7).astype(np.float32),
            "hsi": _mat(p / "HSI_TrSet.mat").astype(np.float32),
            "y": _mat(p / "TrLabel.mat").reshape(-1).astype(np.int64),
            "lidar_te": _mat(p / "LiDAR_TeSet.mat").astype(np.float32),
            "y_te": _mat(p / "TeLabel.mat").reshape(-1).astype(np.int64)}


def _draw(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(pool, size=min(k, len(pool)), replace=False)


def case_arrays(case: str, n: int, seed: int) -> tuple[dict, str, str]:
    """(arrays with ``x``, ``y``, ``split``; modality kind; task)."""
    rng = np.random.default_rng(seed)
    n_val = max(15, n // 3)
    if case == "aq-vector":
        from cmkd.recipes.airquality.data import chronological_split, read_table

        t = read_table(None)
        sp = chronological_split(len(t["no2"]))
        tr, va = _draw(rng, np.flatnonzero(sp == 0), n), _draw(rng, np.flatnonzero(sp == 1), n_val)
        te = np.flatnonzero(sp == 2)
        idx = np.concatenate([tr, va, te])
        split = np.repeat([0, 1, 2], [len(tr), len(va), len(te)])
        return {"x": t["sensors"][idx], "y": t["no2"][idx], "split": split}, "vector", "regression"
    if case.startswith("houston"):
        h = _houston()
        perm = rng.permutation(len(h["y"]))
        first = np.unique(h["y"][perm], return_index=True)[1]  # each class's first drawn pixel
        if len(np.unique(h["y"][perm[:n]])) < len(first):  # every class in training (15 classes, n = 30)
            perm = np.concatenate([perm[np.sort(first)], np.delete(perm, first)])
        tr, va = perm[:n], perm[n:n + n_val]
        if case == "houston-vector":
            te = _draw(rng, np.arange(len(h["y_te"])), N_TEST)
            x = np.concatenate([h["lidar"][tr], h["lidar"][va], h["lidar_te"][te]])
            y = np.concatenate([h["y"][tr], h["y"][va], h["y_te"][te]])
        else:
            te = perm[n + n_val:]
            key = "patch" if case == "houston-image" else "hsi"
            x, y = h[key][np.concatenate([tr, va, te])], h["y"][np.concatenate([tr, va, te])]
        split = np.repeat([0, 1, 2], [len(tr), len(va), len(te)])
        return {"x": x, "y": y, "split": split}, ("image" if case == "houston-image" else "vector"), "classification"
    total = n + n_val + N_TEST
    split = np.repeat([0, 1, 2], [n, n_val, N_TEST])
    if case == "signal":  # SYNTHETIC: 4 activities, each a frequency / amplitude / axis pattern, per-subject gain
        y = rng.integers(0, 4, total)
        t = np.linspace(0, 4, 64)
        freq = np.array([0.5, 1.0, 2.0, 3.0])[y] * rng.uniform(0.8, 1.2, total)
        amp = np.array([[1, .2, .2, .1, .1, .1], [1, 1, .3, .3, .2, .2], [.5, 1, 1, .5, .5, .2],
                        [.3, .3, 1, 1, 1, 1]])[y] * rng.uniform(0.6, 1.4, (total, 1))
        phase = rng.uniform(0, 2 * np.pi, (total, 6))
        x = amp[:, :, None] * np.sin(2 * np.pi * freq[:, None, None] * t + phase[:, :, None])
        x = x + 0.6 * rng.normal(size=x.shape) + rng.normal(size=(total, 6, 1))
        return {"x": x.astype(np.float32), "y": y, "split": split}, "signal", "classification"
    if case == "sequence":  # SYNTHETIC: a trend plus noise and an AR(1) nuisance; 20% of the readings missing
        slope = rng.normal(size=total)
        t = np.linspace(-1, 1, 24)
        ar = np.zeros((total, 24, 3))
        for k in range(1, 24):
            ar[:, k] = 0.8 * ar[:, k - 1] + 0.5 * rng.normal(size=(total, 3))
        x = slope[:, None, None] * t[None, :, None] * np.array([1.0, 0.5, -0.8]) + ar
        x[rng.random(x.shape) < 0.2] = np.nan
        y = (slope + 0.3 * np.tanh(2 * slope)).astype(np.float32)
        return {"x": x.astype(np.float32), "y": y, "split": split}, "sequence", "regression"
    raise ValueError(case)


def one(case: str, n: int, seed: int, variant: str) -> dict:
    """One run; test metric of student_baseline and of each reference."""
    arrays, kind, task = case_arrays(case, n, seed)
    cfg = {"name": f"small-{case}", "seed": seed,
           "data": {"path": "data.npz", "modalities": {"x": {"kind": kind}}, "targets": {"y": {"kind": task}},
                    "split": "split"},
           "teacher": {"modalities": ["x"]}, "student": {"modalities": ["x"]},
           "trees": False, "export": {"enabled": False}}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "data.npz", **arrays)
        (Path(tmp) / "exp.yaml").write_text(yaml.safe_dump(cfg))
        m = cmkd.run(str(Path(tmp) / "exp.yaml"), Path(tmp) / "run", quiet=True, overrides=VARIANTS[variant](n))
        hist = json.loads((Path(tmp) / "run" / "histories.json").read_text())
    metric = m["primary_metric"]
    out = {"case": case, "n": n, "seed": seed, "variant": variant, "metric": metric, "kind": kind,
           "seconds": round(time.time() - t0, 1), "network": m["models"]["student_baseline"]["metrics"][metric]}
    for r in REFS:
        out[r] = (m.get("references") or {}).get(r, {}).get(metric)
    rec = (m.get("recommended") or {}).get("model")  # the run's choice on validation: network or a reference
    out["recommended"] = rec
    out["recommended_test"] = (m["models"]["student"]["metrics"][metric] if rec == "student" else out.get(rec))
    out["tie_se"] = TIE_SE
    out["best_on_val"] = (m.get("recommended") or {}).get("best_on_val")  # the strict rule's choice
    # what other rules would have chosen (rules_table): every candidate's validation figure, the network's
    # validation curve (the student's epochs), the number of validation samples and the student's test figure
    out["val"] = (m.get("recommended") or {}).get("val")
    out["curve"] = [r["val_metric"] for r in hist.get("student", []) if r.get("val_metric") is not None]
    out["n_val"] = int((arrays["split"] == 1).sum())
    out["student_test"] = m["models"]["student"]["metrics"][metric]
    return out


def load_runs() -> list[dict]:
    """The last record of every (case, n, seed, variant); one of the default variant (whose recommendation the
    table shows) only while its recommendation holds under today's tie rule (``common.rule_holds``: one that
    recommended the network under another rule runs again)."""
    out: dict[tuple, dict] = {}
    for r in read_runs(RUNS):
        if r["variant"] != "default" or "recommended" not in r or rule_holds(r):
            out[(r["case"], r["n"], r["seed"], r["variant"])] = r
    return list(out.values())


def _gap(r: dict) -> float:
    """Recommended minus the best reference on test: points of accuracy, or % of the reference's RMSE (+ =
    the recommended model is better)."""
    vals = [r[a] for a in REFS if r[a] is not None]
    if r["metric"] == "rmse":
        return 100 * (min(vals) - r["recommended_test"]) / min(vals)
    return 100 * (r["recommended_test"] - max(vals))


def _ms(vals: list[float | None]) -> str:  # common.ms (sample std) over the runs that have the figure
    v = [x for x in vals if x is not None]
    return ms(v) if v else "-"


def _best(r: dict) -> float:
    vals = [r[a] for a in REFS if r[a] is not None]
    return min(vals) if r["metric"] == "rmse" else max(vals)


def table(runs: list[dict]) -> str:
    """Markdown: the former defaults against the defaults now and the references, the variants tried, and the
    tables read plainly."""
    cells = [(c, n) for c in dict.fromkeys(r["case"] for r in runs) for n in sorted({r["n"] for r in runs
                                                                                    if r["case"] == c})]
    lines = ["## Small data: the default network against one-line classical models "
             "(`python benchmarks/small_data.py`)", "",
             "Test metric, mean ± std over seeds (each seed draws its own training and validation samples). The "
             "network is `student_baseline` (teacher and student on the same inputs, so no distillation) with the "
             "model settings left to the library: the former defaults (batch 128, 60 epochs, patience 12) and "
             "those now (auto batch size, epochs and patience). The references are trained on the same samples. "
             "`recommended` is the run's choice on validation among the network and the references (defaults "
             "now); its gap is to the best reference on test, per seed (points of accuracy, or % of the RMSE; + = "
             "better).", "",
             "| case | data | metric | n train | network, former defaults | network, defaults now | random_forest "
             "| extra_trees | hist_gradient_boosting | recommended | its gap | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, n in cells:
        rs = [r for r in runs if r["case"] == case and r["n"] == n]
        old = [r for r in rs if r["variant"] == "batch128"]
        now = [r for r in rs if r["variant"] == "default"]
        refs = now or old
        row = [_ms([r["network"] for r in old]), _ms([r["network"] for r in now])]
        row += [_ms([r[a] for r in refs]) for a in REFS]
        rec = [r for r in now if r.get("recommended_test") is not None]
        row += [_ms([r["recommended_test"] for r in rec]), _ms([_gap(r) for r in rec])]
        data = "SYNTHETIC" if case in ("signal", "sequence") else "real"
        lines.append(f"| {case} | {data} | {rs[0]['metric']} | {n} | " + " | ".join(row) + f" | {len(refs)} |")
    tried = [v for v in VARIANTS if v not in ("batch128", "default") and any(r["variant"] == v for r in runs)]
    if tried:
        lines += ["", "Variants tried on the way (the network only; each pins the settings it names):", "",
                  "| case | n train | " + " | ".join(LABELS[v] for v in tried) + " |",
                  "|---|---|" + "---|" * len(tried)]
        for case, n in cells:
            rs = [r for r in runs if r["case"] == case and r["n"] == n]
            if any(r["variant"] in tried for r in rs):
                lines.append(f"| {case} | {n} | " + " | ".join(_tried_cell(rs, v, tried) for v in tried) + " |")
    return "\n".join(lines) + "\n\n" + summary(runs, cells) + "\n" + rules_table(runs, cells)


def _tried_cell(rs: list[dict], v: str, tried: list[str]) -> str:
    """The network's figure under variant ``v`` in one case/size row, saying so when fewer seeds ran."""
    full = max(sum(r["variant"] == t for r in rs) for t in tried)
    vals = [r["network"] for r in rs if r["variant"] == v]
    return _ms(vals) + (f" ({len(vals)} of {full} seeds)" if 0 < len(vals) < full else "")


RULES = ("best", "window 2")  # (tie_se 1 was the third, with references.tie_se, since removed)


def rule_pick(r: dict, rule: str) -> str:
    """What run ``r`` recommends under ``rule``: ``best`` (the network's best-epoch validation figure, a run's
    rule now) or ``window k`` (the mean of the epochs within k of the best, :func:`selection_optimism.pick`)."""
    return pick(r, rule)


def rules_table(runs: list[dict], cells: list[tuple[str, int]]) -> str:
    """Markdown: the recommended model's test gap to the best reference under each rule, per case and size."""
    rec = [r for r in runs if r["variant"] == "default" and "curve" in r]
    if not rec:
        return ""

    def test_of(r: dict, name: str) -> float:
        return {"student": r["student_test"], "student_baseline": r["network"]}.get(name, r.get(name))

    lines = ["", "What other recommendation rules would have chosen on the same runs (defaults now): the "
             "recommended model's gap to the best reference on test, mean ± std over seeds (points of accuracy, or "
             "% of the RMSE; + = better), and in brackets how many runs chose the network. `best`: the network's "
             "best-epoch validation figure (what a run does); `window 2`: the mean of the epochs within 2 of it "
             "(`benchmarks/selection_optimism.py`).", "",
             "| case | n train | n val | " + " | ".join(f"`{x}`" for x in RULES) + " |",
             "|---|---|---|" + "---|" * len(RULES)]
    for case, n in cells:
        rs = [r for r in rec if r["case"] == case and r["n"] == n]
        if not rs:
            continue
        row = []
        for rule in RULES:
            chosen = [rule_pick(r, rule) for r in rs]
            g = [gap(test_of(r, c), _best(r), r["metric"]) for r, c in zip(rs, chosen)]
            row.append(f"{ms(g, 2)} ({sum(c == 'student' for c in chosen)})")
        lines.append(f"| {case} | {n} | {rs[0]['n_val']} | " + " | ".join(row) + " |")
    for rule in RULES[1:]:
        behind = [r for r in rec if gap(test_of(r, rule_pick(r, rule)), _best(r), r["metric"])
                  < (-2.0 if r["metric"] == "rmse" else -1.0)]
        g = [gap(test_of(r, rule_pick(r, rule)), _best(r), r["metric"]) for r in rec]
        lines += ["", f"`{rule}`: median gap {np.median(g):+.1f}, mean {np.mean(g):+.1f}, worst {min(g):+.1f}; "
                  f"{len(behind)} of {len(rec)} runs more than 1 point (2% of the RMSE) behind."]
    g = [gap(test_of(r, rule_pick(r, "best")), _best(r), r["metric"]) for r in rec]
    lines += ["", f"`best`: median gap {np.median(g):+.1f}, mean {np.mean(g):+.1f}, worst {min(g):+.1f}."]
    return "\n".join(lines) + "\n"


def summary(runs: list[dict], cells: list[tuple[str, int]]) -> str:
    """Where the default network is at or above the best reference (mean over seeds), where it is not, and how
    far the recommended model is from the best reference on test."""
    wins, losses, fixed, recs = [], [], [], []
    for case, n in cells:
        now = [r for r in runs if r["case"] == case and r["n"] == n and r["variant"] == "default"]
        old = [r for r in runs if r["case"] == case and r["n"] == n and r["variant"] == "batch128"]
        if not now:
            continue
        sign = -1 if now[0]["metric"] == "rmse" else 1
        best = np.mean([_best(r) for r in now])
        net, net_old = np.mean([r["network"] for r in now]), np.mean([r["network"] for r in old]) if old else None
        (wins if sign * (net - best) >= 0 else losses).append(f"{case} n={n} ({net:.3f} vs {best:.3f})")
        if net_old is not None and sign * (net_old - best) < 0 <= sign * (net - best):
            fixed.append(f"{case} n={n}")
        recs += [(_gap(r), -2.0 if r["metric"] == "rmse" else -1.0) for r in now
                 if r.get("recommended_test") is not None]
    out = [f"The network with the defaults now is at or above the best reference (mean over seeds) on "
           f"{len(wins)} of {len(wins) + len(losses)} case/size cells: " + "; ".join(wins) + "."]
    if fixed:
        out.append("Of those, the former defaults lost on: " + "; ".join(fixed) + ".")
    if losses:
        out.append("It is below the best reference on: " + "; ".join(losses) + ". There the run's recommendation "
                   "(which sees the references on validation) is what protects the user.")
    if recs:
        g = [x for x, _ in recs]
        out.append(f"The recommended model's gap to the best reference on test, over every run: median "
                   f"{np.median(g):+.1f}, worst {min(g):+.1f} (points or % of the RMSE; + = better); "
                   f"{sum(x < lim for x, lim in recs)} of {len(recs)} runs more than 1 point (2% of the RMSE) "
                   "behind: with 15-100 validation samples the choice itself is noisy.")
    return "\n\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["aq-vector", "houston-vector", "houston-image", "houston-hsi",
                                                   "signal", "sequence"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[30, 100, 300])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["batch128", "default"], choices=list(VARIANTS))
    args = ap.parse_args()
    # a default run recorded before the validation figures were (no "curve") runs again for rules_table
    done = {(r["case"], r["n"], r["seed"], r["variant"]) for r in load_runs()
            if r["variant"] != "default" or "curve" in r}
    for case in args.cases:
        for n in args.sizes:
            for seed in args.seeds:
                for v in args.variants:
                    if (case, n, seed, v) in done:
                        continue
                    try:
                        r = one(case, n, seed, v)
                    except CmkdError as e:
                        print(f"{case}: skipped ({e})", flush=True)
                        break
                    append_run(RUNS, r)
                    refs = " ".join(f"{a[:3]} {r[a]:.3f}" for a in REFS if r[a] is not None)
                    print(f"{case} n={n} seed {seed} {v}: network {r['network']:.3f}  {refs}  ({r['seconds']} s)",
                          flush=True)
    runs = [r for r in load_runs() if r["case"] in args.cases]
    save("small_data", {"runs": runs}, table(runs))


if __name__ == "__main__":
    main()
