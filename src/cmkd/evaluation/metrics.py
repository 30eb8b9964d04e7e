"""Evaluation: batched prediction, task metrics (scikit-learn), parameter counts and latency."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from cmkd.data.arrays import MultimodalData, make_batch
from cmkd.nn.models import MultimodalNet

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "rmse": False, "mae": False, "r2": True,
                    "standardised_error": False}  # the last: :class:`Yardstick` over several targets


@torch.no_grad()
def predict(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, batch_size: int = 1024,
            device: torch.device | str = "cpu", only: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` on samples ``idx``; with ``only``, the model's other modalities are marked absent.

    Returns:
        ``features`` (n, D) and, per target ``t``, ``t/logits`` or ``t/mean``, ``t/logvar``, ``t/value``,
        ``t/std`` (raw units); ``imputed/<modality>`` (standardised units) for a model that imputes.
    """
    model.eval()
    mods = list(model.encoders)
    chunks: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(idx), batch_size):
        b = make_batch(data, idx[s:s + batch_size], mods, device=device)
        if only is not None:
            b["present"] = {m: p & (m in only) for m, p in b["present"].items()}
        out = model(b["inputs"], b["present"])
        flat = {"features": out["features"]}
        for t, kind in model.target_kinds.items():
            flat.update({f"{t}/{k}": v for k, v in out[t].items()})
            if kind == "regression":  # the Gaussian head's standard deviation in raw units
                flat[f"{t}/std"] = torch.exp(0.5 * out[t]["logvar"]) * getattr(model, f"tstd_{t}")
        for m, v in (out.get("imputed") or {}).items():
            flat[f"imputed/{m}"] = v
        for k, v in flat.items():
            chunks.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1."""
    from sklearn.metrics import accuracy_score, f1_score  # imported when first needed: a failing command exits sooner

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root-mean-square error pooled over every element where both arrays are finite (all outputs together).

    :func:`regression_metrics` instead averages the per-output RMSEs (observed targets only, in float64 through
    sklearn); use this one for a single pooled figure, e.g. a level error over several horizons.
    """
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    return float(np.sqrt(np.mean((y_true[ok] - y_pred[ok]) ** 2)))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R^2 over observed (non-NaN) values, averaged over output columns."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true, y_pred = y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)
    rm, ma, r2 = [], [], []
    for k in range(y_true.shape[1]):
        obs = ~np.isnan(y_true[:, k])
        if obs.sum() == 0:
            continue
        rm.append(np.sqrt(mean_squared_error(y_true[obs, k], y_pred[obs, k])))
        ma.append(mean_absolute_error(y_true[obs, k], y_pred[obs, k]))
        r2.append(r2_score(y_true[obs, k], y_pred[obs, k]) if obs.sum() > 1 else float("nan"))
    return {"rmse": float(np.mean(rm)), "mae": float(np.mean(ma)), "r2": float(np.mean(r2))}


