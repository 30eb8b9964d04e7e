"""The training stages of :func:`cmkd.pipeline.core.run` after its data: the teacher (or teachers), the baseline and
distilled students, dataset-aggregation rounds, progressive distillation and the pruned student's fine-tuning; and
the start of the classical fits (:mod:`cmkd.pipeline.classical_stage`) in a background thread beside them.

Every network of a run trains through this module's ``fit`` (tests record the trainings by patching it here)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from cmkd.data.arrays import build_data
from cmkd.errors import CmkdError
from cmkd.evaluation.metrics import Yardstick, predict, primary_metric, task_metrics
from cmkd.nn.checkpoint import build_model
from cmkd.nn.models import MultimodalNet, ensemble_of
from cmkd.pipeline import crossval
from cmkd.pipeline.state import RunState
from cmkd.training.distill import best_epoch, best_val, make_loss
from cmkd.training.distributed import THREADS
from cmkd.training.fit import FitSettings, batch_size_for, fit, set_seed
from cmkd.training.teachers import teacher_targets, train_teachers


def _targets(st: RunState, teacher: torch.nn.Module) -> tuple[dict, np.ndarray]:
    return teacher_targets(teacher, st.data, list(st.data.target_kinds), st.dev)


def stage_teachers(st: RunState) -> None:
    """The teacher on its own modalities with the task loss (with ``teachers:``, an ensemble of members) and its
    outputs on every sample, which the students learn from. The classical fits start beside it (unless a
    recipe's aggregation rounds will add training samples: then beside the last round's retraining)."""
    if _data_final(st):
        start_classical(st)
    st.teacher, members = train_teachers(st.cfg, st.data, st.train, st.val, st.stats, st.histories,
                                         ck_dir=st.ck_dir, resume=st.resume, quiet=st.quiet, device=st.dev)
    st.models["teacher"] = st.teacher
    if st.cfg.teachers:
        st.models.update(members)
    st.cache, st.kd_mask = _targets(st, st.teacher)
    if st.cv:  # few labels: the teacher is the network or a classical model, whichever cross-validates better
        crossval.choose_teacher(st)


def train_student(st: RunState, role: str, mods: list[str], distil: bool, t_model: torch.nn.Module,
                  t_cache: dict, t_mask: np.ndarray, tag: str = "") -> MultimodalNet:
    """Train one student-sized model (optionally distilled from ``t_model``) and keep it in ``st.models``;
    ``tag`` makes the checkpoint file of a retraining (an aggregation round) its own. With ``student.refit``:
    choose the epoch count on validation, then retrain on train + val for that many epochs. With
    ``student.ensemble`` K > 1: K such networks, each its own initialisation and batch order (member ``k``'s
    histories and checkpoints are ``<role>_m<k>``; the first member's are the one network's), averaged
    (:func:`cmkd.nn.models.ensemble_of`)."""
    cfg, data = st.cfg, st.data
    if st.classical is not None:  # the classical fits failed (e.g. a target without samples): say so now
        st.classical.check()
    fit_idx = st.train_all if distil else st.train
    members, before_refit = [], []
    for k in range(cfg.student.ensemble):
        name, off = (role, 0) if k == 0 else (f"{role}_m{k}", 1000 * k)
        stages = [(name, cfg.student, fit_idx, True)]
        if cfg.student.refit:
            stages.append((f"{name}_refit", None, np.concatenate([fit_idx, st.val]), False))
        for stage, mcfg, idx, select in stages:
            if mcfg is None:
                best = best_epoch(st.histories, name, st.sign)
                # the batch size of the run that chose the epoch count (an auto one would follow the larger set)
                mcfg = cfg.student.model_copy(update={"epochs": best, "patience": best + 1,
                                                      "batch_size": batch_size_for(cfg.student, len(fit_idx))})
            set_seed(cfg.seed + off + 1)
            imp = ([m for m in cfg.distill.impute if m in mods] if distil and cfg.distill.weights.get("impute")
                   else None)
            model = build_model(data, mods, cfg.student, cfg, impute=imp or None)
            model.set_stats(st.stats)
            set_seed(cfg.seed + off + 2)
            loss = make_loss(cfg, cfg.student.width, t_model.width, baseline=not distil)
            st.histories[stage] = fit(
                model, data, idx, st.val, mcfg, loss,
                FitSettings(seed=cfg.seed + off + 1, target_stats=st.stats,
                            teacher_cache=t_cache if distil else None, kd_mask=t_mask,
                            ckpt_path=st.ck_dir / f"{stage}{tag}.pt", resume=st.resume, quiet=st.quiet, desc=stage,
                            device=st.dev, select_best=select))
            if select:
                before_refit.append(model)
        members.append(model)

    def one(nets: list[MultimodalNet]) -> torch.nn.Module:
        return nets[0] if len(nets) == 1 else ensemble_of(nets, cfg.distill.temperature)

    model, chosen = one(members), one(before_refit)  # chosen: as early stopping left them (before any refit)
    if len(members) > 1 or (len(data.target_kinds) > 1 and len(st.val)):
        preds = predict(chosen, data, st.val, device=st.dev)
        mm = task_metrics(data, st.val, preds)
        if len(members) > 1:
            st.ensemble_val[role] = st.sign * mm[primary_metric(data)]
        if len(data.target_kinds) > 1:
            st.val_metrics[role] = mm
    st.models[role] = model
    return model


def network_val(st: RunState, role: str) -> float:
    """A network's validation figure as the run compares networks (the fallback), higher = better: with several
    targets the run's yardstick over all of them (:attr:`RunState.val_metrics`, negated where lower is better),
    else ``sign`` x an ensemble's own (:attr:`RunState.ensemble_val`) or the best epoch's of its history."""
    if role in st.val_metrics:
        yard = Yardstick(st.data, st.train)
        v = yard(st.val_metrics[role])
        return v if yard.higher_is_better else -v
    return st.ensemble_val.get(role, best_val(st.histories, role, st.sign))


def _aggregate(st: RunState, extra: dict) -> None:
    """Append a recipe's aggregated samples to the training split and refresh the data and teacher targets."""
    cfg = st.cfg
    missing = sorted(set(st.arrays) - set(extra))
    if missing:
        raise CmkdError(f"recipe {cfg.recipe}: aggregate() returned no {', '.join(missing)}")
    if not cfg.data.split or cfg.data.split not in st.arrays:
        raise CmkdError(f"recipe {cfg.recipe}: aggregate() needs the data's own split key (data.split)")
    m_new = len(next(iter(extra.values())))
    st.arrays = {k: np.concatenate([v, np.asarray(extra[k]).astype(v.dtype)]) for k, v in st.arrays.items()}
    st.arrays[cfg.data.split][-m_new:] = 0  # aggregated samples only ever train
    st.data = build_data(st.arrays, cfg.data, cfg.seed, st.source, modalities=list(st.data.kinds))
    st.train_all = st.data.indices(0)
    st.train = st.data.labelled(st.train_all)
    st.cache, st.kd_mask = _targets(st, st.teacher)
    st.aggregated.append(m_new)


