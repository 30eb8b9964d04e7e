"""``cmkd habitat design``: a design check from a sonar survey, legal text (.txt or .pdf), an ocean sensor CSV and
a structural spec (JSON), with the trained student and the deterministic rule engine.

The student (ONNX) predicts the seabed type, the minimum compliant hull thickness, waste capacity and emergency
buoyancy, and the compliance of every jurisdiction. The rule engine then checks the proposed design against the
rules in force at the site (seabed type from the student, depth, oxygen, current and temperature from the
sensor CSV, distance from the spec) and lists violations (rule id, text, why), resolved conflicts and a concrete
change per violation. ILLUSTRATIVE rules: not legal advice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError, require
from cmkd.recipes.habitat.rules import DESIGN_FIELDS, MATERIALS, SEABEDS, STATUSES, load_rules, recommend, required
from cmkd.recipes.habitat.scene import OCEAN_COLUMNS, SEQ_LEN, SIGNAL_LEN, structural_vector

SPEC_KEYS = (*DESIGN_FIELDS, "distance_nm")
INT_KEYS = ("crew", "mission_days", "national_permit", "isa_contract", "eia_done", "mining_support")


def read_legal(path: Path) -> str:
    """The text of a legal brief: UTF-8 ``.txt`` or ``.pdf`` (text layer read with pypdf)."""
    if not path.is_file():
        raise CmkdError(f"legal text not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CmkdError(f"{path}: not UTF-8 text; save it as UTF-8 or pass a PDF") from None
    elif suffix == ".pdf":
        import logging

        require("pypdf", "habitat", "a PDF legal brief")
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        logging.getLogger("pypdf").setLevel(logging.CRITICAL)  # its repair notes would break the one-line error

        try:
            reader = PdfReader(str(path))
            text = " ".join((page.extract_text() or "") for page in reader.pages)
        except (PyPdfError, OSError, ValueError, KeyError, TypeError) as e:
            raise CmkdError(f"{path}: unreadable PDF ({type(e).__name__}: {str(e)[:100]})") from None
    else:
        raise CmkdError(f"{path}: legal text must be a .txt or .pdf file")
    text = " ".join(text.split())
    if not text:
        raise CmkdError(f"{path}: no text found (a scanned PDF needs OCR first)")
    return text


def read_sonar(path: Path) -> np.ndarray:
    """(1, 1, SIGNAL_LEN) sonar trace from an .npy of SIGNAL_LEN samples."""
    if not path.is_file():
        raise CmkdError(f"sonar survey not found: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CmkdError(f"{path}: not a numeric .npy array ({str(e)[:80]})") from None
    if a.dtype.kind not in "fiu" or a.size != SIGNAL_LEN or a.squeeze().ndim != 1:
        raise CmkdError(f"{path}: the sonar trace must hold {SIGNAL_LEN} numbers (one ping), got shape {a.shape} "
                        f"({a.dtype})")
    if np.isnan(a.astype(float)).all():
        raise CmkdError(f"{path}: the sonar trace is all NaN")
    return a.astype(np.float32).reshape(1, 1, SIGNAL_LEN)


def read_ocean(path: Path) -> tuple[np.ndarray, dict[str, float]]:
    """(1, SEQ_LEN, 4) hourly ocean series (the last SEQ_LEN rows; fewer are padded with gaps) and the site
    facts taken from it: depth (median pressure, dbar ~ m), oxygen and temperature (medians), current (90th
    percentile)."""
    import pandas as pd

    if not path.is_file():
        raise CmkdError(f"sensor CSV not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CmkdError(f"{path}: not a readable CSV ({str(e).splitlines()[0][:80]})") from None
    missing = [c for c in OCEAN_COLUMNS if c not in df.columns]
    if missing:
        raise CmkdError(f"{path}: missing column(s) {', '.join(missing)}; needed: {', '.join(OCEAN_COLUMNS)}")
    try:
        vals = df[list(OCEAN_COLUMNS)].apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float32)[-SEQ_LEN:]
    except (ValueError, TypeError):
        raise CmkdError(f"{path}: the columns {', '.join(OCEAN_COLUMNS)} must hold numbers (empty = missing)") from None
    if len(vals) == 0 or np.isnan(vals).all(axis=0).any():
        raise CmkdError(f"{path}: every column of {', '.join(OCEAN_COLUMNS)} needs at least one reading")
    seq = np.full((SEQ_LEN, len(OCEAN_COLUMNS)), np.nan, dtype=np.float32)
    seq[SEQ_LEN - len(vals):] = vals
    col = dict(zip(OCEAN_COLUMNS, vals.T))
    facts = {"depth_m": float(np.nanmedian(col["pressure_dbar"])),
             "oxygen_mg_l": float(np.nanmedian(col["oxygen_mg_l"])),
             "temperature_c": float(np.nanmedian(col["temperature_c"])),
             "current_m_s": float(np.nanquantile(col["current_m_s"], 0.9))}
    return seq[None], facts


def read_spec(path: Path) -> dict:
    """The proposed design and the site's distance to the coast from a JSON object (keys: :data:`SPEC_KEYS`)."""
    if not path.is_file():
        raise CmkdError(f"structural spec not found: {path}")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CmkdError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise CmkdError(f"{path}: the spec must be a JSON object")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    missing = [k for k in SPEC_KEYS if k not in spec]
    if unknown or missing:
        raise CmkdError(f"{path}: " + (f"unknown key(s) {', '.join(unknown)}; " if unknown else "")
                        + (f"missing key(s) {', '.join(missing)}; " if missing else "")
                        + f"keys: {', '.join(SPEC_KEYS)}")
    if spec["material"] not in MATERIALS:
        raise CmkdError(f"{path}: material '{spec['material']}' unknown; valid: {', '.join(MATERIALS)}")
    for k in SPEC_KEYS:
        if k != "material" and (isinstance(spec[k], bool) or not isinstance(spec[k], (int, float))
                                or not np.isfinite(spec[k]) or spec[k] < 0):
            raise CmkdError(f"{path}: '{k}' must be a non-negative number, got {spec[k]!r}")
    if spec["radius_m"] <= 0 or spec["crew"] < 1:
        raise CmkdError(f"{path}: radius_m must be > 0 and crew >= 1")
    return {k: (int(spec[k]) if k in INT_KEYS else spec[k]) for k in SPEC_KEYS}


