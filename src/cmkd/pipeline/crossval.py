"""Selection by cross-validation when labels are few, and the teacher chosen by evidence.

With at most :data:`CV_MAX_LABELS` labelled samples (training + validation), one validation split of a handful of
samples cannot tell candidates apart (benchmarks/small_real.py). The run then decides by k-fold cross-validation
over every labelled sample (:func:`make_folds`: stratified by class, grouped by ``data.groups`` when the data
declare blocks of space or time, otherwise shuffled):

1. :func:`choose_teacher` (after the network teacher has trained): the teacher is the better, by cross-validation, of
   the network and :data:`TEACHERS` (linear models and ExtraTrees) on the teacher's inputs (a sequence as its per-
   channel summary alone: frame t of one recording is not frame t of another; on Japanese Vowels with 27 labels,
   ExtraTrees on the 12 channels' summaries scored 0.886 test accuracy against 0.844 with the frames too, ridge 0.893
   against 0.878, 5 seeds; with 90 and 270 labels within a point: benchmarks/vowels_teacher.md). The network is
   chosen only where it beats the best classical teacher by more than one paired standard error of the folds: a
   network fitted on a few dozen labels is the likelier to be the worse teacher (Japanese Vowels, 27 labels, seed 4:
   the network won cross-validation by one recording of 27 and scored 0.79 on test where the classical teachers score
   0.85-0.92). A classical teacher is refitted on every labelled sample and its predictions become the students' soft
   targets (the network student then learns from its outputs only: the feature and relation terms need a network
   teacher).
2. :func:`label_only` (after student_baseline has trained): the label-only candidates on the student's inputs (the
   references on labels and student_baseline). If the chosen teacher is worse than the best of them in cross-
   validation by more than one paired standard error of the folds (:func:`teacher_worse`), distillation is skipped:
   the run says so and the student is the baseline. Within noise distillation goes on and the cross-validated
   recommendation, where the label-only models stay candidates, decides (skipping on any negative gain skipped
   Japanese Vowels' 12-channel teachers (0.886-0.893 test accuracy on their own, benchmarks/vowels_teacher.md) on a
   gain of -1 of 27 samples, standard error 2-3 samples). (Skipping also where the teacher's gain was positive but
   within one paired standard error was tried: on Tecator with 20 labels, seed 0, it skipped a teacher 0.59 RMSE
   better, standard error 1.78, and the run handed over ridge on labels at 11.4 test RMSE.)
3. :func:`distilled` (after the distilled student): the candidates that learn from the teacher (the references
   on its pseudo-labels, self-training, the tree student, the distilled network); each fold's teacher is refitted
   without that fold, so no candidate sees the labels it is scored on. The distilled network is replaced by
   student_baseline where the baseline is better in cross-validation.

Networks in the folds train for the epoch count their own early stopping chose on the validation split (choosing
it inside each fold instead changed no recommendation on Japanese Vowels with 270 labels: benchmarks/fold_epochs.md),
a fold's distilled network on every sample the deployed one sees but the held-out fold (a cap on its unlabelled
samples was tried and dropped: benchmarks/cv_cost.md). The
recommendation (:func:`cmkd.pipeline.classical_stage.classical_finish`) then compares every candidate's
cross-validated figure (a tie goes to a model that learnt from the teacher: :func:`learnt_from_teacher`), and the
deployed models are refitted on every labelled sample (``student.refit``).

With several targets the figure is one yardstick over all (:class:`cmkd.evaluation.metrics.Yardstick`): the mean
over targets of the RMSE divided by the target's standard deviation on the labelled training samples, or of the
error rate (1 - accuracy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cmkd.classical.references import ReferenceSettings, fit_on_labels, references
from cmkd.classical.trees import FitMemo, TreeStudent, flat_features, trim_heap
from cmkd.data.arrays import UNLABELLED, MultimodalData
from cmkd.evaluation.metrics import Yardstick, predict, task_metrics
from cmkd.nn.checkpoint import build_model
from cmkd.pipeline.state import RunState
from cmkd.training.distill import best_epoch, make_loss, teacher_loss
from cmkd.training.fit import FitSettings, batch_size_for, fit, set_seed

CV_MAX_LABELS = 500  # at most this many labelled samples (train + validation): selection by cross-validation
FOLDS = 5
TEACHERS = {"regression": ("ridge", "pls", "extra_trees"), "classification": ("ridge", "extra_trees")}
STUDENT_LINEAR = ("ridge",)  # a linear reference on the student's inputs beside the forests, in cross-validation
NO_NETWORK_TEACHER = ("feature", "relation", "contrastive")  # terms that need a network teacher's features


def applies(st: RunState) -> bool:
    """Does this run select by cross-validation: few labels, one teacher, no aggregation rounds, one process?"""
    from cmkd.training.distributed import world_size

    if st.cfg.teachers or st.cfg.distill.chain or world_size() > 1:
        return False
    if st.recipe is not None and st.recipe.aggregate is not None:
        return False
    return len(st.train) + len(st.val) <= CV_MAX_LABELS


def make_folds(data: MultimodalData, pool: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None
               ) -> list[np.ndarray]:
    """``pool`` split into at most ``k`` held-out folds (sorted indices): whole groups together when ``groups``
    (an (N,) array) is given, else stratified by the first target's class for classification (as many folds as
    the rarest class allows, at least 2), else shuffled."""
    rng = np.random.default_rng([seed, 7])
    if groups is not None:
        g = np.asarray(groups)[pool]
        uniq = rng.permutation(np.unique(g))
        k = max(2, min(k, len(uniq)))
        which = {u: i % k for i, u in enumerate(uniq)}
        fold_of = np.array([which[x] for x in g])
    else:
        first = next(iter(data.target_kinds))
        if data.target_kinds[first] == "classification":
            y = data.targets[first][pool]
            _, counts = np.unique(y[y != UNLABELLED], return_counts=True)
            k = max(2, min(k, int(counts.min()) if len(counts) else k))
            fold_of = np.zeros(len(pool), int)
            for c in np.unique(y):
                rows = rng.permutation(np.flatnonzero(y == c))
                fold_of[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
        else:
            k = max(2, min(k, len(pool)))
            fold_of = rng.permutation(len(pool)) % k
    return [np.sort(pool[fold_of == f]) for f in range(k) if (fold_of == f).any()]


def summary(per_fold: list[float]) -> dict:
    """Mean and standard error of per-fold figures."""
    v = np.asarray(per_fold, float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # none: a model not fitted (too few rows)
    return {"mean": mean, "se": se, "folds": [float(x) for x in v]}


def paired_se(a: list[float], b: list[float]) -> float:
    """Standard error of the mean per-fold difference ``a - b``."""
    d = np.asarray(a, float) - np.asarray(b, float)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("inf")


def lead(a: list[float], b: list[float], higher_is_better: bool) -> tuple[float, float]:
    """How far per-fold figures ``a`` are ahead of ``b``: the difference of their means (positive = ``a`` better)
    and the paired standard error of the per-fold differences (inf where the fold counts differ)."""
    ahead = (summary(a)["mean"] - summary(b)["mean"]) * (1 if higher_is_better else -1)
    return ahead, paired_se(a, b) if len(a) == len(b) else float("inf")


def _fold_net(st: RunState, role: str, mods: list[str], mcfg, loss, fit_idx: np.ndarray,  # noqa: ANN001
              seed: int, cache: dict | None = None, mask: np.ndarray | None = None) -> dict:
    """A network trained on ``fit_idx`` for ``role``'s chosen epoch count (no validation samples, so no per-epoch
    scoring: the held-out fold is scored once, by the caller); its predictions on every sample."""
    data = st.data
    ep = best_epoch(st.histories, role, st.sign)
    fcfg = mcfg.model_copy(update={"epochs": ep, "patience": ep + 1,
                                   "batch_size": batch_size_for(mcfg, len(fit_idx))})
    set_seed(seed)
    net = build_model(data, mods, mcfg, st.cfg)
    net.set_stats(st.stats)
    fit(net, data, fit_idx, fit_idx[:0], fcfg, loss,
        FitSettings(seed=seed, target_stats=st.stats, teacher_cache=cache, kd_mask=mask, quiet=True,
                    desc=f"{role} (fold)", device=st.dev, select_best=False))
    return predict(net, data, np.arange(data.n), device=st.dev)


def _ref_settings(st: RunState, algorithms: tuple[str, ...], kinds: tuple[str, ...], raw_sequences: bool = True
                  ) -> ReferenceSettings:
    r = st.cfg.references
    return ReferenceSettings(seed=st.cfg.seed, n_estimators=r.n_estimators, algorithms=algorithms, kinds=kinds,
                             refit=False, n_jobs=1, raw_sequences=raw_sequences, val_parts=False)


def _say(st: RunState, text: str) -> None:
    if not st.quiet:
        print(f"cross-validation: {text}", flush=True)


def classical_cache(preds: dict[str, np.ndarray], data: MultimodalData, stats: dict) -> dict:
    """A classical model's predictions (``t/value`` | ``t/logits``, every sample) as the students' teacher cache:
    ``{t: {"mean": standardised value, "value"}}`` or ``{t: {"logits": log-probabilities}}``."""
    out: dict = {}
    for t, kind in data.target_kinds.items():
        if kind == "classification" and f"{t}/logits" in preds:
            out[t] = {"logits": torch.from_numpy(np.asarray(preds[f"{t}/logits"], np.float32))}
        elif f"{t}/value" in preds:
            v = np.asarray(preds[f"{t}/value"], np.float32).reshape(data.n, -1)
            s = stats.get(f"tg:{t}", {"mean": 0.0, "std": 1.0})
            mean = np.nan_to_num((v - s["mean"]) / s["std"]).astype(np.float32)
            out[t] = {"mean": torch.from_numpy(mean), "value": torch.from_numpy(v)}
    return out


def setup(st: RunState) -> None:
    """Start cross-validated selection: the pool (every labelled training and validation sample), the folds, the
    yardstick; the deployed models are refitted on the pool (``student.refit``)."""
    data, cfg = st.data, st.cfg
    st.cv_pool = np.sort(np.concatenate([st.train, st.val]))
    groups = st.arrays.get(cfg.data.groups) if cfg.data.groups else None
    st.cv_groups = groups
    st.cv_folds = make_folds(data, st.cv_pool, FOLDS, cfg.seed, groups)
    st.cv_yard = Yardstick(data, st.train)
    cfg.student.refit = True
    if cfg.references.algorithms:  # a linear reference beside the forests (on spectra, often the best)
        cfg.references.algorithms = [*cfg.references.algorithms, *(a for a in STUDENT_LINEAR
                                                                   if a not in cfg.references.algorithms)]
    st.cv = {"selected_by": "cross-validation", "folds": len(st.cv_folds), "pool": int(len(st.cv_pool)),
             "blocked_by": cfg.data.groups, "stratified": groups is None and "classification" ==
             data.target_kinds[next(iter(data.target_kinds))], "metric": st.cv_yard.name,
             "higher_is_better": st.cv_yard.higher_is_better, "threshold": CV_MAX_LABELS,
             "candidates": {}, "teacher": {}}


def teacher_choice(per: dict[str, list[float]], higher_is_better: bool) -> str:
    """The teacher from its candidates' per-fold figures ``per`` (``network`` and classical models): the best mean,
    but the network only where it beats the best classical candidate by more than one paired standard error."""
    ok = {k: summary(v)["mean"] for k, v in per.items()}
    ok = {k: m for k, m in ok.items() if np.isfinite(m)}
    pick = max if higher_is_better else min
    best = pick(ok, key=ok.get)
    classical = [k for k in ok if k != "network"]
    if best == "network" and classical:
        rival = pick(classical, key=ok.get)
        ahead, se = lead(per["network"], per[rival], higher_is_better)  # se NaN where a fold lacks a figure
        if np.isfinite(se) and ahead <= se:
            best = rival
    return best


def choose_teacher(st: RunState) -> None:
    """The teacher: the network or one of :data:`TEACHERS` on the teacher's inputs, whichever is best in
    cross-validation. Keeps the chosen teacher's per-fold outputs (for :func:`distilled`) in ``st.cv_teacher``."""
    data, cfg, yard = st.data, st.cfg, st.cv_yard
    tmods = list(cfg.teacher.modalities)
    kind = data.target_kinds[next(iter(data.target_kinds))]
    folds = [data.all_present(tmods, f) for f in st.cv_folds]
    pool = data.all_present(tmods, st.cv_pool)
    per: dict[str, list[float]] = {"network": []}
    outs: dict[str, list[dict]] = {"network": []}
    fitted: list[dict] = []
    algos = TEACHERS[kind]
    _say(st, f"choosing the teacher among the network and {', '.join(algos)} on {len(folds)} folds of "
             f"{len(pool)} labelled samples")
    for f, hold in enumerate(folds):
        fit_idx = np.setdiff1d(pool, hold)
        p = _fold_net(st, "teacher", tmods, cfg.teacher, teacher_loss(cfg.teacher), fit_idx,
                      cfg.seed + 5000 + f)
        outs["network"].append(p)
        per["network"].append(yard(task_metrics(data, hold, {k: v[hold] for k, v in p.items()})))
        models: dict = {}
        refs = references(data, tmods, fit_idx, fit_idx, hold, hold, models=models,
                          settings=_ref_settings(st, algos, ("labels",), raw_sequences=False))
        for a in algos:
            per.setdefault(a, []).append(yard(refs[a]["val"]) if a in refs else np.nan)
        fitted.append(models)
    figs = {k: summary(v) for k, v in per.items()}
    ok = {k: v["mean"] for k, v in figs.items() if np.isfinite(v["mean"])}
    best = teacher_choice(per, yard.higher_is_better)
    st.cv["teacher"] = {"chosen": best, "candidates": figs}
    x_all = None
    if best == "network":
        st.cv_teacher = outs["network"]
    else:
        x_all = flat_features(data, tmods, np.arange(data.n), raw_sequences=False)
        st.cv_teacher = [fitted[f][best].predict(x_all) for f in range(len(folds))]
        preds = fit_on_labels(best, data, tmods, pool, cfg.seed, cfg.references.n_estimators,
                              raw_sequences=False).predict(x_all)
        st.cache = classical_cache(preds, data, st.stats)
        st.teacher_classical = best
        w = cfg.distill.weights
        cfg.distill.weights = {k: v for k, v in w.items() if k not in NO_NETWORK_TEACHER}
    _say(st, f"teacher: {best} ({yard.name} {ok[best]:.4g}; "
             + ", ".join(f"{k} {v:.4g}" for k, v in ok.items() if k != best) + ")")


