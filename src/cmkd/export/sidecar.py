"""The self-describing edge model: the JSON sidecar written beside every exported ONNX file.

:func:`model_card` describes a network student from its saved metadata (what :func:`cmkd.nn.checkpoint.save_model`
stores; pruned or not), :func:`tree_card` a tree model deployed with the network's contract (derived
from the network's card), both through :func:`edge_card`, the generic builder; :func:`write_card` writes a card
(with the INT8 variant's note for ``precision="int8"``) beside the ONNX file (``student.onnx`` -> ``student.json``) and
records a pointer to it in the ONNX file's ``metadata_props``. The schema is ``cmkd/schemas/edge_model.schema.json``;
:mod:`cmkd.runtime` reads the pair without torch.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from cmkd.config import Role
from cmkd.io import atomic_write, atomic_write_text
from cmkd.runtime import FORMAT, FORMAT_VERSION, TOKENIZER, sha256, sidecar_path

MISSING_VALUES = "NaN marks a missing value inside the modality (the model sees zeros plus a mask)"
ABSENT_NUMERIC = ("a sample without this modality passes all NaN (cmkd.runtime also reads <name>__present False "
                  "and blanks the sample's values)")
ABSENT_TEXT = "a sample without this modality passes an empty string (all padding tokens, id 0)"


def schema() -> dict:
    """The sidecar's JSON Schema (``cmkd/schemas/edge_model.schema.json``)."""
    return json.loads(resources.files("cmkd").joinpath("schemas/edge_model.schema.json").read_text())


def _finite(v: float | None) -> float | None:
    return None if v is None or v != v or v in (float("inf"), float("-inf")) else float(v)


def edge_card(*, inputs: list[dict], targets: list[dict], outputs: list[dict], conformal: dict | None = None,
              availability: dict | None = None, training_data: dict | None = None, role: str = Role.STUDENT,
              model_type: str = "network", name: str | None = None, recipe: str | None = None,
              synthetic: bool | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """A sidecar dict for any exported model (network or tree ensemble) with cmkd's input/output contract.

    Args:
        inputs: one entry per ONNX input, in order: ``name``, ``kind``, ``shape`` (per sample), ``dtype``,
            ``missing_values``, ``absent_modality`` (text: ``vocab``, ``length``, ``tokenizer``).
        targets: ``name``, ``kind``; classification ``classes`` (``id``, ``name``) and ``outputs``
            ``{"probabilities": output}``; regression ``dims``, ``units`` and ``outputs`` ``{"mean", "std"}``.
        outputs: one entry per ONNX output, in order: ``name``, ``target``, ``meaning``, ``shape``.
        conformal: target -> ``{"alpha", "columns": [{"q", "group_q", "n"}]}``.
        availability: ``{"edges", "modalities"}``: the bands the conformal quantiles are per.
        training_data: a summary (source, sample counts, synthetic or not).
        role, model_type, name, recipe, synthetic: what the model is and where it came from.
        notes: free-text caveats.
    """
    from cmkd.version import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "cmkd_version": __version__, "role": role,
            "model_type": model_type, "name": name, "recipe": recipe, "synthetic": synthetic,
            "inputs": inputs, "targets": targets, "outputs": outputs, "conformal": conformal or {},
            "availability": availability or {"edges": [], "modalities": []},
            "training_data": training_data or {}, "notes": notes or []}


def _names(dcfg: dict, m: str) -> dict[str, Any]:
    """An input's ``channels`` (``data.modalities.<m>.channels``) and ``units`` (``data.sources.modalities.<m>.
    units``), where the config gives them."""
    out: dict[str, Any] = {}
    chans = ((dcfg.get("modalities") or {}).get(m) or {}).get("channels")
    if chans:
        out["channels"] = [str(c) for c in chans]
    src = ((dcfg.get("sources") or {}).get("modalities") or {}).get(m)
    if isinstance(src, dict) and src.get("units"):
        out["units"] = str(src["units"])
    return out


