"""Loss terms as pure functions ``term(student_out, teacher_out, batch, **settings) -> Tensor``.

``student_out`` and ``teacher_out`` are :class:`cmkd.nn.models.MultimodalNet` output dicts: ``features`` (B, D) and,
per target, ``{"logits"}`` or ``{"mean", "logvar"}``. ``batch["targets"]`` holds class ids or standardised
regression targets (NaN = missing). :class:`CompositeLoss` weights the terms and returns the total and every
part, so each can be logged. The terms are usable in a user's own training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmkd.config import DistillConfig, ModelConfig, default_of, register_name_check
from cmkd.errors import CmkdError

LossTerm = Callable[..., Tensor]
LOSSES: dict[str, LossTerm] = {}
# term -> option -> what it accepts: a tuple of choices, ``bool``, ``float`` (a number above 0) or ``dict`` (of
# names); the options a config's ``distill.term_options`` may set (their defaults: cmkd.config.TERM_OPTION_DEFAULTS)
TERM_OPTIONS: dict[str, dict[str, Any]] = {}


def register_loss(name: str, options: dict[str, Any] | None = None) -> Callable[[LossTerm], LossTerm]:
    """Decorator adding a loss term to the registry, with the options a config may set for it
    (``distill.term_options.<name>``): option -> a tuple of choices, ``bool``, ``float`` (above 0) or ``dict``."""

    def deco(fn: LossTerm) -> LossTerm:
        LOSSES[name] = fn
        TERM_OPTIONS[name] = dict(options or {})
        return fn

    return deco


@register_name_check("loss_terms")
def check_loss_terms(weights: dict[str, float]) -> None:
    """CmkdError listing the valid terms where a config's ``distill.weights`` names an unknown one."""
    bad = sorted(set(weights) - set(LOSSES))
    if bad:
        raise CmkdError(f"unknown loss term {bad[0]!r}; valid: {', '.join(sorted(LOSSES))}")


def _option_ok(spec: Any, value: Any) -> bool:
    if isinstance(spec, tuple):
        return value in spec
    if spec is bool:
        return isinstance(value, bool)
    if spec is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@register_name_check("term_options")
def check_term_options(options: dict[str, dict[str, Any]]) -> None:
    """CmkdError naming the valid choices where a config's ``distill.term_options`` names an unknown term, an
    option the term does not take, or a value it does not accept."""
    for term, opts in options.items():
        if term not in LOSSES:
            raise CmkdError(f"unknown loss term {term!r}; valid: {', '.join(sorted(LOSSES))}")
        valid = TERM_OPTIONS[term]
        for key, value in opts.items():
            if key not in valid:
                raise CmkdError(f"loss term {term!r} has no option {key!r}; valid: "
                                f"{', '.join(sorted(valid)) or '(none)'}")
            spec = valid[key]
            if not _option_ok(spec, value):
                want = ("one of " + ", ".join(map(str, spec)) if isinstance(spec, tuple)
                        else "true or false" if spec is bool else "a mapping of names to names" if spec is dict
                        else "a number above 0")
                raise CmkdError(f"'{term}.{key}': {value!r} is not {want}")


def _target_names(out: dict) -> list[str]:
    return [k for k, v in out.items() if isinstance(v, dict) and ("logits" in v or "mean" in v)]


def _weighted_mean(values: Tensor, weight: Tensor | None, count: Tensor) -> Tensor:
    """``sum(w_i * v_i) / count``: per-sample weights scale a term's size without renormalising it away."""
    if weight is not None:
        values = values * weight.reshape(-1, *([1] * (values.dim() - 1)))
    return values.sum() / count.clamp_min(1)


