"""Loss terms as pure functions ``term(student_out, teacher_out, batch, **settings) -> Tensor``.

``student_out`` and ``teacher_out`` are :class:`cmkd.nn.models.MultimodalNet` output dicts: ``features`` (B, D) and,
per target, ``{"logits"}`` or ``{"mean", "logvar"}``. ``batch["targets"]`` holds class ids or standardised
regression targets (NaN = missing). :class:`CompositeLoss` weights the terms and returns the total and every
part, so each can be logged. The terms are usable in a user's own training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmkd.config import register_name_check
from cmkd.errors import CmkdError

LossTerm = Callable[..., Tensor]
LOSSES: dict[str, LossTerm] = {}


def register_loss(name: str) -> Callable[[LossTerm], LossTerm]:
    """Decorator adding a loss term to the registry."""

    def deco(fn: LossTerm) -> LossTerm:
        LOSSES[name] = fn
        return fn

    return deco


@register_name_check("loss_terms")
def check_loss_terms(weights: dict[str, float]) -> None:
    """CmkdError listing the valid terms where a config's ``distill.weights`` names an unknown one."""
    bad = sorted(set(weights) - set(LOSSES))
    if bad:
        raise CmkdError(f"unknown loss term {bad[0]!r}; valid: {', '.join(sorted(LOSSES))}")


def _target_names(out: dict) -> list[str]:
    return [k for k, v in out.items() if isinstance(v, dict) and ("logits" in v or "mean" in v)]


def _weighted_mean(values: Tensor, weight: Tensor | None, count: Tensor) -> Tensor:
    """``sum(w_i * v_i) / count``: per-sample weights scale a term's size without renormalising it away."""
    if weight is not None:
        values = values * weight.reshape(-1, *([1] * (values.dim() - 1)))
    return values.sum() / count.clamp_min(1)


@register_loss("task")
def task_loss(student_out: dict, teacher_out: dict | None, batch: dict, *,
              class_weights: dict[str, Tensor] | None = None, sample_weight: Tensor | None = None,
              nll_beta: float = 0.0) -> Tensor:
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
            w = class_weights.get(t) if class_weights else None
            lab = y >= 0  # -1 marks an unlabelled sample
            ce = F.cross_entropy(o["logits"], y.clamp_min(0), weight=w, reduction="none")
            wy = (w[y.clamp_min(0)] if w is not None else torch.ones_like(ce)) * lab
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


@register_loss("kd")
def kd_loss(student_out: dict, teacher_out: dict, batch: dict, *, temperature: float = 4.0,
            sample_weight: Tensor | None = None, confidence: bool = False) -> Tensor:
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


@register_loss("feature")
def feature_loss(student_out: dict, teacher_out: dict, batch: dict, *,
                 projection: nn.Module | None = None, mode: str = "cosine") -> Tensor:
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


@register_loss("relation")
def relation_loss(student_out: dict, teacher_out: dict, batch: dict, *, mode: str = "sp") -> Tensor:
    """Structure of the batch: ``sp`` similarity-preserving or ``rkd`` relational (distance + angle)."""
    fs, ft = student_out["features"], teacher_out["features"]
    if fs.shape[0] < 2:
        return fs.new_zeros(())
    if mode == "sp":
        return similarity_preserving(fs, ft)
    if mode == "rkd":
        return rkd(fs, ft)
    raise CmkdError(f"unknown relation loss mode '{mode}'; valid: sp, rkd")


@register_loss("contrastive")
def contrastive_loss(student_out: dict, teacher_out: dict, batch: dict, *,
                     projection: nn.Module | None = None, temperature: float = 0.1) -> Tensor:
    """InfoNCE (van den Oord et al., 2018; CRD, Tian et al., 2020) with in-batch negatives:
    ``CE(sim(W f_s, f_t) / tau, diag)``, sim = cosine similarity of every student-teacher pair."""
    fs = student_out["features"]
    if projection is not None:
        fs = projection(fs)
    zs, zt = F.normalize(fs, dim=1), F.normalize(teacher_out["features"], dim=1)
    logits = zs @ zt.t() / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(zs), device=zs.device))


