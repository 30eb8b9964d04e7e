"""Training: AdamW, warm-up + cosine schedule, early stopping, gradient clipping, progress bar, atomic
checkpoints every epoch and exact resume."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmkd.config import ModelConfig
from cmkd.data.arrays import MultimodalData, availability, make_batch
from cmkd.errors import CmkdError
from cmkd.evaluation.metrics import predict, selection_metric, task_metrics
from cmkd.io import atomic_save, safe_load
from cmkd.nn.losses import CompositeLoss
from cmkd.nn.models import MultimodalNet


def set_seed(seed: int) -> None:
    """Seed torch and numpy and ask torch for deterministic kernels."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _lr_factor(epoch: int, warmup: int, total: int) -> float:
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    progress = (epoch - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _progress(quiet: bool):  # noqa: ANN202 - rich types are optional detail
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                    disable=quiet or not sys.stderr.isatty(), transient=False)


def dihedral(x: torch.Tensor) -> torch.Tensor:
    """Each (C, H, W) sample of a square image batch under one of the 8 flips / quarter turns, at random (a
    batch of another shape is returned as it is)."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        return x
    k = torch.randint(0, 4, (x.shape[0],))
    turned = torch.stack([torch.rot90(x, int(r), dims=(2, 3)) for r in range(4)])[k, torch.arange(x.shape[0])]
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip[:, None, None, None], turned.flip(-1), turned)


def turn_images(inputs: dict[str, torch.Tensor], model: MultimodalNet, on: bool) -> dict[str, torch.Tensor]:
    """Flip / quarter-turn augmentation of the model's image modalities (:func:`dihedral`, each sample its own
    draw); other modalities, and everything when ``on`` is False, are left as they are."""
    if not on:
        return inputs
    kinds = model.hparams["modalities"]
    return {m: dihedral(x) if m in kinds and kinds[m]["kind"] == "image" else x for m, x in inputs.items()}


class _Step(torch.nn.Module):
    """One training step's forward (student and loss) as one module, so that DistributedDataParallel synchronises
    the gradients of the model and of the loss's own parameters (projections)."""

    def __init__(self, model: MultimodalNet, loss_fn: CompositeLoss) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict, t_out: dict | None) -> dict:
        return self.loss_fn(self.model(batch["inputs"], batch["present"]), t_out, batch)


WEIGHT_DECAY = 1e-4  # AdamW's
GRAD_CLIP = 1.0  # gradient norm clipped to this
WARMUP_EPOCHS = 2  # linear warm-up of the learning rate, then cosine decay


def _optimiser(model: MultimodalNet, loss_fn: CompositeLoss, cfg: ModelConfig, warmup: int = WARMUP_EPOCHS
               ) -> tuple:
    """AdamW over the model's and the loss's parameters, with the warm-up + cosine schedule.

    Returns:
        ``(params, opt, sched)``.
    """
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=WEIGHT_DECAY)  # foreach=True: tried, see docs/small-data.md
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: _lr_factor(e, warmup, cfg.epochs))
    return params, opt, sched


MIN_STEPS = 1600  # optimiser steps the auto epoch count aims at (benchmarks/small_data.md)


def batch_size_for(cfg: ModelConfig, n: int) -> int:
    """The batch size of a model training on ``n`` samples: ``cfg.batch_size``, or when that is None (auto)
    ``min(128, max(8, ceil(n / 8)))``: at least 8 batches per epoch on small data (see ``ModelConfig``)."""
    return int(cfg.batch_size) if cfg.batch_size is not None else min(128, max(8, math.ceil(n / 8)))


