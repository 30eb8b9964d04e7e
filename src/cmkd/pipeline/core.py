"""``run(config)``: teacher -> baseline student -> distilled student -> test evaluation -> ONNX/INT8 export
-> metrics.json, report.html and the resolved config in the output folder."""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from cmkd.config import ExperimentConfig, dump_config
from cmkd.data.arrays import build_data, check_impute_shapes, fit_stats, load_npz
from cmkd.errors import CmkdError
from cmkd.evaluation.logs import WarningLog, note_few_samples, write_history_csvs, write_tensorboard, write_warnings_log
from cmkd.evaluation.metrics import (
    HIGHER_IS_BETTER,
    example_inputs,
    imputation_metrics,
    predict,
    primary_metric,
    task_metrics,
    torch_latency_ms,
)
from cmkd.evaluation.report import print_summary
from cmkd.evaluation.uncertainty import ALPHA, calibrate, interval_metrics
from cmkd.io import atomic_write_text, dumps
from cmkd.nn.checkpoint import build_model, save_model
from cmkd.nn.models import MultimodalNet, count_params, ensemble_of
from cmkd.pipeline.resolve import resolve
from cmkd.pipeline.rundir import open_run_dir, run_dirs
from cmkd.pipeline.state import RunState
from cmkd.training.distill import best_val, make_loss, outlook
from cmkd.training.distributed import THREADS, resolve_device
from cmkd.training.fit import FitSettings, batch_size_for, fit, set_seed
from cmkd.training.teachers import teacher_targets, train_teachers


def run(config: str | ExperimentConfig, out: str | Path = "runs/out", *, overrides: list[str] | None = None,
        quick: bool = False, resume: bool = False, quiet: bool = False, device: str | None = None,
        arrays: dict[str, np.ndarray] | None = None) -> dict:
    """Run the whole experiment and write its outputs.

    Args:
        config: a recipe name, a YAML path, or an :class:`ExperimentConfig` (then ``arrays`` holds the data).
        out: the output folder.
        overrides: ``key=value`` config overrides.
        quick: a short run (few epochs) for smoke tests.
        resume: continue interrupted training from the checkpoints in ``out/.ckpt``.
        quiet: no progress bars or summary table.
        device: where the networks train: ``cpu`` (default), ``cuda``, or ``auto`` (CUDA when present).
        arrays: the dataset when ``config`` is an ExperimentConfig.

    Under ``torchrun`` with several processes, training is data-parallel (:mod:`cmkd.training.distributed`); rank 0
    evaluates and writes every output, the other ranks return an empty dict.

    Returns:
        The metrics dict (also written to ``out/metrics.json``).
    """
    from cmkd.training.distributed import cleanup

    try:  # third-party warnings go to OUT/logs/warnings.log, not the terminal (cmkd.evaluation.logs)
        with run_dirs(), WarningLog():  # the lock released; after a failure the folder as it was (cmkd.pipeline.rundir)
            return _run(config, out, overrides=overrides, quick=quick, resume=resume, quiet=quiet, device=device,
                        arrays=arrays)
    finally:
        cleanup()


def stage_resolve(config: str | ExperimentConfig, out: str | Path, overrides: list[str] | None, quick: bool,
                  resume: bool, quiet: bool, device: str | None, arrays: dict[str, np.ndarray] | None) -> RunState:
    """Config, data arrays and device; the recipe when the config names one."""
    from cmkd.training.distributed import is_main, setup

    if isinstance(config, ExperimentConfig):
        if arrays is None:
            if not config.data.path:
                raise CmkdError("run(): pass arrays= or set data.path")
            arrays = load_npz(config.data.path)
        cfg, source, synthetic = config, str(config.data.path or "arrays"), False
    else:
        cfg, arrays, source, synthetic = resolve(config, overrides, quick)
    if quick:  # a smoke test: the classical stage with 25 trees per forest, like the few epochs of the networks
        cfg.references.n_estimators = min(cfg.references.n_estimators, 25)
        cfg.trees.n_estimators = min(cfg.trees.n_estimators, 25)
    st = RunState(cfg, arrays, source, synthetic, Path(out), resume, quiet, bool(quick))
    st.dev = setup(device or "cpu") or resolve_device(device or "cpu")
    st.main = is_main()
    torch.set_num_threads(THREADS)
    if cfg.recipe:
        from cmkd.recipes import get_recipe

        st.recipe = get_recipe(cfg.recipe)
    return st


