"""The blended student (``references.blend``): the network student and the best tree model of the run averaged.

The candidate ``student_blend`` outputs ``weight`` x the network student's outputs + (1 - ``weight``) x those of
its **partner**, the tree model best on validation among the tree student and the exportable references
(RandomForest, ExtraTrees, HistGradientBoosting): class probabilities, regression values and their std columns
alike. Two models that err differently (a network on the student's inputs, trees on the same inputs flattened)
average to fewer errors than either where both are about as good; the run's recommendation compares the blend on
validation like any other candidate (the network's figure out of sample: from before a ``student.refit``), so it
is only recommended where it is ahead there.

Deployed, ``student.onnx`` is one graph holding both models side by side (:func:`blend_onnx`): the network's
ONNX graph and the partner's tree-ensemble graph read the same inputs, and ``Mul``/``Add`` nodes average their
outputs, with the network student's input/output contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmkd.export.onnx import as_predictions, reference_outputs

WEIGHT = 0.5  # the network's share: an even average, not tuned per run (a tuned weight would be chosen on the same
# validation samples that then compare the candidates)


def blend_predictions(net: dict[str, np.ndarray], tree: dict[str, np.ndarray], target_kinds: dict[str, str],
                      weight: float = WEIGHT) -> dict[str, np.ndarray]:
    """``weight`` x ``net`` + (1 - ``weight``) x ``tree`` in :func:`cmkd.evaluation.metrics.predict`'s keys (class
    probabilities averaged, returned as log-probabilities ``<t>/logits``; regression ``<t>/value`` and, where
    both have it, ``<t>/std``)."""
    a, b = reference_outputs(net, target_kinds), reference_outputs(tree, target_kinds)
    out = as_predictions([weight * x + (1 - weight) * y for x, y in zip(a, b)], target_kinds)
    for t, kind in target_kinds.items():
        if kind == "regression" and f"{t}/std" in net and f"{t}/std" in tree:
            out[f"{t}/std"] = weight * net[f"{t}/std"] + (1 - weight) * tree[f"{t}/std"]
    return out


def blend_onnx(net_path: str | Path, tree_path: str | Path, weight: float = WEIGHT):  # noqa: ANN201 - ModelProto
    """One ONNX model from the network student's file and a tree model's file with the same inputs and outputs:
    both subgraphs read the shared inputs and each output is ``weight`` x the network's + (1 - ``weight``) x the
    trees'. Raises ValueError where the two files' inputs or outputs differ."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    net, tree = onnx.load(str(net_path)), onnx.load(str(tree_path))
    names = [[i.name for i in m.graph.input] for m in (net, tree)]
    outs = [[o.name for o in m.graph.output] for m in (net, tree)]
    if sorted(names[0]) != sorted(names[1]) or outs[0] != outs[1]:
        raise ValueError(f"blend: the two models differ in inputs {names} or outputs {outs}")
    parts = [compose.add_prefix(m, p, rename_inputs=False) for m, p in ((net, "net/"), (tree, "trees/"))]
    nodes = [n for p in parts for n in p.graph.node]
    inits = [i for p in parts for i in p.graph.initializer]
    inits += [numpy_helper.from_array(np.array(weight, np.float32), "blend/w_net"),
              numpy_helper.from_array(np.array(1 - weight, np.float32), "blend/w_trees")]
    for o in outs[0]:
        nodes += [helper.make_node("Mul", [f"net/{o}", "blend/w_net"], [f"blend/{o}_net"]),
                  helper.make_node("Mul", [f"trees/{o}", "blend/w_trees"], [f"blend/{o}_trees"]),
                  helper.make_node("Add", [f"blend/{o}_net", f"blend/{o}_trees"], [o])]
    for o in net.graph.output:
        if o.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ValueError(f"blend: output {o.name} is not float32")
    graph = helper.make_graph(nodes, "cmkd_student_blend", list(net.graph.input), list(net.graph.output), inits)
    opsets: dict[str, int] = {}
    for m in (net, tree):
        for op in m.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="cmkd", functions=[f for p in parts for f in p.functions])
    proto.ir_version = max(net.ir_version, tree.ir_version)
    return proto
