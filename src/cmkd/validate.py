"""Checks of what users hand cmkd, made where the inputs enter (the YAML loader, the config validator, the data
loaders, the CLI's own options), and the limits a run accepts. Each check raises a one-line :class:`CmkdError`
naming the key, file or value; the CLI prints it as ``error: ...`` and exits with code 2.

Limits (see the README's bring-your-own-data section):

* :data:`MAX_ARRAY_BYTES`: the largest array (npz member or shard key) a run reads, checked on the ``.npy``
  header before anything is allocated; ``CMKD_MAX_ARRAY_BYTES`` in the environment overrides it.
* ``data.max_classes`` (default :data:`MAX_CLASSES`): classes per classification target.
* :data:`MAX_TARGET_ABS`: the largest magnitude of a regression target (float32 arithmetic stays finite).
* :data:`MAX_YAML_BYTES`, :data:`MAX_YAML_NODES`, :data:`MAX_YAML_EXPANDED_BYTES` and :data:`MAX_YAML_DEPTH`: an
  experiment YAML's size, the number of values and characters it expands to (aliases counted each time they are
  used) and its nesting, so an alias bomb is refused in a second and the resolved config is cheap to write.
* ``seed`` in ``[0, 2**32)``; modality and target names as in :data:`NAME_RE`.

This module imports only numpy, yaml and cmkd's ``errors`` / ``runtime``, so every layer may call it.
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cmkd.errors import CmkdError
from cmkd.runtime import MAX_ARRAY_BYTES

__all__ = ["MAX_ARRAY_BYTES", "MAX_CLASSES", "MAX_TARGET_ABS", "MAX_YAML_BYTES", "MAX_YAML_NODES", "NAME_RE",
           "check_adapt_options", "check_class_count", "check_class_ids", "check_finite_option", "check_name",
           "check_node_count", "check_regular_file", "check_target_array", "check_target_values", "safe_load_yaml",
           "stored_config", "yaml_text", "yaml_value"]

MAX_CLASSES = 1000  # default of data.max_classes
MAX_TARGET_ABS = 1e15  # |regression target|: squares and sums of such values stay finite in float32
MAX_YAML_BYTES = 1 << 20  # 1 MiB
MAX_YAML_NODES = 100_000  # values (mappings, lists, scalars) of a loaded config, aliases expanded
MAX_YAML_EXPANDED_BYTES = 1 << 20  # text of its keys and values, aliases expanded (written out in every checkpoint)
MAX_YAML_DEPTH = 64  # levels of nesting
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # modality / target names: npz keys, layer and ONNX names


def check_regular_file(path: str | os.PathLike, what: str = "data file") -> Path:
    """``path`` when it is a regular file (not a FIFO, device or folder, which could block or never end)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CmkdError(f"{what} not found: {p}") from None
    except OSError as e:  # a symbolic link loop, a name too long, no permission
        raise CmkdError(f"{what} {p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CmkdError(f"{p}: not a regular file (a pipe, device or folder); give a {what} on disk")
    return p


def check_name(name: Any, where: str) -> None:
    """A modality or target name: non-empty letters, digits, ``_`` and ``-`` (it becomes an npz key, a layer name
    and an ONNX input/output name; ``.`` and ``/`` would break those)."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith("__present"):
        raise CmkdError(f"{where}: name {name!r} is not valid; use letters, digits, '_' and '-' "
                        "(not empty, no '.', '/' or spaces)")


# ---- YAML ----

class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:  # an unhashable key: the base constructor reports it
            break
        if dup:
            raise CmkdError(f"duplicated key '{key}' (line {key_node.start_mark.line + 1}; first on line "
                            f"{seen[key] + 1}); give each key once")
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _text_size(x: Any) -> int:
    """About how many characters ``x`` takes when written out (a number's digits without converting it)."""
    if isinstance(x, (str, bytes)):
        return len(x)
    if isinstance(x, int):
        return x.bit_length() * 3 // 10 + 2
    return 8


def check_node_count(obj: Any, source: str, limit: int = MAX_YAML_NODES, byte_limit: int = MAX_YAML_EXPANDED_BYTES,
                     depth_limit: int = MAX_YAML_DEPTH) -> None:
    """Refuse a config whose values, aliases expanded, number more than ``limit``, whose text, aliases expanded,
    exceeds ``byte_limit`` characters, or that nests deeper than ``depth_limit`` (stops at the first limit passed,
    so it is quick whatever the expansion; a config that passes is cheap to write out again)."""
    count, size, stack = 0, 0, [(obj, 0)]
    while stack:
        x, depth = stack.pop()
        count += 1
        if count > limit:
            raise CmkdError(f"{source}: the config expands to more than {limit} values (YAML aliases?); "
                            "write it out plainly")
        if depth > depth_limit:
            raise CmkdError(f"{source}: the config nests deeper than {depth_limit} levels; a config is a few "
                            "levels of keys")
        if isinstance(x, dict):
            stack.extend((k, depth + 1) for k in x)
            stack.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend((v, depth + 1) for v in x)
        else:
            size += _text_size(x)
            if size > byte_limit:
                raise CmkdError(f"{source}: the config expands to more than {byte_limit} bytes of text (YAML "
                                "aliases of long values?); write it out plainly and put data in the .npz")


def _parse(text: str, source: str) -> Any:
    """YAML text with safe constructors and no duplicated key, its expansion bounded (:func:`check_node_count`).
    A syntax error is raised as ``yaml.YAMLError``; every other failure of the parser (a number past Python's
    digit limit, nesting past the recursion limit, ...) as a one-line :class:`CmkdError`."""
    if len(text) > MAX_YAML_BYTES:
        raise CmkdError(f"{source}: {len(text)} characters; an experiment YAML may hold at most {MAX_YAML_BYTES} "
                        "(put data in the .npz)")
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except CmkdError as e:
        raise CmkdError(f"{source}: {e}") from None
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise CmkdError(f"{source}: not valid YAML (nested too deeply); a config is a few levels of keys") from None
    except (ValueError, TypeError, OverflowError, MemoryError, ArithmeticError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        if "digits" in first:  # Python's limit on int() of long digit strings
            first = f"a number of more than {sys.get_int_max_str_digits()} digits"
        raise CmkdError(f"{source}: not valid YAML ({first})") from None
    check_node_count(raw, source)
    return raw


def _syntax_error(source: str, e: yaml.YAMLError) -> CmkdError:
    first = (str(e).splitlines() or [type(e).__name__])[0][:160]
    return CmkdError(f"{source}: not valid YAML ({first})")


def yaml_text(text: str, source: str) -> Any:
    """Parse YAML text through the one door (:func:`_parse`); every failure is a one-line :class:`CmkdError`."""
    try:
        return _parse(text, source)
    except yaml.YAMLError as e:
        raise _syntax_error(source, e) from None


def yaml_value(value: str, source: str) -> Any:
    """A ``--set KEY=VALUE`` value parsed as YAML through the same door; text that is not YAML stays a string
    (``--set name=a: b``); an empty value is ``""``."""
    if not value.strip():
        return ""
    try:
        return _parse(value, source)
    except yaml.YAMLError:
        return value


def safe_load_yaml(path: Path, what: str = "config file") -> Any:
    """Load a YAML file through the one door (:func:`yaml_text`): at most :data:`MAX_YAML_BYTES`, no duplicated
    key, bounded expansion; any failure to read or parse it is a one-line :class:`CmkdError` (naming ``what``
    when the file is missing)."""
    p = check_regular_file(path, what)
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise CmkdError(f"{p}: {size} bytes; an experiment YAML may hold at most {MAX_YAML_BYTES} (put data in "
                        "the .npz)")
    try:
        text = p.read_text()
    except UnicodeDecodeError as e:
        raise CmkdError(f"{p}: not valid YAML (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CmkdError(f"{p}: cannot read it ({e.strerror or e})") from None
    return yaml_text(text, str(p))


def stored_config(meta: Any, source: str) -> dict[str, Any]:
    """The experiment config a checkpoint or sidecar stores (``meta["config"]``, YAML text) through the same door
    (:func:`yaml_text`): a mapping whose ``data`` section, when present, is a mapping; ``{}`` when none is stored.
    Corrupt, oversized or hostile text is a one-line :class:`CmkdError` naming ``source``."""
    text = meta.get("config") if isinstance(meta, dict) else None
    if text is None or text == "":
        return {}
    where = f"{source} (its stored config)"
    if not isinstance(text, str):
        raise CmkdError(f"{where}: not YAML text but {type(text).__name__}; not a model cmkd wrote")
    raw = yaml_text(text, where)
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not isinstance(raw.get("data") or {}, dict):
        raise CmkdError(f"{where}: not a mapping of settings with a 'data' section; not a model cmkd wrote")
    return raw


# ---- data values ----

def check_target_values(y: np.ndarray, name: str, src: str) -> None:
    """A regression target: finite where given (NaN = unlabelled) and at most :data:`MAX_TARGET_ABS` in size."""
    with np.errstate(all="ignore"):
        a = np.asarray(y, dtype=np.float64)
        bad = np.isinf(a) | (np.abs(np.nan_to_num(a)) > MAX_TARGET_ABS)
    if bad.any():
        i = np.argwhere(bad)[0]
        raise CmkdError(f"{src}: regression target '{name}' holds {a[tuple(i)]:g} (sample {int(i[0])}); values must "
                        f"be finite and at most {MAX_TARGET_ABS:g} in size (NaN marks a missing value; rescale "
                        "large targets)")


def check_class_ids(y: np.ndarray, name: str, src: str) -> None:
    """Class ids: integers that fit int64 (uint64 ids at or above 2**63 would wrap negative), or floats that are NaN
    (unlabelled) or whole numbers that fit int64 (not inf)."""
    if y.dtype.kind == "u" and y.dtype.itemsize >= 8 and y.size and int(y.max()) >= 2**63:
        i = int(np.argmax(y >= np.uint64(2**63)))
        raise CmkdError(f"{src}: classification target '{name}' holds {int(y[i])} (sample {i}); class ids must be "
                        "below 2**63 (number the classes 0, 1, 2, ...)")
    if y.dtype.kind != "f":
        return
    lab = ~np.isnan(y)
    bad = lab & ~(np.isfinite(y) & (np.abs(np.where(lab, y, 0)) < 2.0**53))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CmkdError(f"{src}: classification target '{name}' holds {float(y[i])!r} (sample {i}); class ids must be "
                        "whole numbers (NaN or -1 marks an unlabelled sample)")


def check_target_array(y: np.ndarray, name: str, kind: str, src: str) -> None:
    """A target given to a saved model (``cmkd evaluate`` / ``cmkd adapt``): numeric, (N,) class ids or (N,) /
    (N, K) regression values, finite where given."""
    if y.dtype.kind not in "fiub" or (y.ndim != 1 if kind == "classification" else y.ndim not in (1, 2)):
        need = "(N,) class ids" if kind == "classification" else "(N,) or (N, K) numbers"
        raise CmkdError(f"{src}: {kind} target '{name}' must be {need}, got {y.dtype} {y.shape}")
    if kind == "classification":
        check_class_ids(y, name, src)
    else:
        check_target_values(y, name, src)


def check_class_count(n_classes: int, name: str, src: str, limit: int) -> None:
    """At most ``limit`` (``data.max_classes``) classes per classification target."""
    if n_classes > limit:
        raise CmkdError(f"{src}: classification target '{name}' has {n_classes} classes; a run accepts at most "
                        f"{limit} (set data.max_classes to allow more)")


def check_finite_option(option: str, value: float, low: float | None = None, high: float | None = None,
                        low_inclusive: bool = True) -> None:
    """A numeric command-line option: finite and within ``[low, high]`` (``(low, high]`` without
    ``low_inclusive``)."""
    ok = math.isfinite(value) and (high is None or value <= high)
    if low is not None:
        ok = ok and (value >= low if low_inclusive else value > low)
    if not ok:
        rng = f"{'>=' if low_inclusive else '>'} {low:g}" if low is not None else "finite"
        raise CmkdError(f"{option} {value!r}: must be a finite number {rng}"
                        + (f" and at most {high:g}" if high is not None else ""))


def check_adapt_options(*, shots: int, ewc: float, epochs: int, lr: float, pseudo: int) -> None:
    """The numeric options of ``cmkd adapt``, before the model is loaded."""
    check_finite_option("--lr", lr, 0.0, 10.0, low_inclusive=False)
    check_finite_option("--ewc", ewc, 0.0)
    for opt, v in (("--shots", shots), ("--epochs", epochs)):
        check_finite_option(opt, v, 1)
    check_finite_option("--pseudo", pseudo, 0)
