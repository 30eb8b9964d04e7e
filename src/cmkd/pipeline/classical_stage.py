"""The classical stage of :func:`cmkd.pipeline.core.run`: references, the tree student, the recommended student.

Kept apart from the network stages so that they can move with the pipeline:

- :func:`classical_fits`: the references and the tree student fitted. They need only the data and the teacher's
  outputs, so :func:`cmkd.pipeline.students.start_classical` runs them in a :class:`Background` thread while the
  students train.
- :func:`classical_finish` (after the network models are scored): ``metrics["references"]`` (merged with a
  recipe's own ``references()`` hook, whose entries keep their names and figures; a generic reference of the
  same name is stored as ``<name>_labels``), the tree student as
  ``metrics["models"]["student_trees"]`` plus ``student_trees.onnx`` and its figures in
  ``metrics["export_trees"]``, and ``metrics["recommended"]``: the best on validation among the distilled network
  student, the tree student and the references (ties toward the cheaper model, see
  :func:`cmkd.classical.references.recommend`), on the run's yardstick
  (:class:`cmkd.evaluation.metrics.Yardstick`: with several targets, the standardised error over all); a label-only
  best within one paired standard error of the best distilled candidate gives way to it, as in cross-validation
  (the standard error from the validation split's parts, :func:`cmkd.evaluation.metrics.part_metrics`).
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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmkd.classical.references import ReferenceSettings, recommendation, references
from cmkd.classical.trees import ALGORITHM, FitMemo, TreeStudent, export_tree_student, trim_heap
from cmkd.classical.trees_onnx import check_onnx, ensemble_onnx, save_onnx
from cmkd.config import ExperimentConfig
from cmkd.data.arrays import MultimodalData
from cmkd.evaluation.metrics import HIGHER_IS_BETTER, Yardstick, part_metrics, predict, task_metrics
from cmkd.export.sidecar import tree_card, write_card
from cmkd.runtime import read_card, sidecar_path
from cmkd.training.distributed import THREADS

EXPORTABLE_REFS = ("random_forest", "extra_trees", "hist_gradient_boosting")


def teacher_outputs(cache: dict) -> dict[str, np.ndarray]:
    """The pipeline's teacher cache (target -> {"logits" | "value" | ...: tensor}) as ``<target>/<key>`` arrays."""
    return {f"{t}/{k}": v.detach().cpu().numpy() for t, part in cache.items() if isinstance(part, dict)
            for k, v in part.items()}


@dataclass
class ClassicalFits:
    """What :func:`classical_fits` fitted: the references' entries and models, the tree student, seconds."""

    refs: dict[str, dict] = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)  # exportable references by name (every output fitted)
    trees: TreeStudent | None = None
    trees_export: dict = field(default_factory=dict)  # student_trees.onnx written and checked, not yet timed
    trees_metrics: dict = field(default_factory=dict)  # its scikit-learn figures: {"val": ..., "test": ...}
    trees_refit_on_val: int = 0  # student.refit: validation samples its final fit added
    shared_fits: int = 0  # forests fitted once for two models (FitMemo)
    seconds: float = 0.0


def handoff() -> Future:
    """A value one thread puts once (``set_result``) and another waits for: the teacher's outputs, for the
    background fits (:func:`wait_for`)."""
    return Future()


