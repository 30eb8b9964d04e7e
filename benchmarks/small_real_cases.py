"""The small REAL cases of ``benchmarks/small_real.py``: for (case, budget, seed), what a user would bring.

Every case is real data from ``../shared/data`` (found by :func:`cmkd.io.shared_data_folder`: ``$CMKD_DATA`` if
set, else ``shared/data`` beside the project); nothing is copied into the repository. A file case is built as an
``.npz`` + an experiment YAML in a folder of the caller's (library defaults everywhere: no model settings, no
tuning keys); a recipe case is the built-in recipe at a label fraction. The budget is how many labels the run gets.

File cases (:func:`build`):

- ``samson_rgb`` / ``samson_4band``: the Samson hyperspectral scene (95 x 95 pixels, 156 bands 401-889 nm).
  Teacher ``spectrum`` (vector, 156 bands); student ``rgb`` (the bands nearest 640 / 550 / 460 nm) or ``bands4``
  (nearest 490 / 560 / 665 / 842 nm, Sentinel-2-like). Target ``abundance``: regression, 3 columns (rock, tree,
  water). Split spatially disjoint: a 5 x 5 grid of 19 x 19-pixel blocks, 15 / 5 / 5 blocks to train / val /
  test at random (seed). Budget 0.01 or 0.05: that share of the training pixels labelled (1% of 5,415 = 54), and
  the same share of the validation pixels; every other training / validation pixel keeps its spectrum and its
  student bands with a NaN abundance (paired, unlabelled); every test pixel is labelled. The npz also holds
  ``block`` (block id per pixel); when the config has ``data.groups`` the YAML names it.
- ``tecator``: NIR spectra of meat (100 channels, 850-1050 nm) -> fat %. Teacher ``spectrum`` (vector 100);
  student ``bands4`` (channels 0, 25, 50, 75). Budget 20 / 40 / 172: that many labels drawn at random (seed)
  from the 172 official training samples, split 80/20 into train / val (20 -> 16 + 4); the other official
  training samples are training samples with a NaN label; the official 43 test samples are the test split.
- ``vowels``: Japanese Vowels, 12 LPC cepstrum channels per frame, 7-29 frames, 9 speakers. Teacher ``lpc12``
  (sequence (n, 29, 12)), student ``lpc3`` (its first 3 channels). Shorter utterances are padded to 29 frames with
  NaN: a sequence modality takes NaN as missing values (the encoders see zeros plus a mask channel; the classical
  references' flattened features keep NaN, which scikit-learn's forests take). Target ``speaker``
  (classification, 9 classes). Budget 27 / 90 / 270: 3 / 10 / 30 labels per speaker (seed), split 80/20 into
  train / val per speaker (at least one validation sample each); the rest of the official training samples are
  unlabelled (-1) training samples; the official 370 test samples are the test split.

Recipe cases (:func:`run_args`): ``airquality`` and ``houston`` at ``options.label_fraction`` 0.01 / 0.02 / 0.05, in
the command form of ``benchmarks/label_fraction.py`` (``houston`` with ``student.refit=false``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from cmkd.errors import CmkdError
from cmkd.io import shared_data_folder

# case -> its budgets (label counts, or shares of the training samples labelled)
BUDGETS: dict[str, tuple[float, ...]] = {
    "samson_rgb": (0.01, 0.05),
    "samson_4band": (0.01, 0.05),
    "tecator": (20, 40, 172),
    "vowels": (27, 90, 270),
    "airquality": (0.01, 0.02, 0.05),
    "houston": (0.01, 0.02, 0.05),
}
CASES = tuple(BUDGETS)
RECIPES = {"airquality": [], "houston": ["student.refit=false"]}  # as in benchmarks/label_fraction.py
FOLDERS = {"samson": "samson_hsi_scene", "tecator": "small_real_series_spectra", "vowels": "small_real_series_spectra",
           "airquality": "air_quality_uci_cheap_vs_reference", "houston": "houston2013_mdlrs_subset"}

SAMSON_SIDE, SAMSON_BLOCK, SAMSON_BANDS = 95, 19, 156
SAMSON_NM = (401.0, 889.0)  # first and last band's wavelength
SAMSON_STUDENTS = {"samson_rgb": ("rgb", (640, 550, 460)), "samson_4band": ("bands4", (490, 560, 665, 842))}
SAMSON_BLOCKS = (15, 5, 5)  # blocks to train / val / test
TECATOR_CHANNELS = (0, 25, 50, 75)
VOWELS_FRAMES, VOWELS_STUDENT_CHANNELS, VOWELS_SPEAKERS = 29, 3, 9
VAL_SHARE = 0.2  # of the labelled samples (tecator, vowels)


def data_folder(case: str) -> Path:
    """The case's folder under ``shared/data``; a one-line :class:`CmkdError` when it is absent."""
    key = case.split("_")[0]
    if key not in FOLDERS:
        raise CmkdError(f"unknown case '{case}' (known: {', '.join(CASES)})")
    folder = shared_data_folder(FOLDERS[key])
    if not folder.is_dir():
        raise CmkdError(f"case '{case}': data folder {folder} not found (set CMKD_DATA or put shared/data beside "
                        "the project)")
    return folder


