"""The classical stage of :func:`cmkd.pipeline.run`: references, the tree student, the recommended student.

Two calls, kept apart from the network stages so that they can move with the pipeline:

- :func:`classical_stage` (after the network models are scored): ``metrics["references"]`` (merged with a
  recipe's own ``references()`` hook, whose entries keep their names and figures; a generic reference of the
  same name is stored as ``<name>_labels``), the tree student as
  ``metrics["models"]["student_trees"]`` plus ``student_trees.onnx`` and its figures in
  ``metrics["export_trees"]``, and ``metrics["recommended"]``: the best on validation among the distilled network
  student, the tree student and the references (ties toward the cheaper model, see
  :func:`cmkd.references.recommend`).
- :func:`deploy_recommended` (last, after the recipe's analysis has read the network's files): with
  ``export.model`` ``auto`` and a tree model recommended (the tree student or a RandomForest / ExtraTrees /
  HistGradientBoosting reference), ``student.onnx`` becomes that model (same inputs and outputs as the
  network's), the network's own file is kept as ``student_net.onnx`` and ``metrics["export"]`` (the network's
  figures, INT8 included, unchanged) says so; ``metrics["deployed"]`` names what ``student.onnx`` holds. A
  candidate without an ONNX form (a HistGradientBoosting regressor with an output column it could not fit) is
  replaced by the best exportable one, and the note says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .config import ExperimentConfig
from .data import MultimodalData
from .edge import write_card
from .evaluate import predict, task_metrics
from .references import recommendation, references
from .runtime import read_card, sidecar_path
from .trees import TreeStudent, ensemble_onnx, export_tree_student, save_onnx

EXPORTABLE_REFS = ("random_forest", "extra_trees", "hist_gradient_boosting")


def teacher_outputs(cache: dict) -> dict[str, np.ndarray]:
    """The pipeline's teacher cache (target -> {"logits" | "value" | ...: tensor}) as ``<target>/<key>`` arrays."""
    return {f"{t}/{k}": v.detach().cpu().numpy() for t, part in cache.items() if isinstance(part, dict)
            for k, v in part.items()}


def classical_stage(cfg: ExperimentConfig, data: MultimodalData, smods: list[str], train: np.ndarray,
                    train_all: np.ndarray, val: np.ndarray, test: np.ndarray, cache: dict, kd_mask: np.ndarray,
                    student, metric: str, out: Path, metrics: dict, recipe_refs: dict | None = None,  # noqa: ANN001
                    device: str = "cpu") -> dict:
    """Fill ``metrics`` with the references, the tree student and the recommendation (see the module docstring).
    The forests use ``cfg.threads`` jobs; the caller holds the native thread pools to the same (see
    :func:`cmkd.pipeline.stage_references`). Returns the fitted tree models by name (``student_trees`` and the
    exportable references), for :func:`deploy_recommended`."""
    t0 = time.perf_counter()
    jobs = cfg.threads
    teacher = teacher_outputs(cache)
    fitted: dict = {}
    refs: dict[str, dict] = dict(recipe_refs or {})
    if cfg.references.enabled:
        r = cfg.references
        found = references(data, smods, train, train_all, val, test, teacher, kd_mask, seed=cfg.seed,
                           n_estimators=r.n_estimators, max_fit_samples=r.max_fit_samples, n_jobs=jobs,
                           text_vocab=cfg.data.text_vocab, algorithms=tuple(r.algorithms), models=fitted,
                           self_training=tuple(r.self_training))
        # a recipe's own entries keep their names and figures; a generic one of the same name gets ``_labels``
        rename = {k: (f"{k}_labels" if k in refs else k) for k in found}
        refs.update({rename[k]: v for k, v in found.items()})
        fitted = {rename[k]: m for k, m in fitted.items() if m.algorithm in EXPORTABLE_REFS
                  and all(e is not None for ms in m.models.values() for e in ms)}  # every output fitted
    if refs:
        metrics["references"] = refs
    cands: dict[str, dict] = {}
    if "student" in metrics["models"] and student is not None:
        cands["student"] = {"val": task_metrics(data, val, predict(student, data, val, device=device))}
    if cfg.trees.enabled:
        tc = cfg.trees
        ts = TreeStudent(smods, algorithm=tc.algorithm, n_estimators=tc.n_estimators,
                         min_samples_leaf=tc.min_samples_leaf, max_samples=tc.max_samples,
                         label_weight=tc.label_weight, seed=cfg.seed, n_jobs=jobs,
                         text_vocab=cfg.data.text_vocab).fit(data, train_all, teacher, kd_mask, val)
        ex = export_tree_student(ts, data, test, out / "student_trees.onnx", cfg.export.latency_runs)
        val_m = task_metrics(data, val, ts.predict(data, val))
        metrics["models"]["student_trees"] = {
            "modalities": list(smods), "params": int(sum(e.tree_.node_count for m in ts.models_.values()
                                                         for e in m.estimators_)),
            "metrics": task_metrics(data, test, ts.predict(data, test)), "val_metrics": val_m,
            "latency_ms": ex["onnx_latency_ms"], "latency_from": "onnx", "n_test": int(len(test)),
            "cost": float(sum(cfg.data.modalities[m].cost for m in smods)), "scored_on": "test",
            "algorithm": tc.algorithm, "n_fit": ts.n_fit_}
        metrics["export_trees"] = ex
        cands["student_trees"] = {"val": val_m}
        fitted["student_trees"] = ts
    for k, v in refs.items():
        if isinstance(v, dict) and isinstance(v.get("val"), dict) and v["val"]:
            cands[k] = {"val": v["val"]}
    if cands:
        metrics["recommended"] = recommendation(cands, metric)
    metrics["classical_stage_s"] = round(time.perf_counter() - t0, 2)  # references + tree student, wall seconds
    return fitted