def design(model_dir: Path, acoustic: Path, legal: Path, sensor: Path, structural: Path,
           rules: Path | None = None, jurisdictions: list[str] | None = None) -> dict:
    """Predict and check one habitat design; returns the design report (see the module docs)."""
    from cmkd.export.onnx import ort_run, ort_session
    from cmkd.io import safe_load
    from cmkd.training.continual import model_inputs
    from cmkd.validate import stored_config

    rs = load_rules(rules)
    if jurisdictions:
        rs.check_jurisdictions(jurisdictions)
    meta = safe_load(model_dir / "student.pt")
    cfg = stored_config(meta, str(model_dir / "student.pt"))
    if cfg.get("recipe") != "habitat":
        raise CmkdError(f"{model_dir} holds a model of {cfg.get('recipe') or 'a YAML experiment'}, not of the "
                        "habitat recipe")
    if (cfg.get("options") or {}).get("region", 0) == 1:
        from cmkd.recipes.habitat.scene import region_rules

        rs = region_rules(rs, 1)
    spec = read_spec(structural)
    seq, facts = read_ocean(sensor)
    arrays = {"acoustic": read_sonar(acoustic), "oceanographic": seq,
              "structural": structural_vector(spec, float(spec["distance_nm"]))[None],
              "legal_text": np.array([read_legal(legal)])}
    onnx = model_dir / "student.onnx"
    if not onnx.is_file():
        raise CmkdError(f"{onnx} not found; run `cmkd export --model {model_dir}` first")
    feed = model_inputs(meta, {m: arrays[m] for m in meta["hparams"]["modalities"]}, str(model_dir))
    outs = dict(zip(meta["hparams"]["targets"], ort_run(ort_session(onnx), feed)))

    def probs(t: str) -> np.ndarray:  # the ONNX graph outputs class probabilities
        return outs[t][0]

    seabed_p = probs("seabed")
    seabed = SEABEDS[int(meta["classes"]["seabed"][int(seabed_p.argmax())])]
    site = {**facts, "distance_nm": float(spec["distance_nm"]), "seabed": seabed}
    proposed = {k: spec[k] for k in DESIGN_FIELDS}
    recs, fixed, final = recommend(rs, site, proposed, jurisdictions)
    from cmkd.recipes.habitat.rules import evaluate

    check = evaluate(rs, site, proposed, jurisdictions)
    predicted = {}
    for t in meta["hparams"]["targets"]:
        if t.startswith("compliance_") and t[len("compliance_"):] in check["compliance"]:
            p = probs(t)
            k = int(p.argmax())
            predicted[t[len("compliance_"):]] = {"status": STATUSES[int(meta["classes"][t][k])],
                                                 "probability": round(float(p[k]), 4)}
    value = {t: float(np.asarray(outs[t]).reshape(-1)[0]) for t in ("hull_thickness", "waste_capacity",
                                                                     "emergency_buoyancy")}
    return {
        "disclaimer": "Model trained on SYNTHETIC data; ILLUSTRATIVE rules, not legal advice.",
        "site": {**site, "zone": check["zone"], "seabed_probability": round(float(seabed_p.max()), 4)},
        "hull_thickness_mm": round(value["hull_thickness"], 3),
        "waste_capacity_m3": round(value["waste_capacity"], 3),
        "emergency_buoyancy_kn": round(value["emergency_buoyancy"], 3),
        "physics_minimum": {k: round(v, 3) for k, v in required(site, fixed).items()},
        "compliance": {j: {"rule_engine": s, "student": predicted.get(j)} for j, s in check["compliance"].items()},
        "violations": [{"rule": v["rule"], "jurisdiction": v["jurisdiction"], "category": v["category"],
                        "text": v["text"], "why": v["why"]} for v in check["violations"]],
        "conflicts": check["conflicts"],
        "recommendations": recs,
        "design_after_recommendations": fixed,
        "violations_after_recommendations": len(final["violations"]),
    }


