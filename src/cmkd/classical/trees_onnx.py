"""ONNX graphs of fitted tree ensembles: the tree student, RandomForest / ExtraTrees / HistGradientBoosting references.

The graph (:func:`ensemble_onnx`) is written by hand with ``onnx.helper`` rather than skl2onnx, because (1) the graph
must take the network student's raw inputs (one positional input per modality, NaN for missing values,
text as token ids) and flatten them itself, which a converter of a bare estimator does not do; (2) the
thresholds and leaf values go in as double tensors (``ai.onnx.ml`` opset 3) and NaN follows each node's
``missing_go_to_left`` (``nodes_missing_value_tracks_true``), so ONNX Runtime takes exactly scikit-learn's path
through every tree; (3) no new dependency. The outputs follow :func:`cmkd.export.onnx.output_names` and the
network student's contract (:mod:`cmkd.export.sidecar`): per classification target the class probabilities (the
forest's average), per regression target its values in raw units; then ``<target>_std`` per regression target, a
constant per output column: the tree student's RMSE on the validation samples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cmkd.data.arrays import TEXT_VOCAB, MultimodalData
from cmkd.errors import CmkdError
from cmkd.io import atomic_write

TEXT = "text"
SEQUENCE = "sequence"
PRODUCER = "cmkd-trees"  # the ONNX producer name of tree models (their <target>_std is not the network's)
LOG_EPS = 1e-7  # probabilities are clipped here before the log that turns them into logits
CHUNK_NODES = 250_000  # a forest past this many nodes goes in parts (ONNX Runtime loads a part at a time: less peak)


def save_onnx(proto, path: str | Path) -> Path:  # noqa: ANN001 - onnx.ModelProto
    """Check ``proto`` and write it atomically to ``path`` (:func:`cmkd.io.atomic_write`)."""
    import onnx

    onnx.checker.check_model(proto)
    return atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))


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
    """Per-tree arrays concatenated into the operator's attributes: int64 arrays, the leaf flags (``modes``),
    values and weights as float64. Kept as arrays (not Python lists) until :func:`_ensemble_node` copies them into
    the node one at a time: a forest of millions of nodes as lists of Python ints took gigabytes."""
    a = {k: np.concatenate(v) for k, v in parts.items()}
    a["modes"] = a.pop("leaf").astype(bool)
    return a


_INTS = {"nodes_treeids": "treeids", "nodes_nodeids": "nodeids", "nodes_featureids": "featureids",
         "nodes_truenodeids": "true", "nodes_falsenodeids": "false", "nodes_missing_value_tracks_true": "missing",
         "target_treeids": "t_tree", "target_nodeids": "t_node", "target_ids": "t_id"}  # attribute -> array of a


def _fill_big(attr, name: str, a: dict) -> None:  # noqa: ANN001 - onnx.AttributeProto
    """Fill the node-sized attribute ``name`` (``INTS``, or the ``modes`` ``STRINGS``) straight from its array in
    ``a``, as ``onnx.helper.make_attribute`` would from a list (the same bytes)."""
    from onnx import AttributeProto

    attr.name = name
    if name == "nodes_modes":
        attr.strings.extend(b"LEAF" if leaf else b"BRANCH_LEQ" for leaf in a["modes"].tolist())
        attr.type = AttributeProto.STRINGS
    else:
        attr.ints.extend(np.asarray(a[_INTS[name]], np.int64).tolist())
        attr.type = AttributeProto.INTS


def _ensemble_node(out: str, a: dict, n_targets: int, aggregate: str, base: list[float] | None = None
                   ) -> Callable[[Any], None]:
    """The ``ai.onnx.ml`` ``TreeEnsembleRegressor`` node from ``features`` to ``out`` with the attributes ``a``
    (thresholds, leaf weights and ``base`` values as double tensors), as a function that fills an empty
    ``NodeProto`` in place: :func:`ensemble_onnx` fills the model's own node, so that a forest of millions of nodes
    is never copied (``make_graph`` and ``make_model`` copy what they are given). Attributes in
    ``onnx.helper.make_node``'s order (by name); the node-sized ones straight from their arrays (:func:`_fill_big`)."""
    from onnx import helper, numpy_helper

    small = {"n_targets": n_targets, "aggregate_function": aggregate, "post_transform": "NONE",
             "nodes_values_as_tensor": numpy_helper.from_array(a["values"]),
             "target_weights_as_tensor": numpy_helper.from_array(a["t_w"])}
    if base is not None:
        small["base_values_as_tensor"] = numpy_helper.from_array(np.asarray(base, np.float64))

    def fill(node) -> None:  # noqa: ANN001 - onnx.NodeProto
        node.CopyFrom(helper.make_node("TreeEnsembleRegressor", ["features"], [out], domain="ai.onnx.ml"))
        for name in sorted([*small, *_INTS, "nodes_modes"]):
            if name in small:
                node.attribute.add().CopyFrom(helper.make_attribute(name, small[name]))
            else:
                _fill_big(node.attribute.add(), name, a)

    return fill


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
    a = _tree_nodes(model, n_out, cols, h.get("features"))
    parts = _chunks(a, len(model.estimators_))
    if len(parts) == 1:
        nodes.append(_ensemble_node(t, a, n_out, "AVERAGE"))
        return n_out
    from onnx import helper

    nodes += [_ensemble_node(f"{t}_part{i}", c, n_out, "SUM") for i, c in enumerate(parts)]
    nodes.append(helper.make_node("Sum", [f"{t}_part{i}" for i in range(len(parts))], [t]))
    return n_out


