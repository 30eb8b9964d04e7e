"""Tree ensembles on the student's modalities: flat features, a distilled tree-ensemble student, ONNX export.

The **tree student** (:class:`TreeStudent`, role ``student_trees``) is distilled from the teacher's soft targets
over the labelled and the unlabelled training samples. Per classification target a multi-output regression
forest (ExtraTrees) learns the class probabilities: the one-hot label where a sample is labelled, the teacher's
softmax where it is not; per regression target it learns the label where known and the teacher's mean elsewhere.
Samples with neither (no label, teacher absent) are not used.

Features (:func:`flat_features`): numeric modalities flattened in C order (images, sequences and signals
alike), NaN kept (scikit-learn >= 1.6 forests split on NaN natively: a node sends NaN to the side
``missing_go_to_left`` says); text token ids become a bag of hashed words (counts of ids 1..vocab-1).

ONNX (:func:`ensemble_onnx`): written by hand with ``onnx.helper`` rather than skl2onnx, because (1) the graph
must take the network student's raw inputs (one positional input per modality, NaN for missing values,
text as token ids) and flatten them itself, which a converter of a bare estimator does not do; (2) the
thresholds and leaf values go in as double tensors (``ai.onnx.ml`` opset 3) and NaN follows each node's
``missing_go_to_left`` (``nodes_missing_value_tracks_true``), so ONNX Runtime takes exactly scikit-learn's path
through every tree; (3) no new dependency. The outputs follow :func:`cmkd.export.onnx.output_names` and the
network student's
contract (:mod:`cmkd.export.sidecar`): per classification target the class probabilities (the forest's average), per
regression target its values in raw units; then ``<target>_std`` per regression
target, a constant per output column: the tree student's RMSE on the validation samples.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmkd.config import TreesConfig, default_of
from cmkd.data.arrays import TEXT_VOCAB, UNLABELLED, MultimodalData
from cmkd.errors import CmkdError

TEXT = "text"
ALGORITHM = "extra_trees"  # the tree student's forest
PRODUCER = "cmkd-trees"  # the ONNX producer name of tree models (their <target>_std is not the network's)
LOG_EPS = 1e-7  # probabilities are clipped here before the log that turns them into logits


def flat_features(data: MultimodalData, modalities: list[str], idx: np.ndarray, text_vocab: int = TEXT_VOCAB
                  ) -> np.ndarray:
    """(n, F) float32 features of samples ``idx``: every modality flattened and concatenated in order.

    A numeric modality keeps NaN for missing values (and a sample whose modality is absent is all NaN); a text
    modality (token ids) becomes word counts over ids 1..``text_vocab``-1 (ids out of range are ignored).
    """
    parts = []
    for m in modalities:
        x = data.inputs[m][idx]
        if data.kinds[m] == TEXT:
            parts.append(bag_of_words(x, text_vocab))
            continue
        x = x.reshape(len(idx), -1).astype(np.float32, copy=True)
        x[~data.present[m][idx]] = np.nan
        parts.append(x)
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(idx), 0), np.float32)


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

    def fit(self, est, x: np.ndarray, y: np.ndarray):  # noqa: ANN001, ANN201 - a scikit-learn estimator
        params = sorted((k, repr(v)) for k, v in est.get_params().items() if k != "n_jobs")
        # as the forests see them: X in float32, y in float64 (scikit-learn's tree DTYPE and DOUBLE)
        key = (type(est).__name__, tuple(params), _digest(np.asarray(x, np.float32)),
               _digest(np.asarray(y, np.float64)))
        if key in self._fits:
            self.hits += 1
            return self._fits[key]
        self._fits[key] = est.fit(x, y)
        return self._fits[key]


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


def save_onnx(proto, path: str | Path) -> Path:  # noqa: ANN001 - onnx.ModelProto
    """Check ``proto`` and write it atomically to ``path``."""
    import onnx

    path = Path(path)
    onnx.checker.check_model(proto)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


_PARTS = ("treeids", "nodeids", "featureids", "values", "leaf", "true", "false", "missing", "t_tree", "t_node", "t_id",
          "t_w")


def _add_tree(parts: dict[str, list[np.ndarray]], ti: int, leaf: np.ndarray, feature: np.ndarray,
              threshold: np.ndarray, left: np.ndarray, right: np.ndarray, missing: np.ndarray,
              feat_map: np.ndarray | None, t_node: np.ndarray, t_id: np.ndarray, t_w: np.ndarray) -> None:
    """Append tree ``ti``'s node arrays (scikit-learn's node order; leaves get zeros for every branch field, a
    branch's feature goes through ``feat_map`` when given) and its leaves' target entries to ``parts``."""
    f = feature.astype(np.int64)
    parts["treeids"].append(np.full(len(leaf), ti, np.int64))
    parts["nodeids"].append(np.arange(len(leaf), dtype=np.int64))
    parts["featureids"].append(np.where(leaf, 0, f if feat_map is None else feat_map[np.where(leaf, 0, f)]))
    parts["values"].append(np.where(leaf, 0.0, threshold.astype(np.float64)))
    parts["leaf"].append(leaf)
    parts["true"].append(np.where(leaf, 0, left.astype(np.int64)))
    parts["false"].append(np.where(leaf, 0, right.astype(np.int64)))
    parts["missing"].append(np.where(leaf, 0, missing.astype(np.int64)))
    parts["t_tree"].append(np.full(len(t_node), ti, np.int64))
    parts["t_node"].append(t_node)
    parts["t_id"].append(t_id)
    parts["t_w"].append(t_w)


def _tree_nodes(model, n_out: int, class_cols: np.ndarray | None, features: np.ndarray | None = None  # noqa: ANN001
                ) -> dict:
    """The ``TreeEnsembleRegressor`` attributes of a fitted scikit-learn forest (regressor or classifier).

    For a classifier each leaf's class fractions go to the columns ``class_cols`` (the full class list's index
    of each of ``model.classes_``); the ensemble's average is then ``predict_proba``. ``features`` maps the
    model's feature index to the graph's feature column (a model fitted on a subset of the columns)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _PARTS}
    feat_map = None if features is None else np.asarray(features, np.int64)
    cols = np.asarray(class_cols if class_cols is not None else np.arange(n_out), np.int64)
    for ti, est in enumerate(model.estimators_):
        tr = est.tree_
        n = tr.node_count
        leaf = tr.children_left == -1
        # (nodes, n_outputs, 1) for regressors, (nodes, 1, n_classes) fractions for classifiers
        v = tr.value.reshape(n, -1)[leaf].astype(np.float64)
        if class_cols is not None:
            v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)
        k = min(v.shape[1], len(cols))
        leaves = np.flatnonzero(leaf)
        _add_tree(parts, ti, leaf, tr.feature, tr.threshold, tr.children_left, tr.children_right,
                  np.asarray(getattr(tr, "missing_go_to_left", np.zeros(n, np.uint8))), feat_map,
                  np.repeat(leaves, k), np.tile(cols[:k], len(leaves)), v[:, :k].reshape(-1))
    return _attributes(parts)


