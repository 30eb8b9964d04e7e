"""Atomic file writes, strict JSON and safe checkpoint loading: the bottom of the package (of cmkd it imports
only ``errors``; torch only inside the checkpoint functions, numpy not at all), so every layer, recipes included,
writes files the same way without loading torch to write a text file, and the CLI starts fast.

Every file cmkd writes goes through :func:`atomic_write` (text: :func:`atomic_write_text`, bytes:
:func:`atomic_write_bytes`, checkpoints: :func:`atomic_save`; any other writer, such as ``np.savez``,
``onnx.save`` or ``Figure.savefig``, as its callback): one temporary-file scheme and one one-line error for a
full disk.

Strict JSON: NaN and infinities are written as ``null`` (``JSON.parse`` and other strict readers reject a bare
``NaN``), numpy scalars and arrays as plain values."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmkd.errors import CmkdError


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically through ``write``: it is called with a hidden temporary file beside ``path``
    (same folder, so the final rename is atomic; same suffix, for writers that pick the format from it, such as
    ``numpy.savez`` or ``Figure.savefig``), which is then renamed over ``path``. Never a half-written file; an
    earlier ``path`` stays intact when writing fails.

    The temporary file is ``.<name>.<8 random characters>.tmp<suffix>`` (``tempfile.mkstemp``); a run folder's
    cleaning (:mod:`cmkd.pipeline.rundir`) recognises the ones a killed process left. A failure to write (a full
    disk, a quota, a read-only folder) is the one-line :func:`write_error`.

    Args:
        path: the file to write.
        write: ``write(tmp)`` writes the content to ``tmp`` (e.g. ``lambda p: torch.save(obj, p)``).

    Returns:
        ``path``.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        raise CmkdError(f"cannot write {path} ({e.strerror or e})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a quota: name the folder (the earlier file, if any, is intact)
        raise write_error(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_error(path: Path, e: BaseException) -> CmkdError:
    """The one-line error of a failed write: the file, its folder and the reason (e.g. no space left)."""
    why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0][:120]
    return CmkdError(f"cannot write {path.name} in folder {path.parent} ({why}); free space there or choose "
                     "another --out")


def strict(obj: Any) -> Any:
    """``obj`` as plain JSON data: NaN / +-inf -> None, numpy scalars and arrays -> Python values, tuples ->
    lists, dict keys -> str (recursively)."""
    np = sys.modules.get("numpy")  # no numpy import for the CLI's sake: without it loaded, nothing is numpy
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return strict(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(obj)``; never writes NaN or Infinity (``allow_nan=False``)."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: str | Path, obj: object, indent: int | None = 1) -> None:
    """Atomically write ``obj`` as strict JSON (see :func:`dumps`)."""
    atomic_write_text(path, dumps(obj, indent=indent))


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`: never a half-written checkpoint."""
    import torch

    def save(tmp: Path) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) as a RuntimeError
            if "writ" not in str(e).lower():
                raise
            raise OSError((str(e).splitlines() or ["write failed"])[0][:120]) from None

    return atomic_write(path, save)


def safe_load(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a corrupt or malicious file is a CmkdError."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise CmkdError(f"checkpoint not found: {p}")
    try:
        with warnings.catch_warnings():  # e.g. "unexpected pickle protocol": the error below says enough
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused an object: never run it
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it asks to import {m.group(1)}" if m else "it holds more than tensors and plain data"
        raise CmkdError(f"{p}: not a valid cmkd checkpoint (refused to load: {what})") from None
    except Exception as e:  # noqa: BLE001 - any other failure to read is a corrupt or truncated file
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise CmkdError(f"{p}: not a valid cmkd checkpoint (corrupt or truncated: {first})") from None
    if not isinstance(obj, dict):
        raise CmkdError(f"{p}: not a valid cmkd checkpoint (unexpected content)")
    return obj


def shared_data_folder(name: str) -> Path:
    """A real dataset's folder: ``$CMKD_DATA`` if set (a folder holding ``name``, or that folder itself), else
    ``shared/data/name`` beside the project (searched from the working directory and this package upwards)."""
    env = os.environ.get("CMKD_DATA")
    if env:
        p = Path(env)
        return p / name if (p / name).is_dir() else p
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        cand = base.parent / "shared" / "data" / name
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data" / name


def check_out_file(path: Path, overwrite: bool, option: str = "--output") -> None:
    """A file the user names for a command to write (``--output preds.json``, ``--out x.npz``), checked before any
    work: its folder must exist, a folder is refused, and an existing file (or link) is replaced (atomically) only
    with ``--overwrite``: cmkd cannot tell its own earlier output from a file of the user's of the same name."""
    try:
        if path.is_dir():
            raise CmkdError(f"{option} {path} is a folder; name the file to write")
        if os.path.lexists(path) and not overwrite:
            raise CmkdError(f"{option} {path} already exists; pass --overwrite to replace it, or name another file")
        if not path.parent.is_dir():
            raise CmkdError(f"{option} {path}: folder {path.parent} does not exist")
    except OSError as e:  # a symbolic link loop, a name too long
        raise CmkdError(f"{option} {path}: {e.strerror or e}") from None


def model_dir(model: Path) -> Path:
    """``model`` when it is a folder (the ``--out`` of ``cmkd run``), else a one-line :class:`CmkdError`."""
    if not model.is_dir():
        raise CmkdError(f"model folder not found: {model} (the --out folder of `cmkd run`)")
    return model