def _chunks(a: dict, n_trees: int, limit: int | None = None) -> list[dict]:
    """The attributes ``a`` of an averaged forest of ``n_trees`` trees as one part, or, past ``limit`` nodes, as
    parts of whole trees of about equal node counts whose ``SUM``s add up to the average (each leaf weight divided
    by ``n_trees``; tree ids from 0 in each part). Views of ``a``'s arrays, not copies."""
    n = len(a["treeids"])
    k = -(-n // (limit or CHUNK_NODES))
    if k <= 1:
        return [a]
    starts = np.searchsorted(a["treeids"], np.arange(n_trees + 1))  # each tree's first node (trees in order)
    cut = np.unique(np.r_[0, np.searchsorted(starts, np.arange(1, k) * n / k), n_trees])
    out = []
    for lo, hi in zip(cut[:-1], cut[1:]):
        s = slice(starts[lo], starts[hi])
        ts = slice(*np.searchsorted(a["t_tree"], [lo, hi]))
        c = {key: v[ts] if key.startswith("t_") else v[s] for key, v in a.items()}
        c["treeids"], c["t_tree"], c["t_w"] = c["treeids"] - lo, c["t_tree"] - lo, c["t_w"] / n_trees
        out.append(c)
    return out


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


def _summary_nodes(m: str, nodes: list, inits: list) -> str:
    """Nodes computing :func:`cmkd.classical.trees.sequence_summary` of sequence input ``m`` (batch, T, C): per
    channel the mean, std, min and max over the non-NaN steps (NaN for none), as (batch, 4 C)."""
    from onnx import TensorProto, helper, numpy_helper

    def c(name: str, v: float | list) -> str:
        dtype = np.int64 if isinstance(v, list) else np.float32
        inits.append(numpy_helper.from_array(np.array(v, dtype), f"{m}_{name}"))
        return f"{m}_{name}"

    z, inf, ninf, nan, ax = c("zero", 0.0), c("inf", np.inf), c("ninf", -np.inf), c("nan", np.nan), c("ax", [1])
    n = f"{m}_s"
    nodes += [helper.make_node("IsNaN", [m], [f"{n}_isnan"]),
              helper.make_node("Not", [f"{n}_isnan"], [f"{n}_ok"]),
              helper.make_node("Cast", [f"{n}_ok"], [f"{n}_okf"], to=TensorProto.FLOAT),
              helper.make_node("ReduceSum", [f"{n}_okf", ax], [f"{n}_cnt"], keepdims=0),
              helper.make_node("Where", [f"{n}_isnan", z, m], [f"{n}_x0"]),
              helper.make_node("ReduceSum", [f"{n}_x0", ax], [f"{n}_s1"], keepdims=0),
              helper.make_node("Mul", [f"{n}_x0", f"{n}_x0"], [f"{n}_sq"]),
              helper.make_node("ReduceSum", [f"{n}_sq", ax], [f"{n}_s2"], keepdims=0),
              helper.make_node("Div", [f"{n}_s1", f"{n}_cnt"], [f"{n}_mean"]),
              helper.make_node("Div", [f"{n}_s2", f"{n}_cnt"], [f"{n}_m2"]),
              helper.make_node("Mul", [f"{n}_mean", f"{n}_mean"], [f"{n}_mm"]),
              helper.make_node("Sub", [f"{n}_m2", f"{n}_mm"], [f"{n}_var"]),
              helper.make_node("Abs", [f"{n}_var"], [f"{n}_avar"]),
              helper.make_node("Sqrt", [f"{n}_avar"], [f"{n}_std"])]
    for op, fill, name in (("ReduceMin", inf, "min"), ("ReduceMax", ninf, "max")):
        nodes += [helper.make_node("Where", [f"{n}_isnan", fill, m], [f"{n}_{name}_in"]),
                  helper.make_node(op, [f"{n}_{name}_in", ax], [f"{n}_{name}_r"], keepdims=0),
                  helper.make_node("IsInf", [f"{n}_{name}_r"], [f"{n}_{name}_inf"]),
                  helper.make_node("Where", [f"{n}_{name}_inf", nan, f"{n}_{name}_r"], [f"{n}_{name}"])]
    nodes.append(helper.make_node("Concat", [f"{n}_mean", f"{n}_std", f"{n}_min", f"{n}_max"], [f"{n}_all"],
                                  axis=1))
    return f"{n}_all"


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
    from onnx import NodeProto, TensorProto, helper, numpy_helper

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
        if kinds[m] == SEQUENCE:
            feats.append(_summary_nodes(m, nodes, inits))
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
    fills = {i: n for i, n in enumerate(nodes) if callable(n)}  # the tree ensembles: filled in the model itself
    nodes = [NodeProto() if callable(n) else n for n in nodes]
    graph = helper.make_graph(nodes, "cmkd_trees", inputs, outputs + std_outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name=PRODUCER)
    del graph, nodes
    for i in sorted(fills):
        fills.pop(i)(proto.graph.node[i])  # each ensemble's arrays released once its node is filled
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