def is_boosting(model) -> bool:  # noqa: ANN001
    """A fitted scikit-learn HistGradientBoosting estimator (trees summed, not averaged)."""
    return hasattr(model, "_predictors")


def _boosting_nodes(models: list, features: np.ndarray | None = None) -> tuple[dict, list[float]]:
    """``TreeEnsembleRegressor`` attributes (aggregate ``SUM``) and base values of fitted HistGradientBoosting
    estimators whose raw outputs are stacked: each estimator's trees of iteration i, output k go to target column
    ``offset + k`` (one column for a regressor or a binary classifier, one per class otherwise). Leaf values are
    the raw contributions (learning rate applied); a node sends ``x <= num_threshold`` left and NaN where
    ``missing_go_to_left`` says, as scikit-learn's predictor does. ``features`` maps the model's feature index to
    the graph's feature column."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _PARTS}
    feat_map = None if features is None else np.asarray(features, np.int64)
    base: list[float] = []
    ti, offset = 0, 0
    for est in models:
        b = np.asarray(est._baseline_prediction, np.float64).reshape(-1)
        base += b.tolist()
        for per_output in est._predictors:
            for k, pred in enumerate(per_output):
                nd = pred.nodes
                if nd["is_categorical"].any():
                    raise CmkdError("HistGradientBoosting with categorical splits has no ONNX form here")
                leaf = nd["is_leaf"].astype(bool)
                leaves = np.flatnonzero(leaf)
                _add_tree(parts, ti, leaf, nd["feature_idx"], nd["num_threshold"], nd["left"], nd["right"],
                          nd["missing_go_to_left"], feat_map, leaves, np.full(len(leaves), offset + k, np.int64),
                          nd["value"][leaf].astype(np.float64))
                ti += 1
        offset += len(b)
    return _attributes(parts), base


def _attributes(parts: dict[str, list[np.ndarray]]) -> dict:
    """Per-tree arrays concatenated into the operator's attribute lists (values and weights as float64)."""
    a = {k: np.concatenate(v) for k, v in parts.items()}
    out: dict = {k: a[k].tolist() for k in ("treeids", "nodeids", "featureids", "true", "false", "missing",
                                            "t_tree", "t_node", "t_id")}
    out["values"], out["t_w"] = a["values"], a["t_w"]  # float64 arrays, stored as tensors
    out["modes"] = np.where(a["leaf"], b"LEAF", b"BRANCH_LEQ").tolist()
    return out


