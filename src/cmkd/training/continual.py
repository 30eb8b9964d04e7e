"""Saved models meet new data: checking a user's arrays against a model, few-shot adaptation to a new site, and
elastic weight consolidation (EWC) against forgetting the original one.

EWC (Kirkpatrick et al., 2017): after training on task A, the diagonal of the Fisher information
``F_i = E[(d log p(y|x) / d theta_i)^2]`` on A's data says how much each weight matters to A. Fine-tuning on task B
then minimises ``L_B(theta) + lambda / 2 * sum_i F_i (theta_i - theta*_i)^2``, so weights that A relies on move
little. Here ``F`` is the empirical Fisher (the gradients of the task loss at the true labels), averaged over
mini-batches of the original training split and normalised to mean 1, so ``lambda`` is comparable across models.

Restandardisation (``restandardise=True``, in the spirit of AdaBN, Li et al. 2016): a new site's illumination and
dust shift the raw inputs, so before fine-tuning the encoders' input standardisation (mean/std buffers) is re-fitted
on ALL of the new site's samples, without their labels (a survey team images the whole site). The original site's
statistics are kept: the original site is still scored with its own statistics (per-site, label-free
standardisation), and the adaptation report holds both sets, so a deployment picks the statistics of the site
it images. No labels of either site enter the statistics.

Defaults (restandardisation on, flip/quarter-turn augmentation of image shots on, all parameters trained, 50 epochs
at lr 1e-3, no pseudo-labels) were chosen on the VALIDATION splits of both sites of the minerals recipe (site 1,
seeds 0-2, 5 draws of the shots each, ``adapt(..., score_part=1)``; the test split was not used): against plain
fine-tuning (share of the lost accuracy recovered 0.42), restandardisation or augmentation alone changed it by
-0.02 and +0.02 (paired, within noise), both together by +0.08 +- 0.03 (to 0.50), and restandardisation roughly
halved the original site's drop (0.25 -> 0.11). Freezing the encoders, lower lr / more epochs, pseudo-labels and an
EM re-estimate of the new site's class prior (Saerens et al. 2002) did not do better there; nor did a class-conditional
restandardisation (a per-channel affine map fitted to the shots' class means against the original site's, which a
shift of the mineral mix does not bias: seed 0, 3 draws, share recovered 0.51 vs 0.50, and 0.10 vs 0.24 before
fine-tuning). The test figures are in
benchmarks/minerals_workflow.md.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cmkd.data.arrays import UNLABELLED, MultimodalData, fit_stats, make_batch
from cmkd.errors import CmkdError
from cmkd.evaluation.metrics import predict, task_metrics
from cmkd.nn.losses import task_loss
from cmkd.nn.models import MultimodalNet
from cmkd.runtime import check_inputs
from cmkd.training.fit import turn_images
from cmkd.validate import check_target_array, stored_config

ADAPT_NLL_BETA = 0.0  # fine-tuning's regression task loss: plain Gaussian NLL (as cmkd adapt has always used)


def model_modalities(meta: dict) -> dict[str, dict]:
    """A saved model's modalities as :func:`cmkd.runtime.check_inputs` takes them (text with its tokeniser)."""
    data = stored_config(meta, "the model").get("data") or {}
    return {m: {**spec, "vocab": data.get("text_vocab", 4096), "length": data.get("text_len", 64)}
            for m, spec in meta["hparams"]["modalities"].items()}


