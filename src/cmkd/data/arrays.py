"""Data: the arrays of a dataset, their validation, train-only statistics, splits and batches.

A dataset is a plain ``dict[str, np.ndarray]`` (the contents of a user's ``.npz``): one key per modality,
optional ``<modality>__present`` masks, one key per target and an optional ``split`` key (0 train, 1 val,
2 test, 3 calibration for conformal intervals). NaN marks a missing value. A batch is
``{"inputs": {name: Tensor}, "present": {name: BoolTensor[B]}, "targets": {name: Tensor}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cmkd.config import DataConfig
from cmkd.data.shards import ShardedArray
from cmkd.errors import CmkdError
from cmkd.runtime import check_float32_range, load_npz, mask_absent, observed_share, presence, tokenize
from cmkd.validate import check_class_count, check_class_ids, check_target_values

__all__ = ["MultimodalData", "availability", "build_data", "check_impute_shapes", "fit_stats", "load_npz", "make_batch",
           "tokenize"]

TEXT_VOCAB = 4096  # hashed vocabulary size of text modalities (token ids)
VAL_FRACTION, TEST_FRACTION = 0.15, 0.2  # shares of a random split (data without split codes)
UNLABELLED = -1  # class id of an unlabelled sample (NaN or -1 on disk): used by teacher terms, not by the task
NDIM = {"vector": 2, "sequence": 3, "image": 4, "signal": 3, "text": 1}
SHAPE_HINT = {"vector": "(N, F)", "sequence": "(N, T, F)", "image": "(N, C, H, W)", "signal": "(N, C, L)",
              "text": "(N,) strings"}
MIN_IMAGE = 5  # pixels per side of an image modality (README: "as small as 5x5")
# axis that holds the features/channels, after the sample axis is dropped
FEATURE_AXIS = {"vector": 0, "sequence": 1, "image": 0, "signal": 0}


@dataclass
class MultimodalData:
    """Validated arrays ready for training.

    Attributes:
        inputs: modality -> float32 raw values with NaN (text: int64 token ids).
        present: modality -> bool (N,).
        targets: target -> int64 class index (N,) or float32 (N, K) raw values.
        split: int (N,) 0 train, 1 val, 2 test, 3 calibration (optional: conformal calibration).
        kinds: modality -> kind.
        target_kinds: target -> "classification" | "regression".
        classes: classification target -> original label values, index = class id.
        source: where the data came from (a path or "synthetic").
    """

    inputs: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    split: np.ndarray
    kinds: dict[str, str]
    target_kinds: dict[str, str]
    classes: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "synthetic"

    @property
    def n(self) -> int:
        return len(self.split)

    def indices(self, part: int) -> np.ndarray:
        """Sample indices of split part 0 (train), 1 (val), 2 (test) or 3 (calibration)."""
        return np.flatnonzero(self.split == part)

    def all_present(self, modalities: list[str], idx: np.ndarray) -> np.ndarray:
        """The subset of ``idx`` whose samples have every one of ``modalities``."""
        keep = np.ones(len(idx), dtype=bool)
        for m in modalities:
            keep &= self.present[m][idx]
        return idx[keep]

    def labelled(self, idx: np.ndarray) -> np.ndarray:
        """The subset of ``idx`` with at least one target value (a class id or a non-NaN regression value)."""
        keep = np.zeros(len(idx), dtype=bool)
        for t, kind in self.target_kinds.items():
            y = self.targets[t][idx]
            keep |= (y != UNLABELLED) if kind == "classification" else ~np.isnan(y).all(axis=1)
        return idx[keep]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of every modality."""
        return {m: tuple(a.shape[1:]) for m, a in self.inputs.items()}

    def n_outputs(self) -> dict[str, int]:
        """Classes per classification target, outputs per regression target."""
        return {t: (len(self.classes[t]) if k == "classification" else self.targets[t].shape[1])
                for t, k in self.target_kinds.items()}


def _split(y: np.ndarray | None, n: int, cfg: DataConfig, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    strat = y if y is not None and np.min(np.unique(y, return_counts=True)[1]) >= 3 else None
    try:
        rest, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=seed, stratify=strat)
        strat_rest = strat[rest] if strat is not None else None
        train, val = train_test_split(rest, test_size=VAL_FRACTION / (1 - TEST_FRACTION),
                                      random_state=seed, stratify=strat_rest)
    except ValueError:  # more classes than the val/test parts hold samples: one sample of each class in each
        if strat is None:
            raise
        return _split_per_class(strat, seed)
    split = np.zeros(n, dtype=np.int64)
    split[val], split[test] = 1, 2
    return split