def _ensemble_node(out: str, a: dict, n_targets: int, aggregate: str, base: list[float] | None = None):  # noqa: ANN202
    """The ``ai.onnx.ml`` ``TreeEnsembleRegressor`` node from ``features`` to ``out`` with the attributes ``a``
    (thresholds, leaf weights and ``base`` values as double tensors)."""
    from onnx import helper, numpy_helper

    extra = {} if base is None else {"base_values_as_tensor": numpy_helper.from_array(np.asarray(base, np.float64))}
    return helper.make_node(
        "TreeEnsembleRegressor", ["features"], [out], domain="ai.onnx.ml", n_targets=n_targets,
        aggregate_function=aggregate, post_transform="NONE", **extra,
        nodes_treeids=a["treeids"], nodes_nodeids=a["nodeids"], nodes_featureids=a["featureids"],
        nodes_values_as_tensor=numpy_helper.from_array(a["values"]),
        nodes_modes=a["modes"], nodes_truenodeids=a["true"], nodes_falsenodeids=a["false"],
        nodes_missing_value_tracks_true=a["missing"], target_treeids=a["t_tree"], target_nodeids=a["t_node"],
        target_ids=a["t_id"], target_weights_as_tensor=numpy_helper.from_array(a["t_w"]))


def _forest_graph(t: str, model, h: dict, nodes: list) -> int:  # noqa: ANN001 - a fitted forest
    """Append the ``TreeEnsembleRegressor`` (aggregate ``AVERAGE``) of a RandomForest / ExtraTrees head to
    ``nodes`` (output ``t``: a regressor's outputs, or a classifier's ``predict_proba`` over the full class list);
    returns its column count."""
    if hasattr(model, "classes_"):
        n_out = int(h["n_classes"])
        cols = np.asarray(h.get("classes", model.classes_), np.int64)
    else:
        n_out = int(model.n_outputs_)
        cols = None
    nodes.append(_ensemble_node(t, _tree_nodes(model, n_out, cols, h.get("features")), n_out, "AVERAGE"))
    return n_out