def _fold_cache(st: RunState, f: int) -> dict:
    """Fold ``f``'s teacher outputs as the students' teacher cache (a network's, or a classical model's)."""
    from cmkd.training.teachers import cache_of

    p = st.cv_teacher[f]
    if "features" in p:
        return cache_of(p, list(st.data.target_kinds))
    return classical_cache(p, st.data, st.stats)


def _score(st: RunState, name: str, per_fold: list[float]) -> None:
    st.cv["candidates"][name] = summary(per_fold)


def teacher_worse(gain: float, se: float) -> bool:
    """Is the teacher worse than the best label-only model beyond noise: its cross-validated ``gain`` (positive =
    the teacher is better) below minus one paired standard error ``se`` (not finite: below 0)?"""
    return gain < -(se if np.isfinite(se) else 0.0)


def label_only(st: RunState) -> None:
    """The label-only candidates on the student's inputs in cross-validation; skips distillation (``st.skip``)
    when the chosen teacher is worse than the best of them beyond noise (:func:`teacher_worse`; the gain and its
    paired standard error are reported either way; within noise distillation goes on and the recommendation
    decides)."""
    data, cfg, yard = st.data, st.cfg, st.cv_yard
    smods = list(cfg.student.modalities)
    algos = tuple(cfg.references.algorithms)
    per: dict[str, list[float]] = {"student_baseline": []}
    for f, hold in enumerate(st.cv_folds):
        fit_idx = np.setdiff1d(st.cv_pool, hold)
        p = _fold_net(st, "student_baseline", smods, cfg.student,
                      make_loss(cfg, cfg.student.width, None, baseline=True), fit_idx, cfg.seed + 6000 + f)
        per["student_baseline"].append(yard(task_metrics(data, hold, {k: v[hold] for k, v in p.items()})))
        if algos:
            refs = references(data, smods, fit_idx, fit_idx, hold, hold, settings=_ref_settings(st, algos, ("labels",)))
            for a in algos:
                per.setdefault(a, []).append(yard(refs[a]["val"]) if a in refs else np.nan)
    for k, v in per.items():
        _score(st, k, v)
    cands = {k: v["mean"] for k, v in st.cv["candidates"].items() if np.isfinite(v["mean"])}
    best = (max if yard.higher_is_better else min)(cands, key=cands.get)
    t = st.cv["teacher"]
    t_folds = t["candidates"][t["chosen"]]["folds"]
    b_folds = per[best]
    gain, se = lead(t_folds, b_folds, yard.higher_is_better)
    t.update({"best_label_only": best, "gain_over_label_only": gain, "paired_se": se})
    if teacher_worse(gain, se):
        st.skip = (f"the teacher is worse than the best model trained on labels alone ({best}) in "
                   f"cross-validation over {len(b_folds)} folds: the teacher ({t['chosen']}) gains {gain:+.4g} "
                   f"{yard.name}, beyond its standard error {se:.3g}; distillation skipped")
        t["skipped"] = st.skip
        _say(st, st.skip)