def wait_for(value: Future, stop: threading.Event | None = None) -> Any:
    """``value``'s result once set; None if ``stop`` is set first."""
    while True:
        try:
            return value.result(timeout=0.1)
        except FuturesTimeout:
            if stop is not None and stop.is_set():
                return None


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Threads:
    """The classical fits' thread count, read as each fit starts: :data:`THREADS` while the networks train beside
    them; :meth:`widen` once the run only waits for them (:func:`cmkd.pipeline.outputs.wait_classical`), so that the
    cores the networks no longer use are not left idle. The fits' figures do not depend on it (forests draw
    each tree's seed before they fan out; HistGradientBoosting's threads split the features)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self) -> int:
        return self.n

    def widen(self, n: int) -> None:
        self.n = max(self.n, n)


def classical_fits(cfg: ExperimentConfig, data: MultimodalData, smods: list[str], train: np.ndarray,
                   train_all: np.ndarray, val: np.ndarray, test: np.ndarray,
                   teacher: Future | tuple[dict[str, np.ndarray], np.ndarray | None], out: Path,
                   threads: Threads | None = None, stop: threading.Event | None = None) -> ClassicalFits:
    """The references and the tree student, fitted. They take nothing from the networks but the teacher's outputs
    (``teacher``: ``(outputs as teacher_outputs gives them, the teacher's sample mask)``, or a
    :class:`concurrent.futures.Future` that will hold them), so they can run in a background thread
    (:class:`Background`): the references on the labels and their self-training first, while the teacher trains;
    those on its pseudo-labels and the tree student once its outputs are handed over, while the students train.
    Forests use ``threads()`` jobs and HistGradientBoosting ``threads()`` OpenMP threads (a per-thread setting),
    read as each fit starts (default :data:`THREADS`). The tree student is written to ``out/student_trees.onnx`` and
    checked through ONNX Runtime (its latency is timed later, by :func:`classical_finish`). ``stop`` set: no further
    fit starts (the run failed elsewhere)."""
    from threadpoolctl import threadpool_limits

    from cmkd.classical.references import ALGORITHMS, KINDS

    t0 = time.perf_counter()
    fits = ClassicalFits()
    r = cfg.references
    threads = threads or Threads(THREADS)
    fitted: dict = {}
    memo = FitMemo()  # the tree student on labels only is the extra_trees reference: fitted once
    with threadpool_limits(limits=THREADS, user_api="openmp"):
        def refs(kinds: tuple[str, ...], outputs: dict | None, mask: np.ndarray | None) -> None:
            fits.refs.update(references(
                data, smods, train, train_all, val, test, outputs, mask,
                settings=ReferenceSettings.from_config(cfg, kinds=kinds, n_jobs=threads), models=fitted, stop=stop,
                memo=memo))

        if r.algorithms:
            refs(("labels", "self_training"), None, None)
        t_wait = time.perf_counter()
        got = wait_for(teacher, stop) if isinstance(teacher, Future) else teacher
        t0 += time.perf_counter() - t_wait  # the seconds of the fits, not of the wait for the teacher
        if got is not None:
            outputs, mask = got
            if r.algorithms:
                refs(("teacher_labels",), outputs, mask)
            if cfg.trees.n_estimators and not (stop is not None and stop.is_set()):
                tc = cfg.trees

                def tree_student() -> TreeStudent:  # as configured; the thread budget read as it is made
                    return TreeStudent(smods, n_estimators=tc.n_estimators, seed=cfg.seed, n_jobs=threads())

                fits.trees = tree_student().fit(data, train_all, outputs, mask, val, memo=memo)
                val_preds = fits.trees.predict(data, val)
                fits.trees_metrics = {"val": task_metrics(data, val, val_preds),
                                      "val_parts": part_metrics(data, val, val_preds)}
                val_lab = data.labelled(val) if cfg.student.refit else val[:0]
                if len(val_lab):  # student.refit: the final fit adds the labelled validation samples, as the
                    # network's does; the validation figure (and each output's std) stay the first fit's
                    first = fits.trees
                    fits.trees = tree_student().fit(data, np.concatenate([train_all, val_lab]), outputs, mask, None,
                                                    memo=memo)
                    fits.trees.std_ = first.std_
                    del first  # its forest (11k pseudo-labelled samples: 160 MB) is not kept beside the refit's
                    fits.trees_refit_on_val = int(len(val_lab))
                fits.trees_metrics["test"] = task_metrics(data, test, fits.trees.predict(data, test))
                _keep_exportable(cfg, fits, fitted, memo)  # before ONNX Runtime loads the tree student's graph
                # written and checked here; timed by classical_finish, once nothing runs beside
                fits.trees_export = export_tree_student(fits.trees, data, test, out / "student_trees.onnx", 0)
    # the table's order: per algorithm, labels / teacher_labels / self_training
    order = {(a, k): i for i, (a, k) in enumerate((a, k) for a in ALGORITHMS for k in KINDS)}
    fits.refs = dict(sorted(fits.refs.items(), key=lambda kv: order[(kv[1]["algorithm"], kv[1]["trained_on"])]))
    _keep_exportable(cfg, fits, fitted, memo)  # without a tree student: not done above (a second call finds none)
    fits.seconds = time.perf_counter() - t0
    fits.shared_fits = memo.hits
    return fits


def _keep_exportable(cfg: ExperimentConfig, fits: ClassicalFits, fitted: dict, memo: FitMemo) -> None:
    """The fitted references that :func:`deploy_recommended` may export (every output fitted) into
    ``fits.fitted``, spilled to a temporary file until then (:meth:`cmkd.classical.references._Model.spill`);
    none with export off, where nothing is deployed. Forests of tens of thousands of pseudo-labelled samples are
    hundreds of MB each: only the tree student stays in memory. ``fitted`` and ``memo`` are emptied."""
    if cfg.export.enabled:
        for k, m in fitted.items():
            if m.algorithm in EXPORTABLE_REFS and all(e is not None for ms in m.models.values() for e in ms):
                m.spill()
                fits.fitted[k] = m
    fitted.clear()
    memo.clear()  # the forests kept are the models' own now
    trim_heap()


THREAD_NAME = "cmkd-classical"  # :class:`Background`'s thread (:func:`cmkd.exits.end_at_once_if_working` looks for it)


class Background:
    """``fn(*args, stop=<Event>)`` in a daemon thread (a run that fails elsewhere exits without waiting for it),
    its outcome in a :class:`concurrent.futures.Future`; :meth:`result` waits for it and re-raises its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.stop = threading.Event()
        self.future: Future = Future()
        self.waited_s = 0.0
        self._waited = False

        def call() -> None:
            self.future.set_running_or_notify_cancel()
            try:
                self.future.set_result(fn(*args, stop=self.stop))
            except BaseException as e:  # noqa: BLE001 - handed to the caller of result()
                self.future.set_exception(e)

        threading.Thread(target=call, name=THREAD_NAME, daemon=True).start()

    def result(self) -> Any:
        """The function's value (raises its error). ``waited_s``: the seconds the first call waited for the
        thread; later calls return at once."""
        if not self._waited:
            t0 = time.perf_counter()
            wait([self.future])
            self.waited_s = time.perf_counter() - t0
            self._waited = True
        return self.future.result()

    def check(self) -> None:
        """Raise the background call's error now if it has failed already (no need to train on first)."""
        if self.future.done() and self.future.exception() is not None:
            raise self.future.exception()

    def cancel(self) -> None:
        """No further fit starts (the one running finishes)."""
        self.stop.set()


def classical_finish(cfg: ExperimentConfig, data: MultimodalData, smods: list[str], val: np.ndarray,
                     test: np.ndarray, fits: ClassicalFits, student, metric: str, out: Path,  # noqa: ANN001
                     metrics: dict, recipe_refs: dict | None = None, device: str = "cpu",
                     student_val: dict[str, float] | None = None, cv: dict | None = None) -> dict:
    """Fill ``metrics`` with the references, the tree student (exported to ``student_trees.onnx``, timed and
    checked) and the recommendation (see the module docstring). ``student_val``: the network's validation
    figures to compare, where scoring ``student`` on ``val`` would not be out of sample (a refit on train +
    val). ``cv``: with few labels, the candidates' cross-validated figures (:mod:`cmkd.pipeline.crossval`:
    ``{"figures": {name: value}, "metric", "higher_is_better"}``), which the recommendation compares instead.
    Returns the fitted tree models by name (``student_trees`` and the exportable references), for
    :func:`deploy_recommended`."""
    refs: dict[str, dict] = dict(recipe_refs or {})
    # a recipe's own entries keep their names and figures; a generic one of the same name gets ``_labels``
    rename = {k: (f"{k}_labels" if k in refs else k) for k in fits.refs}
    refs.update({rename[k]: v for k, v in fits.refs.items()})
    fitted = {rename[k]: m for k, m in fits.fitted.items()}
    if refs:
        metrics["references"] = refs
    cands: dict[str, dict] = {}  # name -> {"val": validation metrics, "parts": per-part metrics (VAL_PARTS)}
    if "student" in metrics["models"] and student is not None:
        if student_val is not None:
            cands["student"] = {"val": student_val, "parts": []}
        else:
            p = predict(student, data, val, device=device)
            cands["student"] = {"val": task_metrics(data, val, p), "parts": part_metrics(data, val, p)}
    ts = fits.trees
    if ts is not None:
        ex = fits.trees_export
        ex["onnx_latency_ms"] = _latency(out / "student_trees.onnx", smods, data, test, cfg.export.latency_runs)
        val_m = fits.trees_metrics["val"]
        metrics["models"]["student_trees"] = {
            "modalities": list(smods), "params": int(sum(e.tree_.node_count for m in ts.models_.values()
                                                         for e in m.estimators_)),
            "metrics": fits.trees_metrics["test"], "val_metrics": val_m,
            "latency_ms": ex["onnx_latency_ms"], "latency_from": "onnx", "n_test": int(len(test)),
            "cost": float(sum(cfg.data.modalities[m].cost for m in smods)), "scored_on": "test",
            "algorithm": ALGORITHM, "n_fit": ts.n_fit_, "shared_fits": fits.shared_fits}
        if fits.trees_refit_on_val:
            metrics["models"]["student_trees"]["refit_on_val"] = fits.trees_refit_on_val
        metrics["export_trees"] = ex
        cands["student_trees"] = {"val": val_m, "parts": fits.trees_metrics.get("val_parts", [])}
        fitted["student_trees"] = ts
    for k, v in refs.items():
        parts = v.pop("val_parts", []) if isinstance(v, dict) else []  # for the recommendation, not metrics.json
        if isinstance(v, dict) and isinstance(v.get("val"), dict) and v["val"]:
            cands[k] = {"val": v["val"], "parts": parts}
    if cv is not None:  # few labels: every candidate by its cross-validated figure
        cands = {k: {"val": cv["figures"][k]} for k in cands if k in cv["figures"]}
        if cands:
            metrics["recommended"] = recommendation(cands, cv["metric"], cv["higher_is_better"],
                                                    prefer=frozenset(cv.get("prefer", ())))
            rec = metrics["recommended"]
            rec.update({"selected_by": "cross-validation", "cv": rec["val"], "metric": cv["metric"]})
            if cv.get("yardstick"):
                rec["yardstick"] = cv["yardstick"]
            rec["why"] = rec["why"].replace("best validation", "best cross-validated")
            _within_noise(rec, {k: v["val"] for k, v in cands.items()}, cv.get("folds", {}),
                          list(cv.get("prefer", ())), cv["higher_is_better"], "cross-validation")
        return fitted
    if cands:
        yard = Yardstick(data, data.labelled(data.indices(0)))
        vals = {k: yard(v["val"]) for k, v in cands.items()}
        parts = {k: [yard(m) for m in v["parts"]] for k, v in cands.items() if len(v["parts"]) > 1}
        hib = yard.higher_is_better
        rec = metrics["recommended"] = recommendation(vals, yard.name, hib)
        rec.update({"selected_by": "validation", "metric": yard.name})
        if len(yard.targets) > 1:
            rec["yardstick"] = yard.describe()
        if student_val is not None and "student" in cands:
            rec["student_val_from"] = "before the refit on train + validation (best epoch)"
            rec["why"] += "; the network's figure is from before its refit on train + validation"
        _within_noise(rec, vals, parts, _learnt_from_teacher(metrics, cands), hib, "validation")
    return fitted


def _learnt_from_teacher(metrics: dict, cands: dict) -> list[str]:
    """Selection on validation: the candidates that learnt from the teacher (the tree student, the references on
    its pseudo-labels, the distilled network unless the safe fallback replaced it by the baseline)."""
    names = [k for k in cands if k == "student_trees" or k.endswith("_teacher_labels")]
    if "student" in cands and (metrics.get("distill") or {}).get("fallback") is False:
        names.append("student")
    return names


def _within_noise(rec: dict, vals: dict[str, float], parts: dict[str, list[float]], prefer: list[str],
                  higher_is_better: bool, source: str) -> None:
    """The best candidate that learnt from the teacher replaces a label-only recommendation it trails within one
    paired standard error (:func:`cmkd.pipeline.crossval.distilled_within_noise`); ``rec`` says so."""
    from cmkd.pipeline.crossval import distilled_within_noise

    swap = distilled_within_noise(vals, parts, prefer, rec["model"], higher_is_better, source)
    if swap is not None:
        rec["model"], rec["why"] = swap


def _tree_predict(name: str, model, data: MultimodalData, smods: list[str], idx: np.ndarray  # noqa: ANN001
                  ) -> dict[str, np.ndarray]:
    """A tree model's predictions: the tree student's, or a reference's on the flattened student inputs."""
    from cmkd.classical.trees import flat_features

    return model.predict(data, idx) if name == "student_trees" else model.predict(flat_features(data, smods, idx))


def _latency(path: Path, smods: list[str], data: MultimodalData, idx: np.ndarray, runs: int) -> float:
    """Batch-1 latency of an ONNX file through ONNX Runtime (as :func:`cmkd.classical.trees_onnx.check_onnx` times
    it)."""
    from cmkd.export.onnx import ort_latency_ms, ort_session

    trim_heap()  # ONNX Runtime's load of a large forest takes several times its file: start from a trimmed heap
    return ort_latency_ms(ort_session(path), {m: data.inputs[m][idx] for m in smods}, runs)


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
            hib = HIGHER_IS_BETTER.get(str(rec.get("metric") or metrics.get("primary_metric")).rsplit("/", 1)[-1], True)
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
                                    fitted[want].shapes), out / "student.onnx")
        else:  # a reference: one classifier or regressor per target (HistGradientBoosting: per output column)
            _export_reference(fitted[want].restore(), want, smods, data, test, out / "student.onnx", cfg, metrics,
                              deployed)
    if want != "student" and net_card is not None:
        write_card(out / "student.onnx", tree_card(net_card, want))
        deployed["sidecar"] = "student.json"
    metrics["deployed"] = deployed


