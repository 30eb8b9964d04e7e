"""Run an exported cmkd model with numpy and ONNX Runtime alone: no torch, no scikit-learn, no other cmkd module.

An exported model is an ONNX file plus a JSON sidecar beside it (``student.onnx`` + ``student.json``,
``student.int8.onnx`` + ``student.int8.json``), described by ``cmkd/schemas/edge_model.schema.json``. The sidecar
says what each input is (kind, per-sample shape, dtype, how missing values and absent modalities are passed), what
each output is (class probabilities, regression mean, regression std), the class ids and names, and the
split-conformal quantiles per availability band that turn ``mean +- q * std`` into calibrated intervals.

This file imports only numpy and onnxruntime (and cmkd's one exception type when it is part of the package), so it
also works copied alone onto a device::

    from cmkd.runtime import EdgeModel            # or: from runtime import EdgeModel (the file copied alone)
    model = EdgeModel("runs/minerals/student.onnx")
    result = model.predict({"rgb": x})            # x: (N, C, H, W) float32, NaN = missing value
    result["targets"]["mineral"]["label"]         # class ids; "class_name", "probabilities" as well

The input contract, one rule for every caller (``cmkd predict``, ``cmkd evaluate``, training):

* missing values inside a modality are NaN (numeric kinds);
* a wholly absent modality for a sample is all NaN (text: an empty string), or ``<modality>__present`` False
  for that sample; an absent modality's values are then replaced by NaN (text: padding) before the model sees
  them, so the exported model and the torch model agree (:func:`presence`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

try:  # part of the cmkd package: its one user-facing exception type (the CLI prints it on one line)
    from cmkd.errors import CmkdError
except ImportError:  # this file copied alone onto a device
    class CmkdError(Exception):  # type: ignore[no-redef]
        """A user-facing error (bad input, missing file)."""

FORMAT = "cmkd-edge-model"
FORMAT_VERSION = 1
TOKENIZER = "crc32-words-v1"
# the largest array (bytes) an npz member may hold, read from its .npy header before anything is allocated
MAX_ARRAY_BYTES = int(os.environ.get("CMKD_MAX_ARRAY_BYTES", 16 << 30))


def sidecar_path(onnx_path: str | Path) -> Path:
    """The sidecar of an ONNX file: ``student.onnx`` -> ``student.json``, ``x.int8.onnx`` -> ``x.int8.json``."""
    p = Path(onnx_path)
    return p.with_name(p.name[:-5] + ".json" if p.name.endswith(".onnx") else p.name + ".json")


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the sidecar names the ONNX bytes it describes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- inputs ----

def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load an ``.npz`` safely (no pickles) into a dict of arrays.

    Raises:
        CmkdError: when the file is missing, corrupt, or holds object (pickled) arrays.
    """
    p = Path(path)
    if not p.is_file():
        raise CmkdError(f"data file not found: {p}")
    # np.load would unpickle (refused) or memory-map anything that is not a zip; check the format first
    if not zipfile.is_zipfile(p):
        raise CmkdError(f"{p}: not a readable .npz file (not a zip archive; write it with numpy.savez)")
    try:
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # our handle: closed on any failure
            check_npz_members(z.zip, p)  # header sizes, before any member is read
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CmkdError(f"{p}: holds object arrays; store text as a unicode array (np.str_), "
                            "not Python objects") from None
        raise CmkdError(f"{p}: not a readable .npz file ({str(e).splitlines()[0][:120]})") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, KeyError, NotImplementedError, RuntimeError,
            UnicodeDecodeError) as e:  # a damaged zip: an unknown version or compression, "encrypted", ...
        raise CmkdError(f"{p}: not a readable .npz file ({type(e).__name__})") from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise CmkdError(f"{p}: member '{k}' is not a .npy array; write the file with numpy.savez")
    return arrays