def task_metrics(data: MultimodalData, idx: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics of every target; the first target's metrics unprefixed, others as ``<target>/<metric>``."""
    out: dict[str, float] = {}
    for i, (t, kind) in enumerate(data.target_kinds.items()):
        if f"{t}/logits" not in preds and f"{t}/value" not in preds:  # a model without this target's head
            continue
        y = data.targets[t][idx]
        if kind == "classification":
            lab = y >= 0
            m = classification_metrics(y[lab], preds[f"{t}/logits"][lab].argmax(axis=1))
        else:
            m = regression_metrics(y, preds[f"{t}/value"])
        out.update(m if i == 0 else {f"{t}/{k}": v for k, v in m.items()})
    return out


def selection_metric(model: MultimodalNet, data: MultimodalData) -> tuple[str, bool]:
    """The metrics.json key that early stopping watches for ``model`` (accuracy or rmse of the first of its
    targets, prefixed ``<target>/`` unless that is the data's first target) and whether higher is better."""
    t = next(iter(model.target_kinds))
    name = "accuracy" if model.target_kinds[t] == "classification" else "rmse"
    return (name if t == next(iter(data.target_kinds)) else f"{t}/{name}"), HIGHER_IS_BETTER[name]


def imputation_metrics(data: MultimodalData, idx: np.ndarray, preds: dict[str, np.ndarray],
                       sources: dict[str, str], model: MultimodalNet) -> dict[str, float]:
    """RMSE of imputed values where the input was missing but the complete record is known.

    ``imputation_rmse`` is in standardised units (averaged over every such value of every imputed modality);
    ``imputation_rmse/<modality>/<feature index>`` in the feature's raw units.
    """
    out: dict[str, float] = {}
    se, count = 0.0, 0
    for m, rec in ((k[len("imputed/"):], v) for k, v in preds.items() if k.startswith("imputed/")):
        src = sources.get(m)
        if src is None or src not in data.inputs:
            continue
        enc = model.encoders[m]
        mean, std = enc.mean.cpu().numpy(), enc.std.cpu().numpy()
        truth, seen = data.inputs[src][idx], data.inputs[m][idx]
        gap = np.isnan(seen) & ~np.isnan(truth) & data.present[m][idx].reshape(-1, *([1] * (seen.ndim - 1)))
        if not gap.any():
            continue
        z_err = np.where(gap, rec - (truth - mean) / std, 0.0)
        se += float((z_err ** 2).sum())
        count += int(gap.sum())
        raw_err = z_err * std
        feat_axis = seen.ndim - 1 if data.kinds[m] == "sequence" else 1
        other = tuple(i for i in range(seen.ndim) if i != feat_axis)
        n_f = (gap.sum(axis=other))
        rmse_f = np.sqrt((raw_err ** 2).sum(axis=other) / np.maximum(n_f, 1))
        for f in range(len(rmse_f)):
            if n_f[f]:
                out[f"imputation_rmse/{m}/{f}"] = float(rmse_f[f])
    if count:
        out = {"imputation_rmse": float(np.sqrt(se / count)), **out}
    return out


def primary_metric(data: MultimodalData) -> str:
    """``accuracy`` for a classification first target, else ``rmse``."""
    first = next(iter(data.target_kinds.values()))
    return "accuracy" if first == "classification" else "rmse"


VAL_PARTS = 10  # parts of the validation split: their figures give a lead on validation its paired standard error


class Yardstick:
    """The figure every selection compares: the primary metric with one target; with several, the mean over
    targets of RMSE / (the target's std on the labelled training samples) or of 1 - accuracy (lower is better)."""

    def __init__(self, data: MultimodalData, labelled: np.ndarray) -> None:
        self.targets = dict(data.target_kinds)
        self.name = primary_metric(data) if len(self.targets) == 1 else "standardised_error"
        self.higher_is_better = HIGHER_IS_BETTER[self.name]
        self.scale: dict[str, float] = {}
        for t, kind in self.targets.items():
            if kind == "regression":
                y = data.targets[t][labelled].reshape(len(labelled), -1)
                with np.errstate(all="ignore"):
                    s = float(np.sqrt(np.nanmean(np.nanvar(y, axis=0)))) if len(y) else float("nan")
                self.scale[t] = s if np.isfinite(s) and s > 0 else 1.0

    def describe(self) -> dict:
        """What metrics.json records (``recommended.yardstick``): enough for :func:`yardstick_figure`."""
        return {"name": self.name, "higher_is_better": self.higher_is_better, "targets": dict(self.targets),
                "scale": dict(self.scale)}

    def __call__(self, m: dict) -> float:
        """The figure from a :func:`task_metrics` dict (:func:`yardstick_figure`)."""
        return yardstick_figure(m, self.describe())

    def better(self, a: float, b: float) -> bool:
        """Is figure ``a`` better than ``b``?"""
        return a > b if self.higher_is_better else a < b


def yardstick_figure(m: dict, yard: dict) -> float:
    """The yardstick's figure from a :func:`task_metrics` dict ``m`` and a :meth:`Yardstick.describe` dict
    ``yard``: over the targets with a figure in ``m`` (NaN where none has one)."""
    targets = yard["targets"]
    if len(targets) == 1:
        v = m.get(yard["name"], np.nan)
        return float(v) if isinstance(v, (int, float)) else float("nan")
    parts = []
    for i, (t, kind) in enumerate(targets.items()):
        pre = "" if i == 0 else f"{t}/"  # task_metrics: the first target's metrics unprefixed
        v = m.get(pre + ("accuracy" if kind == "classification" else "rmse"), np.nan)
        v = float(v) if isinstance(v, (int, float)) else float("nan")
        parts.append(1.0 - v if kind == "classification" else v / float(yard["scale"].get(t, 1.0)))
    finite = [p for p in parts if np.isfinite(p)]  # a target without labels here tells no candidate apart
    return float(np.mean(finite)) if finite else float("nan")


def part_metrics(data: MultimodalData, idx: np.ndarray, preds: dict[str, np.ndarray], k: int = VAL_PARTS
                 ) -> list[dict[str, float]]:
    """:func:`task_metrics` on each of ``k`` interleaved parts of the labelled samples among ``idx`` (``preds``
    aligned with ``idx``): per-part figures, whose spread gives a paired standard error of one model's lead
    over another on the same samples. Empty with fewer than 2 labelled samples."""
    pos = np.flatnonzero(np.isin(idx, data.labelled(idx)))
    if len(pos) < 2:
        return []
    return [task_metrics(data, idx[p], {key: v[p] for key, v in preds.items()})
            for p in (pos[j::k] for j in range(min(k, len(pos))))]


def example_inputs(data: MultimodalData, modalities: list[str], n: int = 1) -> dict[str, torch.Tensor]:
    """The first ``n`` test samples' inputs, as tensors (for latency and export)."""
    idx = data.indices(2)[:n]
    return {m: torch.from_numpy(data.inputs[m][idx]) for m in modalities}


@torch.no_grad()
def torch_latency_ms(model: MultimodalNet, inputs: dict[str, torch.Tensor], runs: int = 200) -> float:
    """Median batch-1 latency on one CPU thread, in milliseconds."""
    model = model.cpu().eval()
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(10):
            model(inputs)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev)
    return float(np.median(times) * 1e3)


def paired_latency_ms(calls: dict[str, Callable[[], object]], runs: int = 200, warmup: int = 10,
                      threads: int = 1, block: int = 10) -> dict[str, dict[str, float]]:
    """Latency in ms of each zero-argument call, timed in round-robin blocks of ``block`` calls.

    Returns ``{name: {"median": ..., "min": ...}}``. For speed-up ratios on a shared machine: a burst of load
    from other processes then falls on every call alike instead of on whichever model happened to be timed at the
    time; within a block a call runs with its own weights in cache, as when it is served alone. Under load a long
    call is preempted more often than a short one, which inflates its median; the minimum (the best of the runs,
    as Python's ``timeit`` advises) is the robust figure for a ratio then. Torch runs with ``threads`` threads.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {k: [] for k in calls}
    try:
        with torch.inference_mode():
            for f in calls.values():
                for _ in range(warmup):
                    f()
            for _ in range(max(1, -(-runs // block))):
                for k, f in calls.items():
                    f()  # the first call of a block warms the cache
                    for _ in range(block):
                        t0 = time.perf_counter()
                        f()
                        times[k].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev)
    return {k: {"median": float(np.median(v) * 1e3), "min": float(np.min(v) * 1e3)} for k, v in times.items()}