def _aggregate_rounds(st: RunState) -> int | None:
    """How many aggregation rounds the recipe announces (its ``aggregate_rounds`` hook), None when it does not."""
    if st.recipe is None or st.recipe.aggregate is None or st.recipe.aggregate_rounds is None:
        return None
    return int(st.recipe.aggregate_rounds(st.cfg.model_dump(mode="json")))


def _data_final(st: RunState) -> bool:
    """Are the training data final before the students train (no aggregation round will add samples)?"""
    return st.recipe is None or st.recipe.aggregate is None or _aggregate_rounds(st) == 0


def start_classical(st: RunState) -> None:
    """Start the classical fits (references, tree student: :func:`cmkd.pipeline.classical_stage.classical_fits`)
    once the training data are final, in a background thread beside the teacher and the students. They take
    nothing from the networks but the teacher's outputs (handed over by :func:`give_teacher`)."""
    cfg = st.cfg
    if st.classical is not None or not st.main or not (cfg.references.algorithms or cfg.trees.n_estimators):
        return
    from cmkd.pipeline.classical_stage import Background, Threads, classical_fits, handoff

    st.teacher_handoff = handoff()
    if st.cache:  # the teacher has trained already
        give_teacher(st)
    st.classical_threads = Threads(THREADS)
    st.classical = Background(classical_fits, cfg, st.data, list(cfg.student.modalities), st.train, st.train_all,
                              st.val, st.test, st.teacher_handoff, st.out, st.classical_threads)


def give_teacher(st: RunState) -> None:
    """Hand the teacher's outputs (final: after any aggregation round) to the classical fits."""
    from cmkd.pipeline.classical_stage import teacher_outputs

    if st.teacher_handoff is not None and not st.teacher_handoff.done():
        st.teacher_handoff.set_result(None if st.skip else (teacher_outputs(st.cache), st.kd_mask))