def _boosting_graph(t: str, ests: list, h: dict, nodes: list, inits: list) -> int:
    """Append the nodes of a HistGradientBoosting head to ``nodes`` (output ``t``); returns its column count.

    Regression: one estimator per output column, the summed trees plus each one's baseline. Classification: one
    classifier; its raw scores through a sigmoid (two classes) or a softmax, as ``predict_proba`` does, then
    spread over the full class list (``h["classes"]``: the full class id of each of ``classes_``)."""
    from onnx import helper, numpy_helper

    if any(e is None for e in ests):
        raise CmkdError(f"target '{t}': a HistGradientBoosting output column was not fitted; no ONNX form")
    a, base = _boosting_nodes(ests, h.get("features"))
    clf = h["kind"] == "classification"
    raw = f"{t}_raw" if clf else t
    nodes.append(_ensemble_node(raw, a, len(base), "SUM", base))
    if not clf:
        return len(base)
    est = ests[0]
    n_out = int(h["n_classes"])
    cols = np.asarray(h.get("classes", est.classes_), np.int64)
    if len(base) == 1:  # binary: p(second class) = sigmoid(raw)
        inits.append(numpy_helper.from_array(np.ones((1, 1), np.float32), f"{t}_one"))
        nodes += [helper.make_node("Sigmoid", [raw], [f"{t}_p1"]),
                  helper.make_node("Sub", [f"{t}_one", f"{t}_p1"], [f"{t}_p0"]),
                  helper.make_node("Concat", [f"{t}_p0", f"{t}_p1"], [f"{t}_pm"], axis=1)]
    else:
        nodes.append(helper.make_node("Softmax", [raw], [f"{t}_pm"], axis=1))
    spread = np.zeros((len(cols), n_out), np.float32)
    spread[np.arange(len(cols)), cols] = 1.0
    inits.append(numpy_helper.from_array(spread, f"{t}_spread"))
    nodes.append(helper.make_node("MatMul", [f"{t}_pm", f"{t}_spread"], [t]))
    return n_out


def as_logits(prob: np.ndarray) -> np.ndarray:
    """Class probabilities (a tree graph's output) as the log-probabilities that :func:`cmkd.evaluation.metrics.predict`
    and the tree models' ``predict`` call logits (clipped at ``LOG_EPS``)."""
    return np.log(np.clip(prob, LOG_EPS, None))