def distilled(st: RunState) -> None:
    """The candidates that learn from the teacher, in cross-validation (each fold's teacher refitted without the
    fold); the distilled network replaced by student_baseline (``st.safe["fallback"]``) where it is not better."""
    data, cfg, yard = st.data, st.cfg, st.cv_yard
    smods = list(cfg.student.modalities)
    algos = tuple(cfg.references.algorithms)
    everyone = np.union1d(st.train_all, st.cv_pool)
    per: dict[str, list[float]] = {"student": []}
    folds = []
    for f, hold in enumerate(st.cv_folds):  # the networks first, beside the run's own classical fits
        all_idx = np.setdiff1d(everyone, hold)
        cache = _fold_cache(st, f)
        tout = {f"{t}/{k}": v.numpy() for t, part in cache.items() if isinstance(part, dict)
                for k, v in part.items()}
        folds.append((hold, np.setdiff1d(st.cv_pool, hold), all_idx, tout))
        p = _fold_net(st, "student", smods, cfg.student,
                      make_loss(cfg, cfg.student.width, st.teacher.width), all_idx, cfg.seed + 7000 + f,
                      cache=cache, mask=st.kd_mask)
        per["student"].append(yard(task_metrics(data, hold, {k: v[hold] for k, v in p.items()})))
    if st.classical is not None:  # then the forests, once the run's own are fitted: one set in memory at a time
        st.classical.result()
    trim_heap()
    for hold, fit_idx, all_idx, tout in folds:
        memo = FitMemo()  # the fold's tree student is its extra_trees_teacher_labels forest where the rows agree
        if algos:
            refs = references(data, smods, fit_idx, all_idx, hold, hold, tout, st.kd_mask,
                              settings=_ref_settings(st, algos, ("teacher_labels", "self_training")), memo=memo)
            for name, e in refs.items():
                per.setdefault(name, []).append(yard(e["val"]))
        if cfg.trees.n_estimators:
            ts = TreeStudent(smods, n_estimators=cfg.trees.n_estimators, seed=cfg.seed, n_jobs=1)
            ts.fit(data, all_idx, tout, st.kd_mask, None, memo=memo)
            per.setdefault("student_trees", []).append(yard(task_metrics(data, hold, ts.predict(data, hold))))
            del ts
        memo.clear()
        trim_heap()
    for k, v in per.items():
        if len(v) == len(st.cv_folds):
            _score(st, k, v)
    c = st.cv["candidates"]
    if "student_baseline" in c and yard.better(c["student_baseline"]["mean"], c["student"]["mean"]):
        st.safe["fallback"] = True
    _say(st, ", ".join(f"{k} {v['mean']:.4g}" for k, v in c.items()))


