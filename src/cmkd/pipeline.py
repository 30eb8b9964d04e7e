"""``run(config)``: teacher -> baseline student -> distilled student -> test evaluation -> ONNX/INT8 export
-> metrics.json, report.html and the resolved config in the output folder."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ExperimentConfig, apply_overrides, dump_config, load_yaml, validate
from .data import MultimodalData, availability, build_data, fit_stats, load_npz
from .errors import CmkdError
from .evaluate import (
    HIGHER_IS_BETTER,
    example_inputs,
    imputation_metrics,
    predict,
    primary_metric,
    task_metrics,
    torch_latency_ms,
)
from .io import dumps
from .logs import write_history_csvs
from .losses import CompositeLoss
from .models import EnsembleTeacher, MultimodalNet, count_params
from .train import atomic_save, fit, safe_load, set_seed
from .uncertainty import availability_groups, calibrate_target, coverage_width, intervals

MODEL_FORMAT = "cmkd-model-1"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise CmkdError(f"cannot write {path} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve(target: str, overrides: list[str] | None = None, quick: bool = False
            ) -> tuple[ExperimentConfig, dict[str, np.ndarray], str, bool]:
    """Turn a recipe name or YAML path plus overrides into (config, arrays, source, synthetic)."""
    from .recipes import RECIPES, get_recipe

    if target in RECIPES:
        rec = get_recipe(target)
        raw = apply_overrides(rec.default_config(quick=quick), overrides)
        raw["recipe"] = target
        cfg = validate(raw, source=f"recipe {target}")
        arrays = rec.load(cfg.model_dump(mode="json"), quick=quick)
        source = "synthetic" if rec.SYNTHETIC else str(cfg.data.path)
        return cfg, arrays, source, bool(rec.SYNTHETIC)
    p = Path(target)
    if p.suffix.lower() not in (".yaml", ".yml") and not p.exists():
        raise CmkdError(f"'{target}' is neither a recipe ({', '.join(sorted(RECIPES))}) nor a YAML file")
    raw = apply_overrides(load_yaml(p), overrides)
    cfg = validate(raw, source=str(p))
    if cfg.recipe and not cfg.data.path:  # a recipe's config saved as YAML (e.g. by `cmkd tune`)
        from .recipes import get_recipe

        rec = get_recipe(cfg.recipe)
        arrays = rec.load(cfg.model_dump(mode="json"), quick=quick)
        return cfg, arrays, "synthetic" if rec.SYNTHETIC else str(p), bool(rec.SYNTHETIC)
    if not cfg.data.path:
        raise CmkdError(f"{p}: data.path is required (the .npz file, relative to the YAML)")
    dp = Path(cfg.data.path)
    if not dp.is_absolute():
        dp = (p.parent / dp).resolve()
    cfg.data.path = str(dp)
    if dp.is_dir():  # a sharded, larger-than-memory dataset
        from .shards import load_shards

        arrays = load_shards(dp)
    else:
        arrays = load_npz(dp)
    if quick:
        for m in (cfg.teacher, cfg.student):
            m.epochs = min(m.epochs, 5)
        cfg.export.latency_runs = min(cfg.export.latency_runs, 30)
    return cfg, arrays, str(dp), False


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise CmkdError(f"device {name!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CmkdError(f"device {name!r} requested but CUDA is not available; use --device auto or cpu")
    return dev


def build_model(data: MultimodalData, modalities: list[str], mcfg: Any, cfg: ExperimentConfig,
                impute: list[str] | None = None, targets: list[str] | None = None) -> MultimodalNet:
    """A MultimodalNet for ``modalities`` sized by a teacher/student config section (``impute``: modalities
    it reconstructs, see :class:`cmkd.models.MultimodalNet`; ``targets``: the heads, default all targets)."""
    shapes = data.shapes()
    outs = data.n_outputs()
    return MultimodalNet({m: {"kind": data.kinds[m], "shape": shapes[m]} for m in modalities},
                         {t: {"kind": k, "n_out": outs[t]} for t, k in data.target_kinds.items()
                          if targets is None or t in targets},
                         width=mcfg.width, heads=mcfg.heads, depth=mcfg.depth, dropout=mcfg.dropout,
                         modality_dropout=mcfg.modality_dropout, text_vocab=cfg.data.text_vocab, impute=impute,
                         encoders=mcfg.encoders, encoder_options=mcfg.encoder_options)


def save_model(model: MultimodalNet, path: Path, cfg: ExperimentConfig, data: MultimodalData, role: str,
               conformal: dict | None = None) -> None:
    """Save weights plus plain metadata (loadable with ``weights_only=True``); ``conformal``: target -> list of
    per-column calibration states (see :class:`cmkd.uncertainty.ConformalRegressor`)."""
    atomic_save({"format": MODEL_FORMAT, "role": role, "hparams": model.hparams,
                 "state_dict": model.state_dict(), "config": dump_config(cfg),
                 "classes": {t: c.tolist() for t, c in data.classes.items()},
                 "class_names": cfg.data.class_names, "conformal": conformal or {}}, path)


def _net(hp: dict) -> MultimodalNet:
    return MultimodalNet(hp["modalities"], hp["targets"], width=hp["width"], heads=hp["heads"], depth=hp["depth"],
                         dropout=hp["dropout"], modality_dropout=hp["modality_dropout"],
                         text_vocab=hp["text_vocab"], impute=hp.get("impute"), encoders=hp.get("encoders"),
                         encoder_options=hp.get("encoder_options"))


def load_model(path: str | Path) -> tuple[MultimodalNet, dict]:
    """Load a model saved by :func:`save_model` (a multi-teacher ensemble too); a corrupt or foreign file is a
    CmkdError."""
    ck = safe_load(path)
    if ck.get("format") != MODEL_FORMAT:
        raise CmkdError(f"{path}: not a cmkd model file (format {ck.get('format')!r})")
    try:
        hp = ck["hparams"]
        if "ensemble" in hp:
            model = EnsembleTeacher({k: _net(h) for k, h in hp["ensemble"].items()}, hp["temperatures"],
                                    hp["weights"])
        else:
            model = _net(hp)
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CmkdError(f"{path}: damaged cmkd model file ({str(e).splitlines()[0][:120]})") from None
    return model.eval(), ck


def original_dataset(meta: dict) -> MultimodalData | None:
    """Rebuild the dataset a saved model was trained on from its config (None when it cannot be found)."""
    import yaml

    raw = yaml.safe_load(meta.get("config") or "") or {}
    try:
        cfg = validate(raw, source="the model's config")
        if cfg.recipe:
            from .recipes import get_recipe

            arrays = get_recipe(cfg.recipe).load(cfg.model_dump(mode="json"))
        elif cfg.data.path and Path(cfg.data.path).is_file():
            arrays = load_npz(cfg.data.path)
        else:
            return None
        mods = list(meta["hparams"]["modalities"])
        return build_data(arrays, cfg.data, cfg.seed, str(cfg.data.path or cfg.recipe), modalities=mods)
    except CmkdError:
        return None


def uncertainty_groups(data: MultimodalData, idx: np.ndarray, modalities: list[str], cfg: ExperimentConfig
                       ) -> np.ndarray | None:
    """Availability band of each sample (Mondrian calibration groups), or None without edges. The share is over
    ``uncertainty.availability_modalities`` that the model has, else over all of ``modalities``."""
    u = cfg.uncertainty
    if not u.availability_edges:
        return None
    mods = [m for m in (u.availability_modalities or []) if m in modalities] or modalities
    return availability_groups(availability(data, idx, mods), tuple(u.availability_edges))


def calibrate(model: MultimodalNet, data: MultimodalData, cal: np.ndarray, cfg: ExperimentConfig,
              device: torch.device | str = "cpu") -> dict:
    """Split-conformal calibrators of every regression target on the calibration samples ``cal``."""
    mods = list(model.encoders)
    p = predict(model, data, cal, device=device)
    groups = uncertainty_groups(data, cal, mods, cfg)
    return {t: calibrate_target(p[f"{t}/value"], p[f"{t}/std"], data.targets[t][cal], groups, cfg.uncertainty.alpha)
            for t, k in model.target_kinds.items() if k == "regression"}


def interval_metrics(model: MultimodalNet, data: MultimodalData, idx: np.ndarray, preds: dict, conformal: dict,
                     cfg: ExperimentConfig) -> dict[str, float]:
    """Coverage and mean width of the calibrated intervals on ``idx`` (first target unprefixed)."""
    pct = round(100 * (1 - cfg.uncertainty.alpha))
    groups = uncertainty_groups(data, idx, list(model.encoders), cfg)
    out: dict[str, float] = {}
    first = next(iter(data.target_kinds))
    for t, cal in conformal.items():
        lo, hi = intervals(cal, preds[f"{t}/value"], preds[f"{t}/std"], groups)
        cw = coverage_width(data.targets[t][idx], lo, hi)
        pre = "" if t == first else f"{t}/"
        out[f"{pre}coverage_{pct}"], out[f"{pre}width_{pct}"] = cw["coverage"], cw["width"]
    return out


def class_balance_weights(data: MultimodalData, idx: np.ndarray, beta: float, device: torch.device | str = "cpu"
                          ) -> dict[str, torch.Tensor] | None:
    """Per classification target, class weights ``(1 - beta) / (1 - beta^n_c)`` (Cui et al., 2019) from the
    labelled samples ``idx``, scaled to mean 1 over the samples; None when ``beta`` is 0."""
    if not beta:
        return None
    out = {}
    for t, kind in data.target_kinds.items():
        if kind != "classification":
            continue
        y = data.targets[t][idx]
        counts = np.bincount(y[y >= 0], minlength=len(data.classes[t])).astype(float)
        w = (1 - beta) / (1 - beta ** np.maximum(counts, 1))
        w = w / (w[y[y >= 0]].mean())
        out[t] = torch.tensor(w, dtype=torch.float32, device=device)
    return out or None


def train_teachers(cfg: ExperimentConfig, data: MultimodalData, train: np.ndarray, val: np.ndarray, stats: dict,
                   histories: dict[str, list[dict]], *, ck_dir: Path | None = None, resume: bool = False,
                   quiet: bool = True, device: torch.device | str = "cpu"
                   ) -> tuple[MultimodalNet, dict[str, MultimodalNet]]:
    """Train the teacher on its modalities with the task loss; with ``teachers:``, one member per entry on its
    modalities and targets, combined into an :class:`EnsembleTeacher`. Returns the teacher the students learn
    from and the members by role (``teacher_<name>``; just ``teacher`` without ``teachers:``); each training
    history goes into ``histories``."""
    members: dict[str, MultimodalNet] = {}
    for i, (name, spec) in enumerate(cfg.teachers.items() if cfg.teachers else [("teacher", cfg.teacher)]):
        role = name if name == "teacher" else f"teacher_{name}"
        mods = list(spec.modalities)
        set_seed(cfg.seed + 1000 * i)
        net = build_model(data, mods, spec, cfg, targets=getattr(spec, "targets", None))
        net.set_stats(stats)
        histories[role] = fit(net, data, data.all_present(mods, train), data.all_present(mods, val), spec,
                              CompositeLoss({"task": 1.0}, nll_beta=cfg.distill.nll_beta),
                              seed=cfg.seed + 1000 * i, target_stats=stats,
                              ckpt_path=ck_dir / f"{role}.pt" if ck_dir is not None else None,
                              resume=resume, quiet=quiet, desc=role, device=device)
        members[role] = net
    if not cfg.teachers:
        return members["teacher"], members
    ensemble = EnsembleTeacher({k: members[f"teacher_{k}"] for k in cfg.teachers},
                               {k: s.temperature or cfg.distill.temperature for k, s in cfg.teachers.items()},
                               {k: s.weight for k, s in cfg.teachers.items()})
    return ensemble, members  # type: ignore[return-value]


def teacher_seen(data: MultimodalData, modalities: list[str]) -> np.ndarray:
    """(N,) bool: the samples where the teacher saw at least one of its modalities (where kd terms apply)."""
    return np.any([data.present[m] for m in modalities], axis=0) if modalities else np.zeros(data.n, dtype=bool)


def teacher_targets(teacher: torch.nn.Module, data: MultimodalData, student_modalities: list[str], view: str,
                    targets: list[str], device: torch.device | str = "cpu") -> tuple[dict, np.ndarray]:
    """The teacher's outputs on every sample (the students' kd, feature and relation targets) and the kd mask.

    ``view`` ``all``: the teacher sees all its modalities, and kd applies where it saw at least one. ``student``:
    it sees only the modalities it shares with the student (the others marked absent), so its soft targets hold
    what the student's own evidence supports; meaningful for a teacher trained with ``modality_dropout``.
    """
    mods = list(teacher.encoders)
    only = None
    if view == "student":
        only = [m for m in mods if m in student_modalities]
        if not only:
            raise CmkdError(f"distill.teacher_view=student: the teacher ({', '.join(mods)}) shares no modality "
                            f"with the student ({', '.join(student_modalities)})")
    preds = predict(teacher, data, np.arange(data.n), device=device, only=only)
    return _cache(preds, targets), teacher_seen(data, only if only is not None else mods)


def _cache(preds: dict[str, np.ndarray], targets: list[str]) -> dict:
    out: dict = {"features": torch.from_numpy(preds["features"])}
    for t in targets:
        part = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in preds.items() if k.startswith(f"{t}/")}
        if part:  # a target no teacher predicts has no entry
            out[t] = part
    return out


def check_out_dir(out: Path) -> None:
    """Create ``out`` and check that a file can be written there, or a one-line :class:`CmkdError`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CmkdError(f"output folder {out} is not writable ({e.strerror})") from None


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
        device: overrides ``config.device`` (``auto``, ``cpu``, ``cuda``).
        arrays: the dataset when ``config`` is an ExperimentConfig.

    Under ``torchrun`` with several processes, training is data-parallel (:mod:`cmkd.distributed`); rank 0
    evaluates and writes every output, the other ranks return an empty dict.

    Returns:
        The metrics dict (also written to ``out/metrics.json``).
    """
    from .distributed import cleanup

    try:
        return _run(config, out, overrides=overrides, quick=quick, resume=resume, quiet=quiet, device=device,
                    arrays=arrays)
    finally:
        cleanup()


def _run(config: str | ExperimentConfig, out: str | Path, *, overrides: list[str] | None, quick: bool,
         resume: bool, quiet: bool, device: str | None, arrays: dict[str, np.ndarray] | None) -> dict:
    from .distributed import is_main, setup

    if isinstance(config, ExperimentConfig):
        if arrays is None:
            if not config.data.path:
                raise CmkdError("run(): pass arrays= or set data.path")
            arrays = load_npz(config.data.path)
        cfg, source, synthetic = config, str(config.data.path or "arrays"), False
    else:
        cfg, arrays, source, synthetic = resolve(config, overrides, quick)
    if device:
        cfg.device = device  # type: ignore[assignment]
    dev = setup(cfg.device) or resolve_device(cfg.device)
    main = is_main()
    torch.set_num_threads(cfg.threads)
    tmods, smods = list(cfg.teacher.modalities), list(cfg.student.modalities)
    chain_mods = [m for mods in cfg.distill.chain for m in mods]
    data = build_data(arrays, cfg.data, cfg.seed, source,
                      modalities=list(dict.fromkeys(tmods + smods + chain_mods + list(cfg.distill.impute.values()))))
    # unlabelled training samples (class -1 / NaN targets) serve only the distilled student's teacher terms
    train_all = data.indices(0)
    train, val, test = data.labelled(train_all), data.labelled(data.indices(1)), data.labelled(data.indices(2))
    if len(test) == 0:
        raise CmkdError(f"{source}: the test split has no labelled sample")
    if len(val) == 0:
        raise CmkdError(f"{source}: the validation split is empty and too few training samples to carve one")
    stats = fit_stats(data, train_all)
    t_train, t_val, t_test = (data.all_present(tmods, i) for i in (train, val, test))
    for name, spec in (cfg.teachers.items() if cfg.teachers else [("teacher", cfg.teacher)]):
        if len(data.all_present(spec.modalities, train)) == 0 or len(data.all_present(spec.modalities, val)) == 0:
            raise CmkdError(f"{source}: no training/validation sample has all modalities {spec.modalities} of "
                            f"{'teacher' if name == 'teacher' else 'teachers.' + name}")
    # the inputs are valid: only now touch the output folder
    out = Path(out)
    ck_dir = out / ".ckpt"
    if main:
        check_out_dir(out)
        if not resume and ck_dir.exists():
            shutil.rmtree(ck_dir)
        ck_dir.mkdir(exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    metric = primary_metric(data)
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    targets = list(data.target_kinds)
    histories: dict[str, list[dict]] = {}
    models: dict[str, MultimodalNet] = {}

    # 1. teacher on its own modalities, trained with the task loss; with `teachers`, one per entry on its
    # modalities and targets, combined into an ensemble that the students learn from
    teacher, members = train_teachers(cfg, data, train, val, stats, histories, ck_dir=ck_dir, resume=resume,
                                      quiet=quiet, device=dev)
    models["teacher"] = teacher
    if cfg.teachers:
        models.update(members)
    cache, kd_mask = teacher_targets(teacher, data, smods, cfg.distill.teacher_view, targets, dev)

    # 2. baseline student (task loss only) and 3. distilled student, from the same initialisation
    w = dict(cfg.distill.weights)

    def make_loss(role: str, teacher_width: int) -> CompositeLoss:
        if role == "student_baseline":
            return CompositeLoss({"task": w.get("task", 1.0) or 1.0}, nll_beta=cfg.distill.nll_beta)
        d = cfg.distill
        return CompositeLoss(w, cfg.student.width, teacher_width, d.temperature, d.feature_mode,
                             d.relation_mode, d.contrastive_temperature, adaptive=d.adaptive_weights,
                             impute_sources=d.impute, nll_beta=d.nll_beta,
                             temperature_schedule=d.temperature_schedule, temperature_end=d.temperature_end,
                             learned_weights=d.learned_weights, kd_confidence=d.kd_confidence,
                             class_weights=class_balance_weights(data, train, d.class_balance, dev))

    def train_student(role: str, mods: list[str], distil: bool, t_model: MultimodalNet, t_cache: dict,
                      t_mask: np.ndarray) -> MultimodalNet:
        """Train one student-sized model (optionally distilled from ``t_model``) and keep it in ``models``."""
        fit_idx = train_all if distil else train
        # with refit: choose the epoch count on validation, then retrain on train + val for that many epochs
        stages = [(role, cfg.student, fit_idx, True)]
        if cfg.student.refit:
            stages.append((f"{role}_refit", None, np.concatenate([fit_idx, val]), False))
        for stage, mcfg, idx, select in stages:
            if mcfg is None:
                best = int(np.argmax([sign * r["val_metric"] for r in histories[role]])) + 1
                mcfg = cfg.student.model_copy(update={"epochs": best, "patience": best + 1})
            set_seed(cfg.seed + 1)
            imp = [m for m in cfg.distill.impute if m in mods] if distil and w.get("impute") else None
            model = build_model(data, mods, cfg.student, cfg, impute=imp or None)
            model.set_stats(stats)
            set_seed(cfg.seed + 2)
            hist = fit(model, data, idx, val, mcfg, make_loss(role if distil else "student_baseline", t_model.width),
                       seed=cfg.seed + 1, target_stats=stats, teacher_cache=t_cache if distil else None,
                       kd_mask=t_mask, ckpt_path=ck_dir / f"{stage}.pt", resume=resume, quiet=quiet, desc=stage,
                       device=dev, teacher=t_model if distil else None,
                       mixup=cfg.distill.mixup if distil else 0.0, select_best=select)
            histories[stage] = hist
        models[role] = model
        return model

    for role in ("student_baseline", "student"):
        train_student(role, smods, role == "student" and any(v for k, v in w.items() if k != "task"), teacher,
                      cache, kd_mask)
    # dataset aggregation (e.g. DAgger, Ross et al. 2011): a recipe with ``aggregate(config, student, round)``
    # returns extra training samples labelled at the states its trained student visits (None: no more rounds);
    # they are appended to the training split and the distilled student is retrained on the union. The
    # validation and test samples keep their indices; the baseline student keeps the original data.
    rec_mod = None
    if cfg.recipe:
        from .recipes import get_recipe

        rec_mod = get_recipe(cfg.recipe)
    aggregated: list[int] = []
    while rec_mod is not None and hasattr(rec_mod, "aggregate"):
        extra = rec_mod.aggregate(cfg.model_dump(mode="json"), models["student"], len(aggregated))
        if not extra:
            break
        missing = sorted(set(arrays) - set(extra))
        if missing:
            raise CmkdError(f"recipe {cfg.recipe}: aggregate() returned no {', '.join(missing)}")
        if not cfg.data.split or cfg.data.split not in arrays:
            raise CmkdError(f"recipe {cfg.recipe}: aggregate() needs the data's own split key (data.split)")
        m_new = len(next(iter(extra.values())))
        arrays = {k: np.concatenate([v, np.asarray(extra[k]).astype(v.dtype)]) for k, v in arrays.items()}
        arrays[cfg.data.split][-m_new:] = 0  # aggregated samples only ever train
        data = build_data(arrays, cfg.data, cfg.seed, source, modalities=list(data.kinds))
        train_all = data.indices(0)
        train = data.labelled(train_all)
        cache, kd_mask = teacher_targets(teacher, data, smods, cfg.distill.teacher_view, targets, dev)
        aggregated.append(m_new)
        train_student("student", smods, any(v for k, v in w.items() if k != "task"), teacher, cache, kd_mask)
    # progressive distillation: teacher -> assistant_1 -> ... -> student_progressive (Mirzadeh et al., 2020)
    # each model learns from the previous one's targets for its own modalities (they differ with teacher_view)
    prev = teacher
    steps = [(f"assistant_{i + 1}", list(mods)) for i, mods in enumerate(cfg.distill.chain)]
    for role, mods in steps + ([("student_progressive", smods)] if steps else []):
        prev = train_student(role, mods, True, prev,
                             *teacher_targets(prev, data, mods, cfg.distill.teacher_view, targets, dev))

    if not main:  # data-parallel workers: training done, rank 0 evaluates and writes
        return {}
    # evaluation on the test split: the teacher where it has all its modalities, students everywhere
    metrics_models: dict[str, dict] = {}
    predictions: dict[str, dict] = {}
    costs = {m: cfg.data.modalities[m].cost for m in data.kinds}
    first = targets[0]
    # the teacher needs all its modalities; where no test sample has them (e.g. Houston's official test pixels
    # lack HSI) it is scored on the validation samples instead, and metrics.json says so
    # conformal calibration of regression heads: split 3 when the data has one, else the validation split
    cal_all = data.labelled(data.indices(3))
    cal_split = "calibration" if len(cal_all) else "val"
    cal_all = cal_all if len(cal_all) else val
    use_conformal = cfg.uncertainty.enabled and "regression" in data.target_kinds.values()
    conformal: dict[str, dict] = {}
    for role, model in models.items():
        mods = list(model.encoders)
        if role.startswith(("teacher", "assistant_")):  # scored where they have all their modalities
            r_test, r_val = data.all_present(mods, test), data.all_present(mods, val)
            idx = r_test if len(r_test) else r_val
        else:
            idx = test
        p = predict(model, data, idx, device=dev) if len(idx) else {}
        mm = task_metrics(data, idx, p) if len(idx) else {}
        cal = data.all_present(mods, cal_all) if role.startswith("teacher") else cal_all
        if use_conformal and len(cal) >= 2 and len(idx):
            conformal[role] = calibrate(model, data, cal, cfg, dev)
            mm.update(interval_metrics(model, data, idx, p, conformal[role], cfg))
        if model.imputers and len(idx):
            mm.update(imputation_metrics(data, idx, p, cfg.distill.impute, model))
        model.cpu()
        metrics_models[role] = {
            "modalities": mods, "params": count_params(model), "metrics": mm,
            "latency_ms": torch_latency_ms(model, example_inputs(data, mods), cfg.export.latency_runs),
            "n_test": int(len(idx)), "cost": float(sum(costs[m] for m in mods)),
            "scored_on": "test" if np.isin(idx, test).all() else "val"}
        if len(idx) and (f"{first}/logits" in p or f"{first}/value" in p):
            kind = data.target_kinds[first]
            y_pred = p[f"{first}/logits"].argmax(1) if kind == "classification" else p[f"{first}/value"]
            predictions[role] = {"kind": kind, "y_true": data.targets[first][idx], "y_pred": y_pred,
                                 "class_names": cfg.data.class_names}
        save_model(model, out / f"{role}.pt", cfg, data, role,
                   {t: [c.state() for c in cs] for t, cs in conformal.get(role, {}).items()})

    metrics: dict[str, Any] = {
        "name": cfg.name, "recipe": cfg.recipe, "seed": cfg.seed, "primary_metric": metric,
        "synthetic": synthetic, "quick": bool(quick),
        "data": {"source": source, "n_train": int(len(train)), "n_train_unlabelled": int(len(train_all) - len(train)),
                 "n_val": int(len(val)), "n_test": int(len(test)),
                 "n_test_teacher": int(len(t_test))},
        "costs": costs, "models": metrics_models, "distill": cfg.distill.model_dump(mode="json"),
    }
    if aggregated:  # samples added per aggregation round (already counted in n_train)
        metrics["data"]["n_train_aggregated"] = aggregated
    if conformal:
        metrics["uncertainty"] = {"method": "split-conformal, normalised by the Gaussian head's sigma, Mondrian "
                                  "per availability band", "alpha": cfg.uncertainty.alpha,
                                  "calibrated_on": cal_split, "n_calibration": int(len(cal_all)),
                                  "availability_edges": cfg.uncertainty.availability_edges}
    extra_html: list[str] = []
    if cfg.export.enabled:
        from .pipeline_export import export_student

        def finetune(net: MultimodalNet) -> None:  # the pruned student, retrained briefly with its own loss
            ep = cfg.export.prune_epochs
            distil = any(v for k, v in w.items() if k != "task")
            mcfg = cfg.student.model_copy(update={"epochs": ep, "patience": ep + 1, "warmup_epochs": 0})
            set_seed(cfg.seed + 3)
            histories["student_pruned"] = fit(
                net, data, train_all if distil else train, val, mcfg,
                make_loss("student" if distil else "student_baseline", teacher.width), seed=cfg.seed + 3,
                target_stats=stats, teacher_cache=cache if distil else None, kd_mask=kd_mask,
                ckpt_path=ck_dir / "student_pruned.pt", quiet=quiet, desc="student_pruned", device=dev,
                teacher=teacher if distil else None)
            net.cpu()

        metrics["export"] = export_student(models["student"], data, test, out, cfg,
                                           finetune if cfg.export.prune_epochs else None)
    if cfg.recipe:
        from .recipes import get_recipe

        rec = get_recipe(cfg.recipe)
        if hasattr(rec, "references"):
            metrics["references"] = rec.references(data, smods, cfg.seed)
        if hasattr(rec, "analyse"):  # recipe-specific analysis: sweeps, decisions, extra figures
            ctx = {"models": models, "data": data, "cfg": cfg, "out": out, "device": dev, "test": test,
                   "val": val, "calibration": cal_all, "conformal": conformal, "metrics": metrics,
                   "predictions": predictions, "quiet": quiet}
            extra = rec.analyse(ctx) or {}
            metrics.update(extra.get("metrics", {}))
            extra_html.extend(extra.get("html", []))
    atomic_write_text(out / "metrics.json", dumps(metrics, indent=2, default=_json_default))
    from .report import write_report

    write_report(out / "report.html", metrics, histories, predictions, extra_html)
    atomic_write_text(out / "histories.json", dumps(histories, indent=1, default=_json_default))
    write_history_csvs(out / "logs", histories)
    shutil.rmtree(ck_dir, ignore_errors=True)
    if not quiet:
        print_summary(metrics, out)
    return metrics


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def print_summary(metrics: dict, out: Path | None = None) -> None:
    """The three models side by side on the terminal."""
    from rich.console import Console
    from rich.table import Table

    pm = metrics["primary_metric"]
    title = f"{metrics['name']} ({'synthetic data' if metrics.get('synthetic') else metrics['data']['source']})"
    tab = Table(title=title)
    names = sorted({k for m in metrics["models"].values() for k in m["metrics"]})
    if len(names) > 8:  # many targets: the primary target's metrics here, the rest in metrics.json
        names = [k for k in names if "/" not in k]
    for col in ["model", "modalities", "params", *names, "latency ms", "cost"]:
        tab.add_column(col, justify="left" if col in ("model", "modalities") else "right")
    n_test = metrics.get("data", {}).get("n_test")
    partial = {role: m for role, m in metrics["models"].items()  # e.g. a teacher scored where it has all inputs
               if m.get("scored_on") == "val" or (n_test and m.get("n_test", n_test) < n_test)}
    for role, m in metrics["models"].items():
        tab.add_row(role + (" *" if role in partial else ""), "+".join(m["modalities"]), f"{m['params']:,}",
                    *[f"{m['metrics'][k]:.4f}" if k in m["metrics"] else "-" for k in names],
                    f"{m['latency_ms']:.2f}", f"{m.get('cost', 0):g}")
    ex = metrics.get("export")
    if ex:
        tab.add_row("student int8", "+".join(metrics["models"]["student"]["modalities"]), "-",
                    *[f"{ex['int8_metrics'][k]:.4f}" if k in ex["int8_metrics"] else "-" for k in names],
                    f"{ex['int8_latency_ms']:.2f}", "")
    for name, ref in (metrics.get("references") or {}).items():
        tab.add_row(f"{name} (reference)", "+".join(metrics["models"]["student"]["modalities"]), "-",
                    *[f"{ref[k]:.4f}" if k in ref else "-" for k in names], "-", "")
    con = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 400)  # a log: the table's own width
    con.print(tab)
    for role, m in partial.items():
        where = ("validation samples" if m.get("scored_on") == "val"
                 else f"of the {n_test:,} test samples, those with all its modalities")
        con.print(f"* {role}: scored on {m.get('n_test', '?'):,} {where}")
    if out is not None:
        more = " (every target's metrics are in metrics.json)" if len(metrics.get("models", {}).get("student", {})
                                                                     .get("metrics", {})) > len(names) else ""
        files = [f for f in ("metrics.json", "report.html", "student.onnx", "student.int8.onnx") if (out / f).exists()]
        con.print(f"primary metric: {pm}{more}. Outputs in {out}/ ({', '.join(files)})")
