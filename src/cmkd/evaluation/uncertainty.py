"""Uncertainty: split-conformal calibration of Gaussian regression heads, and conformal prediction sets.

A regression head predicts a mean ``mu`` and a log-variance; its ``sigma`` is rarely calibrated (a network
trained on complete data is over-confident on sparse data). Split-conformal calibration (Vovk et al., 2005;
Lei et al., 2018; normalised scores as in Papadopoulos et al., 2002) fixes that with a held-out calibration
split: the score of a calibration sample is ``|y - mu| / sigma``; with ``n`` scores the interval
``mu +- q * sigma``, ``q`` the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile, covers a new exchangeable
sample with probability at least ``1 - alpha``.

Mondrian (group-conditional) calibration (Vovk et al., 2005, ch. 4) takes ``q`` per group, e.g. per band of
data availability, so the coverage holds at every sparsity level and not only on average: a student that
sees 10% of its readings gets a ``q`` fitted on samples that saw about 10%.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from cmkd.data.arrays import MultimodalData, availability
from cmkd.errors import CmkdError
from cmkd.evaluation.metrics import predict

ALPHA = 0.1  # miscoverage of the run's conformal intervals: 90% intervals

if TYPE_CHECKING:
    from cmkd.config import ExperimentConfig
    from cmkd.nn.models import MultimodalNet


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The finite-sample-valid ``(1 - alpha)`` quantile of calibration ``scores`` (inf when too few)."""
    s = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    n = len(s)
    k = math.ceil((n + 1) * (1 - alpha))
    if n == 0 or k > n:
        return float("inf")
    return float(s[k - 1])


class ConformalRegressor:
    """Normalised split-conformal intervals, optionally per group (Mondrian).

    Args:
        alpha: miscoverage; 0.1 gives 90% intervals.
        min_group: groups with fewer calibration samples use the pooled quantile.
    """

    def __init__(self, alpha: float = 0.1, min_group: int = 30) -> None:
        if not 0 < alpha < 1:
            raise CmkdError(f"conformal alpha must be in (0, 1), got {alpha}")
        self.alpha, self.min_group = alpha, min_group
        self.q_: float = float("nan")
        self.group_q_: dict[int, float] = {}
        self.n_: int = 0

    def fit(self, mu: np.ndarray, sigma: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
            ) -> ConformalRegressor:
        """Calibrate on held-out samples (NaN targets are ignored); returns ``self``."""
        mu, sigma, y = (np.asarray(a, dtype=float).reshape(-1) for a in (mu, sigma, y))
        ok = np.isfinite(y) & np.isfinite(mu) & (sigma > 0)
        if ok.sum() < 2:
            raise CmkdError("conformal calibration needs at least 2 labelled calibration samples")
        scores = np.abs(y[ok] - mu[ok]) / sigma[ok]
        self.n_ = int(ok.sum())
        self.q_ = conformal_quantile(scores, self.alpha)
        self.group_q_ = {}
        if groups is not None:
            g = np.asarray(groups).reshape(-1)[ok]
            for k in np.unique(g):
                sel = scores[g == k]
                if len(sel) >= self.min_group:
                    self.group_q_[int(k)] = conformal_quantile(sel, self.alpha)
        return self

    def quantile(self, groups: np.ndarray | None, n: int) -> np.ndarray:
        """(n,) the score quantile of each sample's group (the pooled one without groups)."""
        if groups is None or not self.group_q_:
            return np.full(n, self.q_)
        g = np.asarray(groups).reshape(-1)
        return np.array([self.group_q_.get(int(k), self.q_) for k in g])

    def interval(self, mu: np.ndarray, sigma: np.ndarray, groups: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds, shaped like ``mu``."""
        mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
        q = self.quantile(groups, len(mu)).reshape(-1, *([1] * (mu.ndim - 1)))
        return mu - q * sigma, mu + q * sigma

    def state(self) -> dict:
        """Plain data (saved with a model)."""
        return {"alpha": self.alpha, "q": self.q_, "group_q": {str(k): v for k, v in self.group_q_.items()},
                "n": self.n_, "min_group": self.min_group}

    @classmethod
    def from_state(cls, state: dict) -> ConformalRegressor:
        """Rebuild from :meth:`state`."""
        obj = cls(float(state["alpha"]), int(state.get("min_group", 30)))
        obj.q_, obj.n_ = float(state["q"]), int(state.get("n", 0))
        obj.group_q_ = {int(k): float(v) for k, v in state.get("group_q", {}).items()}
        return obj


def availability_groups(availability: np.ndarray, edges: tuple[float, ...] = (0.15, 0.3, 0.5, 0.75, 0.95)
                        ) -> np.ndarray:
    """Band index of each sample's observed share: 0 below the first edge, ..., len(edges) above the last."""
    return np.digitize(np.asarray(availability, dtype=float), np.asarray(edges))


def coverage_width(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, float]:
    """Empirical coverage and mean width of intervals over the observed targets."""
    y, lo, hi = (np.asarray(a, dtype=float).reshape(-1) for a in (y, lo, hi))
    ok = np.isfinite(y)
    if ok.sum() == 0:
        return {"coverage": float("nan"), "width": float("nan")}
    return {"coverage": float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))), "width": float(np.mean(hi[ok] - lo[ok]))}


