"""Loss terms checked against values worked out by hand (plain ``math``), on 2-3 samples and 2-3 classes/dims.

Expected numbers are never produced by the torch.nn.functional counterpart of the formula under test; each
comes from a closed form written out in a comment, or from a few lines of ``math`` arithmetic in the test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from cmkd.config import TERM_OPTION_DEFAULTS, DistillConfig, ModelConfig
from cmkd.errors import CmkdError
from cmkd.nn.losses import LOSSES, CompositeLoss, kd_loss, rkd, similarity_preserving

D64 = torch.float64
LN2, LN3 = math.log(2.0), math.log(3.0)


def t(x, **kw) -> Tensor:
    return torch.tensor(x, dtype=D64, **kw)


def clf(features, logits) -> dict:
    """A MultimodalNet-style output with one classification target 'y'."""
    return {"features": t(features), "y": {"logits": t(logits)}}


def reg(features, mean, logvar) -> dict:
    """A MultimodalNet-style output with one regression target 'y'."""
    return {"features": t(features), "y": {"mean": t(mean), "logvar": t(logvar)}}


def feats(x) -> dict:
    return {"features": t(x)}


def close(value: Tensor, expected: float, tol: float = 1e-9) -> None:
    assert value.dim() == 0
    assert float(value.detach()) == pytest.approx(expected, rel=tol, abs=tol)


def linear(weight, bias) -> nn.Linear:
    """nn.Linear with hand-set weight (out, in) and bias, float64."""
    w = t(weight)
    lin = nn.Linear(w.shape[1], w.shape[0], dtype=D64)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(t(bias))
    return lin


EMPTY = {"targets": {}}


# ----------------------------------------------------------------------------------------------------- task


def test_task_cross_entropy_hand_value():
    # sample 0: logits (0, 0, 0), label 2 -> softmax 1/3 each -> -log(1/3) = ln 3
    # sample 1: logits (ln 2, 0, 0), label 0 -> exp = (2, 1, 1) -> p_0 = 2/4 -> -log(1/2) = ln 2
    # batch mean = (ln 3 + ln 2) / 2 = ln(6) / 2
    out = clf([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0, 0.0], [LN2, 0.0, 0.0]])
    batch = {"targets": {"y": torch.tensor([2, 0])}}
    close(LOSSES["task"](out, None, batch, nll_beta=0.0), math.log(6.0) / 2)


def test_task_gaussian_nll_ignores_nan_target():
    # per entry 0.5 * (logvar + (y - mu)^2 * exp(-logvar)):
    #   [0,0] mu 0, logvar 0,    y 1   -> 0.5 * (0 + 1)            = 0.5
    #   [0,1] y NaN                    -> ignored (mu/logvar there are absurd on purpose)
    #   [1,0] mu 2, logvar 0,    y 2   -> 0.5 * (0 + 0)            = 0
    #   [1,1] mu 0, logvar ln 4, y 2   -> 0.5 * (ln 4 + 4 / 4)     = ln 2 + 0.5
    # mean over the 3 observed entries = (1 + ln 2) / 3
    mean = t([[0.0, 1e6], [2.0, 0.0]], requires_grad=True)
    logvar = t([[0.0, -50.0], [0.0, math.log(4.0)]], requires_grad=True)
    out = {"features": t([[0.0], [0.0]]), "y": {"mean": mean, "logvar": logvar}}
    batch = {"targets": {"y": t([[1.0, float("nan")], [2.0, 2.0]])}}
    val = LOSSES["task"](out, None, batch, nll_beta=0.0)
    close(val, (1 + LN2) / 3)
    val.backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(logvar.grad).all()
    assert mean.grad[0, 1] == 0 and logvar.grad[0, 1] == 0  # the missing entry gets no gradient
    # d/dmu of 0.5 * (mu - y)^2 / 3 at [0,0]: (0 - 1) / 3
    assert float(mean.grad[0, 0]) == pytest.approx(-1 / 3)


def test_task_sums_over_targets():
    # target 'a' (classification): logits (0, 0), label 1 -> ln 2
    # target 'b' (regression): mu 1, logvar 0, y 3 -> 0.5 * (3 - 1)^2 = 2
    out = {"features": t([[0.0]]), "a": {"logits": t([[0.0, 0.0]])},
           "b": {"mean": t([[1.0]]), "logvar": t([[0.0]])}}
    batch = {"targets": {"a": torch.tensor([1]), "b": t([[3.0]])}}
    close(LOSSES["task"](out, None, batch, nll_beta=0.0), LN2 + 2.0)


def test_task_all_targets_missing_is_zero_and_differentiable():
    mean = t([[0.5], [1.0]], requires_grad=True)
    out = {"features": t([[0.0], [0.0]]), "y": {"mean": mean, "logvar": t([[0.0], [0.0]])}}
    batch = {"targets": {"y": t([[float("nan")], [float("nan")]])}}
    parts = CompositeLoss({"task": 1.0}, student_width=1)(out, None, batch)
    close(parts["loss"], 0.0)
    parts["loss"].backward()  # what train.fit does for the teacher and the baseline student
    assert torch.equal(mean.grad, torch.zeros_like(mean))


# ------------------------------------------------------------------------------------------------------- kd


def test_kd_hinton_soft_targets_hand_value():
    # T = 2. sample 0: student (0, 0, 0) -> p_s = (1/3, 1/3, 1/3);
    #                  teacher (2 ln 2, 0, 0) / T = (ln 2, 0, 0) -> p_t = (1/2, 1/4, 1/4)
    #   KL(p_t || p_s) = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8);  * T^2 = 2 ln(9/8)
    # sample 1: student == teacher -> 0.   batch mean = ln(9/8)
    # (the reverse direction KL(p_s || p_t) = 1/3 ln(32/27) * 4 / 2 would give a different number)
    s = clf([[0.0], [0.0]], [[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    te = clf([[0.0], [0.0]], [[2 * LN2, 0.0, 0.0], [1.0, -2.0, 0.5]])
    close(LOSSES["kd"](s, te, EMPTY, temperature=2.0, confidence=False), math.log(9 / 8))


def test_kd_temperature_one_two_classes():
    # T = 1, one sample: student (0, 0) -> (1/2, 1/2); teacher (ln 3, 0) -> (3/4, 1/4)
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 - ln 2
    s = clf([[0.0]], [[0.0, 0.0]])
    te = clf([[0.0]], [[LN3, 0.0]])
    close(LOSSES["kd"](s, te, EMPTY, temperature=1.0, confidence=False), 0.75 * LN3 - LN2)


def test_kd_regression_mse_to_teacher_mean():
    # mu_s - mu_t = (0, 2, 3, 0) -> mean of squares = (0 + 4 + 9 + 0) / 4 = 13/4; logvar plays no part
    s = reg([[0.0], [0.0]], [[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]])
    te = reg([[0.0], [0.0]], [[1.0, 0.0], [0.0, 4.0]], [[-3.0, 0.0], [1.0, 2.0]])
    close(LOSSES["kd"](s, te, EMPTY, temperature=4.0, confidence=False), 13 / 4)


@pytest.mark.parametrize("out", [
    clf([[1.0, 2.0], [3.0, 4.0]], [[0.3, -1.2, 2.0], [5.0, 0.0, -5.0]]),
    reg([[1.0, 2.0], [3.0, 4.0]], [[0.3, -1.2], [5.0, 0.0]], [[0.0, 1.0], [-1.0, 2.0]]),
], ids=["classification", "regression"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_zero_when_student_equals_teacher(out, temperature):
    close(LOSSES["kd"](out, out, EMPTY, temperature=temperature, confidence=False), 0.0, tol=1e-12)


# -------------------------------------------------------------------------------------------------- feature


def test_feature_cosine_no_projection():
    # cos((1,0),(0,1)) = 0 -> 1;  cos((1,1),(2,2)) = 1 -> 0;  mean = 0.5
    val = LOSSES["feature"](feats([[1.0, 0.0], [1.0, 1.0]]), feats([[0.0, 1.0], [2.0, 2.0]]), EMPTY, mode="cosine")
    close(val, 0.5)


def test_feature_mse_no_projection():
    # diffs (1, -1), (0, -2) -> squares 1 + 1 + 0 + 4 = 6 over 4 entries = 1.5
    val = LOSSES["feature"](feats([[1.0, 0.0], [1.0, 1.0]]), feats([[0.0, 1.0], [1.0, 3.0]]), EMPTY,
                            mode="mse")
    close(val, 1.5)


# W f + b with W = [[1,0],[0,1],[1,1]], b = (0, 0, -1):
#   f = (1, 0) -> (1, 0, 1 - 1) = (1, 0, 0)
#   f = (0, 2) -> (0, 2, 2 - 1) = (0, 2, 1)
PROJ_W, PROJ_B = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, -1.0]
FS = [[1.0, 0.0], [0.0, 2.0]]


def test_feature_cosine_with_projection():
    # cos((1,0,0),(3,0,0)) = 1 -> 0;  cos((0,2,1),(0,1,0)) = 2 / sqrt(5) -> 1 - 2/sqrt(5);  mean of the two
    val = LOSSES["feature"](feats(FS), feats([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), EMPTY,
                            projection=linear(PROJ_W, PROJ_B), mode="cosine")
    close(val, (1 - 2 / math.sqrt(5)) / 2)


def test_feature_mse_with_projection():
    # (1,0,0) - (1,1,0) = (0,-1,0);  (0,2,1) - (0,2,3) = (0,0,-2);  squares 1 + 4 = 5 over 6 entries
    proj = linear(PROJ_W, PROJ_B)
    val = LOSSES["feature"](feats(FS), feats([[1.0, 1.0, 0.0], [0.0, 2.0, 3.0]]), EMPTY,
                            projection=proj, mode="mse")
    close(val, 5 / 6)
    val.backward()
    # d/db_2 = 2 * (-2) / 6 (only the second sample's third entry differs in that coordinate)
    assert float(proj.bias.grad[2]) == pytest.approx(-4 / 6)


def test_feature_unknown_mode():
    with pytest.raises(CmkdError, match="valid: cosine, mse"):
        LOSSES["feature"](feats([[1.0]]), feats([[1.0]]), EMPTY, mode="l1")


# ------------------------------------------------------------------------------------------------- relation


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_similarity_preserving_hand_value_3x2():
    # F_s = [[1,0],[0,1],[1,1]] -> G_s = F_s F_s^T = [[1,0,1],[0,1,1],[1,1,2]]
    # F_t = [[1,0],[2,0],[0,1]] -> G_t = [[1,2,0],[2,4,0],[0,0,1]]
    # rows normalised to unit length a_i, b_i: ||a_i - b_i||^2 = 2 - 2 a_i.b_i
    #   row 0: a = (1,0,1)/sqrt2, b = (1,2,0)/sqrt5       a.b = 1/sqrt10
    #   row 1: a = (0,1,1)/sqrt2, b = (2,4,0)/sqrt20      a.b = 4/sqrt40 = 2/sqrt10
    #   row 2: a = (1,1,2)/sqrt6, b = (0,0,1)             a.b = 2/sqrt6
    # sum = 6 - 6/sqrt10 - 4/sqrt6;  divided by B^2 = 9
    fs, ft = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), t([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    expected = (6 - 6 / math.sqrt(10) - 4 / math.sqrt(6)) / 9
    close(similarity_preserving(fs, ft), expected)
    # the same number from the rows written out above, element by element
    gs = [_unit(r) for r in ([1, 0, 1], [0, 1, 1], [1, 1, 2])]
    gt = [_unit(r) for r in ([1, 2, 0], [2, 4, 0], [0, 0, 1])]
    by_hand = sum((a - b) ** 2 for ra, rb in zip(gs, gt, strict=True) for a, b in zip(ra, rb, strict=True))
    assert by_hand / 9 == pytest.approx(expected)
    close(LOSSES["relation"](feats(fs.tolist()), feats(ft.tolist()), EMPTY, mode="sp"), expected)


def test_similarity_preserving_ignores_feature_width_and_row_scale():
    # teacher 3-d, student 2-d with the same Gram matrix up to per-row scale -> 0
    fs = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ft = t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]) * 7
    close(similarity_preserving(fs, ft), 0.0, tol=1e-12)


# triangle (0,0),(1,0),(0,1) vs collinear points (0,0),(1,0),(2,0)
TRI = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
LINE = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]


def _smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_rkd_distance_part_hand_value():
    # student pair distances d01 = d02 = 1, d12 = sqrt2; mean over the 6 off-diagonal entries (2 + sqrt2)/3
    #   -> normalised: 3/(2+sqrt2) = 3 - 1.5 sqrt2 (twice), 3 sqrt2/(2+sqrt2) = 3 sqrt2 - 3
    # teacher: d01 = 1, d02 = 2, d12 = 1, mean 4/3 -> 3/4, 3/2, 3/4
    # differences (all < 1, so smooth-L1 = x^2 / 2): each pair appears twice, the 3 diagonal entries are 0
    #   loss = 2 * sum(x^2 / 2) / 9 = sum(x^2) / 9
    a = (3 - 1.5 * math.sqrt(2)) - 0.75  # d01
    b = (3 - 1.5 * math.sqrt(2)) - 1.5  # d02
    c = (3 * math.sqrt(2) - 3) - 0.75  # d12
    assert max(abs(a), abs(b), abs(c)) < 1
    close(rkd(t(TRI), t(LINE), w_dist=1.0, w_angle=0.0), (a * a + b * b + c * c) / 9, tol=1e-7)


def test_rkd_angle_part_hand_value():
    # per anchor j, the 3x3 Gram of unit(x_i - x_j): 2 ones (i = k != j), 2 copies of cos(angle at j), 5 zeros
    # student triangle: angle at point 0 is 90 deg (cos 0), at points 1 and 2 45 deg (cos 1/sqrt2)
    # teacher line: at point 0 cos 1, at point 1 cos -1 (opposite sides), at point 2 cos 1
    # differences: -1 -> smooth-L1 0.5;  1/sqrt2 + 1 -> |x| - 0.5 = 1/sqrt2 + 0.5;
    #              1/sqrt2 - 1 -> 0.5 (1 - 1/sqrt2)^2 = 0.75 - 1/sqrt2
    # sum over the 27 entries = 2 * (0.5 + 1/sqrt2 + 0.5 + 0.75 - 1/sqrt2) = 3.5  -> mean 3.5 / 27
    r2 = 1 / math.sqrt(2)
    assert 2 * sum(_smooth_l1(x) for x in (0 - 1, r2 + 1, r2 - 1)) == pytest.approx(3.5)
    close(rkd(t(TRI), t(LINE), w_dist=0.0, w_angle=1.0), 3.5 / 27, tol=1e-7)


def test_relation_rkd_is_distance_plus_twice_angle():
    a = (3 - 1.5 * math.sqrt(2)) - 0.75
    b = (3 - 1.5 * math.sqrt(2)) - 1.5
    c = (3 * math.sqrt(2) - 3) - 0.75
    expected = (a * a + b * b + c * c) / 9 + 2 * 3.5 / 27
    close(LOSSES["relation"](feats(TRI), feats(LINE), EMPTY, mode="rkd"), expected, tol=1e-7)


def test_rkd_zero_for_identical_and_invariant_to_student_scale():
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(5, 4, generator=g, dtype=D64)
    ft = torch.randn(5, 4, generator=g, dtype=D64)
    close(rkd(ft, ft), 0.0, tol=1e-12)
    close(LOSSES["relation"](feats(ft.tolist()), feats(ft.tolist()), EMPTY, mode="rkd"), 0.0, tol=1e-12)
    close(rkd(3.7 * ft, ft), 0.0, tol=1e-10)  # a scaled copy has the same relations
    base = float(rkd(fs, ft))
    assert base > 0.01
    close(rkd(0.25 * fs, ft), base, tol=1e-10)
    close(rkd(40.0 * fs, ft), base, tol=1e-10)


def test_relation_single_sample_is_zero_and_unknown_mode():
    close(LOSSES["relation"](feats([[1.0, 2.0]]), feats([[3.0, 4.0]]), EMPTY, mode="rkd"), 0.0)
    close(LOSSES["relation"](feats([[1.0, 2.0]]), feats([[3.0, 4.0]]), EMPTY, mode="sp"), 0.0)
    with pytest.raises(CmkdError, match="valid: sp, rkd"):
        LOSSES["relation"](feats(TRI), feats(TRI), EMPTY, mode="pkt")


# ---------------------------------------------------------------------------------------------- contrastive


def test_contrastive_orthogonal_unit_features():
    # z_s = z_t = e1, e2 -> sim = I; logits = I / tau
    # row loss = -log(e^{1/tau} / (e^{1/tau} + e^0)) = log(1 + e^{-1/tau}), the same for both rows
    e = [[1.0, 0.0], [0.0, 1.0]]
    close(LOSSES["contrastive"](feats(e), feats(e), EMPTY, temperature=0.1), math.log1p(math.exp(-10)))
    close(LOSSES["contrastive"](feats(e), feats(e), EMPTY, temperature=1.0), math.log1p(math.exp(-1)))
    # only directions count: scaling either side changes nothing
    close(LOSSES["contrastive"](feats([[5.0, 0.0], [0.0, 0.2]]), feats(e), EMPTY, temperature=1.0),
          math.log1p(math.exp(-1)))


def test_contrastive_swapped_pairs_and_projection():
    # student rows swapped: logits [[0, 10], [10, 0]] -> each row -log(1 / (1 + e^10)) = log(1 + e^10)
    e, swapped = [[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]
    close(LOSSES["contrastive"](feats(swapped), feats(e), EMPTY, temperature=0.1), math.log1p(math.exp(10)))
    # a projection that swaps the coordinates back (W = [[0,1],[1,0]], b = 0) restores the aligned value
    proj = linear([[0.0, 1.0], [1.0, 0.0]], [0.0, 0.0])
    close(LOSSES["contrastive"](feats(swapped), feats(e), EMPTY, projection=proj, temperature=0.1),
          math.log1p(math.exp(-10)))


# -------------------------------------------------------------------------------------------- CompositeLoss


def _composite_case():
    """3 samples, 2-d features, 3 classes; float32 like a real model."""
    s = {"features": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True),
         "y": {"logits": torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [1.0, 2.0, 3.0]],
                                      requires_grad=True)}}
    te = {"features": torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]),
          "y": {"logits": torch.tensor([[2 * math.log(2.0), 0.0, 0.0], [math.log(2.0), 0.0, 0.0],
                                        [1.0, 2.0, 3.0]])}}
    batch = {"targets": {"y": torch.tensor([2, 0, 2])}}
    return s, te, batch


def _identity_projections(loss: CompositeLoss) -> None:
    with torch.no_grad():
        for lin in (loss.projection, loss.contrastive_projection):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()


def test_composite_weighted_sum_and_parts():
    s, te, batch = _composite_case()
    weights = {"task": 1.0, "kd": 0.5, "feature": 2.0, "relation": 3.0, "contrastive": 0.25}
    distill = DistillConfig(temperature=2.0, term_options={"feature": {"mode": "mse"}, "relation": {"mode": "sp"},
                                                           "contrastive": {"temperature": 1.0}})
    loss = CompositeLoss(weights, student_width=2, teacher_width=2, distill=distill)
    _identity_projections(loss)
    out = loss(s, te, batch)
    assert set(out) == {"loss", *weights}
    # hand values of every part (projections are the identity):
    # task: ln 3 (uniform, label 2) + ln 2 (p_0 = 1/2) + (-log softmax(1,2,3)_2) over 3
    ce3 = -(3 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    expected = {
        "task": (LN3 + LN2 + ce3) / 3,
        # kd, T = 2: sample 0 is the kd example above, 2 ln(9/8); samples 1 and 2 match the teacher -> 0
        "kd": 2 * math.log(9 / 8) / 3,
        # mse: diffs (0,0), (-2,1), (1,0) -> (4 + 1 + 1) / 6
        "feature": 1.0,
        # same features as the sp hand example
        "relation": (6 - 6 / math.sqrt(10) - 4 / math.sqrt(6)) / 9,
    }
    # contrastive, tau = 1: z_s = (1,0), (0,1), (1,1)/sqrt2; z_t = (1,0), (1,0), (0,1)
    zs = [(1.0, 0.0), (0.0, 1.0), (1 / math.sqrt(2), 1 / math.sqrt(2))]
    zt = [(1.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    sims = [[a[0] * b[0] + a[1] * b[1] for b in zt] for a in zs]
    expected["contrastive"] = sum(-sims[i][i] + math.log(sum(math.exp(v) for v in sims[i]))
                                  for i in range(3)) / 3
    for name, val in expected.items():
        assert float(out[name]) == pytest.approx(val, rel=1e-5), name
        assert not out[name].requires_grad  # parts are detached, for logging
    total = sum(weights[k] * expected[k] for k in weights)
    assert float(out["loss"].detach()) == pytest.approx(total, rel=1e-5)
    out["loss"].backward()
    assert s["features"].grad is not None and s["y"]["logits"].grad is not None
    assert loss.projection.weight.grad is not None and loss.contrastive_projection.weight.grad is not None


def test_composite_without_teacher_uses_only_task():
    s, _, batch = _composite_case()
    loss = CompositeLoss({"task": 2.0, "kd": 1.0, "feature": 1.0, "relation": 1.0, "contrastive": 1.0},
                         student_width=2)
    out = loss(s, None, batch)
    assert set(out) == {"loss", "task"}
    ce3 = -(3 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    assert float(out["task"]) == pytest.approx((LN3 + LN2 + ce3) / 3, rel=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(2 * (LN3 + LN2 + ce3) / 3, rel=1e-6)


def test_composite_zero_weight_is_dropped():
    s, te, batch = _composite_case()
    out = CompositeLoss({"task": 1.0, "kd": 0.0}, student_width=2)(s, te, batch)
    assert set(out) == {"loss", "task"}


def test_composite_kd_mask_excludes_rows_from_teacher_terms():
    s, te, batch = _composite_case()
    # the teacher never saw sample 2: give it garbage there, it must not matter
    te["features"][2] = float("nan")
    te["y"]["logits"][2] = torch.tensor([1e4, -1e4, float("nan")])
    batch["kd_mask"] = torch.tensor([True, True, False])
    loss = CompositeLoss({"task": 1.0, "kd": 1.0, "feature": 1.0}, student_width=2,
                         distill=DistillConfig(temperature=2.0, term_options={"feature": {"mode": "mse"}}))
    _identity_projections(loss)
    out = loss(s, te, batch)
    ce3 = -(3 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    assert float(out["task"]) == pytest.approx((LN3 + LN2 + ce3) / 3, rel=1e-6)  # task keeps all 3 rows
    assert float(out["kd"]) == pytest.approx(2 * math.log(9 / 8) / 2, rel=1e-6)  # mean over rows 0, 1
    assert float(out["feature"]) == pytest.approx((0 + 0 + 4 + 1) / 4, rel=1e-6)  # diffs (0,0), (-2,1)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(s["features"].grad).all()
    assert torch.equal(s["features"].grad[2], torch.zeros(2))  # the masked row only feeds task (logits)


def test_composite_kd_mask_all_false_uses_only_task():
    s, te, batch = _composite_case()
    batch["kd_mask"] = torch.zeros(3, dtype=torch.bool)
    out = CompositeLoss({"task": 1.0, "kd": 1.0, "relation": 1.0}, student_width=2)(s, te, batch)
    assert set(out) == {"loss", "task"}
    assert float(out["loss"].detach()) == pytest.approx(float(out["task"]))


def test_composite_unknown_term_lists_valid_names():
    valid = ", ".join(sorted(LOSSES))
    with pytest.raises(CmkdError, match="unknown loss term 'hint'") as err:
        CompositeLoss({"task": 1.0, "hint": 1.0})
    assert f"valid: {valid}" in str(err.value)
    assert "contrastive" in valid and "task" in valid


# ------------------------------------------------------------------------------------------ registry check


def test_registry_holds_the_documented_terms():
    assert {"task", "kd", "feature", "relation", "contrastive"} <= set(LOSSES)


def _generic_outputs(kind: str) -> tuple[dict, dict, dict, list[Tensor]]:
    g = torch.Generator().manual_seed(1)
    b, d = 3, 4
    sf = torch.randn(b, d, generator=g, requires_grad=True)
    tf = torch.randn(b, d, generator=g)
    imp = torch.randn(b, 2, 2, generator=g, requires_grad=True)  # a reconstructed (T=2, F=2) modality
    truth = torch.randn(b, 2, 2, generator=g)
    truth[0, 1, 1] = float("nan")
    if kind == "classification":
        sl = torch.randn(b, 3, generator=g, requires_grad=True)
        s = {"features": sf, "y": {"logits": sl}, "imputed": {"seq": imp}}
        te = {"features": tf, "y": {"logits": torch.randn(b, 3)}}
        return s, te, {"targets": {"y": torch.tensor([0, 2, 1])}, "impute_truth": {"seq": truth}}, [sf, sl, imp]
    sm = torch.randn(b, 2, generator=g, requires_grad=True)
    sv = torch.randn(b, 2, generator=g, requires_grad=True)
    s = {"features": sf, "y": {"mean": sm, "logvar": sv}, "imputed": {"seq": imp}}
    te = {"features": tf, "y": {"mean": torch.randn(b, 2, generator=g), "logvar": torch.zeros(b, 2)}}
    y = torch.randn(b, 2, generator=g)
    y[1, 0] = float("nan")
    return s, te, {"targets": {"y": y}, "impute_truth": {"seq": truth}}, [sf, sm, sv, imp]


# every term's settings as a run gives them (the config's defaults)
TERM_SETTINGS = {**{k: dict(v) for k, v in TERM_OPTION_DEFAULTS.items() if k != "impute"},
                 "task": {"nll_beta": ModelConfig().nll_beta}}
TERM_SETTINGS["kd"]["temperature"] = DistillConfig().temperature


@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_term_returns_finite_differentiable_scalar(name, kind):
    s, te, batch, leaves = _generic_outputs(kind)
    val = LOSSES[name](s, te, batch, **TERM_SETTINGS.get(name, {}))
    assert isinstance(val, Tensor) and val.dim() == 0
    assert torch.isfinite(val)
    assert val.requires_grad
    val.backward()
    grads = [p.grad for p in leaves if p.grad is not None]
    assert grads, f"{name}: no gradient reached the student outputs"
    assert all(torch.isfinite(gr).all() for gr in grads)


def test_impute_hand_value():
    # reconstructions [[1, 2], [3, 4]] against truth [[1, NaN], [5, 2]]: known errors 0, 2, 2 -> mean 8/3
    x_hat = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    truth = torch.tensor([[[1.0, float("nan")], [5.0, 2.0]]])
    s = {"features": torch.zeros(1, 2), "imputed": {"seq": x_hat}}
    val = LOSSES["impute"](s, None, {"impute_truth": {"seq": truth}})
    assert val.item() == pytest.approx(8 / 3)
    val.backward()
    assert x_hat.grad[0, 0, 1] == 0  # an unknown value gets no gradient


def test_impute_without_truth_is_zero():
    s = {"features": torch.zeros(2, 2), "imputed": {"seq": torch.ones(2, 3, 1)}}
    assert LOSSES["impute"](s, None, {}).item() == 0.0


def test_adaptive_weights_hand_value():
    # regression, unit variance: per-sample NLL = 0.5 * d^2 -> 0.5 * [1, 4] = [0.5, 2]
    # availabilities [1, 0] -> task weights [1.5, 0.5]: (0.75 + 1) / 2 = 0.875
    # kd: d^2 to the teacher [4, 1], weights 1.5 - a = [0.5, 1.5]: (2 + 1.5) / 2 = 1.75
    mean = torch.tensor([[0.0], [0.0]])
    s = {"features": torch.zeros(2, 2), "y": {"mean": mean, "logvar": torch.zeros(2, 1)}}
    te = {"features": torch.zeros(2, 2), "y": {"mean": torch.tensor([[2.0], [1.0]]), "logvar": torch.zeros(2, 1)}}
    batch = {"targets": {"y": torch.tensor([[1.0], [2.0]])}, "availability": torch.tensor([1.0, 0.0])}
    adaptive = DistillConfig(adaptive_weights=True)
    parts = CompositeLoss({"task": 1.0, "kd": 1.0}, 2, distill=adaptive, nll_beta=0.0)(s, te, batch)
    assert parts["task"].item() == pytest.approx(0.875)
    assert parts["kd"].item() == pytest.approx(1.75)
    assert parts["loss"].item() == pytest.approx(0.875 + 1.75)
    plain = CompositeLoss({"task": 1.0, "kd": 1.0}, 2, nll_beta=0.0)(s, te, batch)  # unweighted
    assert plain["task"].item() == pytest.approx(1.25) and plain["kd"].item() == pytest.approx(2.5)


def test_composite_settings_come_from_the_config() -> None:
    """No second default: a CompositeLoss without config sections applies the config's defaults."""
    loss = CompositeLoss({"task": 1.0, "kd": 1.0, "feature": 1.0}, 2)
    assert loss.settings["task"]["nll_beta"] == ModelConfig().nll_beta == 0.5
    assert loss.settings["kd"] == {"temperature": DistillConfig().temperature, "confidence": False}
    assert loss.settings["feature"]["mode"] == "cosine" and loss.settings["relation"] == {"mode": "sp"}
    assert loss.settings["contrastive"]["temperature"] == 0.1
    assert len(list(loss.parameters())) == 4  # the two projections (weights and biases)
    assert CompositeLoss({"kd": 1.0}, 2, temperature=2.0).settings["kd"]["temperature"] == 2.0  # an override


def test_kd_regression_confidence_weights_by_teacher_precision():
    s = {"features": torch.zeros(2, 2), "r": {"mean": torch.tensor([[1.0], [3.0]]), "logvar": torch.zeros(2, 1)}}
    t = {"features": torch.zeros(2, 2), "r": {"mean": torch.tensor([[0.0], [0.0]]),
                                              "logvar": torch.log(torch.tensor([[1.0], [4.0]]))}}
    # precisions 1 and 1/4, mean 5/8: weights 8/5 and 2/5; mean of (1 * 8/5, 9 * 2/5) = (1.6 + 3.6) / 2
    got = kd_loss(s, t, {}, temperature=4.0, confidence=True)
    assert math.isclose(float(got), 2.6, rel_tol=1e-6)
    assert math.isclose(float(kd_loss(s, t, {}, temperature=4.0, confidence=False)), 5.0, rel_tol=1e-6)
