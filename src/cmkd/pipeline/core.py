"""``run(config)``: teacher -> baseline student -> distilled student -> test evaluation -> ONNX/INT8 export
-> metrics.json, report.html and the resolved config in the output folder.

The run is a sequence of named stages on one :class:`~cmkd.pipeline.state.RunState`: the config and data stages
here, the training stages in :mod:`cmkd.pipeline.students`, the output stages in :mod:`cmkd.pipeline.outputs`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cmkd.config import ExperimentConfig, dump_config
from cmkd.data.arrays import build_data, check_impute_shapes, fit_stats, load_npz
from cmkd.errors import CmkdError
from cmkd.evaluation.logs import WarningLog, note_few_samples
from cmkd.evaluation.metrics import HIGHER_IS_BETTER, primary_metric
from cmkd.io import atomic_write_text
from cmkd.pipeline import crossval
from cmkd.pipeline.outputs import (
    stage_analyse,
    stage_deploy,
    stage_evaluate,
    stage_export,
    stage_references,
    stage_write,
)
from cmkd.pipeline.resolve import resolve
from cmkd.pipeline.rundir import open_run_dir, run_dirs
from cmkd.pipeline.state import RunState
from cmkd.pipeline.students import stage_prune, stage_students, stage_teachers
from cmkd.training.distributed import THREADS, resolve_device


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
    if cfg.data.groups is not None:  # where the value enters: one group id per sample
        g = st.arrays.get(cfg.data.groups)
        if g is None or np.asarray(g).shape != (data.n,):
            raise CmkdError(f"{source}: data.groups {cfg.data.groups!r} must name an npz key of {data.n} group ids "
                            f"(one per sample){'' if g is None else f', got shape {np.asarray(g).shape}'}")
    for name, spec in (cfg.teachers.items() if cfg.teachers else [("teacher", cfg.teacher)]):
        if (len(data.all_present(spec.modalities, st.train)) == 0
                or len(data.all_present(spec.modalities, st.val)) == 0):
            raise CmkdError(f"{source}: no training/validation sample has all modalities {spec.modalities} of "
                            f"{'teacher' if name == 'teacher' else 'teachers.' + name}")
    if crossval.applies(st):  # few labels: selection by cross-validation; the deployed models refitted on all
        crossval.setup(st)
    # the inputs are valid: only now touch the output folder
    st.ck_dir = st.out / ".ckpt"
    if st.main:  # lock, resume check, staging: outputs are swapped in at the end (cmkd.pipeline.rundir)
        st.rundir = open_run_dir(st.out, dump_config(cfg), st.resume)
        st.out = st.rundir.staging
        atomic_write_text(st.out / "config.yaml", dump_config(cfg))
        note_few_samples(data, st.train, st.quiet)  # one line the user can act on, not scikit-learn's warnings
    st.sign = 1.0 if HIGHER_IS_BETTER[primary_metric(data)] else -1.0


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