def _split_per_class(y: np.ndarray, seed: int) -> np.ndarray:
    """A seeded split for many small classes (every class has at least 3 samples): one sample of each class in
    validation, one in test, the rest in training."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        split[idx[0]], split[idx[1]] = 1, 2
    return split


def _check_dtype(a: np.ndarray, what: str, src: str, kinds: str) -> None:
    """``a``'s dtype is one of the numpy ``kinds`` (``"fiub"``: numbers; ``"US"``: text) and not structured:
    complex, structured, object and date dtypes are refused before any value is read."""
    dt = a.raw_dtype if isinstance(a, ShardedArray) else a.dtype
    if dt.kind not in kinds or dt.fields is not None or dt.subdtype is not None:
        need = "text (an array of strings)" if kinds == "US" else (
            "real numbers (int, float or bool)" if "b" in kinds else "real numbers (int or float)")
        raise CmkdError(f"{src}: {what} must hold {need}, got dtype {dt}")


def _add_modality(arrays: dict[str, np.ndarray], cfg: DataConfig, m: str, n: int | None, src: str,
                  inputs: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> int:
    """Check modality ``m`` (declared, shape, dtype, finite, sample count), store its values in ``inputs`` and
    its availability in ``present``; return the sample count (``n``, or this modality's when ``n`` is None).
    """
    if m not in cfg.modalities:
        raise CmkdError(f"config: modality '{m}' is used by teacher/student but not declared in "
                        f"data.modalities ({', '.join(cfg.modalities)})")
    kind = cfg.modalities[m].kind
    if m not in arrays:
        raise CmkdError(f"{src}: modality '{m}' not found; keys present: {', '.join(sorted(arrays))}")
    a = arrays[m]
    _check_dtype(a, f"'{m}'", src, "US" if kind == "text" else "fiub")
    if a.ndim != NDIM[kind]:
        raise CmkdError(f"{src}: '{m}' has shape {a.shape}, but kind '{kind}' needs {SHAPE_HINT[kind]}")
    if kind == "image" and min(a.shape[2:]) < MIN_IMAGE:  # the encoders' convolutions and normalisations need it
        raise CmkdError(f"{src}: '{m}' holds images of {a.shape[2]}x{a.shape[3]} pixels; an image modality needs at "
                        f"least {MIN_IMAGE}x{MIN_IMAGE} (give smaller ones as kind vector)")
    if n is None:
        n = len(a)
    elif len(a) != n:
        raise CmkdError(f"{src}: '{m}' has {len(a)} samples, other keys have {n}")
    if kind == "text":
        if a.dtype.kind not in "US":
            raise CmkdError(f"{src}: text modality '{m}' must be an array of strings, got {a.dtype}")
        inputs[m] = tokenize(a, TEXT_VOCAB, cfg.text_len)
        pres = np.array([len(str(t).strip()) > 0 for t in a])
    elif isinstance(a, ShardedArray):  # on disk: checked chunk by chunk, gathered batch by batch
        if a.raw_dtype.kind not in "fiub":
            raise CmkdError(f"{src}: '{m}' must be numeric, got dtype {a.raw_dtype}")
        if a.size == 0:
            raise CmkdError(f"{src}: '{m}' is empty (shape {a.shape})")
        pres = np.zeros(len(a), dtype=bool)
        for rows, x in a.chunks():
            if np.isinf(x).any():
                raise CmkdError(f"{src}: '{m}' contains infinite values; use NaN for missing values")
            pres[rows] = ~np.isnan(x.reshape(len(x), -1)).all(axis=1)
        inputs[m] = a
    else:
        if a.dtype.kind not in "fiub":
            raise CmkdError(f"{src}: '{m}' must be numeric, got dtype {a.dtype}")
        check_float32_range(a, m, src)  # else the cast warns and makes them inf
        a = a.astype(np.float32)
        if np.isinf(a).any():
            raise CmkdError(f"{src}: '{m}' contains infinite values; use NaN for missing values")
        if a.size == 0 or a[0].size == 0:
            raise CmkdError(f"{src}: '{m}' is empty (shape {a.shape})")
        inputs[m] = a
        pres = ~np.isnan(a.reshape(len(a), -1)).all(axis=1)
    pres = presence(arrays, m, pres, src)  # the one availability rule (also cmkd predict / evaluate)
    if not pres.all() and isinstance(inputs[m], ShardedArray):
        inputs[m].absent = ~pres  # its rows come back all NaN
    else:  # an absent modality holds no values: exported models (no flags) see the same thing
        inputs[m] = mask_absent(inputs[m], pres, kind)
    present[m] = pres
    return n


def _check_targets(arrays: dict[str, np.ndarray], cfg: DataConfig, n: int, src: str) -> dict[str, np.ndarray]:
    """Check every target of the config (present, length, dtype, shape); regression targets become float32
    (N, K). Classification targets are returned as on disk (encoded later by :func:`_encode_classes`)."""
    targets: dict[str, np.ndarray] = {}
    for t, spec in cfg.targets.items():
        if t not in arrays:
            raise CmkdError(f"{src}: target '{t}' not found; keys present: {', '.join(sorted(arrays))}")
        y = arrays[t]
        _check_dtype(y, f"target '{t}'", src, "fiub" if spec.kind == "classification" else "fiu")
        if y.ndim == 0:
            raise CmkdError(f"{src}: target '{t}' is a single value (shape ()); give one per sample, shape (N,)")
        if len(y) != n:
            raise CmkdError(f"{src}: target '{t}' has {len(y)} samples, the modalities have {n}")
        if spec.kind == "classification":
            if y.ndim != 1:
                raise CmkdError(f"{src}: classification target '{t}' must have shape (N,), got {y.shape}")
            if y.dtype.kind not in "fiub":
                raise CmkdError(f"{src}: classification target '{t}' must hold integer class ids, got {y.dtype}")
            check_class_ids(y, t, src)  # inf or beyond int64: named, before any cast
            if y.dtype.kind == "f":
                lab = ~np.isnan(y)
                if not np.all(y[lab] == np.round(y[lab])):
                    raise CmkdError(f"{src}: classification target '{t}' holds non-integer values; "
                                    "did you mean kind: regression?")
            targets[t] = y
        else:
            if y.dtype.kind not in "fiu" or y.ndim not in (1, 2):
                raise CmkdError(f"{src}: regression target '{t}' must be numeric (N,) or (N, K), got "
                                f"{y.dtype} {y.shape}")
            check_target_values(y, t, src)  # inf, or too large for float32 arithmetic
            if y.ndim == 2 and y.shape[1] == 0:
                raise CmkdError(f"{src}: regression target '{t}' has shape {y.shape}: no column to predict; give "
                                "(N,) or (N, K) values with K >= 1")
            y = y.astype(np.float32).reshape(n, -1)
            if np.isnan(y).all(axis=0).any():
                raise CmkdError(f"{src}: regression target '{t}' has a column that is all NaN")
            targets[t] = y
    return targets


def _resolve_split(arrays: dict[str, np.ndarray], cfg: DataConfig, targets: dict[str, np.ndarray], n: int,
                   seed: int, src: str) -> np.ndarray:
    """The split from the ``split`` key (a validation part carved from train when it has none), else a seeded
    stratified split; train and test must be non-empty."""
    if cfg.split and cfg.split in arrays:
        split = arrays[cfg.split]
        _check_dtype(split, f"split key '{cfg.split}'", src, "fiub")
        if split.shape != (n,):
            raise CmkdError(f"{src}: split key '{cfg.split}' has shape {split.shape}, expected ({n},)")
        if not np.isin(split, [0, 1, 2, 3]).all():
            raise CmkdError(f"{src}: split key '{cfg.split}' must hold only 0 (train), 1 (val), 2 (test), "
                            "3 (calibration)")
        split = split.astype(np.int64).copy()
        if (split == 1).sum() == 0 and (split == 0).sum() >= 10:  # carve a validation split from train
            rng = np.random.default_rng(seed)
            tr = np.flatnonzero(split == 0)
            split[rng.choice(tr, size=max(1, int(len(tr) * VAL_FRACTION)), replace=False)] = 1
    else:
        first = next(iter(cfg.targets))
        strat = targets[first] if cfg.targets[first].kind == "classification" else None
        if n < 10:
            raise CmkdError(f"{src}: only {n} samples; at least 10 are needed")
        split = _split(strat, n, cfg, seed)
    for part, name in ((0, "train"), (2, "test")):
        if (split == part).sum() == 0:
            raise CmkdError(f"{src}: the {name} split is empty (key '{cfg.split}')")
    return split


def _encode_classes(cfg: DataConfig, targets: dict[str, np.ndarray], train: np.ndarray, n: int,
                    src: str) -> dict[str, np.ndarray]:
    """Replace each classification target by class ids (UNLABELLED where missing) in place; return the
    original label values per target. Needs two classes in training and no label unseen in training."""
    classes: dict[str, np.ndarray] = {}
    for t, spec in cfg.targets.items():
        if spec.kind != "classification":
            continue
        y = targets[t]
        lab = (~np.isnan(y) if y.dtype.kind == "f" else np.ones(n, bool)) & (y != UNLABELLED)
        y = np.where(lab, y, 0).astype(np.int64)
        cls = np.unique(y[train & lab])
        if len(cls) < 2:
            raise CmkdError(f"{src}: target '{t}' has only one class ({cls.tolist()}) among the labelled "
                            "training samples; at least two are needed")
        unseen = np.setdiff1d(np.unique(y[lab]), cls)
        if len(unseen):
            raise CmkdError(f"{src}: target '{t}' has labels absent from training: {unseen.tolist()[:5]}")
        check_class_count(len(cls), t, src, cfg.max_classes)
        classes[t] = cls
        targets[t] = np.where(lab, np.searchsorted(cls, y), UNLABELLED).astype(np.int64)
    return classes


def _check_dead_features(inputs: dict[str, np.ndarray], present: dict[str, np.ndarray], cfg: DataConfig,
                         train: np.ndarray, src: str) -> None:
    """Reject a modality absent from every training sample, or with a feature/channel NaN in all of them."""
    # NaN-only modalities / columns, judged on the training samples that have the modality
    for m, a in inputs.items():
        kind = cfg.modalities[m].kind
        tr = np.flatnonzero(train & present[m])
        if len(tr) == 0:
            raise CmkdError(f"{src}: modality '{m}' is absent (or all NaN) in every training sample")
        if kind == "text":
            continue
        ax = FEATURE_AXIS[kind] + 1
        other = tuple(i for i in range(a.ndim) if i != ax)
        if isinstance(a, ShardedArray):
            dead = np.ones(a.shape[ax], dtype=bool)
            for _, x in a.chunks(tr):
                dead &= np.isnan(x).all(axis=other)
        else:
            dead = np.isnan(a[tr]).all(axis=other)
        if dead.any():
            raise CmkdError(f"{src}: modality '{m}' has feature/channel {int(np.flatnonzero(dead)[0])} that is "
                            "NaN in every training sample; drop it")


def build_data(arrays: dict[str, np.ndarray], cfg: DataConfig, seed: int = 0, source: str = "synthetic",
               modalities: list[str] | None = None) -> MultimodalData:
    """Check the arrays against the config and build a :class:`MultimodalData`.

    Every problem raises a one-line CmkdError that names the key and the source.

    Args:
        arrays: the dataset dict (npz contents).
        cfg: the ``data`` section of the config.
        seed: seeds the stratified split when the data has none.
        source: a path or "synthetic", used in messages and metrics.
        modalities: the modalities actually used (default: all in cfg).
    """
    src = source
    mods = modalities or list(cfg.modalities)
    n = None
    inputs: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for m in mods:
        n = _add_modality(arrays, cfg, m, n, src, inputs, present)
    assert n is not None
    targets = _check_targets(arrays, cfg, n, src)
    split = _resolve_split(arrays, cfg, targets, n, seed, src)
    train = split == 0
    classes = _encode_classes(cfg, targets, train, n, src)
    _check_dead_features(inputs, present, cfg, train, src)
    return MultimodalData(inputs, present, targets, split, {m: cfg.modalities[m].kind for m in mods},
                          {t: s.kind for t, s in cfg.targets.items()}, classes, source)


def check_impute_shapes(data: MultimodalData, impute: dict[str, str], src: str) -> None:
    """``distill.term_options.impute.sources``: each source modality has the per-sample shape of the student
    modality whose complete version it is (the imputation loss compares them element by element, in that
    modality's units)."""
    shapes = data.shapes()
    for m, source in impute.items():
        if m in shapes and source in shapes and shapes[m] != shapes[source]:
            raise CmkdError(f"{src}: 'distill.term_options.impute.sources': source '{source}' has per-sample shape "
                            f"{shapes[source]}, but "
                            f"'{m}', whose complete version it stands for, has {shapes[m]}; give a source of the "
                            "same shape")


def fit_stats(data: MultimodalData, idx: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Standardisation statistics from the given (training) samples only.

    Returns:
        ``{"inputs": {modality: (mean, std) broadcastable to one sample}, "targets": {name: (mean, std)}}``
        flattened as ``{"in:<m>": {"mean", "std"}, "tg:<t>": {...}}``.
    """
    stats: dict[str, dict[str, np.ndarray]] = {}
    for m, a in data.inputs.items():
        kind = data.kinds[m]
        if kind == "text":
            continue
        rows = idx[data.present[m][idx]]
        ax = FEATURE_AXIS[kind] + 1
        other = tuple(i for i in range(a.ndim) if i != ax)
        if isinstance(a, ShardedArray):
            mean, std = _streamed_stats(a, rows, other)
        else:
            sub = a[rows]
            with np.errstate(all="ignore"):
                mean = np.nanmean(sub, axis=other, keepdims=True)[0]
                std = np.nanstd(sub, axis=other, keepdims=True)[0]
        mean = np.nan_to_num(mean)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        stats[f"in:{m}"] = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
    for t, kind in data.target_kinds.items():
        if kind == "regression":
            y = data.targets[t][idx]
            mean = np.nanmean(y, axis=0)
            std = np.nanstd(y, axis=0)
            stats[f"tg:{t}"] = {"mean": mean.astype(np.float32),
                                "std": np.where(std > 1e-8, std, 1.0).astype(np.float32)}
    return stats


def _streamed_stats(a: ShardedArray, rows: np.ndarray, other: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring mean and std per feature of a sharded array's ``rows``, in one pass of float64 sums."""
    total = sq = count = None
    for _, x in a.chunks(rows):
        x = x.astype(np.float64)
        ok = ~np.isnan(x)
        x = np.where(ok, x, 0.0)
        parts = (x.sum(axis=other, keepdims=True), (x * x).sum(axis=other, keepdims=True),
                 ok.sum(axis=other, keepdims=True))
        total, sq, count = parts if total is None else (total + parts[0], sq + parts[1], count + parts[2])
    if total is None:
        raise CmkdError(f"modality '{a.name}' has no training sample to fit its standardisation")
    with np.errstate(all="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    return mean[0], std[0]


def availability(data: MultimodalData, idx: np.ndarray, modalities: list[str]) -> np.ndarray:
    """(n,) share of observed (non-NaN) input values over the present numeric ``modalities`` of each sample;
    an absent modality counts as wholly missing, text counts as observed (:func:`cmkd.runtime.observed_share`)."""
    return observed_share({m: data.inputs[m][idx] for m in modalities}, {m: data.present[m][idx] for m in modalities},
                          data.kinds, modalities, len(idx))


def make_batch(data: MultimodalData, idx: np.ndarray, modalities: list[str],
               target_stats: dict[str, dict[str, np.ndarray]] | None = None,
               device: torch.device | str = "cpu") -> dict[str, dict[str, torch.Tensor]]:
    """A batch dict for samples ``idx``; regression targets standardised with ``target_stats``."""
    inputs, present, targets = {}, {}, {}
    for m in modalities:
        inputs[m] = torch.from_numpy(data.inputs[m][idx]).to(device)
        present[m] = torch.from_numpy(data.present[m][idx]).to(device)
    for t, kind in data.target_kinds.items():
        y = data.targets[t][idx]
        if kind == "regression" and target_stats is not None:
            s = target_stats[f"tg:{t}"]
            y = (y - s["mean"]) / s["std"]
        targets[t] = torch.from_numpy(np.ascontiguousarray(y)).to(device)
    return {"inputs": inputs, "present": present, "targets": targets}