def stage_data(st: RunState) -> None:
    """The dataset, its splits and training statistics; checks them, then prepares the output folder."""
    cfg, source = st.cfg, st.source
    tmods, smods = list(cfg.teacher.modalities), list(cfg.student.modalities)
    chain_mods = [m for mods in cfg.distill.chain for m in mods]
    st.data = data = build_data(st.arrays, cfg.data, cfg.seed, source, modalities=list(
        dict.fromkeys(tmods + smods + chain_mods + list(cfg.distill.impute.values()))))
    check_impute_shapes(data, cfg.distill.impute, source)  # the impute term compares them element by element
    st.train_all = data.indices(0)
    st.train, st.val, st.test = (data.labelled(st.train_all), data.labelled(data.indices(1)),
                                 data.labelled(data.indices(2)))
    if len(st.test) == 0:
        raise CmkdError(f"{source}: the test split has no labelled sample")
    if len(st.val) == 0:
        raise CmkdError(f"{source}: the validation split is empty and too few training samples to carve one")
    st.stats = fit_stats(data, st.train_all)
    for name, spec in (cfg.teachers.items() if cfg.teachers else [("teacher", cfg.teacher)]):
        if (len(data.all_present(spec.modalities, st.train)) == 0
                or len(data.all_present(spec.modalities, st.val)) == 0):
            raise CmkdError(f"{source}: no training/validation sample has all modalities {spec.modalities} of "
                            f"{'teacher' if name == 'teacher' else 'teachers.' + name}")
    # the inputs are valid: only now touch the output folder
    st.ck_dir = st.out / ".ckpt"
    if st.main:  # lock, resume check, staging: outputs are swapped in at the end (cmkd.pipeline.rundir)
        st.rundir = open_run_dir(st.out, dump_config(cfg), st.resume)
        st.out = st.rundir.staging
        atomic_write_text(st.out / "config.yaml", dump_config(cfg))
        note_few_samples(data, st.train, st.quiet)  # one line the user can act on, not scikit-learn's warnings
    st.sign = 1.0 if HIGHER_IS_BETTER[primary_metric(data)] else -1.0


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
                best = int(np.argmax([st.sign * r["val_metric"] for r in st.histories[name]])) + 1
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
    if len(members) > 1:
        preds = predict(chosen, data, st.val, device=st.dev)
        st.ensemble_val[role] = st.sign * task_metrics(data, st.val, preds)[primary_metric(data)]
    st.models[role] = model
    return model


def network_val(st: RunState, role: str) -> float:
    """``sign`` x a network's validation figure as the run compares networks (the fallback, the recommendation
    after a refit): an ensemble's own (:attr:`RunState.ensemble_val`), else the best epoch's of its history."""
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
    from cmkd.pipeline.classical_stage import Background, Handoff, Threads, classical_fits

    st.teacher_handoff = Handoff()
    if st.cache:  # the teacher has trained already
        give_teacher(st)
    st.classical_threads = Threads(THREADS)
    st.classical = Background(classical_fits, cfg, st.data, list(cfg.student.modalities), st.train, st.train_all,
                              st.val, st.test, st.teacher_handoff, st.out, st.classical_threads)