def stage_students(st: RunState) -> None:
    """Baseline student (task loss only) and distilled student from the same initialisation; then dataset
    aggregation rounds and progressive distillation when configured. The classical fits get the teacher's
    outputs once they and the training data are final (before the students; with aggregation rounds, which add
    samples, once the last round's are in: beside its retraining when the recipe announces its rounds, else after
    it)."""
    smods = list(st.cfg.student.modalities)
    if _data_final(st) and not st.cv:
        give_teacher(st)
    st.safe = {"fallback": False}
    train_student(st, "student_baseline", smods, False, st.teacher, st.cache, st.kd_mask)
    if st.cv:  # few labels: the label-only candidates in cross-validation; distil only from a better teacher
        crossval.label_only(st)
        give_teacher(st)
    if st.skip:
        st.models["student"] = copy.deepcopy(st.models["student_baseline"])
        st.safe.update({"fallback": True, "skipped": st.skip})
    else:
        train_student(st, "student", smods, st.distil, st.teacher, st.cache, st.kd_mask)
        if st.cv:
            crossval.distilled(st)
        # safe distillation: a distilled student worse on validation than the baseline is replaced by the baseline
        # (never worse on validation; student_baseline is a candidate); with few labels, in cross-validation
        elif network_val(st, "student") < network_val(st, "student_baseline"):
            st.safe["fallback"] = True
        if st.safe["fallback"]:
            st.models["student"] = copy.deepcopy(st.models["student_baseline"])
            if "student_baseline" in st.ensemble_val:  # the deployed ensemble's figure is the baseline's now
                st.ensemble_val["student"] = st.ensemble_val["student_baseline"]
    # dataset aggregation (e.g. DAgger, Ross et al. 2011): the recipe's ``aggregate`` hook returns extra training
    # samples labelled at the states its trained student visits (None: no more rounds); the distilled student is
    # retrained on the union. Validation and test keep their indices; the baseline keeps the original data.
    rounds = _aggregate_rounds(st)
    while st.recipe is not None and st.recipe.aggregate is not None:
        extra = st.recipe.aggregate(st.cfg.model_dump(mode="json"), st.models["student"], len(st.aggregated))
        if not extra:
            break
        if st.classical is not None:  # started as the data were final: a round the recipe did not announce
            raise CmkdError(f"recipe {st.cfg.recipe}: aggregate() returned samples for round {len(st.aggregated)}, "
                            f"but aggregate_rounds() said {rounds}")
        _aggregate(st, extra)
        if rounds is not None and len(st.aggregated) >= rounds:  # the training data are final: fit beside
            start_classical(st)                                  # the last retraining
        train_student(st, "student", smods, st.distil, st.teacher, st.cache, st.kd_mask,
                      tag=f"_round{len(st.aggregated)}")
    start_classical(st)
    # progressive distillation: teacher -> assistant_1 -> ... -> student_progressive (Mirzadeh et al., 2020);
    # each model learns from the previous one's outputs
    prev = st.teacher
    steps = [(f"assistant_{i + 1}", list(mods)) for i, mods in enumerate(st.cfg.distill.chain)]
    for role, mods in steps + ([("student_progressive", smods)] if steps else []):
        prev = train_student(st, role, mods, True, prev, *_targets(st, prev))


def stage_prune(st: RunState) -> None:
    """With ``export.prune``: the student's pruned copy, fine-tuned with its own training loss for
    ``export.prune_epochs`` (training: it runs before the run waits for the classical fits, beside them)."""
    cfg = st.cfg
    if not (cfg.export.enabled and cfg.export.prune > 0):
        return
    from cmkd.pipeline.export_stage import prune_student

    def finetune(net: MultimodalNet) -> None:  # the pruned student, retrained briefly with its own loss
        ep, distil = cfg.export.prune_epochs, st.distil
        mcfg = cfg.student.model_copy(update={"epochs": ep, "patience": ep + 1})
        set_seed(cfg.seed + 3)
        loss = make_loss(cfg, cfg.student.width, st.teacher.width, baseline=not distil)
        st.histories["student_pruned"] = fit(
            net, st.data, st.train_all if distil else st.train, st.val, mcfg, loss,
            FitSettings(seed=cfg.seed + 3, target_stats=st.stats, teacher_cache=st.cache if distil else None,
                        kd_mask=st.kd_mask, ckpt_path=st.ck_dir / "student_pruned.pt", resume=st.resume,
                        quiet=st.quiet, desc="student_pruned", device=st.dev, warmup_epochs=0))
        net.cpu()

    st.pruned = prune_student(st.models["student"], cfg.export.prune, finetune if cfg.export.prune_epochs else None)