def schedule_for(cfg: ModelConfig, n: int) -> ModelConfig:
    """``cfg`` with its auto (None) ``batch_size``, ``epochs`` and ``patience`` made concrete for ``n`` training
    samples: the batch size of :func:`batch_size_for`; epochs for about :data:`MIN_STEPS` optimiser steps, between
    60 and 200; patience a fifth of the epochs, at least 12. On a few thousand samples or more that is 128, 60
    and 12, the former defaults; on 100 samples 13, 200 and 40."""
    bs = batch_size_for(cfg, n)
    per_epoch = math.ceil(max(n, 1) / bs)
    epochs = cfg.epochs if cfg.epochs is not None else min(200, max(60, math.ceil(MIN_STEPS / per_epoch)))
    patience = cfg.patience if cfg.patience is not None else max(12, epochs // 5)
    return cfg.model_copy(update={"batch_size": bs, "epochs": epochs, "patience": patience})


def _epoch_row(model: MultimodalNet, data: MultimodalData, val_idx: np.ndarray, metric: str, epoch: int,
               lr: float, sums: dict[str, float], nb: int, device: torch.device | str) -> tuple[dict, dict]:
    """Score the model on the validation samples; return the epoch's history row and the validation metrics (none
    without validation samples: the row holds the training figures alone)."""
    row = {"epoch": epoch + 1, "lr": lr, **{f"train_{k}": v / nb for k, v in sums.items()}}
    if not len(val_idx):
        return row, {}
    preds = predict(model, data, val_idx, device=device)
    val = task_metrics(data, val_idx, preds)
    return {**row, "val_loss": validation_loss(model, data, val_idx, preds), "val_metric": val[metric]}, val


def validation_loss(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, preds: dict[str, np.ndarray]
                    ) -> float:
    """The task loss on samples ``idx`` from their predictions, averaged over the model's targets:
    cross-entropy over the labelled samples for a classification target, the mean squared error of the
    standardised value (``(y - value) / tstd``, as the head is trained) for a regression target. No teacher
    term: it says how the model fits held-out labels, the curve beside the training loss."""
    parts = []
    for t, kind in model.target_kinds.items():
        y = data.targets[t][idx]
        if kind == "classification" and f"{t}/logits" in preds:
            lab = y >= 0
            if lab.any():
                z = preds[f"{t}/logits"][lab].astype(np.float64)
                z = z - z.max(axis=1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
                parts.append(float(-logp[np.arange(lab.sum()), y[lab]].mean()))
        elif f"{t}/value" in preds:
            yy = np.asarray(y, np.float64).reshape(len(idx), -1)
            v = np.asarray(preds[f"{t}/value"], np.float64).reshape(yy.shape)
            sd = getattr(model, f"tstd_{t}").detach().cpu().numpy().astype(np.float64)
            ok = np.isfinite(yy)
            if ok.any():
                parts.append(float(np.mean((((yy - v) / sd)[ok]) ** 2)))
    return float(np.mean(parts)) if parts else float("nan")


def _keep_best(score: float, best_score: float, best_state: dict | None, bad: int,
               model: MultimodalNet) -> tuple[float, dict | None, int]:
    """Keep a copy of the model's state when ``score`` (higher is better) beats the best so far, else count one
    more epoch without improvement. Returns ``(best_score, best_state, bad)``."""
    if score > best_score:
        best_score, best_state, bad = score, copy.deepcopy(model.state_dict()), 0
    else:
        bad += 1
    return best_score, best_state, bad


def _resume_from(ckpt_path: str | Path, model: MultimodalNet, loss_fn: CompositeLoss,
                 opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler) -> tuple:
    """Load a per-epoch checkpoint into the model, loss, optimiser, schedule and torch RNG.

    Returns:
        ``(history, best_score, best_state, bad, start_epoch, done)``.
    """
    ck = safe_load(ckpt_path)
    try:
        model.load_state_dict(ck["model"])
        loss_fn.load_state_dict(ck["loss"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        if torch.cuda.is_available() and ck.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        history, best_score, best_state = ck["history"], ck["best_score"], ck["best_state"]
        bad, start = ck["bad"], ck["epoch"]
    except (KeyError, RuntimeError, ValueError) as e:
        raise CmkdError(f"{ckpt_path}: cannot resume from this checkpoint ({str(e)[:120]})") from None
    return history, best_score, best_state, bad, start, bool(ck.get("done"))


def _save_checkpoint(ckpt_path: str | Path, model: MultimodalNet, loss_fn: CompositeLoss,
                     opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, history: list[dict],
                     best_score: float, best_state: dict | None, bad: int, epoch: int, done: bool) -> None:
    """Write the state after ``epoch`` (0-based) atomically, everything :func:`_resume_from` needs."""
    atomic_save({"model": model.state_dict(), "loss": loss_fn.state_dict(),
                 "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "history": history, "best_score": best_score, "best_state": best_state,
                 "bad": bad, "epoch": epoch + 1, "done": done}, ckpt_path)


def _make_step(model: MultimodalNet, loss_fn: CompositeLoss, device: torch.device | str
               ) -> tuple[torch.nn.Module, int, int]:
    """Move the model and loss to ``device`` and build the training step, wrapped in DistributedDataParallel
    when more than one rank runs.

    Returns:
        ``(step, n_ranks, rank)``.
    """
    from cmkd.training.distributed import rank, world_size

    n_ranks, me = world_size(), rank()
    model.to(device)
    loss_fn.to(device)
    step: torch.nn.Module = _Step(model, loss_fn)
    if n_ranks > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        step = DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)
    return step, n_ranks, me


def _batch_modalities(model: MultimodalNet, loss_fn: CompositeLoss) -> tuple[list[str], dict[str, str], list[str]]:
    """The student's modalities, the impute term's sources (student modality -> its complete version) and every
    modality a training batch must carry (the student's and the impute sources)."""
    mods = list(model.encoders)
    sources = dict(loss_fn.impute_sources)  # student modality -> its complete version (impute term)
    return mods, sources, list(dict.fromkeys(mods + list(sources.values())))


@dataclass
class _Feed:
    """What turns a slice of sample indices into a training batch (fixed for one :func:`fit`)."""

    data: MultimodalData
    batch_mods: list[str]
    mods: list[str]
    sources: dict[str, str]
    target_stats: dict
    teacher_cache: dict | None
    kd_mask: np.ndarray | None
    n_ranks: int
    me: int
    device: torch.device | str

    def batch(self, idx: np.ndarray, model: MultimodalNet, loss_fn: CompositeLoss) -> tuple[dict, dict | None]:
        """This rank's share of the global batch ``idx`` and the teacher outputs for it (or None)."""
        data, batch_mods, mods, sources, device = self.data, self.batch_mods, self.mods, self.sources, self.device
        target_stats, teacher_cache, kd_mask, n_ranks, me = (self.target_stats, self.teacher_cache, self.kd_mask,
                                                             self.n_ranks, self.me)
        if n_ranks > 1:
            from cmkd.training.distributed import shard

            idx = shard(idx, n_ranks, me)
        batch = make_batch(data, idx, batch_mods, target_stats, device)
        if loss_fn.adaptive:
            batch["availability"] = torch.from_numpy(availability(data, idx, mods)).float().to(device)
        if sources:
            batch["impute_truth"] = {m: model.standardise(m, batch["inputs"][src])
                                     for m, src in sources.items()}
        t_out = None
        if teacher_cache is not None:
            ti = torch.from_numpy(idx)
            t_out = {k: ({kk: vv[ti].to(device) for kk, vv in v.items()} if isinstance(v, dict)
                         else v[ti].to(device)) for k, v in teacher_cache.items()}
            if kd_mask is not None:
                batch["kd_mask"] = torch.from_numpy(kd_mask[idx]).to(device)
        return batch, t_out


def _train_epoch(step: torch.nn.Module, opt: torch.optim.Optimizer, params: list, feed: _Feed,
                 train_idx: np.ndarray, cfg: ModelConfig, seed: int, epoch: int, desc: str) -> tuple[dict, int]:
    """One pass over the training samples in this epoch's seeded order.

    Returns:
        ``(sums, nb)``: the sum of every loss part over the batches, and the number of batches.
    """
    model, loss_fn = _unwrap(step).model, _unwrap(step).loss_fn
    model.train()
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = train_idx[torch.randperm(len(train_idx), generator=g).numpy()]
    sums: dict[str, float] = {}
    nb = 0
    for s in range(0, len(order), cfg.batch_size):
        idx = order[s:s + cfg.batch_size]
        batch, t_out = feed.batch(idx, model, loss_fn)
        parts = step(batch, t_out)
        if not torch.isfinite(parts["loss"]):
            raise CmkdError(f"{desc}: the loss became {parts['loss'].item()} at epoch {epoch + 1}; "
                            "lower the learning rate (--set <model>.lr=...) or check the data")
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        nb += 1
    return sums, nb


def _unwrap(step: torch.nn.Module) -> _Step:
    """The :class:`_Step` inside a DistributedDataParallel wrapper (or ``step`` itself)."""
    return step.module if hasattr(step, "module") else step


def _epoch_info(row: dict, val: dict, metric: str, sign: float, history: list[dict], bad: int, epoch: int,
                cfg: ModelConfig) -> str:
    """The progress line of one epoch: train loss, validation metric, and an early stop when there is one."""
    info = f"loss {row['train_loss']:.3f}" + (f"  val {metric} {val[metric]:.3f}" if metric in val else "")
    if bad >= cfg.patience and epoch + 1 < cfg.epochs:  # early stop: say so, the bar stays at k/N
        best_k = max(range(len(history)), key=lambda i: sign * history[i]["val_metric"]) + 1
        info += f"  stopped early at epoch {epoch + 1} (best {best_k})"
    return info


@dataclass
class FitSettings:
    """How one :func:`fit` runs, besides the model, the data, the schedule and the loss.

    Attributes:
        seed: seeds the batch order (per epoch, so a resumed run sees the same batches).
        target_stats: regression target standardisation.
        teacher_cache: teacher outputs for every sample (tensors with N rows, nested by target), or None.
        kd_mask: (N,) bool, samples where the teacher saw at least one of its modalities.
        ckpt_path: where to write the per-epoch checkpoint (atomically).
        resume: continue from ``ckpt_path`` when it exists.
        quiet: no progress bar.
        desc: progress bar label.
        device: torch device.
        select_best: restore the best validation state at the end (else keep the last epoch's state, for a
            refit whose validation samples are part of its training set).
        warmup_epochs: epochs of linear learning-rate warm-up (a brief fine-tuning takes 0).
    """

    seed: int
    target_stats: dict
    teacher_cache: dict | None = None
    kd_mask: np.ndarray | None = None
    ckpt_path: str | Path | None = None
    resume: bool = False
    quiet: bool = False
    desc: str = "train"
    device: torch.device | str = "cpu"
    select_best: bool = True
    warmup_epochs: int = WARMUP_EPOCHS


def fit(model: MultimodalNet, data: MultimodalData, train_idx: np.ndarray, val_idx: np.ndarray,
        cfg: ModelConfig, loss_fn: CompositeLoss, settings: FitSettings) -> list[dict]:
    """Train ``model`` in place and restore its best validation state.

    Args:
        model: the network.
        data: the dataset.
        train_idx: training sample indices.
        val_idx: validation sample indices (early stopping on the primary metric); none: no early stopping, every
            epoch runs and the last state stays (a fold of cross-validation, which trains for a chosen count).
        cfg: epochs, batch size, learning rate, patience (auto ones: :func:`schedule_for`).
        loss_fn: a CompositeLoss (its projections are trained too).
        settings: seed, checkpointing, teacher outputs, device, ... (:class:`FitSettings`).

    Under ``torchrun`` (see :mod:`cmkd.training.distributed`) the model and loss are wrapped in
    DistributedDataParallel, each rank takes its share of every global batch, and only rank 0 writes checkpoints.

    Returns:
        The history: one dict per epoch (train loss and parts, val loss, val metric, lr).
    """
    o = settings
    cfg = schedule_for(cfg, len(train_idx))  # auto batch size, epochs and patience made concrete
    mods, sources, batch_mods = _batch_modalities(model, loss_fn)
    params, opt, sched = _optimiser(model, loss_fn, cfg, o.warmup_epochs)
    metric, higher = selection_metric(model, data)
    sign = 1.0 if higher else -1.0
    history: list[dict] = []
    best_score, best_state, bad, start = -math.inf, None, 0, 0
    if o.resume and o.ckpt_path and Path(o.ckpt_path).exists():
        history, best_score, best_state, bad, start, finished = _resume_from(o.ckpt_path, model, loss_fn, opt, sched)
        if finished:
            if o.select_best:
                model.load_state_dict(best_state)
            return history
    step, n_ranks, me = _make_step(model, loss_fn, o.device)
    plain = not o.quiet and not sys.stderr.isatty()  # the bar is off there (see _progress)
    feed = _Feed(data, batch_mods, mods, sources, o.target_stats, o.teacher_cache, o.kd_mask, n_ranks, me, o.device)
    with _progress(o.quiet or me > 0) as prog:
        task = prog.add_task(o.desc, total=cfg.epochs, completed=start, info="")
        for epoch in range(start, cfg.epochs):
            sums, nb = _train_epoch(step, opt, params, feed, train_idx, cfg, o.seed, epoch, o.desc)
            lr = opt.param_groups[0]["lr"]
            sched.step()
            row, val = _epoch_row(model, data, val_idx, metric, epoch, lr, sums, nb, o.device)
            if val:  # no validation samples: every epoch runs and the last state stays
                best_score, best_state, bad = _keep_best(sign * val[metric], best_score, best_state, bad, model)
            history.append(row)
            done = bad >= cfg.patience or epoch + 1 == cfg.epochs
            if o.ckpt_path and me == 0:
                _save_checkpoint(o.ckpt_path, model, loss_fn, opt, sched, history, best_score, best_state, bad,
                                 epoch, done)
            info = _epoch_info(row, val, metric, sign, history, bad, epoch, cfg)
            prog.update(task, advance=1, info=info)
            if plain and me == 0:  # off a terminal (a log file, CI): one plain line per epoch instead of a bar
                print(f"{o.desc} epoch {epoch + 1}/{cfg.epochs}: {info}", flush=True)
            if done:
                break
    if best_state is not None and o.select_best:
        model.load_state_dict(best_state)
    return history
