"""Classical references on the student's modalities, and the choice of the deployable student.

:func:`references` trains, on the student's features (:func:`cmkd.classical.trees.flat_features`: modalities flattened,
NaN kept, text as a bag of hashed words), RandomForest, ExtraTrees and HistGradientBoosting

- ``<algo>``: on the labelled training samples;
- ``<algo>_teacher_labels``: on the teacher's pseudo-labels over every training sample the teacher saw (its
  argmax class or its mean; the true label where known): the classical cross-modal baseline;
- ``<algo>_self_training``: one round of self-training: the labels-only model labels the unlabelled training
  samples itself (its class or value), then a fresh model is fitted on labels plus those pseudo-labels (for the
  algorithms in ``self_training``; a run's is ExtraTrees only, :data:`SELF_TRAINING`).

The last two exist only where unlabelled training samples exist (and, for the first, a teacher). Each entry holds
the test metrics (flat, as :func:`cmkd.evaluation.metrics.task_metrics` names them, so a recipe's own ``references()``
hook and these print alike), ``val`` (the same metrics on validation: what :func:`recommend` compares), and how it
was fitted. Every fit is capped (``n_estimators`` trees, at most :data:`MAX_FIT_SAMPLES` training samples, drawn
at random) so that they add little to a run. :class:`ReferenceSettings` holds how they are fitted.

:func:`recommend` picks the deployable student: the best on validation, ties broken toward the cheaper model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cmkd.classical.linear import LINEAR, linear_model
from cmkd.classical.trees import LOG_EPS, FitMemo, Spilled, fit_once, flat_features, forest, soft_targets
from cmkd.config import ExperimentConfig, ReferencesConfig, StudentConfig, default_of
from cmkd.data.arrays import TEXT_VOCAB, UNLABELLED, MultimodalData
from cmkd.evaluation.metrics import HIGHER_IS_BETTER, part_metrics, task_metrics

ALGORITHMS = ("random_forest", "extra_trees", "hist_gradient_boosting", "ridge", "pls")
KINDS = ("labels", "teacher_labels", "self_training")  # what a reference is trained on (``trained_on``)
MAX_FIT_SAMPLES = 20000  # training samples per fit at most (a seeded random subset beyond)
# which algorithms also get one round of self-training: ExtraTrees only, the cheapest (over the 50 runs of
# benchmarks/label_fraction.py a self-training reference was never the best on validation; HistGradientBoosting's
# cost most of the stage's time)
SELF_TRAINING = ("extra_trees",)
# HistGradientBoosting needs this many rows to split once (twice scikit-learn's min_samples_leaf, 20): on fewer it is
# a constant, the labels' mean or commonest class, and it is not fitted (on Tecator with 20 labels, seed 4, that
# constant won cross-validation by chance: 13.7 test RMSE, ridge on the same labels 12.4)
HGB_MIN_ROWS = 40
# the cheaper model wins a tie on validation: references (one line of scikit-learn) < tree student < network
SIMPLICITY = {"reference": 0, "student_trees": 1, "student": 2}
@dataclass(frozen=True)
class ReferenceSettings:
    """How :func:`references` fits; the defaults are the config's (:class:`cmkd.config.ReferencesConfig`).

    Attributes:
        seed: random state.
        n_estimators: trees per forest, boosting iterations of HistGradientBoosting.
        algorithms: which of :data:`ALGORITHMS`.
        self_training: which of ``algorithms`` also get the ``_self_training`` reference.
        kinds: which of :data:`KINDS` to fit (``labels`` and ``self_training`` need no teacher: they can start
            while it trains).
        refit: as a network with ``student.refit``: once its validation figure is taken, each reference is fitted
            again on its training rows plus the labelled validation samples (their labels); its test metrics and
            the model kept are that refit's (``refit_on_val``: how many validation samples it added).
        n_jobs: threads of the forests and of HistGradientBoosting (OpenMP); a callable is asked before each fit
            (the figures do not depend on it).
        text_vocab: hashed vocabulary size of text modalities.
        max_fit_samples: at most this many training samples per fit (a seeded random subset).
        raw_sequences: False: a sequence modality's features are its per-channel summary alone (see
            :func:`cmkd.classical.trees.flat_features`).
        val_parts: the validation figures of each part of the validation split too (``val_parts``, for the
            recommendation's paired standard error); False where the caller scores whole folds.
    """

    seed: int = 0
    n_estimators: int = default_of(ReferencesConfig, "n_estimators")
    algorithms: tuple[str, ...] = tuple(default_of(ReferencesConfig, "algorithms"))
    self_training: tuple[str, ...] = SELF_TRAINING
    kinds: tuple[str, ...] = KINDS
    refit: bool = default_of(StudentConfig, "refit")
    n_jobs: int | Callable[[], int] | None = 1
    text_vocab: int = TEXT_VOCAB
    max_fit_samples: int = MAX_FIT_SAMPLES
    raw_sequences: bool = True
    val_parts: bool = True

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, **run: object) -> ReferenceSettings:
        """The settings of a run of ``cfg`` (``references``, ``seed``, ``student.refit``); ``run``: the run's own
        (``kinds``, ``n_jobs``)."""
        r = cfg.references
        return cls(seed=cfg.seed, n_estimators=r.n_estimators, algorithms=tuple(r.algorithms),
                   refit=cfg.student.refit, **run)  # type: ignore[arg-type]


class _Model:
    """One fitted estimator per target, predicting in :func:`cmkd.evaluation.metrics.predict`'s format."""

    def __init__(self, algorithm: str, data: MultimodalData, seed: int, n_estimators: int,
                 n_jobs: int | Callable[[], int] | None, memo: FitMemo | None = None) -> None:
        self.algorithm, self.data, self.seed, self.n_estimators, self.n_jobs = (algorithm, data, seed,
                                                                                n_estimators, n_jobs)
        self.memo = memo
        self.models: dict[str, list] = {}

    def _jobs(self) -> int | None:  # a callable is read when a fit starts (the thread budget may have grown)
        return self.n_jobs() if callable(self.n_jobs) else self.n_jobs

    def _est(self, classification: bool, n_features: int, i: int):  # noqa: ANN202
        if self.algorithm in LINEAR:
            return linear_model(self.algorithm, classification, self.seed + i)
        if self.algorithm == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

            cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
            return cls(max_iter=self.n_estimators, random_state=self.seed + i)
        return forest(self.algorithm, classification, self.n_estimators, self.seed + i, self._jobs(), n_features)

    def _threads(self):  # noqa: ANN202 - OpenMP threads of HistGradientBoosting: n_jobs (all for None / -1)
        from threadpoolctl import threadpool_limits

        n = self._jobs()
        return threadpool_limits(limits=n if n and n > 0 else None, user_api="openmp")

    def _fit_one(self, est, x: np.ndarray, y: np.ndarray):  # noqa: ANN001, ANN202
        # the thread budget is read per estimator (per output column of HistGradientBoosting): one widened while
        # a model's columns are fitted serves its next columns
        with self._threads():
            return est.fit(x, y)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per target ``t/logits`` (log of the class probabilities over every class) or ``t/value``."""
        with self._threads():
            return self._predict(x)

    def fit(self, x: np.ndarray, ys: dict[str, np.ndarray]) -> _Model:
        """``ys``: target -> (n,) class ids or (n, K) values, NaN / -1 where that sample has none.

        Columns constant over ``x`` (e.g. words of a bag that never occur) are dropped first. A target with too few
        rows to fit (2; :data:`HGB_MIN_ROWS` for HistGradientBoosting) gets no model."""
        need = HGB_MIN_ROWS if self.algorithm == "hist_gradient_boosting" else 2
        finite = np.where(np.isnan(x), np.inf, x)
        self.keep = (finite != finite[:1]).any(axis=0) if len(x) else np.ones(x.shape[1], bool)
        x = x[:, self.keep]
        for i, (t, y) in enumerate(ys.items()):
            kind = self.data.target_kinds[t]
            if kind == "classification":
                ok = y != UNLABELLED
                if len(np.unique(y[ok])) < 2 or ok.sum() < need:
                    continue
                self.models[t] = [self._fit_one(self._est(True, x.shape[1], i), x[ok], y[ok])]
            else:
                y = y.reshape(len(y), -1)
                if self.algorithm == "hist_gradient_boosting":  # one model per output column
                    cols = []
                    for k in range(y.shape[1]):
                        ok = ~np.isnan(y[:, k])
                        cols.append(self._fit_one(self._est(False, x.shape[1], i), x[ok], y[ok, k])
                                    if ok.sum() >= need else None)
                    if any(c is not None for c in cols):
                        self.models[t] = cols
                else:
                    ok = ~np.isnan(y).any(axis=1)
                    if ok.sum() >= 2:
                        yy = y[ok, 0] if y.shape[1] == 1 else y[ok]
                        self.models[t] = [fit_once(self._est(False, x.shape[1], i), x[ok], yy, self.memo)]
        self.memo = None  # fitted: a kept model must not keep every forest of the memo alive
        return self

    def spill(self) -> None:
        """Move the fitted estimators to a temporary file (:class:`cmkd.classical.trees.Spilled`) until
        :meth:`restore`; predicting needs them back."""
        self._spilled, self.models = Spilled(self.models), {}

    def restore(self) -> _Model:
        """The estimators back in memory after :meth:`spill` (a no-op otherwise); returns the model."""
        if getattr(self, "_spilled", None) is not None:
            self.models, self._spilled = self._spilled.load(), None
        return self

    def _predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        x = x[:, self.keep]
        for t, ms in self.models.items():
            if self.data.target_kinds[t] == "classification":
                m = ms[0]
                p = np.zeros((len(x), len(self.data.classes[t])))
                p[:, m.classes_] = m.predict_proba(x)
                out[f"{t}/logits"] = np.log(np.clip(p, LOG_EPS, None))
            else:
                k = self.data.targets[t].shape[1]
                if len(ms) == 1 and self.algorithm != "hist_gradient_boosting":
                    out[f"{t}/value"] = ms[0].predict(x).reshape(len(x), -1)
                else:
                    out[f"{t}/value"] = np.stack([m.predict(x) if m is not None else np.full(len(x), np.nan)
                                                  for m in ms], axis=1).reshape(len(x), k)
        return out


def fit_on_labels(algorithm: str, data: MultimodalData, modalities: list[str], idx: np.ndarray, seed: int,
                  n_estimators: int, raw_sequences: bool = True) -> _Model:
    """One model of ``algorithm`` fitted on the labels of samples ``idx`` (its ``predict`` takes
    :func:`cmkd.classical.trees.flat_features` of ``modalities`` with the same ``raw_sequences``)."""
    x = flat_features(data, modalities, idx, raw_sequences=raw_sequences)
    return _Model(algorithm, data, seed, n_estimators, 1).fit(x, _labels(data, idx))


def _labels(data: MultimodalData, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {t: data.targets[t][idx] for t in data.target_kinds}


def _pseudo(data: MultimodalData, idx: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Labels where known, else the predicted class or value (``preds`` in predict format, rows of ``idx``)."""
    out = {}
    for t, kind in data.target_kinds.items():
        y = data.targets[t][idx].copy()
        if kind == "classification" and f"{t}/logits" in preds:
            miss = y == UNLABELLED
            y[miss] = preds[f"{t}/logits"][miss].argmax(axis=1)
        elif kind == "regression" and f"{t}/value" in preds:
            y = y.reshape(len(idx), -1)
            miss = np.isnan(y)
            y[miss] = preds[f"{t}/value"][miss]
        out[t] = y
    return out


def _teacher_rows(data: MultimodalData, train_all: np.ndarray, teacher: dict[str, np.ndarray],
                  teacher_mask: np.ndarray | None) -> set[int]:
    """Positions in ``train_all`` where the teacher supplies a target for at least one target."""
    rows: set[int] = set()
    for t in data.target_kinds:
        r, _ = soft_targets(data, t, train_all, teacher, teacher_mask)
        rows.update(r.tolist())
    return rows


def _teacher_labels(data: MultimodalData, t_idx: np.ndarray, teacher: dict[str, np.ndarray],
                    teacher_mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """Targets of samples ``t_idx``: the labels where known, else the teacher's prediction (labels only where
    the teacher saw nothing)."""
    tp = {k: np.asarray(v)[t_idx] for k, v in teacher.items() if "/" in k}
    ys = _pseudo(data, t_idx, tp)
    if teacher_mask is not None:  # no teacher there: labels only
        seen = np.asarray(teacher_mask, bool)[t_idx]
        for t, kind in data.target_kinds.items():
            own = data.targets[t][t_idx]
            ys[t][~seen] = own[~seen] if kind == "classification" else own.reshape(len(t_idx), -1)[~seen]
    return ys


def _entry(data: MultimodalData, val: np.ndarray, test: np.ndarray, x_val: np.ndarray, x_test: np.ndarray,
           algo: str, how: str, model: _Model, n_fit: int, t0: float, val_model: _Model | None = None,
           parts: bool = True) -> dict:
    """A reference's result: test metrics (of ``model``), validation metrics (of ``val_model``, default
    ``model``; with ``parts`` also per part of the validation split, ``val_parts``), how it was trained and its
    fit time."""
    entry: dict = dict(task_metrics(data, test, model.predict(x_test)))
    vm = model if val_model is None else val_model
    vp = vm.predict(x_val) if len(val) else {}
    entry.update({"val": task_metrics(data, val, vp) if len(val) else {},
                  "val_parts": part_metrics(data, val, vp) if len(val) and parts else [],
                  "algorithm": algo, "trained_on": how, "n_fit": int(n_fit),
                  "fit_s": round(time.perf_counter() - t0, 3)})
    return entry


def references(data: MultimodalData, student_modalities: list[str], train_labelled: np.ndarray,
               train_all: np.ndarray, val: np.ndarray, test: np.ndarray,
               teacher: dict[str, np.ndarray] | None = None, teacher_mask: np.ndarray | None = None, *,
               settings: ReferenceSettings | None = None, models: dict | None = None,
               stop: threading.Event | None = None, memo: FitMemo | None = None) -> dict[str, dict]:
    """Classical references on the student's modalities (see the module docstring).

    Args:
        data: the dataset.
        student_modalities: the features (flattened in this order).
        train_labelled: the labelled training samples.
        train_all: every training sample (labelled or not); the unlabelled ones are ``train_all - train_labelled``.
        val: validation samples (``val`` metrics); test: test samples (the flat metrics).
        teacher: full-length teacher outputs ``<target>/logits`` or ``<target>/value`` (as
            :func:`cmkd.evaluation.metrics.predict` returns them); None: no ``_teacher_labels`` references.
        teacher_mask: (N,) bool where the teacher's outputs apply (None: everywhere).
        settings: how they are fitted (:class:`ReferenceSettings`; None: its defaults).
        models: when a dict, the fitted models go in it by name (their ``predict(x)`` takes
            :func:`cmkd.classical.trees.flat_features`).
        stop: once set, no further fit starts (what was fitted is returned).
        memo: shares forests fitted on identical rows and targets (:class:`cmkd.classical.trees.FitMemo`), e.g. with
            the tree student.

    Returns:
        name -> test metrics, plus ``val`` (validation metrics), ``algorithm``, ``trained_on`` (``labels``,
        ``teacher_labels`` or ``self_training``), ``n_fit`` (training samples) and ``fit_s`` (seconds).
    """
    o = settings if settings is not None else ReferenceSettings()
    seed, n_estimators, n_jobs, kinds, max_fit_samples = o.seed, o.n_estimators, o.n_jobs, o.kinds, o.max_fit_samples
    unl = np.setdiff1d(train_all, train_labelled)

    def cap(idx: np.ndarray, pool: int) -> np.ndarray:  # each pool its own seeded draw: any subset of kinds alike
        if len(idx) <= max_fit_samples:
            return idx
        return np.sort(np.random.default_rng([seed, pool]).choice(idx, max_fit_samples, replace=False))

    feats = {}

    def x_of(idx: np.ndarray) -> np.ndarray:
        key = np.asarray(idx, np.int64).tobytes()
        if key not in feats:
            feats[key] = flat_features(data, student_modalities, idx, o.text_vocab, o.raw_sequences)
        return feats[key]

    lab, x_val, x_test = cap(train_labelled, 0), x_of(val), x_of(test)
    x_lab = x_of(lab)
    t_idx = None
    if teacher is not None and len(unl) and "teacher_labels" in kinds:
        rows = _teacher_rows(data, train_all, teacher, teacher_mask)
        t_idx = cap(train_all[np.array(sorted(rows), dtype=int)], 1) if rows else None
    unl_cap = cap(unl, 2) if len(unl) else unl
    out: dict[str, dict] = {}

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    val_lab = data.labelled(val) if o.refit else val[:0]

    def again(algo: str, seed_: int, x: np.ndarray, ys: dict[str, np.ndarray]) -> _Model | None:
        """The same fit on its rows plus the labelled validation samples (``refit``); None without them."""
        if not len(val_lab) or stopped():
            return None
        yv = _labels(data, val_lab)
        ys2 = {t: np.concatenate([y, yv[t].reshape((len(val_lab),) + y.shape[1:])]) for t, y in ys.items()}
        shared = memo if seed_ == seed else None  # self-training's refit (seed + 1) is never fitted twice
        return _Model(algo, data, seed_, n_estimators, n_jobs, shared).fit(np.concatenate([x, x_of(val_lab)]), ys2)

    def score(name: str, algo: str, how: str, model: _Model, n_fit: int, t0: float,
              final: _Model | None = None) -> None:
        if not model.models:
            return
        keep = model if final is None or not final.models else final
        out[name] = _entry(data, val, test, x_val, x_test, algo, how, keep, n_fit, t0, val_model=model,
                           parts=o.val_parts)
        if keep is not model:
            out[name]["refit_on_val"] = int(len(val_lab))
        if models is not None:
            models[name] = keep

    for algo in o.algorithms:
        if stopped():
            break
        selftrain = "self_training" in kinds and algo in o.self_training and len(unl)
        base = None
        if "labels" in kinds or selftrain:
            t0 = time.perf_counter()
            base = _Model(algo, data, seed, n_estimators, n_jobs, memo).fit(x_lab, _labels(data, lab))
            if "labels" in kinds:
                score(algo, algo, "labels", base, len(lab), t0, again(algo, seed, x_lab, _labels(data, lab)))
        if t_idx is not None and len(t_idx) and not stopped():
            t0 = time.perf_counter()
            ys = _teacher_labels(data, t_idx, teacher, teacher_mask)
            m = _Model(algo, data, seed, n_estimators, n_jobs, memo).fit(x_of(t_idx), ys)
            score(f"{algo}_teacher_labels", algo, "teacher_labels", m, len(t_idx), t0,
                  again(algo, seed, x_of(t_idx), ys))
            del m  # scored (and kept in ``models`` if wanted): not alive beside the next fit
        if not selftrain or base is None or not base.models or stopped():
            continue
        t0 = time.perf_counter()
        both = np.concatenate([lab, unl_cap])
        own = base.predict(x_of(unl_cap))
        pseudo = _pseudo(data, unl_cap, own)
        ys = {t: np.concatenate([y, pseudo[t]]) for t, y in _labels(data, lab).items()}
        x_both = np.concatenate([x_lab, x_of(unl_cap)])
        m = _Model(algo, data, seed + 1, n_estimators, n_jobs).fit(x_both, ys)  # never fitted twice: no memo
        score(f"{algo}_self_training", algo, "self_training", m, len(both), t0, again(algo, seed + 1, x_both, ys))
        del m
    return out


def _val(entry: dict | float, metric: str) -> float:
    v = entry.get("val", entry) if isinstance(entry, dict) else entry
    v = v.get(metric, np.nan) if isinstance(v, dict) else v
    return float(v) if v is not None else float("nan")


def simplicity(name: str) -> int:
    """Rank of a candidate's cost for tie-breaking: a reference 0, ``student_trees`` 1, a network 2."""
    return SIMPLICITY.get(name, 2 if name.startswith("student") else SIMPLICITY["reference"])


def _pick(vals: dict[str, float], candidates: dict[str, dict | float], hib: bool, tol: float,
          prefer: frozenset[str] = frozenset()) -> str:
    """The cheapest of the candidates within ``tol`` of the best of ``vals`` (finite validation figures); among
    equally cheap ones the better figure, then the name. ``prefer``: candidates that win a tie first."""
    best = max(vals.values()) if hib else min(vals.values())

    def cost(k: str) -> tuple:
        c = candidates[k].get("cost") if isinstance(candidates[k], dict) else None
        return (k not in prefer, c if c is not None else 0.0, simplicity(k), -vals[k] if hib else vals[k], k)

    return min((k for k, v in vals.items() if abs(v - best) <= tol), key=cost)


def _finite(candidates: dict[str, dict | float], metric: str) -> dict[str, float]:
    vals = {k: _val(v, metric) for k, v in candidates.items()}
    vals = {k: v for k, v in vals.items() if np.isfinite(v)}
    if not vals:
        raise ValueError(f"no candidate has a finite validation {metric}")
    return vals


def recommend(candidates: dict[str, dict | float], metric: str, higher_is_better: bool | None = None,
              tol: float = 0.0) -> str:
    """The name of the best candidate on validation.

    Args:
        candidates: name -> ``{"val": value}`` or ``{"val": {metric: value, ...}}`` or the value itself; an
            optional ``"cost"`` breaks ties (lower wins) before :func:`simplicity` (reference < ``student_trees``
            < network student), then the better figure, then the name. Candidates without a finite value are
            ignored.
        metric: the metric's name (e.g. ``accuracy``, ``rmse``).
        higher_is_better: default from :data:`cmkd.evaluation.metrics.HIGHER_IS_BETTER`.
        tol: values within ``tol`` of the best count as a tie.
    """
    hib = HIGHER_IS_BETTER.get(metric.split("/")[-1], True) if higher_is_better is None else higher_is_better
    return _pick(_finite(candidates, metric), candidates, hib, tol)


def recommendation(candidates: dict[str, dict | float], metric: str, higher_is_better: bool | None = None,
                   tol: float = 0.0, prefer: frozenset[str] = frozenset()) -> dict:
    """:func:`recommend` with its reasons: ``{"model", "why", "val": {name: value}, "best_on_val",
    "tie_tolerance"}``. Candidates within ``tol`` of the best are tied, and the cheapest of them is recommended
    (the ones in ``prefer`` first)."""
    hib = HIGHER_IS_BETTER.get(metric.split("/")[-1], True) if higher_is_better is None else higher_is_better
    finite = _finite(candidates, metric)
    best_name = _pick(finite, candidates, hib, 0.0, prefer)  # the strictly best (an exact tie: the cheaper)
    name = _pick(finite, candidates, hib, tol, prefer)
    if finite[name] == finite[best_name]:
        best_name = name
    vals = {k: _val(v, metric) for k, v in candidates.items()}
    others = sorted((v, k) for k, v in vals.items() if k != name and np.isfinite(v))
    runner = (others[-1] if hib else others[0]) if others else None
    if name == best_name:
        why = f"best validation {metric} ({vals[name]:.4f}) of {len(vals)} candidates"
        if runner is not None:
            why += f"; next {runner[1]} ({runner[0]:.4f})"
            if abs(runner[0] - vals[name]) <= tol:
                why += (", a tie broken toward the model that learnt from the teacher" if name in prefer
                        and runner[1] not in prefer else ", a tie broken toward the cheaper model")
    else:
        why = (f"validation {metric} {vals[name]:.4f} is within {tol:.4f} of the best, {best_name} "
               f"({vals[best_name]:.4f}): the cheapest of the tied models; {len(vals)} candidates")
    return {"model": name, "why": why, "val": vals, "best_on_val": best_name, "tie_tolerance": float(tol)}