def learnt_from_teacher(st: RunState) -> list[str]:
    """The candidates that learnt from the teacher (it was not worse than every label-only model beyond noise in
    cross-validation, or the run would have skipped distillation): they win a tie in cross-validation, which on
    tens of labels is coarse (one sample of 27 is 0.037 accuracy)."""
    if st.skip:
        return []
    names = [k for k in st.cv["candidates"] if k == "student_trees" or k.endswith("_teacher_labels")]
    return names + ([] if st.safe.get("fallback") else ["student"])


def distilled_within_noise(figs: dict[str, float], folds: dict[str, list[float]], prefer: list[str], chosen: str,
                           higher_is_better: bool, source: str = "cross-validation") -> tuple[str, str] | None:
    """Where the choice ``chosen`` learnt from the labels alone and the best candidate that learnt from the teacher
    (``prefer``) trails it by no more than one paired standard error: that candidate and why (None otherwise).
    ``folds``: per-candidate figures on the same held-out parts (the folds of cross-validation, or the parts of the
    validation split, :data:`cmkd.evaluation.metrics.VAL_PARTS`). The teacher was not worse than the label-only
    models beyond noise (or the run would have skipped distillation), and the distilled candidates saw the paired
    unlabelled samples too; on tens of labels the folds' ranking is mostly noise (Japanese Vowels, 27 labels: one
    recording of 27 is 0.037), and on a validation split the lead can be as small (Houston 2013 at 1% labels, seed
    4: self-training led the best distilled candidates by 9 pixels of 632)."""
    sign = -1.0 if higher_is_better else 1.0
    ok = [k for k in prefer if k in figs and np.isfinite(figs[k]) and k in folds]
    if chosen in prefer or not ok or chosen not in folds:
        return None
    best = min(ok, key=lambda k: (sign * figs[k], k))
    ahead, se = lead(folds[chosen], folds[best], higher_is_better)
    if not np.isfinite(se) or ahead > se:
        return None
    what, parts = (("cross-validated", "folds") if source == "cross-validation"
                   else ("validation", "validation split's parts"))
    return best, (f"{chosen} ({what} {figs[chosen]:.4g}) is ahead of {best} ({figs[best]:.4g}), the best "
                  f"model that learnt from the teacher, by {ahead:.3g}, within one paired standard error of the "
                  f"{parts} ({se:.3g}): {best} is recommended")


def _per_candidate(st: RunState, key: str) -> dict:
    """``key`` (``mean`` or ``folds``) of every candidate as the recommendation compares them (``student``: the
    deployed network, the baseline's where it replaced the distilled one)."""
    c = {k: v[key] for k, v in st.cv["candidates"].items()}
    if st.safe.get("fallback") and "student_baseline" in c:
        c["student"] = c["student_baseline"]
    c.pop("student_baseline", None)
    return c


def fold_figures(st: RunState) -> dict[str, list[float]]:
    """Each candidate's per-fold figures, as :func:`figures` maps them."""
    return _per_candidate(st, "folds")


def figures(st: RunState) -> dict[str, float]:
    """Each candidate's cross-validated figure, as the recommendation compares them."""
    return _per_candidate(st, "mean")
