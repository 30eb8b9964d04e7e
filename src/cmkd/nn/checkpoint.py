"""Model files: build a :class:`~cmkd.nn.models.MultimodalNet` from a config section, save it with plain
metadata (loadable with ``weights_only=True``) and load it back, multi-teacher ensembles included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmkd.config import ExperimentConfig, dump_config
from cmkd.data.arrays import TEXT_VOCAB, MultimodalData
from cmkd.errors import CmkdError
from cmkd.io import atomic_save, safe_load
from cmkd.nn.models import EnsembleTeacher, MultimodalNet

MODEL_FORMAT = "cmkd-model-1"


def build_model(data: MultimodalData, modalities: list[str], mcfg: Any, cfg: ExperimentConfig,
                impute: list[str] | None = None, targets: list[str] | None = None) -> MultimodalNet:
    """A MultimodalNet for ``modalities`` sized by a teacher/student config section (``impute``: modalities
    it reconstructs, see :class:`cmkd.nn.models.MultimodalNet`; ``targets``: the heads, default all targets)."""
    shapes = data.shapes()
    outs = data.n_outputs()
    return MultimodalNet({m: {"kind": data.kinds[m], "shape": shapes[m]} for m in modalities},
                         {t: {"kind": k, "n_out": outs[t]} for t, k in data.target_kinds.items()
                          if targets is None or t in targets},
                         width=mcfg.width, heads=mcfg.heads, depth=mcfg.depth, dropout=mcfg.dropout,
                         modality_dropout=mcfg.modality_dropout, text_vocab=TEXT_VOCAB, impute=impute,
                         encoders=mcfg.encoders, encoder_options=mcfg.encoder_options)


def save_model(model: MultimodalNet, path: Path, cfg: ExperimentConfig, data: MultimodalData, role: str,
               conformal: dict | None = None) -> None:
    """Save weights plus plain metadata (loadable with ``weights_only=True``); ``conformal``: target -> list of
    per-column calibration states (see :class:`cmkd.evaluation.uncertainty.ConformalRegressor`)."""
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
            model.hparams.update({k: hp[k] for k in ("modalities", "targets") if k in hp})  # an ensemble student
        else:
            model = _net(hp)
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CmkdError(f"{path}: damaged cmkd model file ({str(e).splitlines()[0][:120]})") from None
    return model.eval(), ck