@register_loss("task")
def task_loss(student_out: dict, teacher_out: dict | None, batch: dict, *,
              nll_beta: float, sample_weight: Tensor | None = None) -> Tensor:
    """Supervised loss, summed over targets.

    Classification: cross-entropy ``-log softmax(z)_y`` over labelled samples (class id -1 = unlabelled).
    Regression: Gaussian negative log-likelihood
    ``0.5 * (log s^2 + (y - mu)^2 / s^2)`` (Nix & Weigend, 1994) averaged over observed (non-NaN) targets.
    With ``nll_beta`` > 0 each term is multiplied by ``stopgrad(s^2)^beta`` (beta-NLL, Seitzer et al., 2022): plain
    NLL lets a model fit hard samples less by calling them uncertain; beta = 0.5 restores their pull on the mean.
    ``sample_weight`` (B,) multiplies each sample's loss (availability-adaptive weighting).
    """
    total = student_out["features"].new_zeros(())
    for t in _target_names(student_out):
        y = batch["targets"][t]
        o = student_out[t]
        if "logits" in o:
            lab = y >= 0  # -1 marks an unlabelled sample
            ce = F.cross_entropy(o["logits"], y.clamp_min(0), reduction="none")
            wy = torch.ones_like(ce) * lab
            ce = ce * sample_weight if sample_weight is not None else ce
            total = total + (ce * lab).sum() / wy.sum().clamp_min(1e-8)
        else:
            obs = ~torch.isnan(y)
            diff2 = (torch.where(obs, y, o["mean"]) - o["mean"]) ** 2
            nll = 0.5 * (o["logvar"] + diff2 * torch.exp(-o["logvar"]))
            if nll_beta:
                nll = nll * torch.exp(nll_beta * o["logvar"].detach())
            # stays differentiable if every target is missing
            total = total + _weighted_mean(nll * obs, sample_weight, obs.sum())
    return total


@register_loss("kd", options={"confidence": bool})
def kd_loss(student_out: dict, teacher_out: dict, batch: dict, *, temperature: float, confidence: bool,
            sample_weight: Tensor | None = None) -> Tensor:
    """Hinton et al. (2015) soft targets: ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, batch mean.

    For regression, the student's mean is pulled to the teacher's mean: ``mean((mu_s - mu_t)^2)``.
    A teacher output with ``soft_logp`` (log-probabilities, e.g. of a multi-teacher ensemble whose members have
    their own temperatures) is used as the soft target instead of ``log_softmax(z_t / T)``.
    With ``confidence``, each regression term is weighted by the teacher's precision relative to the batch,
    ``w = exp(-logvar_t) / mean(exp(-logvar_t))``: the student follows the teacher where it is sure and the labels
    where it is not (useful with weak or partial teachers, e.g. single-modality members of an ensemble).
    ``sample_weight`` (B,) multiplies each sample's term.
    """
    total = student_out["features"].new_zeros(())
    for t in _target_names(student_out):
        if t not in teacher_out:  # a target no teacher predicts: labels only
            continue
        s, te = student_out[t], teacher_out[t]
        if "logits" in s:
            log_ps = F.log_softmax(s["logits"] / temperature, dim=1)
            # a multi-teacher ensemble gives its soft target directly (each member at its own temperature)
            log_pt = te["soft_logp"] if "soft_logp" in te else F.log_softmax(te["logits"] / temperature, dim=1)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
            total = total + _weighted_mean(kl, sample_weight, kl.new_tensor(kl.numel())) * temperature**2
        else:
            d2 = (s["mean"] - te["mean"]) ** 2
            if confidence and "logvar" in te:
                prec = torch.exp(-te["logvar"].detach())
                d2 = d2 * prec / prec.mean(dim=0, keepdim=True).clamp_min(1e-8)
            total = total + _weighted_mean(d2, sample_weight, d2.new_tensor(d2.numel()))
    return total


@register_loss("feature", options={"mode": ("cosine", "mse")})
def feature_loss(student_out: dict, teacher_out: dict, batch: dict, *, mode: str,
                 projection: nn.Module | None = None) -> Tensor:
    """FitNets-style hint (Romero et al., 2015) on the fused features after a learned projection ``W f_s``.

    ``cosine``: ``mean(1 - cos(W f_s, f_t))``; ``mse``: ``mean((W f_s - f_t)^2)``.
    """
    fs = student_out["features"]
    if projection is not None:
        fs = projection(fs)
    ft = teacher_out["features"]
    if mode == "cosine":
        return (1 - F.cosine_similarity(fs, ft, dim=1)).mean()
    if mode == "mse":
        return F.mse_loss(fs, ft)
    raise CmkdError(f"unknown feature loss mode '{mode}'; valid: cosine, mse")