def wait_classical(st: RunState) -> None:
    """Wait for the classical fits, so that nothing runs beside what follows. The networks have trained: the fits
    still to start may use every core of this process's share of the machine."""
    if st.classical is not None:
        from threadpoolctl import threadpool_limits

        from cmkd.pipeline.classical_stage import available_cores
        from cmkd.training.distributed import world_size

        if st.classical_threads is not None:
            st.classical_threads.widen(max(1, available_cores() // world_size()))
        with threadpool_limits(limits=THREADS):  # native pools (BLAS) held to THREADS while waiting
            st.classical.result()


def give_teacher(st: RunState) -> None:
    """Hand the teacher's outputs (final: after any aggregation round) to the classical fits."""
    from cmkd.pipeline.classical_stage import teacher_outputs

    if st.teacher_handoff is not None:
        st.teacher_handoff.put((teacher_outputs(st.cache), st.kd_mask))


def _deployed_network(st: RunState) -> str:
    """The network behind ``st.models["student"]``: the baseline's training when the safe fallback replaced it."""
    return "student_baseline" if st.safe.get("fallback") else "student"


def _selection_val(st: RunState) -> dict[str, float] | None:
    """With ``student.refit`` the deployed network has trained on the validation samples, so its validation
    figure would be a training figure: the recommendation gets the figure it had before the refit instead (the
    best epoch's, as the fallback compares; of the baseline when the fallback replaced the student). None
    without a refit (the network is scored on validation as it is)."""
    if not st.cfg.student.refit or "student" not in st.models:
        return None
    v = network_val(st, _deployed_network(st))
    return {primary_metric(st.data): st.sign * v} if np.isfinite(v) else None


def stage_students(st: RunState) -> None:
    """Baseline student (task loss only) and distilled student from the same initialisation; then dataset
    aggregation rounds and progressive distillation when configured. The classical fits get the teacher's
    outputs once they and the training data are final (before the students; with aggregation rounds, which add
    samples, once the last round's are in: beside its retraining when the recipe announces its rounds, else after
    it)."""
    smods = list(st.cfg.student.modalities)
    if _data_final(st):
        give_teacher(st)
    for role in ("student_baseline", "student"):
        train_student(st, role, smods, role == "student" and st.distil, st.teacher, st.cache, st.kd_mask)
    # safe distillation: with distill.fallback, a distilled student worse on validation than the baseline is
    # replaced by the baseline (never worse on validation)
    st.safe = {"fallback": False}
    if st.cfg.distill.fallback and network_val(st, "student") < network_val(st, "student_baseline"):
        st.models["student"] = copy.deepcopy(st.models["student_baseline"])
        st.safe["fallback"] = True
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


def _evaluate_model(st: RunState, role: str, model: MultimodalNet, use_conformal: bool) -> dict:
    """One model's metrics entry; its predictions and conformal state go into ``st``; its file is saved."""
    cfg, data, test = st.cfg, st.data, st.test
    mods = list(model.encoders)
    if role.startswith(("teacher", "assistant_")):  # scored where they have all their modalities
        # where no test sample has them (e.g. Houston's official test pixels lack HSI): on validation instead
        r_test, r_val = data.all_present(mods, test), data.all_present(mods, st.val)
        idx = r_test if len(r_test) else r_val
    else:
        idx = test
    p = predict(model, data, idx, device=st.dev) if len(idx) else {}
    mm = task_metrics(data, idx, p) if len(idx) else {}
    cal = data.all_present(mods, st.cal_all) if role.startswith("teacher") else st.cal_all
    if use_conformal and len(cal) >= 2 and len(idx):
        st.conformal[role] = calibrate(model, data, cal, cfg, st.dev)
        mm.update(interval_metrics(model, data, idx, p, st.conformal[role], cfg))
    if model.imputers and len(idx):
        mm.update(imputation_metrics(data, idx, p, cfg.distill.impute, model))
    model.cpu()
    costs = {m: cfg.data.modalities[m].cost for m in data.kinds}
    entry = {"modalities": mods, "params": count_params(model), "metrics": mm,
             "latency_ms": torch_latency_ms(model, example_inputs(data, mods), cfg.export.latency_runs),
             "n_test": int(len(idx)), "cost": float(sum(costs[m] for m in mods)),
             "scored_on": "test" if np.isin(idx, test).all() else "val"}
    if role in st.ensemble_val:  # student.ensemble: how many networks, and their average's validation figure
        entry["ensemble"] = {"members": len(model.members), "val": st.sign * st.ensemble_val[role]}
    first = next(iter(data.target_kinds))
    if len(idx) and (f"{first}/logits" in p or f"{first}/value" in p):
        kind = data.target_kinds[first]
        y_pred = p[f"{first}/logits"].argmax(1) if kind == "classification" else p[f"{first}/value"]
        st.predictions[role] = {"kind": kind, "y_true": data.targets[first][idx], "y_pred": y_pred,
                                "class_names": cfg.data.class_names, "columns": cfg.data.targets[first].columns,
                                "units": cfg.data.targets[first].units}
    save_model(model, st.out / f"{role}.pt", cfg, data, role,
               {t: [c.state() for c in cs] for t, cs in st.conformal.get(role, {}).items()})
    return entry


def stage_evaluate(st: RunState) -> None:
    """Every model on the test split (the teacher where it has all its modalities), conformal calibration of
    regression heads (on split 3 when the data has one, else validation), and the metrics.json skeleton."""
    cfg, data = st.cfg, st.data
    wait_classical(st)  # the networks' latencies and the export are timed on an otherwise idle process
    cal_all = data.labelled(data.indices(3))
    cal_split = "calibration" if len(cal_all) else "val"
    st.cal_all = cal_all if len(cal_all) else st.val
    use_conformal = "regression" in data.target_kinds.values()
    models = {role: _evaluate_model(st, role, model, use_conformal) for role, model in st.models.items()}
    t_test = data.all_present(list(cfg.teacher.modalities), st.test)
    st.metrics = {
        "name": cfg.name, "recipe": cfg.recipe, "seed": cfg.seed, "primary_metric": primary_metric(data),
        "synthetic": st.synthetic, "quick": st.quick,
        "data": {"source": st.source, "n_train": int(len(st.train)),
                 "n_train_unlabelled": int(len(st.train_all) - len(st.train)), "n_val": int(len(st.val)),
                 "n_test": int(len(st.test)), "n_test_teacher": int(len(t_test))},
        "costs": {m: cfg.data.modalities[m].cost for m in data.kinds}, "models": models,
        "distill": {**cfg.distill.model_dump(mode="json"), **st.safe},
    }
    channels = {m: spec.channels for m, spec in cfg.data.modalities.items() if spec.channels}
    if channels:  # channel names for the report's tables (metric keys keep the indices)
        st.metrics["channels"] = channels
    st.metrics["distillation_outlook"] = outlook(data, st.train, st.train_all, st.cache, st.kd_mask, st.histories,
                                                 st.sign, primary_metric(data))
    if st.aggregated:  # samples added per aggregation round (already counted in n_train)
        st.metrics["data"]["n_train_aggregated"] = st.aggregated
    if st.conformal:
        st.metrics["uncertainty"] = {"method": "split-conformal, normalised by the Gaussian head's sigma, Mondrian "
                                     "per availability band", "alpha": ALPHA,
                                     "calibrated_on": cal_split, "n_calibration": int(len(st.cal_all)),
                                     "availability_edges": cfg.uncertainty.availability_edges}


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


def stage_export(st: RunState) -> None:
    """ONNX and INT8 export of the student (its pruned copy from :func:`stage_prune` with ``export.prune``)."""
    cfg = st.cfg
    if not cfg.export.enabled:
        return
    from cmkd.pipeline.export_stage import export_student

    st.metrics["export"] = export_student(st.models["student"], st.data, st.test, st.out, cfg, st.pruned)


def stage_references(st: RunState) -> None:
    """Classical references: the recipe's own (its ``references`` hook), then with ``references`` / ``trees``
    on, RandomForest / ExtraTrees / HistGradientBoosting on the student's inputs, the tree-ensemble student and
    the recommended student (:mod:`cmkd.pipeline.classical_stage`)."""
    cfg = st.cfg
    if st.recipe is not None and st.recipe.references is not None:
        st.metrics["references"] = st.recipe.references(st.data, list(cfg.student.modalities), cfg.seed)
    if st.classical is not None:
        from threadpoolctl import threadpool_limits

        from cmkd.pipeline.classical_stage import classical_finish

        # native pools (HistGradientBoosting's OpenMP, BLAS) held to THREADS like the networks: more
        # oversubscribe a loaded machine (a quick coastal run's classical stage: 12 s at 1 thread, 222 s with two)
        with threadpool_limits(limits=THREADS):
            fits = st.classical.result()  # waited for in stage_evaluate
            t0 = time.perf_counter()
            st.fitted = classical_finish(cfg, st.data, list(cfg.student.modalities), st.val, st.test, fits,
                                         st.models.get("student"), primary_metric(st.data), st.out, st.metrics,
                                         st.metrics.get("references"), st.dev, student_val=_selection_val(st))
        finish = time.perf_counter() - t0
        # the work (fits, tree-student export, its latency, the recommendation), and what it added to the run's
        # wall time (the wait for the background fits once the networks had trained + the rest)
        st.metrics["classical_stage_s"] = round(fits.seconds + finish, 2)
        st.metrics["classical_added_s"] = round(st.classical.waited_s + finish, 2)


def stage_deploy(st: RunState) -> None:
    """``student.onnx`` becomes the recommended model (or the one ``export.model`` pins); after the recipe's
    analysis, which reads the network's files."""
    if st.fitted is not None:
        from cmkd.pipeline.classical_stage import deploy_recommended

        deploy_recommended(st.cfg, st.data, list(st.cfg.student.modalities), st.test, st.fitted, st.out,
                           st.metrics)


def stage_analyse(st: RunState) -> None:
    """The recipe's domain outputs (its ``analyse`` hook): sweeps, decisions, extra figures."""
    if st.recipe is None or st.recipe.analyse is None:
        return
    ctx = {"models": st.models, "data": st.data, "cfg": st.cfg, "out": st.out, "device": st.dev, "test": st.test,
           "val": st.val, "calibration": st.cal_all, "conformal": st.conformal, "metrics": st.metrics,
           "predictions": st.predictions, "quiet": st.quiet}
    extra = st.recipe.analyse(ctx) or {}
    st.metrics.update(extra.get("metrics", {}))
    st.extra_html.extend(extra.get("html", []))


def stage_write(st: RunState) -> None:
    """metrics.json, report.html, histories.json and logs/<model>.csv (atomically); the checkpoints are removed."""
    from cmkd.evaluation.report import write_report

    write_report(st.out / "report.html", st.metrics, st.histories, st.predictions, st.extra_html)
    atomic_write_text(st.out / "histories.json", dumps(st.histories, indent=1))
    write_history_csvs(st.out / "logs", st.histories)
    write_tensorboard(st.out / "logs" / "tensorboard", st.histories)
    st.metrics["warnings"] = write_warnings_log(st.out)  # last, so that it counts the writers' warnings too
    atomic_write_text(st.out / "metrics.json", dumps(st.metrics, indent=2))
    if st.rundir is not None:  # every output written: swap them in
        st.rundir.commit()
        st.out = st.rundir.out
    shutil.rmtree(st.ck_dir, ignore_errors=True)
    if not st.quiet:
        print_summary(st.metrics, st.out)


TRAIN_STAGES = (stage_data, stage_teachers, stage_students)
# references after export, as before the stages were named (same call order, same figures); the pruned student's
# fine-tuning first: it trains, beside the classical fits, before stage_evaluate waits for them
OUTPUT_STAGES = (stage_prune, stage_evaluate, stage_export, stage_references, stage_analyse, stage_deploy,
                 stage_write)


def _run(config: str | ExperimentConfig, out: str | Path, *, overrides: list[str] | None, quick: bool,
         resume: bool, quiet: bool, device: str | None, arrays: dict[str, np.ndarray] | None) -> dict:
    st = stage_resolve(config, out, overrides, quick, resume, quiet, device, arrays)
    try:
        for stage in TRAIN_STAGES:
            stage(st)
        if not st.main:  # data-parallel workers: training done, rank 0 evaluates and writes
            return {}
        for stage in OUTPUT_STAGES:
            stage(st)
    except BaseException:
        if st.classical is not None:  # the background fits start nothing more
            st.classical.cancel()
        raise
    return st.metrics