def model_inputs(meta: dict, arrays: dict[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
    """Check arrays against a saved model's modalities and shapes; tokenise text; blank the samples that
    ``<modality>__present`` marks absent (:func:`cmkd.runtime.check_inputs`).

    Args:
        meta: the saved model's metadata (``hparams``, ``config``).
        arrays: the user's arrays (an npz).
        src: the file name, for error messages.
    """
    return check_inputs(model_modalities(meta), arrays, src)[0]


def model_dataset(meta: dict, arrays: dict[str, np.ndarray], src: str, split: str = "all") -> MultimodalData:
    """A labelled dataset for a saved model: its modalities, its targets mapped to its class ids.

    ``split``: ``all`` puts every sample in the test part (2); ``keep`` keeps the npz's own split key (else all 2).
    """
    inputs, present = check_inputs(model_modalities(meta), arrays, src)
    n = len(next(iter(inputs.values())))
    targets, kinds = {}, {}
    for t, spec in meta["hparams"]["targets"].items():
        if t not in arrays or len(arrays[t]) != n:
            raise CmkdError(f"{src}: target '{t}' missing or of the wrong length (need {n} values)")
        kinds[t] = spec["kind"]
        y = arrays[t]
        check_target_array(y, t, spec["kind"], src)
        if spec["kind"] == "classification":
            classes = np.asarray(meta["classes"][t])
            lab = (~np.isnan(y) if y.dtype.kind == "f" else np.ones(n, bool)) & (y != UNLABELLED)
            unknown = np.setdiff1d(np.unique(y[lab]), classes)
            if len(unknown):
                raise CmkdError(f"{src}: target '{t}' has labels unknown to the model: {unknown.tolist()[:5]}")
            targets[t] = np.where(lab, np.searchsorted(classes, np.where(lab, y, classes[0])), UNLABELLED)
        else:
            targets[t] = y.astype(np.float32).reshape(n, -1)
    key = (stored_config(meta, "the model").get("data") or {}).get("split") or "split"
    part = np.asarray(arrays[key]).astype(np.int64) if split == "keep" and key in arrays else np.full(n, 2)
    return MultimodalData(inputs, present, targets, part, {m: s["kind"] for m, s in
                                                           meta["hparams"]["modalities"].items()},
                          kinds, {t: np.asarray(c) for t, c in meta["classes"].items()}, src)


def fisher_diagonal(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, batch_size: int = 256,
                    max_batches: int = 20, seed: int = 0) -> dict[str, Tensor]:
    """Empirical Fisher diagonal of the task loss on samples ``idx``, normalised to mean 1 over all weights."""
    model.eval()  # no dropout: the Fisher of the deployed function
    mods = list(model.encoders)
    rng = np.random.default_rng(seed)
    order = rng.permutation(idx)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    stats = _target_stats(model)
    nb = 0
    for s in range(0, min(len(order), batch_size * max_batches), batch_size):
        batch = make_batch(data, order[s:s + batch_size], mods, stats)
        model.zero_grad(set_to_none=True)
        task_loss(model(batch["inputs"], batch["present"]), None, batch, nll_beta=ADAPT_NLL_BETA).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        nb += 1
    if nb == 0:
        raise CmkdError("EWC needs labelled samples of the original data to estimate the Fisher information")
    mean = torch.cat([f.reshape(-1) for f in fisher.values()]).mean().clamp_min(1e-20)
    return {n: f / mean for n, f in fisher.items()}


class EWC(nn.Module):
    """The penalty ``lambda / 2 * sum_i F_i (theta_i - theta*_i)^2`` against the anchor weights ``theta*``."""

    def __init__(self, model: nn.Module, fisher: dict[str, Tensor], lam: float) -> None:
        super().__init__()
        self.lam = float(lam)
        self.fisher = fisher
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in fisher}

    def forward(self, model: nn.Module) -> Tensor:
        """The penalty of ``model``'s current weights (0 at the anchor)."""
        total = next(model.parameters()).new_zeros(())
        for n, p in model.named_parameters():
            if n in self.fisher:
                total = total + (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
        return 0.5 * self.lam * total


def _target_stats(model: MultimodalNet) -> dict:
    """Regression target standardisation held in the model's buffers (the form :func:`make_batch` takes)."""
    return {f"tg:{t}": {"mean": getattr(model, f"tmean_{t}").cpu().numpy(),
                        "std": getattr(model, f"tstd_{t}").cpu().numpy()}
            for t, k in model.target_kinds.items() if k == "regression"}


def input_stats(model: MultimodalNet) -> dict[str, dict[str, np.ndarray]]:
    """The model's current standardisation (input mean/std of its numeric encoders and regression target stats) in
    the form :meth:`MultimodalNet.set_stats` takes."""
    out = {f"in:{m}": {"mean": enc.mean.detach().cpu().numpy().copy(), "std": enc.std.detach().cpu().numpy().copy()}
           for m, enc in model.encoders.items() if isinstance(getattr(enc, "mean", None), Tensor)}
    return {**out, **_target_stats(model)}


def site_stats(model: MultimodalNet, data: MultimodalData, idx: np.ndarray | None = None
               ) -> dict[str, dict[str, np.ndarray]]:
    """Input standardisation of ``model``'s numeric encoders re-fitted on ``data``'s samples ``idx`` (default: all of
    them; labels are not used), with the model's own regression target statistics."""
    idx = np.arange(data.n) if idx is None else np.asarray(idx)
    if len(idx) == 0:
        raise CmkdError("restandardisation needs samples of the new site; the data has none")
    cur = input_stats(model)
    mods = [m for m in model.encoders if f"in:{m}" in cur]
    sub = MultimodalData({m: data.inputs[m] for m in mods}, {m: data.present[m] for m in mods}, {}, data.split,
                         {m: data.kinds[m] for m in mods}, {}, {}, data.source)
    fitted = fit_stats(sub, idx)
    for m in mods:
        if not data.present[m][idx].any():
            raise CmkdError(f"restandardisation: modality '{m}' is absent from every sample of the new site")
        fitted[f"in:{m}"] = {k: v.reshape(cur[f"in:{m}"][k].shape) for k, v in fitted[f"in:{m}"].items()}
    return {**cur, **fitted}


@contextmanager
def using_stats(model: MultimodalNet, stats: dict[str, dict[str, np.ndarray]] | None) -> Iterator[MultimodalNet]:
    """Temporarily load ``stats`` into ``model``'s standardisation buffers (None: leave them); restores on exit."""
    if stats is None:
        yield model
        return
    saved = input_stats(model)
    model.set_stats(stats)
    try:
        yield model
    finally:
        model.set_stats(saved)


def sample_shots(data: MultimodalData, idx: np.ndarray, shots: int, seed: int = 0) -> np.ndarray:
    """Up to ``shots`` labelled samples per class of the first classification target (or ``shots`` samples for
    regression) from ``idx``, seeded."""
    if shots < 1:
        raise CmkdError(f"--shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    idx = data.labelled(idx)
    first, kind = next(iter(data.target_kinds.items()))
    if kind != "classification":
        return np.sort(rng.choice(idx, size=min(shots, len(idx)), replace=False))
    y = data.targets[first][idx]
    out = [rng.choice(idx[y == c], size=min(shots, int((y == c).sum())), replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(out))


TRAINABLE = ("all", "fusion", "head")


def _trainable(model: MultimodalNet, train: str) -> list[nn.Parameter]:
    """The parameters fine-tuning may change: ``all``; ``fusion`` (encoders frozen: fusion blocks and heads);
    ``head`` (the output heads only)."""
    if train not in TRAINABLE:
        raise CmkdError(f"--train must be one of {', '.join(TRAINABLE)}, got '{train}'")
    if train == "all":
        return list(model.parameters())
    frozen = {id(p) for p in model.encoders.parameters()}
    if train == "head":
        return list(model.heads.parameters())
    return [p for p in model.parameters() if id(p) not in frozen]


def finetune(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, epochs: int = 50, lr: float = 1e-3,
             batch_size: int = 64, ewc: EWC | None = None, seed: int = 0, train: str = "all",
             augment: bool = False) -> list[dict]:
    """Fine-tune ``model`` in place on samples ``idx`` with the task loss (+ the EWC penalty); ``train`` says which
    parameters move (:data:`TRAINABLE`); ``augment`` applies a random flip / quarter turn to each image sample
    (patches of a scene have no preferred orientation). Returns the per-epoch losses."""
    params = _trainable(model, train)
    torch.manual_seed(seed)
    mods = list(model.encoders)
    stats = _target_stats(model)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    hist = []
    for epoch in range(epochs):
        model.train()
        order = idx[torch.randperm(len(idx)).numpy()]
        tot, pen = 0.0, 0.0
        for s in range(0, len(order), batch_size):
            batch = make_batch(data, order[s:s + batch_size], mods, stats)
            if augment:
                batch["inputs"] = turn_images(batch["inputs"], model, True)
            loss = task_loss(model(batch["inputs"], batch["present"]), None, batch, nll_beta=ADAPT_NLL_BETA)
            p = ewc(model) if ewc is not None else loss.new_zeros(())
            opt.zero_grad(set_to_none=True)
            (loss + p).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            tot, pen = tot + float(loss.detach()), pen + float(p.detach())
        hist.append({"epoch": epoch + 1, "task": tot, "ewc": pen})
    model.eval()
    return hist


def pseudo_label(model: MultimodalNet, data: MultimodalData, pool: np.ndarray, per_class: int
                 ) -> tuple[MultimodalData, np.ndarray]:
    """The ``per_class`` most confident samples of ``pool`` per predicted class of the first classification target,
    and a copy of ``data`` whose targets at those samples are the predictions (their labels are never read)."""
    t = next(iter(data.target_kinds))
    if data.target_kinds[t] != "classification":
        raise CmkdError("pseudo-labels need a classification target")
    logits = predict(model, data, pool)[f"{t}/logits"]
    pred = logits.argmax(1)
    conf = -np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))  # max log-probability
    keep = [pool[pred == c][np.argsort(-conf[pred == c])[:per_class]] for c in np.unique(pred)]
    extra = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    y = data.targets[t].copy()
    y[extra] = pred[np.searchsorted(pool, extra)] if len(extra) else y[extra]
    return replace(data, targets={**data.targets, t: y}), extra


def _lists(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {k: {kk: np.asarray(vv).ravel().tolist() for kk, vv in v.items()} for k, v in stats.items()}


def _check_adapt_args(ewc_lambda: float, epochs: int, lr: float, pseudo: int, score_part: int) -> None:
    """One-line errors for the settings of :func:`adapt` that cannot work."""
    if ewc_lambda < 0:
        raise CmkdError(f"--ewc must be >= 0, got {ewc_lambda}")
    if epochs < 0 or lr <= 0:
        raise CmkdError(f"--epochs must be >= 0 and --lr > 0, got {epochs} and {lr}")
    if pseudo < 0:
        raise CmkdError(f"--pseudo must be >= 0, got {pseudo}")
    if score_part not in (1, 2):
        raise CmkdError(f"score_part must be 1 (validation) or 2 (test), got {score_part}")


def _scored_samples(new: MultimodalData, original: MultimodalData | None, chosen: np.ndarray,
                    score_part: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples that score :func:`adapt`: the new site's labelled non-shot samples (of part ``score_part``
    when it has one) and the original site's labelled samples of that part (empty without ``original``)."""
    rest = new.labelled(np.setdiff1d(np.arange(new.n), chosen))
    if new.n and len(new.indices(score_part)):
        rest = new.labelled(np.setdiff1d(new.indices(score_part), chosen))
    if len(rest) == 0:
        raise CmkdError("the new-site data has no labelled sample left to score the adapted model")
    orig_test = (original.labelled(original.indices(score_part)) if original is not None
                 else np.array([], dtype=int))
    return rest, orig_test


def _make_ewc(adapted: MultimodalNet, original: MultimodalData | None, ewc_lambda: float, seed: int) -> EWC | None:
    """The EWC penalty anchored at ``adapted``'s current weights (Fisher from the original training split), or
    None when ``ewc_lambda`` is 0."""
    ewc = None
    if ewc_lambda > 0:
        if original is None:
            raise CmkdError("--ewc needs the original training data (the run's data could not be loaded)")
        fisher = fisher_diagonal(adapted, original, original.labelled(original.indices(0)), seed=seed)
        ewc = EWC(adapted, fisher, ewc_lambda)
    return ewc


def adapt(model: MultimodalNet, new: MultimodalData, shots: int, original: MultimodalData | None = None,
          ewc_lambda: float = 0.0, epochs: int = 50, lr: float = 1e-3, seed: int = 0, restandardise: bool = True,
          train: str = "all", score_part: int = 2, pseudo: int = 0, augment: bool = True
          ) -> tuple[MultimodalNet, dict]:
    """Few-shot adaptation of a trained model to a new site.

    Args:
        model: the trained model (not modified; an adapted copy is returned).
        new: the new site's labelled data; shots come from its training part (split 0) when it has one, else
            from all of it, and every other labelled sample of part ``score_part`` (when it has one, else of all
            of it) scores the model.
        shots: labelled examples per class (per target value for regression: samples).
        original: the original data (its split 0 gives the Fisher, its part ``score_part`` the original-site
            score).
        ewc_lambda: EWC strength; 0 = plain fine-tuning.
        epochs, lr, seed: fine-tuning settings.
        restandardise: re-fit the input standardisation on all of the new site's samples (no labels) before
            fine-tuning; the original site keeps, and is scored with, its own statistics.
        train: which parameters fine-tuning changes (:data:`TRAINABLE`).
        pseudo: self-training: after fine-tuning on the shots, label this many most confident unlabelled samples
            of the new site's shot pool per predicted class with the adapted model and fine-tune again on shots +
            pseudo-labels; 0 = off.
        augment: random flips / quarter turns of image shots while fine-tuning (images without a preferred
            orientation, like the minerals patches; turn it off where orientation carries information).
        score_part: the split part both sites are scored on: 2 (test) by default; 1 (validation) for choosing
            settings.

    Returns:
        The adapted model (holding the new site's statistics when ``restandardise``) and a report: scores on
        both sites before and after (and after restandardisation alone), shots used, settings, both sites'
        standardisation statistics.
    """
    _check_adapt_args(ewc_lambda, epochs, lr, pseudo, score_part)
    _trainable(model, train)
    pool = new.indices(0) if len(new.indices(0)) else np.arange(new.n)
    chosen = sample_shots(new, pool, shots, seed)
    rest, orig_test = _scored_samples(new, original, chosen, score_part)
    orig_stats = input_stats(model)
    new_stats = site_stats(model, new) if restandardise else None

    def scores(m: MultimodalNet) -> dict:
        """The new site with the model's current statistics; the original site with its own."""
        out = {"new_site": task_metrics(new, rest, predict(m, new, rest))}
        if len(orig_test):
            with using_stats(m, orig_stats):
                out["original_site"] = task_metrics(original, orig_test, predict(m, original, orig_test))
        return out

    before = scores(model)
    adapted = copy.deepcopy(model)
    ewc = _make_ewc(adapted, original, ewc_lambda, seed)
    restandardised = None
    if new_stats is not None:
        adapted.set_stats(new_stats)
        restandardised = scores(adapted)
    hist = finetune(adapted, new, chosen, epochs=epochs, lr=lr, ewc=ewc, seed=seed, train=train, augment=augment)
    n_pseudo = 0
    if pseudo > 0:  # self-training: the adapted model labels the most confident unlabelled new-site samples
        data2, extra = pseudo_label(adapted, new, np.setdiff1d(pool, chosen), pseudo)
        n_pseudo = int(len(extra))
        hist += finetune(adapted, data2, np.concatenate([chosen, extra]), epochs=epochs, lr=lr, ewc=ewc,
                         seed=seed + 1, train=train, augment=augment)
    after = scores(adapted)
    report = {"shots_per_class": shots, "n_shots": int(len(chosen)), "n_scored_new": int(len(rest)),
              "n_scored_original": int(len(orig_test)), "scored_on": "test" if score_part == 2 else "validation",
              "ewc_lambda": ewc_lambda, "epochs": epochs, "lr": lr, "seed": seed, "train": train,
              "restandardise": bool(restandardise), "pseudo_per_class": pseudo, "n_pseudo": n_pseudo,
              "augment": bool(augment),
              "before": before, "after": after, "history": hist}
    if restandardised is not None:
        report["restandardised_only"] = restandardised
        report["stats"] = {"new_site": _lists(new_stats), "original_site": _lists(orig_stats),
                           "note": "the adapted model holds the new site's input statistics; load "
                                   "original_site's (MultimodalNet.set_stats) to run it on the original site"}
    return adapted, report


def save_adapted(model: MultimodalNet, meta: dict, report: dict, path: Path) -> None:
    """Save an adapted model with its parent's metadata and the adaptation report."""
    from cmkd.io import atomic_save

    atomic_save({**meta, "role": "student_adapted", "state_dict": model.state_dict(),
                 "adaptation": {k: v for k, v in report.items() if k != "history"}}, path)