def check_npz_members(zf: zipfile.ZipFile, src: str | Path, limit: int | None = None) -> None:
    """Read every ``.npy`` member's header and refuse one whose shape and dtype claim more than ``limit`` bytes
    (default :data:`MAX_ARRAY_BYTES`), so a hostile or damaged header never makes numpy allocate terabytes."""
    limit = MAX_ARRAY_BYTES if limit is None else limit
    fmt = np.lib.format
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[:-4]
        with zf.open(info) as f:
            try:
                version = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(f)
            except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
                raise CmkdError(f"{src}: member '{key}' is not a readable .npy array "
                                f"({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})") from None
        if dtype.hasobject:
            continue  # refused when read (no pickles), with its own message
        # every element counts, even of a zero-width dtype ('U0' / 'S0' / 'V0': numpy widens them when reading)
        size = math.prod(shape) * max(dtype.itemsize, 4)
        if size > limit:
            raise CmkdError(f"{src}: member '{key}' claims shape {shape} of {dtype} ({size / 2**30:.3g} GiB); the "
                            f"largest array a run reads is {limit / 2**30:.3g} GiB (CMKD_MAX_ARRAY_BYTES)")


def check_float32_range(a: np.ndarray, name: str, src: str) -> None:
    """Refuse finite values that float32 cannot hold (they would become infinite, with a warning, when cast)."""
    if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
        with np.errstate(invalid="ignore"):
            big = np.abs(a) > np.finfo(np.float32).max
        big &= np.isfinite(a)
        if big.any():
            raise CmkdError(f"{src}: '{name}' holds {a[big].flat[0]:g}, beyond the float32 range of the models "
                            "(about 3.4e38); rescale it")


def tokenize(texts: np.ndarray, vocab: int = 4096, max_len: int = 64) -> np.ndarray:
    """Hash words to token ids (stable across runs and machines; 0 is padding): the ``crc32-words-v1`` tokenizer.

    Args:
        texts: (N,) strings.
        vocab: number of token ids.
        max_len: tokens kept per text.

    Returns:
        (N, max_len) int64 ids.
    """
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, t in enumerate(texts):
        words = str(t).lower().replace("\n", " ").split()[:max_len]
        for j, w in enumerate(words):
            out[i, j] = 1 + zlib.crc32(w.strip(".,;:()[]\"'").encode()) % (vocab - 1)
    return out


def presence(arrays: dict[str, np.ndarray], name: str, observed: np.ndarray, src: str) -> np.ndarray:
    """Which samples have modality ``name``: the ``observed`` ones (not all NaN / not empty text) that the optional
    ``<name>__present`` key (checked: one True/False or 1/0 per sample) does not mark absent.

    The one definition of a modality's availability, used by training, ``cmkd evaluate`` and ``cmkd predict``.
    """
    n = len(observed)
    key = f"{name}__present"
    if key not in arrays:
        return observed
    p = np.asarray(arrays[key])
    if p.shape != (n,):
        raise CmkdError(f"{src}: '{key}' has shape {p.shape}, expected ({n},)")
    if p.dtype.kind not in "biuf" or not np.isin(p, (0, 1)).all():
        raise CmkdError(f"{src}: '{key}' must hold only True/False (or 1/0), one per sample")
    return observed & p.astype(bool)


def observed_rows(x: np.ndarray, kind: str) -> np.ndarray:
    """(N,) samples whose values are not all missing: a numeric row not all NaN, a token row not all padding."""
    flat = x.reshape(len(x), -1)
    return (flat > 0).any(axis=1) if kind == "text" else ~np.isnan(flat).all(axis=1)


def mask_absent(x: np.ndarray, present: np.ndarray, kind: str) -> np.ndarray:
    """``x`` with the absent samples' values replaced by NaN (text tokens: padding 0); a copy when any is absent."""
    if present.all():
        return x
    x = x.copy()
    x[~present] = 0 if kind == "text" else np.nan
    return x