def deploy_recommended(cfg: ExperimentConfig, data: MultimodalData, smods: list[str], test: np.ndarray,
                       fitted: dict, out: Path, metrics: dict) -> None:
    """Make ``student.onnx`` the recommended model, or the one ``export.model`` pins (module docstring)."""
    if not cfg.export.enabled or "export" not in metrics:
        return
    net_card = read_card(sidecar_path(out / "student.onnx")) if sidecar_path(out / "student.onnx").is_file() else None
    if net_card is not None and (out / "student_trees.onnx").is_file():
        write_card(out / "student_trees.onnx", tree_card(net_card, "student_trees"))
    rec = metrics.get("recommended") or {}
    want = cfg.export.model if cfg.export.model != "auto" else rec.get("model", "student")
    note = None
    if want != "student" and want not in fitted:
        vals = rec.get("val", {})
        ok = [k for k in vals if k == "student" or k in fitted]
        if cfg.export.model == "auto" and ok:
            hib = metrics.get("primary_metric") in ("accuracy", "macro_f1", "r2")
            best = (max if hib else min)(ok, key=lambda k: vals[k])
            note = f"{want} has no ONNX form here; the best exportable candidate on validation is deployed"
            want = best
        else:
            want = "student"
            note = f"export.model {cfg.export.model!r} is not an exportable model of this run; the network student"
    deployed = {"model": want, "onnx": "student.onnx"}
    if note:
        deployed["note"] = note
    if want != "student":
        os.replace(out / "student.onnx", out / "student_net.onnx")
        metrics["export"]["onnx"] = "student_net.onnx"
        if net_card is not None:
            write_card(out / "student_net.onnx", net_card)
            sidecar_path(out / "student.onnx").unlink()
        if want == "student_trees":
            deployed.update({k: v for k, v in metrics["export_trees"].items() if k != "onnx"})
            save_onnx(ensemble_onnx({t: {"model": m, "kind": fitted[want].target_kinds[t],
                                         "std": fitted[want].std_.get(t)}
                                     for t, m in fitted[want].models_.items()}, smods, fitted[want].kinds,
                                    fitted[want].shapes, cfg.data.text_vocab), out / "student.onnx")
        else:  # a reference: one classifier or regressor per target (HistGradientBoosting: per output column)
            ref = fitted[want]
            rmse = (metrics.get("references", {}).get(want, {}).get("val") or {}).get("rmse")
            heads = {t: {"model": ms if ref.algorithm == "hist_gradient_boosting" else ms[0],  # HGB: one per column
                         "kind": data.target_kinds[t], "n_classes": len(data.classes.get(t, [])),
                         "std": np.full(data.targets[t].shape[1], rmse or 1.0) if data.target_kinds[t] == "regression"
                         else None} for t, ms in ref.models.items()}
            _export_reference(ref, heads, smods, data, test, out, cfg, deployed)
    if want != "student" and net_card is not None:
        write_card(out / "student.onnx", tree_card(net_card, want))
        deployed["sidecar"] = "student.json"
    metrics["deployed"] = deployed


def tree_card(net_card: dict, role: str) -> dict:
    """The sidecar of a tree model (the tree student or a RandomForest / ExtraTrees / HistGradientBoosting
    reference) exported with the network student's input/output contract: the network's card less its conformal
    quantiles (calibrated for the network's std, not the trees' constant one)."""
    notes = [n for n in net_card.get("notes", []) if "pruned" not in n]
    notes.append("tree ensemble: the regression std output is a constant per target column (the model's RMSE on "
                 "the validation samples), not calibrated; no conformal intervals")
    return {**net_card, "role": role, "model_type": "tree_ensemble", "conformal": {}, "notes": notes}


def _export_reference(ref, heads: dict, smods: list[str], data: MultimodalData, test: np.ndarray,  # noqa: ANN001
                      out: Path, cfg: ExperimentConfig, deployed: dict) -> None:
    """``student.onnx`` from a RandomForest / ExtraTrees / HistGradientBoosting reference (fitted on the
    non-constant feature columns ``ref.keep``; the graph's trees index the full feature vector)."""
    from .trees import check_onnx, flat_features

    for h in heads.values():
        h["features"] = np.flatnonzero(ref.keep)
    kinds = {m: data.kinds[m] for m in smods}
    shapes = {m: tuple(data.inputs[m].shape[1:]) for m in smods}
    save_onnx(ensemble_onnx(heads, smods, kinds, shapes, cfg.data.text_vocab), out / "student.onnx")
    ref_p = ref.predict(flat_features(data, smods, test, cfg.data.text_vocab))
    deployed.update(check_onnx(out / "student.onnx", smods, {t: data.target_kinds[t] for t in heads}, data, test,
                               ref_p, cfg.export.latency_runs))