def _export_reference(ref, name: str, smods: list[str], data: MultimodalData, test: np.ndarray,  # noqa: ANN001
                      path: Path, cfg: ExperimentConfig, metrics: dict, deployed: dict) -> None:
    """``path`` from the RandomForest / ExtraTrees / HistGradientBoosting reference ``name`` (fitted on the
    non-constant feature columns ``ref.keep``; the graph's trees index the full feature vector), checked through
    ONNX Runtime into ``deployed``. Regression std outputs: the reference's validation RMSE."""
    rmse = (metrics.get("references", {}).get(name, {}).get("val") or {}).get("rmse")
    heads = {t: {"model": ms if ref.algorithm == "hist_gradient_boosting" else ms[0],  # HGB: one per column
                 "kind": data.target_kinds[t], "n_classes": len(data.classes.get(t, [])),
                 "std": np.full(data.targets[t].shape[1], rmse or 1.0) if data.target_kinds[t] == "regression"
                 else None, "features": np.flatnonzero(ref.keep)} for t, ms in ref.models.items()}
    kinds = {m: data.kinds[m] for m in smods}
    shapes = {m: tuple(data.inputs[m].shape[1:]) for m in smods}
    save_onnx(ensemble_onnx(heads, smods, kinds, shapes), path)
    deployed.update(check_onnx(path, smods, {t: data.target_kinds[t] for t in heads}, data, test,
                               _tree_predict(name, ref, data, smods, test),
                               cfg.export.latency_runs))