def similarity_preserving(fs: Tensor, ft: Tensor) -> Tensor:
    """Tung & Mori (2019): ``||norm_rows(F_s F_s^T) - norm_rows(F_t F_t^T)||_F^2 / B^2``."""
    gs = F.normalize(fs @ fs.t(), p=2, dim=1)
    gt = F.normalize(ft @ ft.t(), p=2, dim=1)
    return ((gs - gt) ** 2).sum() / fs.shape[0] ** 2


def rkd(fs: Tensor, ft: Tensor, w_dist: float = 1.0, w_angle: float = 2.0) -> Tensor:
    """Park et al. (2019) relational KD: distance term (pairwise distances divided by their mean, smooth-L1)
    plus angle term (cosines of angles in every triplet, smooth-L1), weighted 1:2 as in the paper (25:50)."""

    def dist(x: Tensor) -> Tensor:
        d = torch.cdist(x, x)
        return d / d[d > 0].mean().clamp_min(1e-8)

    def angle(x: Tensor) -> Tensor:
        e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # (B, B, D): e[j, i] = unit(x_i - x_j)
        return torch.bmm(e, e.transpose(1, 2)).reshape(-1)

    return w_dist * F.smooth_l1_loss(dist(fs), dist(ft)) + w_angle * F.smooth_l1_loss(angle(fs), angle(ft))


@register_loss("relation", options={"mode": ("sp", "rkd")})
def relation_loss(student_out: dict, teacher_out: dict, batch: dict, *, mode: str) -> Tensor:
    """Structure of the batch: ``sp`` similarity-preserving or ``rkd`` relational (distance + angle)."""
    fs, ft = student_out["features"], teacher_out["features"]
    if fs.shape[0] < 2:
        return fs.new_zeros(())
    if mode == "sp":
        return similarity_preserving(fs, ft)
    if mode == "rkd":
        return rkd(fs, ft)
    raise CmkdError(f"unknown relation loss mode '{mode}'; valid: sp, rkd")


@register_loss("contrastive", options={"temperature": float})
def contrastive_loss(student_out: dict, teacher_out: dict, batch: dict, *, temperature: float,
                     projection: nn.Module | None = None) -> Tensor:
    """InfoNCE (van den Oord et al., 2018; CRD, Tian et al., 2020) with in-batch negatives:
    ``CE(sim(W f_s, f_t) / tau, diag)``, sim = cosine similarity of every student-teacher pair."""
    fs = student_out["features"]
    if projection is not None:
        fs = projection(fs)
    zs, zt = F.normalize(fs, dim=1), F.normalize(teacher_out["features"], dim=1)
    logits = zs @ zt.t() / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(zs), device=zs.device))


@register_loss("impute", options={"sources": dict})
def impute_loss(student_out: dict, teacher_out: dict | None, batch: dict) -> Tensor:
    """Cross-modal imputation: ``mean((x_hat - x)^2)`` over every known value of the complete record, in the
    modality's standardised units. ``student_out["imputed"]`` holds the reconstructions and
    ``batch["impute_truth"]`` the complete values (NaN where unknown); the sparse modality's gaps are filled
    from everything the student sees (other channels, other modalities), supervised by privileged data that
    exists only while training (the teacher's complete sensors). Without either, the term is 0.
    """
    rec, truth = student_out.get("imputed") or {}, batch.get("impute_truth") or {}
    total = student_out["features"].new_zeros(())
    for m, x_hat in rec.items():
        if m not in truth:
            continue
        x = truth[m]
        known = ~torch.isnan(x)
        d2 = (torch.where(known, x, x_hat) - x_hat) ** 2
        total = total + (d2 * known).sum() / known.sum().clamp_min(1)
    return total


def _rows(out: dict, keep: Tensor) -> dict:
    return {k: (_rows(v, keep) if isinstance(v, dict) else v[keep]) for k, v in out.items()}