def conformal_sets(cal_probs: np.ndarray, cal_labels: np.ndarray, probs: np.ndarray, alpha: float = 0.1
                   ) -> np.ndarray:
    """Conformal prediction sets for classification (LAC, Sadinle et al., 2019).

    Score ``1 - p_y`` on calibration samples; a test sample's set holds every class with ``1 - p_c <= q``.

    Returns:
        (n, C) bool membership.
    """
    lab = np.asarray(cal_labels) >= 0
    scores = 1.0 - cal_probs[lab][np.arange(lab.sum()), np.asarray(cal_labels)[lab]]
    q = conformal_quantile(scores, alpha)
    return (1.0 - probs) <= q


def calibrate_target(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                     alpha: float = 0.1) -> list[ConformalRegressor]:
    """One calibrated :class:`ConformalRegressor` per output column of a (n, K) regression target."""
    mu, sigma, y = (np.asarray(a, dtype=float).reshape(len(a), -1) for a in (mu, sigma, y))
    return [ConformalRegressor(alpha).fit(mu[:, k], sigma[:, k], y[:, k], groups) for k in range(mu.shape[1])]


def intervals(conformal: list[ConformalRegressor], mu: np.ndarray, sigma: np.ndarray,
              groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) lower and upper bounds from per-column calibrators."""
    mu, sigma = (np.asarray(a, dtype=float).reshape(len(a), -1) for a in (mu, sigma))
    lo, hi = np.empty_like(mu), np.empty_like(mu)
    for k, c in enumerate(conformal):
        lo[:, k], hi[:, k] = c.interval(mu[:, k], sigma[:, k], groups)
    return lo, hi


def uncertainty_groups(data: MultimodalData, idx: np.ndarray, modalities: list[str], cfg: ExperimentConfig
                       ) -> np.ndarray | None:
    """Availability band of each sample (Mondrian calibration groups), or None without edges. The share is over
    ``uncertainty.availability_modalities`` that the model has, else over all of ``modalities``."""
    u = cfg.uncertainty
    if not u.availability_edges:
        return None
    mods = [m for m in (u.availability_modalities or []) if m in modalities] or modalities
    return availability_groups(availability(data, idx, mods), tuple(u.availability_edges))


def calibrate(model: MultimodalNet, data: MultimodalData, cal: np.ndarray, cfg: ExperimentConfig,
              device: torch.device | str = "cpu") -> dict:
    """Split-conformal calibrators of every regression target on the calibration samples ``cal``."""
    mods = list(model.encoders)
    p = predict(model, data, cal, device=device)
    groups = uncertainty_groups(data, cal, mods, cfg)
    return {t: calibrate_target(p[f"{t}/value"], p[f"{t}/std"], data.targets[t][cal], groups, ALPHA)
            for t, k in model.target_kinds.items() if k == "regression"}


def interval_metrics(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, preds: dict, conformal: dict,
                     cfg: ExperimentConfig) -> dict[str, float]:
    """Coverage and mean width of the calibrated intervals on ``idx`` (first target unprefixed)."""
    pct = round(100 * (1 - ALPHA))
    groups = uncertainty_groups(data, idx, list(model.encoders), cfg)
    out: dict[str, float] = {}
    first = next(iter(data.target_kinds))
    for t, cal in conformal.items():
        lo, hi = intervals(cal, preds[f"{t}/value"], preds[f"{t}/std"], groups)
        cw = coverage_width(data.targets[t][idx], lo, hi)
        pre = "" if t == first else f"{t}/"
        out[f"{pre}coverage_{pct}"], out[f"{pre}width_{pct}"] = cw["coverage"], cw["width"]
    return out
