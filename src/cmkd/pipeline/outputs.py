"""The output stages of :func:`cmkd.pipeline.core.run` once the networks have trained: the wait for the classical
fits, evaluation on the test split with conformal calibration, export, the classical finish (references, tree
student, recommendation), the recipe's analysis, deployment of the recommended model and the written outputs."""

from __future__ import annotations

import shutil
import time

import numpy as np

from cmkd.evaluation.logs import write_history_csvs, write_tensorboard, write_warnings_log
from cmkd.evaluation.metrics import (
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
from cmkd.nn.checkpoint import save_model
from cmkd.nn.models import MultimodalNet, count_params
from cmkd.pipeline.state import RunState
from cmkd.pipeline.students import network_val
from cmkd.training.distill import outlook
from cmkd.training.distributed import THREADS


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
    role = _deployed_network(st)
    if role in st.val_metrics:  # several targets: every target's figure (the recommendation's yardstick)
        return st.val_metrics[role]
    v = network_val(st, role)
    return {primary_metric(st.data): st.sign * v} if np.isfinite(v) else None


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
                                         st.metrics.get("references"), st.dev, student_val=_selection_val(st),
                                         cv=_cv_figures(st))
        finish = time.perf_counter() - t0
        # the work (fits, tree-student export, its latency, the recommendation), and what it added to the run's
        # wall time (the wait for the background fits once the networks had trained + the rest)
        st.metrics["classical_stage_s"] = round(fits.seconds + finish, 2)
        st.metrics["classical_added_s"] = round(st.classical.waited_s + finish, 2)


def _cv_figures(st: RunState) -> dict | None:
    """With few labels, the candidates' cross-validated figures for the recommendation; the selection's details
    go to ``metrics["selection"]``."""
    if not st.cv:
        return None
    from cmkd.pipeline.crossval import figures, fold_figures, learnt_from_teacher

    st.metrics["selection"] = st.cv
    return {"figures": figures(st), "folds": fold_figures(st), "metric": st.cv["metric"],
            "higher_is_better": st.cv["higher_is_better"], "prefer": learnt_from_teacher(st),
            "yardstick": st.cv_yard.describe() if len(st.cv_yard.targets) > 1 else None}


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
    from cmkd.evaluation.dividend import dividend
    from cmkd.evaluation.report import write_report

    div = dividend(st.metrics)  # the recommended model against the best label-only one
    if div is not None:
        st.metrics["dividend"] = div
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