class CompositeLoss(nn.Module):
    """Weighted sum of loss terms; returns ``{"loss": total, <term>: value, ...}``.

    The distillation terms need ``teacher_out``; without it (or with weight 0) only ``task`` is used. Rows where
    ``batch["kd_mask"]`` is False (the teacher saw none of its modalities) are left out of teacher terms. Every
    setting comes from the config sections (their defaults are the config's; there is no second copy here).

    Args:
        weights: term name -> weight (:func:`cmkd.training.distill.make_loss` derives them from
            ``distill.weights``).
        student_width: student feature width (the projections are made even when no term uses them: the torch
            RNG they draw keeps seeded runs' figures).
        teacher_width: teacher feature width (a learned projection maps student to teacher width).
        distill: ``temperature`` (kd), ``term_options`` (each term's options, the impute term's sources) and
            ``adaptive_weights`` (see :class:`cmkd.config.DistillConfig`); default: the config's defaults.
        nll_beta: beta of the regression task term (the trained model's ``nll_beta``); default: the config's.
        temperature: the kd temperature where it differs from ``distill.temperature`` (a loop of one's own, e.g.
            ``CompositeLoss(weights, 32, 64, temperature=4.0)``); default: ``distill``'s.

    With ``distill.adaptive_weights`` and ``batch["availability"]`` (B,) in [0, 1] (the share of the student's input
    values that are observed), the task term of each sample is scaled by ``0.5 + a`` and the teacher terms by
    ``1.5 - a``: where the student sees most of its data the labels lead; where it is nearly blind it leans on the
    teacher, who saw complete data.
    """

    TEACHER_FREE = ("task", "impute")  # terms computed without teacher outputs

    def __init__(self, weights: dict[str, float], student_width: int = 64, teacher_width: int | None = None, *,
                 distill: DistillConfig | None = None, nll_beta: float | None = None,
                 temperature: float | None = None) -> None:
        super().__init__()
        distill = distill if distill is not None else DistillConfig()
        nll_beta = nll_beta if nll_beta is not None else default_of(ModelConfig, "nll_beta")
        bad = sorted(set(weights) - set(LOSSES))
        if bad:
            raise CmkdError(f"unknown loss term '{bad[0]}'; valid: {', '.join(sorted(LOSSES))}")
        self.weights = {k: float(v) for k, v in weights.items() if v}
        self.adaptive = distill.adaptive_weights
        self.impute_sources = dict(distill.impute) if "impute" in self.weights else {}
        tw = teacher_width or student_width
        self.projection = nn.Linear(student_width, tw)
        self.contrastive_projection = nn.Linear(student_width, tw)
        opts = distill.term_options
        self.settings: dict[str, dict] = {
            "task": {"nll_beta": nll_beta},
            "kd": {"temperature": distill.temperature if temperature is None else float(temperature),
                   **opts.get("kd", {})},
            "feature": {"projection": self.projection, **opts.get("feature", {})},
            "relation": dict(opts.get("relation", {})),
            "contrastive": {"projection": self.contrastive_projection, **opts.get("contrastive", {})}}
        # the impute term takes no keyword settings: its sources travel in the batch (``impute_truth``)

    def forward(self, student_out: dict, teacher_out: dict | None, batch: dict,
                exclude: tuple[str, ...] = ()) -> dict[str, Tensor]:
        """Total and parts; terms named in ``exclude`` are skipped."""
        parts: dict[str, Tensor] = {}
        total = student_out["features"].new_zeros(())
        keep = batch.get("kd_mask")
        s_t, t_t = student_out, teacher_out
        avail = batch.get("availability") if self.adaptive else None
        if teacher_out is not None and keep is not None and not bool(keep.all()):
            s_t, t_t = _rows(student_out, keep), _rows(teacher_out, keep)
            avail_t = avail[keep] if avail is not None else None
        else:
            avail_t = avail
        for name, w in self.weights.items():
            if name in exclude:
                continue
            kw = dict(self.settings.get(name, {}))
            scale = 1.0
            if name in self.TEACHER_FREE:
                if name == "task" and avail is not None:
                    kw["sample_weight"] = 0.5 + avail
                val = LOSSES[name](student_out, teacher_out, batch, **kw)
            elif teacher_out is None or s_t["features"].shape[0] == 0:
                continue
            else:
                if avail_t is not None:
                    if name == "kd":
                        kw["sample_weight"] = 1.5 - avail_t
                    else:
                        scale = float((1.5 - avail_t).mean())
                val = LOSSES[name](s_t, t_t, batch, **kw) * scale
            parts[name] = val.detach()
            total = total + w * val
        return {"loss": total, **parts}