def write_pdf(text: str, path: Path, width: int = 90) -> None:
    """A minimal one-page PDF (Helvetica, text wrapped at ``width`` characters) holding ``text``."""
    import textwrap

    lines = textwrap.wrap(text, width)[:60]
    esc = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = "BT /F1 9 Tf 40 800 Td 12 TL " + " ".join(f"({ln}) '" for ln in esc) + " ET"
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            "/Resources << /Font << /F1 5 0 R >> >> >>",
            f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = "%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{o}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n" + "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    path.write_bytes(out.encode("latin-1", errors="replace"))


def example(out: Path, seed: int = 0, index: int = 0) -> list[Path]:
    """Write one SYNTHETIC site's design-tool inputs: survey.npy, rules.txt, rules.pdf, ocean.csv, spec.json."""
    import pandas as pd

    from cmkd.recipes.habitat.scene import generate

    arrays, records = generate(max(index + 1, 8), seed)
    rec = records[index]
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / n for n in ("survey.npy", "rules.txt", "rules.pdf", "ocean.csv", "spec.json")]
    np.save(paths[0], arrays["acoustic"][index, 0])
    paths[1].write_text(str(arrays["legal_text"][index]) + "\n")
    write_pdf(str(arrays["legal_text"][index]), paths[2])
    df = pd.DataFrame(arrays["oceanographic"][index], columns=list(OCEAN_COLUMNS))
    df.insert(0, "time", pd.date_range("2026-01-01", periods=SEQ_LEN, freq="h").strftime("%Y-%m-%dT%H:%M"))
    df.to_csv(paths[3], index=False)
    spec = {**rec["design"], "distance_nm": round(rec["site"]["distance_nm"], 3)}
    paths[4].write_text(json.dumps(spec, indent=1))
    return paths