def check_budget(case: str, budget: float) -> None:
    """A :class:`CmkdError` unless ``budget`` is one of the case's budgets (:data:`BUDGETS`)."""
    if case not in BUDGETS:
        raise CmkdError(f"unknown case '{case}' (known: {', '.join(CASES)})")
    if not any(np.isclose(budget, b) for b in BUDGETS[case]):
        raise CmkdError(f"case '{case}': budget {budget} is not one of {list(BUDGETS[case])}")


def build(case: str, budget: float, seed: int, folder: str | Path, any_budget: bool = False) -> tuple[Path, Path]:
    """Write ``case``'s ``.npz`` and experiment YAML for ``budget`` labels at ``seed`` into ``folder``.

    Args:
        case: a file case (``samson_rgb``, ``samson_4band``, ``tecator``, ``vowels``).
        budget: one of the case's :data:`BUDGETS`.
        seed: draws the labels (and the Samson blocks); also the YAML's ``seed``.
        folder: created if needed.
        any_budget: accept a budget outside :data:`BUDGETS` (``benchmarks/cv_threshold.py`` goes beyond them).

    Returns:
        (npz path, YAML path).

    Raises:
        CmkdError: an unknown case or budget, a recipe case, or the data folder absent.
    """
    if not any_budget:
        check_budget(case, budget)
    if case in RECIPES:
        raise CmkdError(f"case '{case}' is a built-in recipe: run it with run_args(), no files to build")
    builder = {"tecator": _tecator, "vowels": _vowels}.get(case, _samson)
    arrays, cfg = builder(case, budget, seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"{case}.npz"
    np.savez(npz, **arrays)
    cfg = {"name": f"{case}-{_budget_text(budget)}-seed{seed}", "seed": int(seed), **cfg}
    cfg["data"] = {"path": npz.name, **cfg["data"]}
    path = out / f"{case}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return npz, path


def run_args(case: str, budget: float, seed: int, folder: str | Path) -> list[str]:
    """What follows ``cmkd run`` for one run: the YAML that :func:`build` writes into ``folder`` (a file case), or
    the recipe name with its ``--set`` flags (``seed``, ``options.label_fraction`` and the recipe's extras, as
    ``benchmarks/label_fraction.py`` runs it)."""
    check_budget(case, budget)
    if case in RECIPES:
        data_folder(case)  # absent data: one line here, before a subprocess starts
        sets = [f"seed={seed}", f"options.label_fraction={budget:g}", *RECIPES[case]]
        return [case, *(a for s in sets for a in ("--set", s))]
    _, path = build(case, budget, seed, folder)
    return [str(path)]


def _budget_text(budget: float) -> str:
    return f"{100 * budget:g}pct" if budget < 1 else f"{int(budget)}"


def _draw_share(rng: np.random.Generator, idx: np.ndarray, share: float) -> np.ndarray:
    """``round(share * len(idx))`` (at least 1) of ``idx`` at random."""
    k = max(1, int(round(share * len(idx))))
    return np.sort(rng.choice(idx, size=k, replace=False))


def samson_wavelengths() -> np.ndarray:
    """(156,) band centres in nm: 401 + i * (889 - 401) / 155."""
    lo, hi = SAMSON_NM
    return lo + np.arange(SAMSON_BANDS) * (hi - lo) / (SAMSON_BANDS - 1)


def samson_blocks() -> np.ndarray:
    """(9025,) block id (0-24, row-major over the 5 x 5 grid) of each pixel in the files' pixel order."""
    r, c = np.unravel_index(np.arange(SAMSON_SIDE ** 2), (SAMSON_SIDE, SAMSON_SIDE), order="F")
    per_side = SAMSON_SIDE // SAMSON_BLOCK
    return (r // SAMSON_BLOCK) * per_side + c // SAMSON_BLOCK


def _samson(case: str, budget: float, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    from scipy.io import loadmat

    folder = data_folder(case)
    y_mat, a_mat = folder / "Samson.mat", folder / "end3_Samson.mat"
    for f in (y_mat, a_mat):
        if not f.is_file():
            raise CmkdError(f"case '{case}': {f} not found")
    spectra = np.asarray(loadmat(y_mat)["Y"], dtype=np.float64).T  # (9025, 156)
    abund = np.asarray(loadmat(a_mat)["A"], dtype=np.float64).T  # (9025, 3)
    block = samson_blocks()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(int(block.max()) + 1)
    n_tr, n_va, _ = SAMSON_BLOCKS
    split = np.full(len(block), 2, dtype=np.int64)
    split[np.isin(block, perm[:n_tr])] = 0
    split[np.isin(block, perm[n_tr:n_tr + n_va])] = 1
    target = np.full_like(abund, np.nan)
    test = split == 2
    target[test] = abund[test]
    for part in (0, 1):  # the same share of training and of validation pixels labelled
        lab = _draw_share(rng, np.flatnonzero(split == part), budget)
        target[lab] = abund[lab]
    name, centres = SAMSON_STUDENTS[case]
    wl = samson_wavelengths()
    bands = [int(np.argmin(np.abs(wl - c))) for c in centres]
    arrays = {"spectrum": spectra.astype(np.float32), name: spectra[:, bands].astype(np.float32),
              "abundance": target.astype(np.float32), "split": split, "block": block.astype(np.int64)}
    data = {"modalities": {"spectrum": {"kind": "vector"}, name: {"kind": "vector"}},
            "targets": {"abundance": {"kind": "regression", "columns": ["rock", "tree", "water"]}},
            "split": "split"}
    if _has_groups():
        data["groups"] = "block"
    return arrays, {"data": data, "teacher": {"modalities": ["spectrum"]}, "student": {"modalities": [name]}}


def _has_groups() -> bool:
    from cmkd.config import DataConfig

    return "groups" in DataConfig.model_fields


def read_ts(path: Path) -> tuple[list[list[np.ndarray]], list[str]]:
    """A UEA/UCR ``.ts`` file: per sample its channels (arrays of floats) and its label (text after the last ':').

    Header lines start with ``#`` or ``@``; then one sample per line, channels separated by ``:``, values by ``,``.
    """
    if not path.is_file():
        raise CmkdError(f"{path} not found")
    samples, labels = [], []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#@":
            continue
        *channels, label = line.split(":")
        samples.append([np.array([float(v) for v in ch.split(",")]) for ch in channels])
        labels.append(label.strip())
    return samples, labels


def _labelled_split(rng: np.random.Generator, lab: np.ndarray) -> np.ndarray:
    """Split labelled indices ``lab`` (already shuffled) 80/20: returns the validation ones (at least one when
    there are two or more)."""
    k = int(round(VAL_SHARE * len(lab)))
    k = max(k, 1) if len(lab) >= 2 else 0
    return lab[:k]


def _tecator(case: str, budget: float, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    folder = data_folder(case)
    parts = [read_ts(folder / f"Tecator_{p}.ts") for p in ("TRAIN", "TEST")]
    x_tr = np.stack([s[0] for s in parts[0][0]])
    x_te = np.stack([s[0] for s in parts[1][0]])
    y_tr = np.array(parts[0][1], dtype=np.float64)
    y_te = np.array(parts[1][1], dtype=np.float64)
    n_tr = len(x_tr)
    if int(budget) > n_tr:
        raise CmkdError(f"case '{case}': budget {budget} exceeds the {n_tr} training samples")
    rng = np.random.default_rng(seed)
    lab = rng.choice(n_tr, size=int(budget), replace=False)  # in random order
    val = _labelled_split(rng, lab)
    fat = np.full(n_tr, np.nan)
    fat[lab] = y_tr[lab]
    split = np.zeros(n_tr + len(x_te), dtype=np.int64)
    split[val] = 1
    split[n_tr:] = 2
    x = np.concatenate([x_tr, x_te]).astype(np.float32)
    arrays = {"spectrum": x, "bands4": x[:, list(TECATOR_CHANNELS)],
              "fat": np.concatenate([fat, y_te]).astype(np.float32), "split": split}
    data = {"modalities": {"spectrum": {"kind": "vector"}, "bands4": {"kind": "vector"}},
            "targets": {"fat": {"kind": "regression"}}, "split": "split"}
    return arrays, {"data": data, "teacher": {"modalities": ["spectrum"]}, "student": {"modalities": ["bands4"]}}


def _pad(samples: list[list[np.ndarray]], frames: int) -> np.ndarray:
    """(n, frames, channels) with NaN after each utterance's last frame."""
    out = np.full((len(samples), frames, len(samples[0])), np.nan)
    for i, chans in enumerate(samples):
        t = len(chans[0])
        if t > frames or any(len(c) != t for c in chans):
            raise CmkdError(f"vowels: sample {i} has channels of lengths {[len(c) for c in chans]} (at most {frames})")
        out[i, :t] = np.stack(chans, axis=1)
    return out


def _vowels(case: str, budget: float, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    folder = data_folder(case)
    (s_tr, l_tr), (s_te, l_te) = (read_ts(folder / f"JapaneseVowels_{p}.ts") for p in ("TRAIN", "TEST"))
    x = _pad(s_tr + s_te, VOWELS_FRAMES)
    speakers = sorted({int(v) for v in l_tr}, key=int)
    y_tr = np.array([speakers.index(int(v)) for v in l_tr], dtype=np.int64)
    y_te = np.array([speakers.index(int(v)) for v in l_te], dtype=np.int64)
    per = int(budget) // len(speakers)
    if per * len(speakers) != int(budget):
        raise CmkdError(f"case '{case}': budget {budget} is not a multiple of the {len(speakers)} speakers")
    rng = np.random.default_rng(seed)
    n_tr = len(y_tr)
    y = np.full(n_tr, -1, dtype=np.int64)
    split = np.zeros(n_tr + len(y_te), dtype=np.int64)
    for k in range(len(speakers)):
        own = np.flatnonzero(y_tr == k)
        if per > len(own):
            raise CmkdError(f"case '{case}': speaker {speakers[k]} has {len(own)} training samples, {per} asked")
        lab = rng.choice(own, size=per, replace=False)
        y[lab] = k
        split[_labelled_split(rng, lab)] = 1
    split[n_tr:] = 2
    x = x.astype(np.float32)
    arrays = {"lpc12": x, "lpc3": x[:, :, :VOWELS_STUDENT_CHANNELS].copy(), "speaker": np.concatenate([y, y_te]),
              "split": split}
    data = {"modalities": {"lpc12": {"kind": "sequence"}, "lpc3": {"kind": "sequence"}},
            "targets": {"speaker": {"kind": "classification"}}, "split": "split",
            "class_names": [f"speaker {s}" for s in speakers]}
    return arrays, {"data": data, "teacher": {"modalities": ["lpc12"]}, "student": {"modalities": ["lpc3"]}}


CEILING_BUDGET = {"samson_rgb": 1.0, "samson_4band": 1.0, "tecator": 172, "vowels": 270}  # every training label


def ceiling(case: str, seed: int) -> dict[str, float]:
    """The every-label ceiling of a file case at ``seed``: on the student's inputs, ExtraTrees and the linear
    models (ridge; PLS too for a regression target) fitted on every training and validation sample with its true
    label (cmkd's own models, the run's default forest size), each one's TEST figure (the run's primary metric:
    RMSE, or accuracy); the split is the seed's own (the same Samson blocks and the same official test set as every
    budget at that seed). ``best``: the best of them, picked on test (hindsight)."""
    from cmkd.classical.references import fit_on_labels
    from cmkd.classical.trees import flat_features
    from cmkd.config import DataConfig, ReferencesConfig, default_of
    from cmkd.data.arrays import build_data
    from cmkd.evaluation.metrics import primary_metric, task_metrics

    if case not in CEILING_BUDGET:
        raise CmkdError(f"case '{case}': no ceiling (a built-in recipe)")
    builder = {"tecator": _tecator, "vowels": _vowels}.get(case, _samson)
    arrays, cfg = builder(case, CEILING_BUDGET[case], seed)
    data = build_data(arrays, DataConfig(**cfg["data"]), seed=seed, source=f"{case} (REAL)")
    mods = list(cfg["student"]["modalities"])
    split = arrays[cfg["data"]["split"]]
    fit, test = np.flatnonzero(split < 2), np.flatnonzero(split == 2)
    metric = primary_metric(data)
    kind = next(iter(data.target_kinds.values()))
    out: dict[str, float] = {}
    x_test = flat_features(data, mods, test)
    for algo in ("extra_trees", "ridge", *(("pls",) if kind == "regression" else ())):
        model = fit_on_labels(algo, data, mods, fit, seed, default_of(ReferencesConfig, "n_estimators"))
        out[algo] = float(task_metrics(data, test, model.predict(x_test))[metric])
    out["best"] = (min if metric == "rmse" else max)(out.values())
    return out
