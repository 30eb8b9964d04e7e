"""Saved models meet new data: checking a user's arrays against a model, few-shot adaptation to a new site, and
elastic weight consolidation (EWC) against forgetting the original one.

EWC (Kirkpatrick et al., 2017): after training on task A, the diagonal of the Fisher information
``F_i = E[(d log p(y|x) / d theta_i)^2]`` on A's data says how much each weight matters to A. Fine-tuning on task B
then minimises ``L_B(theta) + lambda / 2 * sum_i F_i (theta_i - theta*_i)^2``, so weights that A relies on move
little. Here ``F`` is the empirical Fisher (the gradients of the task loss at the true labels), averaged over
mini-batches of the original training split and normalised to mean 1, so ``lambda`` is comparable across models.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .data import UNLABELLED, MultimodalData, make_batch, tokenize
from .errors import CmkdError
from .evaluate import predict, task_metrics
from .losses import task_loss
from .models import MultimodalNet


def model_inputs(meta: dict, arrays: dict[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
    """Check arrays against a saved model's modalities and shapes; tokenise text.

    Args:
        meta: the saved model's metadata (``hparams``, ``config``).
        arrays: the user's arrays (an npz).
        src: the file name, for error messages.
    """
    import yaml

    cfg = yaml.safe_load(meta["config"])
    feed = {}
    for m, spec in meta["hparams"]["modalities"].items():
        if m not in arrays:
            raise CmkdError(f"{src}: modality '{m}' needed by the model not found; keys: {', '.join(arrays)}")
        a = arrays[m]
        if spec["kind"] == "text":
            if a.ndim != 1 or a.dtype.kind not in "US":
                raise CmkdError(f"{src}: text modality '{m}' must be a (N,) array of strings")
            a = tokenize(a, cfg["data"]["text_vocab"], cfg["data"]["text_len"])
        else:
            if tuple(a.shape[1:]) != tuple(spec["shape"]) or a.dtype.kind not in "fiub":
                raise CmkdError(f"{src}: '{m}' has per-sample shape {tuple(a.shape[1:])} ({a.dtype}), the model "
                                f"expects {tuple(spec['shape'])} numbers")
            a = a.astype(np.float32)
        feed[m] = a
    if len({len(v) for v in feed.values()}) > 1:
        raise CmkdError(f"{src}: the model's modalities have different sample counts")
    return feed


def model_dataset(meta: dict, arrays: dict[str, np.ndarray], src: str, split: str = "all") -> MultimodalData:
    """A labelled dataset for a saved model: its modalities, its targets mapped to its class ids.

    ``split``: ``all`` puts every sample in the test part (2); ``keep`` keeps the npz's own split key (else all 2).
    """
    import yaml

    inputs = model_inputs(meta, arrays, src)
    n = len(next(iter(inputs.values())))
    present = {}
    for m, a in inputs.items():
        p = ~np.isnan(a.reshape(n, -1)).all(axis=1) if a.dtype.kind == "f" else (a > 0).any(axis=1)
        present[m] = p & arrays[f"{m}__present"].astype(bool) if f"{m}__present" in arrays else p
    targets, kinds = {}, {}
    for t, spec in meta["hparams"]["targets"].items():
        if t not in arrays or len(arrays[t]) != n:
            raise CmkdError(f"{src}: target '{t}' missing or of the wrong length (need {n} values)")
        kinds[t] = spec["kind"]
        y = arrays[t]
        if spec["kind"] == "classification":
            classes = np.asarray(meta["classes"][t])
            lab = (~np.isnan(y) if y.dtype.kind == "f" else np.ones(n, bool)) & (y != UNLABELLED)
            unknown = np.setdiff1d(np.unique(y[lab]), classes)
            if len(unknown):
                raise CmkdError(f"{src}: target '{t}' has labels unknown to the model: {unknown.tolist()[:5]}")
            targets[t] = np.where(lab, np.searchsorted(classes, np.where(lab, y, classes[0])), UNLABELLED)
        else:
            targets[t] = y.astype(np.float32).reshape(n, -1)
    key = yaml.safe_load(meta["config"])["data"].get("split") or "split"
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
        task_loss(model(batch["inputs"], batch["present"]), None, batch).backward()
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


def finetune(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, epochs: int = 50, lr: float = 1e-3,
             batch_size: int = 64, ewc: EWC | None = None, seed: int = 0) -> list[dict]:
    """Fine-tune ``model`` in place on samples ``idx`` with the task loss (+ the EWC penalty); returns the
    per-epoch losses."""
    torch.manual_seed(seed)
    mods = list(model.encoders)
    stats = _target_stats(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    hist = []
    for epoch in range(epochs):
        model.train()
        order = idx[torch.randperm(len(idx)).numpy()]
        tot, pen = 0.0, 0.0
        for s in range(0, len(order), batch_size):
            batch = make_batch(data, order[s:s + batch_size], mods, stats)
            loss = task_loss(model(batch["inputs"], batch["present"]), None, batch)
            p = ewc(model) if ewc is not None else loss.new_zeros(())
            opt.zero_grad(set_to_none=True)
            (loss + p).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot, pen = tot + float(loss.detach()), pen + float(p.detach())
        hist.append({"epoch": epoch + 1, "task": tot, "ewc": pen})
    model.eval()
    return hist


def adapt(model: MultimodalNet, new: MultimodalData, shots: int, original: MultimodalData | None = None,
          ewc_lambda: float = 0.0, epochs: int = 50, lr: float = 1e-3, seed: int = 0) -> tuple[MultimodalNet, dict]:
    """Few-shot adaptation of a trained model to a new site.

    Args:
        model: the trained model (not modified; an adapted copy is returned).
        new: the new site's labelled data; shots come from its training part (split 0) when it has one, else
            from all of it, and every other labelled sample scores the model.
        shots: labelled examples per class (per target value for regression: samples).
        original: the original data (its split 0 gives the Fisher, its split 2 the original-site score).
        ewc_lambda: EWC strength; 0 = plain fine-tuning.
        epochs, lr, seed: fine-tuning settings.

    Returns:
        The adapted model and a report: scores on both sites before and after, shots used, settings.
    """
    pool = new.indices(0) if len(new.indices(0)) else np.arange(new.n)
    chosen = sample_shots(new, pool, shots, seed)
    rest = new.labelled(np.setdiff1d(np.arange(new.n), chosen))
    if new.n and len(new.indices(2)):
        rest = new.labelled(np.setdiff1d(new.indices(2), chosen))
    if len(rest) == 0:
        raise CmkdError("the new-site data has no labelled sample left to score the adapted model")
    orig_test = original.labelled(original.indices(2)) if original is not None else np.array([], dtype=int)

    def scores(m: MultimodalNet) -> dict:
        out = {"new_site": task_metrics(new, rest, predict(m, new, rest))}
        if len(orig_test):
            out["original_site"] = task_metrics(original, orig_test, predict(m, original, orig_test))
        return out

    before = scores(model)
    adapted = copy.deepcopy(model)
    ewc = None
    if ewc_lambda > 0:
        if original is None:
            raise CmkdError("--ewc needs the original training data (the run's data could not be loaded)")
        fisher = fisher_diagonal(adapted, original, original.labelled(original.indices(0)), seed=seed)
        ewc = EWC(adapted, fisher, ewc_lambda)
    hist = finetune(adapted, new, chosen, epochs=epochs, lr=lr, ewc=ewc, seed=seed)
    after = scores(adapted)
    report = {"shots_per_class": shots, "n_shots": int(len(chosen)), "n_scored_new": int(len(rest)),
              "n_scored_original": int(len(orig_test)), "ewc_lambda": ewc_lambda, "epochs": epochs, "lr": lr,
              "seed": seed, "before": before, "after": after, "history": hist}
    return adapted, report


def save_adapted(model: MultimodalNet, meta: dict, report: dict, path: Path) -> None:
    """Save an adapted model with its parent's metadata and the adaptation report."""
    from .train import atomic_save

    atomic_save({**meta, "role": "student_adapted", "state_dict": model.state_dict(),
                 "adaptation": {k: v for k, v in report.items() if k != "history"}}, path)