def observed_share(inputs: dict[str, np.ndarray], present: dict[str, np.ndarray], kinds: dict[str, str],
                   modalities: list[str], n: int | None = None) -> np.ndarray:
    """(n,) share of observed (non-NaN) input values over ``modalities`` of each sample; an absent modality
    counts as wholly missing, text counts as observed. The availability of the Mondrian conformal bands."""
    n = len(next(iter(present.values()))) if n is None else n
    seen, total = np.zeros(n), np.zeros(n)
    for m in modalities:
        x = inputs[m]
        size = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
        if kinds[m] == "text":
            obs = np.full(n, float(size))
        else:
            obs = (~np.isnan(x.reshape(n, -1))).sum(axis=1).astype(float)
        seen += np.where(present[m], obs, 0.0)
        total += size
    return seen / np.maximum(total, 1)


def check_inputs(modalities: dict[str, dict], arrays: dict[str, np.ndarray], src: str
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Check a user's arrays against a model's modalities; tokenise text; blank absent modalities.

    Args:
        modalities: name -> ``{"kind", "shape"}`` (per-sample shape; text also ``"vocab"`` and ``"length"``).
        arrays: the user's arrays (an npz), with optional ``<name>__present`` keys.
        src: the file name, for error messages.

    Returns:
        ``(feed, present)``: name -> float32 (text: int64 tokens) array as the ONNX model takes it, and
        name -> (N,) bool availability (:func:`presence`).
    """
    feed, present = {}, {}
    for m, spec in modalities.items():
        if m not in arrays:
            raise CmkdError(f"{src}: modality '{m}' needed by the model not found; keys: {', '.join(arrays)}")
        a = np.asarray(arrays[m])
        if spec["kind"] == "text":
            if a.ndim != 1 or a.dtype.kind not in "US":
                raise CmkdError(f"{src}: text modality '{m}' must be a (N,) array of strings")
            a = tokenize(a, int(spec["vocab"]), int(spec["length"]))
        else:
            if tuple(a.shape[1:]) != tuple(spec["shape"]) or a.dtype.kind not in "fiub":
                raise CmkdError(f"{src}: '{m}' has per-sample shape {tuple(a.shape[1:])} ({a.dtype}), the model "
                                f"expects {tuple(spec['shape'])} numbers")
            check_float32_range(a, m, src)
            a = a.astype(np.float32)
            if np.isinf(a).any():
                raise CmkdError(f"{src}: '{m}' contains infinite values; use NaN for missing values")
        feed[m] = a
    if len({len(v) for v in feed.values()}) > 1:
        raise CmkdError(f"{src}: the model's modalities have different sample counts")
    if feed and len(next(iter(feed.values()))) == 0:
        raise CmkdError(f"{src}: holds 0 samples; nothing to predict")
    for m, a in feed.items():
        kind = modalities[m]["kind"]
        present[m] = presence(arrays, m, observed_rows(a, kind), src)
        feed[m] = mask_absent(a, present[m], kind)
    return feed, present


# ---- outputs ----

def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (for models whose sidecar says their output is logits)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def conformal_interval(mu: np.ndarray, sd: np.ndarray, cal: dict, band: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``mu -+ q * sd`` for one output column, ``q`` the quantile of each sample's availability band (the pooled
    ``q`` for a band without its own). ``cal``: ``{"q", "group_q": {band: q}}`` from the sidecar."""
    q = np.full(len(mu), float(cal["q"]) if cal["q"] is not None else math.inf)
    if band is not None:
        for k, v in (cal.get("group_q") or {}).items():
            q[band == int(k)] = math.inf if v is None else float(v)
    return mu - q * sd, mu + q * sd


def read_card(path: str | Path) -> dict:
    """Read and check an edge model's sidecar (``.json`` beside the ``.onnx``)."""
    p = Path(path)
    if not p.is_file():
        raise CmkdError(f"{p} not found: the model's sidecar (written by `cmkd run` / `cmkd export` beside the "
                        "ONNX file); re-export with `cmkd export --model FOLDER`")
    try:
        card = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CmkdError(f"{p}: not a readable sidecar ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CmkdError(f"{p}: not a cmkd edge-model sidecar")
    version = card.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise CmkdError(f"{p}: sidecar format {version} is newer than this runtime ({FORMAT_VERSION}); update cmkd")
    schema = _schema()
    if schema is not None:  # the schema that ships beside this file (absent when the file is copied alone)
        problem = schema_problem(card, schema)
        if problem:
            raise CmkdError(f"{p}: not a valid sidecar: {problem} (edge_model.schema.json); re-export with "
                            "`cmkd export --model FOLDER`")
    return card


_TYPES = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int, "boolean": bool,
          "null": type(None)}


def _schema() -> dict | None:
    f = Path(__file__).parent / "schemas" / "edge_model.schema.json"
    return json.loads(f.read_text()) if f.is_file() else None


def schema_problem(x: Any, schema: dict, at: str = "") -> str | None:
    """The first place where ``x`` breaks ``schema`` (the JSON Schema keywords the sidecar schema uses: type,
    const, enum, required, properties, additionalProperties, items, minItems, minimum, exclusive bounds, pattern),
    as ``"field 'inputs[0].shape' is missing"``; None when it conforms."""
    import re

    name = at or "(top level)"
    types = [schema["type"]] if isinstance(schema.get("type"), str) else schema.get("type", list(_TYPES))
    if not any(isinstance(x, _TYPES[t]) and not (t in ("number", "integer") and isinstance(x, bool))
               or t == "integer" and isinstance(x, float) and x.is_integer() for t in types):
        return f"field '{name}' must be {' or '.join(types)}, got {json.dumps(x)[:40]}"
    if "const" in schema and x != schema["const"] or "enum" in schema and x not in schema["enum"]:
        want = schema.get("enum", [schema.get("const")])
        return f"field '{name}' must be one of {', '.join(map(json.dumps, want))}, got {json.dumps(x)[:40]}"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        for key, bad in (("minimum", x.__lt__), ("exclusiveMinimum", x.__le__), ("exclusiveMaximum", x.__ge__)):
            if key in schema and bad(schema[key]):
                return f"field '{name}' is {x}, out of range ({key} {schema[key]})"
    if isinstance(x, str) and "pattern" in schema and not re.search(schema["pattern"], x):
        return f"field '{name}' ({x[:40]!r}) does not match {schema['pattern']}"
    if isinstance(x, list):
        if len(x) < schema.get("minItems", 0):
            return f"field '{name}' needs at least {schema['minItems']} item(s)"
        for i, v in enumerate(x if "items" in schema else []):
            if problem := schema_problem(v, schema["items"], f"{at}[{i}]"):
                return problem
    if isinstance(x, dict):
        for k in schema.get("required", []):
            if k not in x:
                return f"field '{at + '.' if at else ''}{k}' is missing"
        for k, v in x.items():
            sub = schema.get("properties", {}).get(k, schema.get("additionalProperties"))
            if isinstance(sub, dict) and (problem := schema_problem(v, sub, f"{at + '.' if at else ''}{k}")):
                return problem
    return None


def check_session(session: Any, card: dict, path: Path) -> None:
    """The ONNX file's inputs and outputs are those its sidecar describes (not another run's model)."""
    ins = sorted(i.name for i in session.get_inputs())
    want = sorted(i["name"] for i in card.get("inputs") or [])
    outs = {o.name for o in session.get_outputs()}
    named = {v for t in card.get("targets") or [] for v in (t.get("outputs") or {}).values() if isinstance(v, str)}
    if ins != want or not named <= outs:
        raise CmkdError(f"{path}: the ONNX model (inputs {', '.join(ins)}) does not match its sidecar "
                        f"{sidecar_path(path).name} (inputs {', '.join(want)}); re-export with `cmkd export`")


def check_outputs(outs: dict[str, np.ndarray], src: str) -> None:
    """Refuse predictions that are not finite (inputs far outside the training range overflow the network):
    never written as if they were results."""
    for name, v in outs.items():
        bad = ~np.isfinite(np.asarray(v, dtype=np.float64).reshape(len(v), -1)).all(axis=1)
        if bad.any():
            raise CmkdError(f"{src}: the model's output '{name}' is not finite for {int(bad.sum())} sample(s) (first: "
                            f"{int(np.flatnonzero(bad)[0])}); inputs far outside the training range?")


class EdgeModel:
    """An exported model (ONNX + sidecar) run with ONNX Runtime.

    Args:
        onnx_path: the ``.onnx`` file; its sidecar is read from :func:`sidecar_path`.
        threads: intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(self, onnx_path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise CmkdError(f"{self.path} not found")
        self.card = read_card(sidecar_path(self.path))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise CmkdError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None
        check_session(self.session, self.card, self.path)

    @property
    def modalities(self) -> dict[str, dict]:
        """Input name -> its sidecar entry (kind, shape, dtype, ...)."""
        return {i["name"]: i for i in self.card["inputs"]}

    def inputs(self, arrays: dict[str, np.ndarray], src: str = "input"
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The ONNX feed and per-modality availability of ``arrays`` (see :func:`check_inputs`)."""
        return check_inputs(self.modalities, arrays, src)

    def run(self, feed: dict[str, np.ndarray], batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Raw outputs by name, run in chunks of ``batch_size`` samples."""
        names = [o.name for o in self.session.get_outputs()]
        n = len(next(iter(feed.values())))
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for s in range(0, n, batch_size):
            res = self.session.run(None, {k: np.ascontiguousarray(v[s:s + batch_size]) for k, v in feed.items()})
            for i, r in enumerate(res):
                parts[i].append(r)
        return {k: np.concatenate(p) for k, p in zip(names, parts)}

    def bands(self, feed: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray | None:
        """Availability band of each sample for the conformal quantiles (None when the model has no bands)."""
        av = self.card.get("availability") or {}
        if not av.get("edges"):
            return None
        kinds = {m: s["kind"] for m, s in self.modalities.items()}
        share = observed_share(feed, present, kinds, av.get("modalities") or list(feed))
        return np.digitize(share, np.asarray(av["edges"], dtype=float))

    def predict(self, arrays: dict[str, np.ndarray], src: str = "input") -> dict[str, Any]:
        """Predictions for every target, as ``cmkd predict`` writes them.

        Classification: ``label`` (the class ids of the training data), ``probability`` (of that label),
        ``probabilities`` (every class, in ``classes`` order), ``classes`` and, when named, ``class_name``.
        Regression: ``value`` (mean) and ``std`` (the Gaussian head's, raw units) and, when the model was
        calibrated, ``lower`` / ``upper`` split-conformal bounds and ``interval`` (what they are).
        """
        feed, present = self.inputs(arrays, src)
        outs = self.run(feed)
        check_outputs(outs, src)
        band = self.bands(feed, present)
        n = len(next(iter(feed.values())))
        result: dict[str, Any] = {"model": str(self.path), "n": n, "targets": {}}
        for t in self.card["targets"]:
            name, o = t["name"], t["outputs"]
            if t["kind"] == "classification":
                prob = outs[o["probabilities"]]
                ids = [c["id"] for c in t["classes"]]
                k = prob.argmax(axis=1)
                entry: dict[str, Any] = {"label": [ids[i] for i in k],
                                         "probability": prob.max(axis=1).round(5).tolist(),
                                         "probabilities": prob.round(5).tolist(), "classes": ids}
                if all(c.get("name") is not None for c in t["classes"]):
                    entry["class_name"] = [t["classes"][i]["name"] for i in k]
            else:
                value, std = outs[o["mean"]], outs[o["std"]]
                entry = {"value": value.tolist(), "std": std.tolist()}
                cal = (self.card.get("conformal") or {}).get(name)
                if cal:
                    mu, sd = value.reshape(n, -1).astype(float), std.reshape(n, -1).astype(float)
                    lo, hi = np.empty_like(mu), np.empty_like(mu)
                    for j, col in enumerate(cal["columns"]):
                        lo[:, j], hi[:, j] = conformal_interval(mu[:, j], sd[:, j], col, band)
                    entry.update({"lower": lo.reshape(value.shape).tolist(), "upper": hi.reshape(value.shape).tolist(),
                                  "interval": f"{round(100 * (1 - cal['alpha']))}% split-conformal"})
            result["targets"][name] = entry
        return result
