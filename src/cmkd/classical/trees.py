"""Tree ensembles on the student's modalities: flat features, a distilled tree-ensemble student, ONNX export.

The **tree student** (:class:`TreeStudent`, role ``student_trees``) is distilled from the teacher's soft targets
over the labelled and the unlabelled training samples. Per classification target a multi-output regression
forest (ExtraTrees) learns the class probabilities: the one-hot label where a sample is labelled, the teacher's
softmax where it is not; per regression target it learns the label where known and the teacher's mean elsewhere.
Samples with neither (no label, teacher absent) are not used.

Features (:func:`flat_features`): numeric modalities flattened in C order (images, sequences and signals
alike), NaN kept (scikit-learn >= 1.6 forests split on NaN natively: a node sends NaN to the side
``missing_go_to_left`` says); a sequence's channels also summarised over time (:func:`sequence_summary`: mean,
std, min, max of the observed steps, so that series of unequal length, padded with NaN, compare); text token ids
become a bag of hashed words (counts of ids 1..vocab-1).

ONNX: :mod:`cmkd.classical.trees_onnx` (the graphs of this module's forests and of the references).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmkd.classical.trees_onnx import LOG_EPS, SEQUENCE, TEXT, check_onnx, ensemble_onnx, save_onnx
from cmkd.config import TreesConfig, default_of
from cmkd.data.arrays import TEXT_VOCAB, UNLABELLED, MultimodalData
from cmkd.errors import CmkdError

ALGORITHM = "extra_trees"  # the tree student's forest


def flat_features(data: MultimodalData, modalities: list[str], idx: np.ndarray, text_vocab: int = TEXT_VOCAB,
                  raw_sequences: bool = True) -> np.ndarray:
    """(n, F) float32 features of samples ``idx``: every modality flattened and concatenated in order.

    A numeric modality keeps NaN for missing values (and a sample whose modality is absent is all NaN); a text
    modality (token ids) becomes word counts over ids 1..``text_vocab``-1 (ids out of range are ignored). A sequence
    adds its :func:`sequence_summary`; with ``raw_sequences=False`` it is the summary alone (the classical teacher
    candidates: :func:`cmkd.pipeline.crossval.choose_teacher`).
    """
    parts = []
    for m in modalities:
        x = data.inputs[m][idx]
        if data.kinds[m] == TEXT:
            parts.append(bag_of_words(x, text_vocab))
            continue
        x = x.astype(np.float32, copy=True)
        x[~data.present[m][idx]] = np.nan
        if raw_sequences or data.kinds[m] != SEQUENCE:
            parts.append(x.reshape(len(idx), -1))
        if data.kinds[m] == SEQUENCE:
            parts.append(sequence_summary(x))
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(idx), 0), np.float32)


def sequence_summary(x: np.ndarray) -> np.ndarray:
    """(n, 4 C) float32: per channel of (n, T, C) sequences, the mean, std, min and max over the observed
    (non-NaN) steps; NaN for a channel with none. Computed as the ONNX graph computes it
    (:func:`cmkd.classical.trees_onnx.ensemble_onnx`), so that exported trees see the same features."""
    x = np.asarray(x, np.float32)
    nan = np.isnan(x)
    cnt = (~nan).sum(axis=1).astype(np.float32)
    zero = np.where(nan, np.float32(0), x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = zero.sum(axis=1) / cnt
        var = (zero * zero).sum(axis=1) / cnt - mean * mean
    std = np.sqrt(np.abs(var))
    mn = np.where(nan, np.float32(np.inf), x).min(axis=1)
    mx = np.where(nan, np.float32(-np.inf), x).max(axis=1)
    mn = np.where(np.isinf(mn), np.float32(np.nan), mn)
    mx = np.where(np.isinf(mx), np.float32(np.nan), mx)
    return np.concatenate([mean, std, mn, mx], axis=1).astype(np.float32)


def bag_of_words(ids: np.ndarray, vocab: int) -> np.ndarray:
    """(n, vocab-1) float32 counts of token ids 1..vocab-1 per row of ``ids`` (n, L); 0 is padding."""
    ids = ids.reshape(len(ids), -1).astype(np.int64)
    out = np.zeros((len(ids), vocab), np.float32)
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    flat = ids.reshape(-1)
    ok = (flat >= 0) & (flat < vocab)
    np.add.at(out, (rows[ok], flat[ok]), 1.0)
    return out[:, 1:]


def forest(algorithm: str, classification: bool, n_estimators: int, seed: int, n_jobs: int | None = 1,
           n_features: int = 1):  # noqa: ANN201
    """A RandomForest / ExtraTrees classifier or regressor (``algorithm`` ``random_forest`` | ``extra_trees``).

    Regression forests look at ``sqrt`` of the features per split when there are more than 64 (images, long
    signals), at all of them otherwise."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    kinds = {("random_forest", True): RandomForestClassifier, ("random_forest", False): RandomForestRegressor,
             ("extra_trees", True): ExtraTreesClassifier, ("extra_trees", False): ExtraTreesRegressor}
    if (algorithm, classification) not in kinds:
        raise CmkdError(f"tree algorithm {algorithm!r}: use random_forest or extra_trees")
    kw: dict = {"n_estimators": n_estimators, "random_state": seed, "n_jobs": n_jobs}
    if not classification:
        kw["max_features"] = "sqrt" if n_features > 64 else 1.0
    return kinds[(algorithm, classification)](**kw)