def ensemble_onnx(heads: dict[str, dict], modalities: list[str], kinds: dict[str, str],
                  shapes: dict[str, tuple[int, ...]], text_vocab: int = TEXT_VOCAB):  # noqa: ANN201 - onnx.ModelProto
    """An ONNX model: the raw inputs of ``modalities`` -> one output per head, then ``<t>_std`` per regression head.

    Args:
        heads: target -> ``{"model": fitted forest, "kind": "classification" | "regression", "std": (K,) or
            None, "n_classes": C (classifiers: the full class count), "classes": classifier column -> class id,
            "features": the model's feature index -> input feature column (None: the same)}``.
            A classification head built on a regressor outputs its (probability) outputs; one built on a
            classifier ``predict_proba`` spread over the full class list.
        modalities: input order; ``kinds`` and ``shapes`` (per sample) of each.
        text_vocab: the hashed vocabulary of text inputs (int64 token ids).
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, feats = [], [], [], []
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    for m in modalities:
        shape = ["batch", *shapes[m]]
        if kinds[m] == TEXT:
            inputs.append(helper.make_tensor_value_info(m, TensorProto.INT64, shape))
            inits += [numpy_helper.from_array(np.array(text_vocab, np.int64), f"{m}_depth"),
                      numpy_helper.from_array(np.array([0.0, 1.0], np.float32), f"{m}_onoff"),
                      numpy_helper.from_array(np.array([1], np.int64), f"{m}_axis"),
                      numpy_helper.from_array(np.array([1], np.int64), f"{m}_start"),
                      numpy_helper.from_array(np.array([text_vocab], np.int64), f"{m}_end"),
                      numpy_helper.from_array(np.array([1], np.int64), f"{m}_sax")]
            nodes += [helper.make_node("Reshape", [m, "flat_shape"], [f"{m}_ids"]),
                      helper.make_node("OneHot", [f"{m}_ids", f"{m}_depth", f"{m}_onoff"], [f"{m}_oh"], axis=-1),
                      helper.make_node("ReduceSum", [f"{m}_oh", f"{m}_axis"], [f"{m}_counts"], keepdims=0),
                      helper.make_node("Slice", [f"{m}_counts", f"{m}_start", f"{m}_end", f"{m}_sax"], [f"{m}_flat"])]
        else:
            inputs.append(helper.make_tensor_value_info(m, TensorProto.FLOAT, shape))
            nodes.append(helper.make_node("Reshape", [m, "flat_shape"], [f"{m}_flat"]))
        feats.append(f"{m}_flat")
    nodes += [helper.make_node("Concat", feats, ["features32"], axis=1),  # (batch, F)
              helper.make_node("Cast", ["features32"], ["features"], to=TensorProto.DOUBLE)]
    outputs, std_outputs = [], []
    for t, h in heads.items():
        model, kind = h["model"], h["kind"]
        if is_boosting(model[0] if isinstance(model, list) else model):
            n_out = _boosting_graph(t, model if isinstance(model, list) else [model], h, nodes, inits)
        else:
            n_out = _forest_graph(t, model, h, nodes)
        if kind != "classification":
            std = np.asarray(h.get("std") if h.get("std") is not None else np.ones(n_out), np.float32)
            inits.append(numpy_helper.from_array(std.reshape(1, n_out), f"{t}_stdconst"))
            nodes += [helper.make_node("Shape", [t], [f"{t}_shape"]),
                      helper.make_node("Expand", [f"{t}_stdconst", f"{t}_shape"], [f"{t}_std"])]
            std_outputs.append(helper.make_tensor_value_info(f"{t}_std", TensorProto.FLOAT, ["batch", n_out]))
        outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, ["batch", n_out]))
    graph = helper.make_graph(nodes, "cmkd_trees", inputs, outputs + std_outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name=PRODUCER)
    proto.ir_version = min(proto.ir_version, 10)
    return proto  # checked by save_onnx, which every caller writes it with (the check costs a second per 1M nodes)


def check_onnx(path: str | Path, modalities: list[str], target_kinds: dict[str, str], data: MultimodalData,
               idx: np.ndarray, ref: dict[str, np.ndarray], latency_runs: int = 200) -> dict:
    """Run a tree model's ONNX file through ONNX Runtime on samples ``idx`` and compare with scikit-learn's
    predictions ``ref`` (``<t>/logits`` or ``<t>/value``, and ``<t>/std`` where the model has one).

    Returns ``max_abs_diff`` (largest difference of any output), ``onnx_latency_ms`` (batch 1, one thread,
    median, as for the network student; None with ``latency_runs=0``), ``onnx_bytes`` and ``onnx_metrics``
    (:func:`cmkd.evaluation.metrics.task_metrics` of the ONNX outputs)."""
    from cmkd.evaluation.metrics import task_metrics
    from cmkd.export.onnx import ort_latency_ms, ort_run, ort_session

    sess = ort_session(path)
    feed = {m: data.inputs[m][idx] for m in modalities}
    got = dict(zip([o.name for o in sess.get_outputs()], ort_run(sess, feed)))
    diffs, preds = [], {}
    for t, kind in target_kinds.items():
        key = f"{t}/logits" if kind == "classification" else f"{t}/value"
        preds[key] = as_logits(got[t]) if kind == "classification" else got[t]  # the graph outputs probabilities
        diffs.append(float(np.max(np.abs(preds[key] - ref[key]), initial=0.0)))
        if f"{t}/std" in ref:
            diffs.append(float(np.max(np.abs(got[f"{t}_std"] - ref[f"{t}/std"]), initial=0.0)))
    return {"max_abs_diff": max(diffs),
            "onnx_latency_ms": ort_latency_ms(sess, feed, latency_runs) if latency_runs else None,
            "onnx_bytes": Path(path).stat().st_size, "onnx_metrics": task_metrics(data, idx, preds)}


def export_tree_student(student: TreeStudent, data: MultimodalData, idx: np.ndarray, path: str | Path,
                        latency_runs: int = 200) -> dict:
    """Write ``student`` to ONNX at ``path`` and check it through ONNX Runtime on samples ``idx``
    (:func:`check_onnx`); returns its figures and ``onnx`` (the file name)."""
    path = student.to_onnx(path)
    return {"onnx": Path(path).name, **check_onnx(path, student.modalities, student.target_kinds, data, idx,
                                                  student.predict(data, idx), latency_runs)}
