"""A classical teacher on a sequence: its frames and summary, or the summary alone (REAL Japanese Vowels).

Cross-validated selection (``cmkd.pipeline.crossval.choose_teacher``) weighs the network teacher against classical
models on the teacher's inputs. A sequence reaches a classical model as :func:`cmkd.classical.trees.flat_features`
builds it: every frame's channels (utterances of 7-29 frames padded with NaN to 29) plus the per-channel mean, std,
min and max (:func:`cmkd.classical.trees.sequence_summary`); with ``raw_sequences=False`` the summary alone. Frame
t of one utterance is not frame t of another, so the frames are mostly noise to a model on few labels.

For the Vowels case of ``benchmarks/small_real_cases.py`` (12 LPC channels, 9 speakers; label budgets 27 / 90 /
270, the rest of the training recordings paired and unlabelled), per seed, with cmkd's own classical models
(:func:`cmkd.classical.references.fit_on_labels`, the run's default forest size):

- the teacher (12 channels) fitted on the labelled recordings, both ways; its TEST accuracy;
- what a student learns from it: ExtraTrees on the student's 3 channels (frames + summary, as the run's tree
  student sees them) fitted to the teacher's labels on every training recording (the true label where known);
  its TEST accuracy.

No network is trained; nothing is selected on test. Writes ``benchmarks/vowels_teacher.json`` / ``.md``.

    python benchmarks/vowels_teacher.py [--seeds 0 1 2 3 4] [--budgets 27 90 270]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import ms, save
from small_real_cases import _vowels

from cmkd.classical.references import fit_on_labels
from cmkd.classical.trees import flat_features
from cmkd.config import DataConfig, ReferencesConfig, default_of
from cmkd.data.arrays import build_data

ALGORITHMS = ("extra_trees", "ridge")
MODES = {"frames + summary": True, "summary alone": False}


def one(budget: int, seed: int) -> dict:
    """Teacher and student test accuracy per algorithm and feature mode for one budget and seed."""
    arrays, cfg = _vowels("vowels", budget, seed)
    data = build_data(arrays, DataConfig(**cfg["data"]), seed=seed, source="vowels (REAL)")
    y = data.targets["speaker"]
    split = arrays["split"]
    lab = np.flatnonzero((split < 2) & (y >= 0))
    pool = np.flatnonzero(split < 2)
    test = np.flatnonzero(split == 2)
    n_est = default_of(ReferencesConfig, "n_estimators")
    out: dict = {"budget": budget, "seed": seed, "n_labelled": int(len(lab)), "n_paired": int(len(pool))}
    for algo in ALGORITHMS:
        for mode, raw in MODES.items():
            teacher = fit_on_labels(algo, data, ["lpc12"], lab, seed, n_est, raw_sequences=raw)
            probs = teacher.predict(flat_features(data, ["lpc12"], np.arange(data.n), raw_sequences=raw))
            pred = np.asarray(probs["speaker/logits"]).argmax(1)
            acc_t = float((pred[test] == y[test]).mean())
            pseudo = pred.copy()
            pseudo[lab] = y[lab]
            saved = data.targets["speaker"]
            data.targets["speaker"] = np.where(np.isin(np.arange(data.n), pool), pseudo, saved)
            student = fit_on_labels("extra_trees", data, ["lpc3"], pool, seed, n_est)
            data.targets["speaker"] = saved
            sp = np.asarray(student.predict(flat_features(data, ["lpc3"], test))["speaker/logits"]).argmax(1)
            out[f"{algo} | {mode}"] = {"teacher": acc_t, "student": float((sp == y[test]).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--budgets", type=int, nargs="+", default=[27, 90, 270])
    a = ap.parse_args()
    runs = [one(b, s) for b in a.budgets for s in a.seeds]
    keys = [f"{al} | {mo}" for al in ALGORITHMS for mo in MODES]
    lines = ["## A classical teacher on a sequence: frames + summary, or the summary alone "
             "(`python benchmarks/vowels_teacher.py`)", "",
             f"REAL Japanese Vowels (12 LPC channels -> 9 speakers), seeds {a.seeds}, TEST accuracy, mean ± std over "
             "seeds. Teacher: fitted on the labelled recordings' 12 channels. Student: ExtraTrees on 3 channels "
             "(frames + summary) fitted to that teacher's labels on every training recording.", "",
             "| labels | teacher | features | teacher test | student from it, test |", "|---|---|---|---|---|"]
    for b in a.budgets:
        rs = [r for r in runs if r["budget"] == b]
        for k in keys:
            al, mo = k.split(" | ")
            lines.append(f"| {b} | {al} | {mo} | {ms([r[k]['teacher'] for r in rs])} | "
                         f"{ms([r[k]['student'] for r in rs])} |")
    save("vowels_teacher", runs, "\n".join(lines))


if __name__ == "__main__":
    main()