def soft_targets(data: MultimodalData, target: str, idx: np.ndarray, teacher: dict[str, np.ndarray] | None,
                 teacher_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """What the tree student learns for ``target`` on samples ``idx``: (rows of ``idx`` used, targets).

    Classification: (n, C) probabilities, the one-hot label where labelled, the teacher's softmax where
    unlabelled. Regression: (n, K) the label where observed, else the teacher's mean. ``teacher``
    holds full-length arrays ``<target>/logits`` or ``<target>/value`` (as :func:`cmkd.evaluation.metrics.predict`
    returns); ``teacher_mask`` (N,) where they apply. Rows with neither a label nor the teacher are dropped.
    """
    kind = data.target_kinds[target]
    n = len(idx)
    has_t = np.zeros(n, bool)
    tp = None
    if teacher is not None:
        key = f"{target}/logits" if kind == "classification" else f"{target}/value"
        if key in teacher:
            tp = np.asarray(teacher[key], dtype=np.float64)[idx]
            has_t = np.ones(n, bool) if teacher_mask is None else np.asarray(teacher_mask, bool)[idx]
            has_t &= np.isfinite(tp.reshape(n, -1)).all(axis=1)
    y = data.targets[target][idx]
    if kind == "classification":
        c = len(data.classes[target])
        lab = y != UNLABELLED
        out = np.zeros((n, c))
        out[lab, y[lab]] = 1.0
        if tp is not None:
            z = tp - tp.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            out[~lab & has_t] = p[~lab & has_t]
        keep = lab | has_t
    else:
        y = y.reshape(n, -1).astype(np.float64)
        out = y.copy()
        if tp is not None:
            tp = tp.reshape(n, -1)
            fill = np.isnan(out) & has_t[:, None]
            out[fill] = tp[fill]
        keep = ~np.isnan(out).any(axis=1)
    return np.flatnonzero(keep), out[keep]


def _digest(a: np.ndarray) -> tuple:
    a = np.ascontiguousarray(a)
    return a.shape, a.dtype.str, hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()


class FitMemo:
    """Fitted forests by estimator class, parameters (``n_jobs`` aside) and the exact training arrays.

    A run's classical stage may fit the same forest twice: with every training sample labelled the tree student's
    regression targets are the labels, so its ExtraTrees is the
    ``extra_trees`` reference, same seed, same rows. :meth:`fit` returns the first fit then (a forest is
    deterministic given ``random_state``, whatever its thread count); ``hits`` counts the fits saved."""

    def __init__(self) -> None:
        self._fits: dict[tuple, object] = {}
        self.hits = 0

    def clear(self) -> None:
        """Forget every fit (``hits`` stays)."""
        self._fits.clear()

    def fit(self, est, x: np.ndarray, y: np.ndarray):  # noqa: ANN001, ANN201 - a scikit-learn estimator
        params = sorted((k, repr(v)) for k, v in est.get_params().items() if k != "n_jobs")
        # as the forests see them: X in float32, y in float64 (scikit-learn's tree DTYPE and DOUBLE)
        key = (type(est).__name__, tuple(params), _digest(np.asarray(x, np.float32)),
               _digest(np.asarray(y, np.float64)))
        if key in self._fits:
            self.hits += 1
            return self._fits[key]
        if not type(est).__name__.startswith("ExtraTrees"):  # only the tree student's forest is ever fitted twice
            return est.fit(x, y)
        self._fits[key] = est.fit(x, y)
        return self._fits[key]


def trim_heap() -> None:
    """Hand memory freed by large fits (forests of tens of thousands of nodes) back to the operating system
    (glibc's ``malloc_trim``; a no-op elsewhere), so that a run's peak memory follows what it holds."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


class Spilled:
    """An object kept in an anonymous temporary file (deleted when closed or at exit) instead of memory, until
    :meth:`load`: a fitted forest the run keeps only in case it is deployed (hundreds of MB on tens of thousands of
    samples) need not be resident while the rest of the run works."""

    def __init__(self, obj: object) -> None:
        import pickle
        import tempfile

        self._file = tempfile.TemporaryFile()
        pickle.dump(obj, self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self) -> object:
        """The object, unpickled (the file stays: it can be loaded again)."""
        import pickle

        self._file.seek(0)
        return pickle.load(self._file)  # noqa: S301 - the run's own file, written by __init__


def fit_once(est, x: np.ndarray, y: np.ndarray, memo: FitMemo | None):  # noqa: ANN001, ANN201
    """``est.fit(x, y)``, or through ``memo`` (:class:`FitMemo`) when one is given."""
    return memo.fit(est, x, y) if memo is not None else est.fit(x, y)


@dataclass
class TreeStudent:
    """A tree-ensemble student distilled from the teacher's soft targets (see the module docstring).

    Attributes:
        modalities: the student's modalities (ONNX inputs in this order).
        n_estimators: trees per target (default: ``trees.n_estimators``'s).
        seed: random state.
        n_jobs: threads for fitting (scikit-learn's ``n_jobs``).
        text_vocab: hashed vocabulary size of text modalities.
    """

    modalities: list[str]
    n_estimators: int = default_of(TreesConfig, "n_estimators")
    seed: int = 0
    n_jobs: int | None = 1
    text_vocab: int = TEXT_VOCAB
    models_: dict = field(default_factory=dict)
    std_: dict = field(default_factory=dict)
    n_fit_: dict = field(default_factory=dict)

    def fit(self, data: MultimodalData, train_idx: np.ndarray, teacher: dict[str, np.ndarray] | None = None,
            teacher_mask: np.ndarray | None = None, val_idx: np.ndarray | None = None,
            memo: FitMemo | None = None) -> TreeStudent:
        """Fit one forest per target on the training samples ``train_idx`` (labelled and unlabelled).

        Args:
            data: the dataset.
            train_idx: every training sample (labelled or not).
            teacher: full-length teacher outputs, ``<target>/logits`` or ``<target>/value`` (None: labels only).
            teacher_mask: (N,) bool, where the teacher's outputs apply (None: everywhere).
            val_idx: validation samples; each regression output's RMSE there becomes its ``<target>_std``.
            memo: shares a forest fitted already on the same rows and targets (:class:`FitMemo`).
        """
        self.kinds = {m: data.kinds[m] for m in self.modalities}
        self.shapes = {m: tuple(data.inputs[m].shape[1:]) for m in self.modalities}
        self.target_kinds = dict(data.target_kinds)
        self.n_classes = {t: len(data.classes[t]) for t, k in data.target_kinds.items() if k == "classification"}
        x_all = flat_features(data, self.modalities, train_idx, self.text_vocab)
        for i, t in enumerate(data.target_kinds):
            rows, y = soft_targets(data, t, train_idx, teacher, teacher_mask)
            if len(rows) < 2:
                raise CmkdError(f"tree student: target '{t}' has {len(rows)} training samples with a label or a "
                                "teacher prediction; it needs at least 2")
            model = forest(ALGORITHM, False, self.n_estimators, self.seed + i, self.n_jobs, x_all.shape[1])
            self.models_[t] = fit_once(model, x_all[rows], y[:, 0] if y.shape[1] == 1 else y, memo)
            self.n_fit_[t] = int(len(rows))
        self.std_ = {}
        for t, kind in data.target_kinds.items():
            if kind != "regression":
                continue
            k = data.targets[t].shape[1]
            std = np.ones(k)
            if val_idx is not None and len(val_idx):
                pred = self.predict(data, val_idx)[f"{t}/value"]
                y = data.targets[t][val_idx].reshape(len(val_idx), -1)
                for j in range(k):
                    obs = ~np.isnan(y[:, j])
                    if obs.any():
                        std[j] = max(float(np.sqrt(np.mean((pred[obs, j] - y[obs, j]) ** 2))), 1e-6)
            self.std_[t] = std
        return self

    def predict_features(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions from flat features (see :meth:`predict`)."""
        out: dict[str, np.ndarray] = {}
        for t, model in self.models_.items():
            p = model.predict(x).reshape(len(x), -1)
            if self.target_kinds[t] == "classification":
                out[f"{t}/probs"] = p
                out[f"{t}/logits"] = np.log(np.clip(p, LOG_EPS, None))
            else:
                out[f"{t}/value"] = p
                out[f"{t}/std"] = np.broadcast_to(self.std_.get(t, np.ones(p.shape[1])), p.shape).copy()
        return out

    def predict(self, data: MultimodalData, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Per target ``t/logits`` (log probabilities) and ``t/probs``, or ``t/value`` and ``t/std`` (raw
        units), as :func:`cmkd.evaluation.metrics.predict` names them, so
        :func:`cmkd.evaluation.metrics.task_metrics` scores them."""
        return self.predict_features(flat_features(data, self.modalities, idx, self.text_vocab))

    def to_onnx(self, path: str | Path) -> Path:
        """Write the ONNX model (see the module docstring for its contract), atomically."""
        heads = {}
        for t, model in self.models_.items():
            kind = self.target_kinds[t]
            heads[t] = {"model": model, "kind": kind, "std": self.std_.get(t)}
        proto = ensemble_onnx(heads, self.modalities, self.kinds, self.shapes, self.text_vocab)
        return save_onnx(proto, path)


def export_tree_student(student: TreeStudent, data: MultimodalData, idx: np.ndarray, path: str | Path,
                        latency_runs: int = 200) -> dict:
    """Write ``student`` to ONNX at ``path`` and check it through ONNX Runtime on samples ``idx``
    (:func:`check_onnx`); returns its figures and ``onnx`` (the file name)."""
    ref = student.predict(data, idx)
    path = student.to_onnx(path)
    trim_heap()  # the graph built and written is freed: ONNX Runtime's load (several times the file) reuses it
    return {"onnx": Path(path).name, **check_onnx(path, student.modalities, student.target_kinds, data, idx, ref,
                                                  latency_runs)}