@register_loss("impute")
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
    ``batch["kd_mask"]`` is False (the teacher saw none of its modalities) are left out of teacher terms.

    Args:
        weights: term name -> weight.
        student_width: student feature width.
        teacher_width: teacher feature width (a learned projection maps student to teacher width).
        temperature: kd temperature.
        feature_mode: ``cosine`` or ``mse``.
        relation_mode: ``sp`` or ``rkd``.
        contrastive_temperature: InfoNCE temperature.
        adaptive: availability-adaptive weights. With ``batch["availability"]`` (B,) in [0, 1] (the share of
            the student's input values that are observed), the task term of each sample is scaled by
            ``0.5 + a`` and the teacher terms by ``1.5 - a``: where the student sees most of its data the labels
            lead; where it is nearly blind it leans on the teacher, who saw complete data.
        impute_sources: student modality -> the data key of its complete version, for the ``impute`` term.
        nll_beta: beta of the regression task term (beta-NLL; 0 = plain Gaussian NLL).
        temperature_schedule: ``constant``, or ``linear`` / ``cosine`` annealing of the kd temperature from
            ``temperature`` to ``temperature_end`` as :meth:`set_progress` goes from 0 to 1 (soft, dark-knowledge
            targets early; sharp, nearly hard targets late).
        temperature_end: the temperature at the end of training.
        class_weights: target -> (C,) class weights (class-balanced distillation): the task term weighs each
            labelled sample by its class, and the kd term each sample by the teacher's predicted class.
        learned_weights: learn each term's weight by homoscedastic uncertainty (Kendall et al., 2018): the total
            is ``sum_k exp(-s_k) w_k L_k + s_k`` with a trained log-variance ``s_k`` per term (starting at 0, so
            training starts from the fixed weights); the effective weights are logged as ``weight_<term>``.
        kd_confidence: weight the regression kd term by the teacher's relative precision (see :func:`kd_loss`).
        kd_ramp: the teacher terms' weights ramp linearly from 0 to full as :meth:`set_progress` goes from 0 to
            ``kd_ramp`` (0 = full weight from the start): the labels shape the model before many unlabelled
            samples' teacher targets can swamp them (a ramp-up as in the mean-teacher, Tarvainen & Valpola, 2017).
    """

    TEACHER_FREE = ("task", "impute")  # terms computed without teacher outputs

    def __init__(self, weights: dict[str, float], student_width: int = 64, teacher_width: int | None = None,
                 temperature: float = 4.0, feature_mode: str = "cosine", relation_mode: str = "sp",
                 contrastive_temperature: float = 0.1, adaptive: bool = False,
                 impute_sources: dict[str, str] | None = None, nll_beta: float = 0.0,
                 temperature_schedule: str = "constant", temperature_end: float = 1.0,
                 class_weights: dict[str, Tensor] | None = None, learned_weights: bool = False,
                 kd_confidence: bool = False, kd_ramp: float = 0.0) -> None:
        super().__init__()
        self.kd_ramp = float(kd_ramp)
        self.teacher_scale = 0.0 if self.kd_ramp > 0 else 1.0  # current factor of the teacher terms
        bad = sorted(set(weights) - set(LOSSES))
        if bad:
            raise CmkdError(f"unknown loss term '{bad[0]}'; valid: {', '.join(sorted(LOSSES))}")
        self.weights = {k: float(v) for k, v in weights.items() if v}
        self.adaptive = adaptive
        self.impute_sources = dict(impute_sources or {}) if "impute" in self.weights else {}
        tw = teacher_width or student_width
        self.projection = nn.Linear(student_width, tw)
        self.contrastive_projection = nn.Linear(student_width, tw)
        # homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, 2018): one learned log-variance per term
        self.log_vars = nn.ParameterDict({k: nn.Parameter(torch.zeros(())) for k in self.weights}) \
            if learned_weights else None
        if temperature_schedule not in ("constant", "linear", "cosine"):
            raise CmkdError(f"unknown temperature schedule '{temperature_schedule}'; valid: constant, linear, cosine")
        self.schedule = (temperature_schedule, float(temperature), float(temperature_end))
        self.class_weights = class_weights or {}
        task_settings: dict = {"nll_beta": nll_beta}
        if self.class_weights:
            task_settings["class_weights"] = self.class_weights
        self.settings = {"task": task_settings, "kd": {"temperature": temperature, "confidence": kd_confidence},
                         "feature": {"projection": self.projection, "mode": feature_mode},
                         "relation": {"mode": relation_mode},
                         "contrastive": {"projection": self.contrastive_projection,
                                         "temperature": contrastive_temperature}}

    def set_progress(self, progress: float) -> float:
        """Move the kd temperature along its schedule (``progress`` in [0, 1]); returns the temperature."""
        kind, t0, t1 = self.schedule
        p = min(1.0, max(0.0, progress))
        self.teacher_scale = min(1.0, p / self.kd_ramp) if self.kd_ramp > 0 else 1.0
        f = 0.0 if kind == "constant" else p if kind == "linear" else 0.5 * (1 - math.cos(math.pi * p))
        self.settings["kd"]["temperature"] = t0 + (t1 - t0) * f
        return self.settings["kd"]["temperature"]

    def _kd_class_weight(self, teacher_out: dict) -> Tensor | None:
        """(B,) weight of each sample's kd term: the class weight of the teacher's predicted class."""
        ws = [w[teacher_out[t]["logits"].argmax(dim=1)] for t, w in self.class_weights.items()
              if t in teacher_out and "logits" in teacher_out[t]]
        return torch.stack(ws).mean(dim=0) if ws else None

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
                if name == "kd" and self.class_weights:
                    cw = self._kd_class_weight(t_t)
                    if cw is not None:
                        kw["sample_weight"] = cw * kw["sample_weight"] if "sample_weight" in kw else cw
                val = LOSSES[name](s_t, t_t, batch, **kw) * scale * self.teacher_scale
            parts[name] = val.detach()
            if self.log_vars is not None:  # learned weighting: exp(-s) * w * L + s
                s_k = self.log_vars[name].clamp(-5.0, 5.0)  # bounded: an NLL term can be negative
                total = total + torch.exp(-s_k) * w * val + s_k
                parts[f"weight_{name}"] = torch.exp(-s_k).detach() * w
            else:
                total = total + w * val
        return {"loss": total, **parts}