def model_card(meta: dict, training_data: dict | None = None, synthetic: bool | None = None,
               prune: float | None = None) -> dict[str, Any]:
    """The sidecar of a network student exported by :func:`cmkd.export.onnx.export_onnx`, from its saved metadata.

    Args:
        meta: the checkpoint's metadata (``hparams``, ``config``, ``classes``, ``class_names``, ``conformal``).
        training_data: the run's data summary (metrics.json's ``data``), when known.
        synthetic: whether the training data were synthetic.
        prune: the share of weights magnitude-pruned after the conformal calibration (``export.prune``), when the
            exported network was pruned: a note says the quantiles are the unpruned student's.
    """
    from cmkd.validate import stored_config

    cfg = stored_config(meta, "the model")
    dcfg = cfg.get("data") or {}
    inputs = []
    for m, spec in meta["hparams"]["modalities"].items():
        if spec["kind"] == "text":
            length = int(dcfg.get("text_len", 64))
            inputs.append({"name": m, "kind": "text", "shape": [length], "dtype": "int64",
                           "raw": "(N,) unicode strings, tokenised by cmkd.runtime.tokenize",
                           "tokenizer": TOKENIZER, "vocab": int(dcfg.get("text_vocab", 4096)), "length": length,
                           "missing_values": "none (words absent from a text are simply not there)",
                           "absent_modality": ABSENT_TEXT})
        else:
            inputs.append({"name": m, "kind": spec["kind"], "shape": [int(s) for s in spec["shape"]],
                           "dtype": "float32", "missing_values": MISSING_VALUES, "absent_modality": ABSENT_NUMERIC,
                           **_names(dcfg, m)})
    targets, outputs, stds = [], [], []
    names = meta.get("class_names")
    tcfg = dcfg.get("targets") or {}
    for t, spec in meta["hparams"]["targets"].items():
        if spec["kind"] == "classification":
            ids = meta["classes"][t]
            named = names if names and len(names) == len(ids) else None
            targets.append({"name": t, "kind": "classification",
                            "classes": [{"id": int(c), "name": named[i] if named else None} for i, c in enumerate(ids)],
                            "outputs": {"probabilities": t}})
            outputs.append({"name": t, "target": t, "meaning": "probabilities", "shape": [len(ids)],
                            "description": "class probabilities (softmax inside the graph), in the order of the "
                                           "target's classes"})
        else:
            dims = int(spec.get("n_out", 1))
            cols = (tcfg.get(t) or {}).get("columns")
            targets.append({"name": t, "kind": "regression", "dims": dims,
                            "units": (tcfg.get(t) or {}).get("units"), "outputs": {"mean": t, "std": f"{t}_std"},
                            **({"columns": [str(c) for c in cols]} if cols and len(cols) == dims else {})})
            outputs.append({"name": t, "target": t, "meaning": "mean", "shape": [dims],
                            "description": "predicted value (the Gaussian head's mean), in the target's raw units"})
            stds.append({"name": f"{t}_std", "target": t, "meaning": "std", "shape": [dims],
                         "description": "the Gaussian head's standard deviation, raw units (not calibrated: use "
                                        "the conformal quantiles for intervals)"})
    conformal = {}
    for t, states in (meta.get("conformal") or {}).items():
        if states:
            conformal[t] = {"alpha": float(states[0]["alpha"]), "method": "normalised split-conformal, Mondrian "
                            "per availability band: [mean - q * std, mean + q * std], q of the sample's band, the "
                            "pooled q for a band without its own",
                            "columns": [{"q": _finite(s["q"]), "n": int(s.get("n", 0)),
                                         "group_q": {str(k): _finite(v) for k, v in (s.get("group_q") or {}).items()}}
                                        for s in states]}
    unc = cfg.get("uncertainty") or {}
    mods = list(meta["hparams"]["modalities"])
    chosen = [m for m in unc.get("availability_modalities") or [] if m in mods] or mods
    availability = {"edges": [float(e) for e in unc.get("availability_edges") or []], "modalities": chosen,
                    "definition": "share of observed (non-NaN) values over these modalities, absent modalities "
                                  "counting as wholly missing and text as observed; band = number of edges below it"}
    notes = [] if prune is None else [f"magnitude-pruned ({prune:.0%} of the weights) after the conformal "
                                      "calibration: the quantiles are those of the unpruned student"]
    return edge_card(inputs=inputs, targets=targets, outputs=outputs + stds, conformal=conformal,
                     availability=availability, training_data=training_data, role=meta.get("role", Role.STUDENT),
                     name=cfg.get("name"), recipe=cfg.get("recipe"), synthetic=synthetic, notes=notes)


def tree_card(net_card: dict, role: str) -> dict[str, Any]:
    """The sidecar of a tree model (the tree student or a RandomForest / ExtraTrees / HistGradientBoosting
    reference, ``role`` its name) exported with the network student's input/output contract: the network's card
    (:func:`model_card`) less its conformal quantiles (calibrated for the network's std, not the trees' constant
    one) and its pruning note, with a note on what the std output is."""
    notes = [n for n in net_card.get("notes", []) if "pruned" not in n]
    notes.append("tree ensemble: the regression std output is a constant per target column (the model's RMSE on "
                 "the validation samples), not calibrated; no conformal intervals")
    return {**net_card, "role": role, "model_type": "tree_ensemble", "conformal": {}, "notes": notes}


def write_card(onnx_path: str | Path, card: dict, precision: str = "fp32") -> Path:
    """Write ``card`` beside ``onnx_path`` (atomically) with the file's name, size and SHA-256, and point the ONNX
    file's ``metadata_props`` at it. Returns the sidecar's path."""
    onnx_path = Path(onnx_path)
    _tag_onnx(onnx_path, {"cmkd.sidecar": sidecar_path(onnx_path).name, "cmkd.format": FORMAT,
                          "cmkd.format_version": str(FORMAT_VERSION), "cmkd.version": card["cmkd_version"]})
    if precision == "int8":
        card = {**card, "notes": [*card.get("notes", []), "dynamic INT8 weights: the conformal quantiles were "
                                  "calibrated on the FP32 student; the INT8 outputs differ slightly (see metrics.json "
                                  "export.int8_metrics)"]}
    card = {**card, "model": {"file": onnx_path.name, "precision": precision, "bytes": onnx_path.stat().st_size,
                              "sha256": sha256(onnx_path)}}
    return atomic_write_text(sidecar_path(onnx_path), json.dumps(card, indent=1, allow_nan=False))


def _tag_onnx(path: Path, props: dict[str, str]) -> None:
    """Set ``metadata_props`` of an ONNX file in place (atomically)."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))
