"""Training logs that common tools read: one CSV per model, one row per epoch (``OUT/logs/<model>.csv``), and
TensorBoard event files (``OUT/logs/tensorboard/<model>/events.out.tfevents.*``).

Columns: ``epoch``, ``lr``, ``train_loss`` and every named loss part (``train_task``, ``train_kd``, ...) averaged
over the epoch's batches, ``val_loss`` (the task loss on the validation split) and ``val_metric`` (the primary
metric on the validation split, the early-stopping criterion). The same rows are in ``histories.json``; a CSV
opens in a spreadsheet, pandas or any plotting tool.

Third-party warnings (scikit-learn, torch, ...) raised during a run are not printed: :class:`WarningLog` records
them and :func:`write_warnings_log` writes them, grouped, to ``OUT/logs/warnings.log`` and counts them in
metrics.json (``"warnings": {"count": N, "log": "logs/warnings.log", ...}``). What the user should act on becomes
one plain line of cmkd's own (:func:`note`, e.g. :func:`note_few_samples`), printed unless the run is quiet and kept
in the same log.

TensorBoard rather than MLflow: its event file is a plain, documented record format (TFRecord framing of
``Event`` protocol buffers with scalar summaries) that ``tensorboard --logdir OUT/logs/tensorboard`` and other
tools read with no server and no store to set up, and that cmkd writes here in a few lines with no dependency
(:func:`write_tensorboard`); an MLflow file store would need mlflow's layout and, to read it, mlflow itself.
"""

from __future__ import annotations

import csv
import io
import struct
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from cmkd.io import atomic_write_bytes, atomic_write_text


def history_csv(rows: list[dict]) -> str:
    """The rows (one dict per epoch) as CSV text; columns in first-seen order, missing values empty."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: v for k, v in r.items() if not isinstance(v, (dict, list))})
    return buf.getvalue()


def write_history_csvs(folder: str | Path, histories: dict[str, list[dict]]) -> list[Path]:
    """Write ``<folder>/<model>.csv`` for every model's history (atomically); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in histories.items():
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            continue
        paths.append(atomic_write_text(folder / f"{name}.csv", history_csv(rows)))
    return paths


# ---- TensorBoard event files (TFRecord framing, Event protocol buffers written by hand) ----

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint((num << 3) | wire) + payload


def _bytes_field(num: int, data: bytes) -> bytes:
    return _field(num, 2, _varint(len(data)) + data)


def event_bytes(wall_time: float, step: int = 0, scalars: dict[str, float] | None = None,
                file_version: str | None = None) -> bytes:
    """One serialised ``tensorflow.Event``: wall_time (1, double), step (2, int64), file_version (3, string) or
    summary (5): ``Summary.value`` (1) entries with tag (1) and simple_value (2, float)."""
    out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", v)))
                          for tag, v in scalars.items())
        out += _bytes_field(5, values)
    return out


def record(data: bytes) -> bytes:
    """TFRecord framing: length, masked CRC of the length, data, masked CRC of the data."""
    n = struct.pack("<Q", len(data))
    return n + struct.pack("<I", _masked_crc(n)) + data + struct.pack("<I", _masked_crc(data))


def read_records(path: str | Path) -> list[bytes]:
    """The records of a TFRecord file, checksums verified (for tests and for reading the logs back)."""
    raw, out, i = Path(path).read_bytes(), [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<Q", raw, i)
        if struct.unpack_from("<I", raw, i + 8)[0] != _masked_crc(raw[i:i + 8]):
            raise ValueError(f"{path}: bad length checksum at byte {i}")
        data = raw[i + 12:i + 12 + n]
        if struct.unpack_from("<I", raw, i + 12 + n)[0] != _masked_crc(data):
            raise ValueError(f"{path}: bad data checksum at byte {i}")
        out.append(data)
        i += 16 + n
    return out


def write_tensorboard(folder: str | Path, histories: dict[str, list[dict]]) -> list[Path]:
    """``<folder>/<model>/events.out.tfevents.<time>.cmkd``: every numeric column of each model's history as a
    scalar per epoch (tags ``train/loss``, ``train/kd``, ``val/loss``, ``val/metric``, ``lr``); returns the paths.
    Earlier event files of the same model are replaced, so a folder holds one run."""
    folder = Path(folder)
    paths = []
    now = time.time()
    for name, rows in histories.items():
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            continue
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("events.out.tfevents.*"):
            old.unlink()
        body = [record(event_bytes(now, 0, file_version="brain.Event:2"))]
        for i, r in enumerate(rows):
            step = int(r.get("epoch", i + 1))
            scalars = {_tag(k): float(v) for k, v in r.items()
                       if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
            body.append(record(event_bytes(now, step, scalars)))
        paths.append(atomic_write_bytes(d / f"events.out.tfevents.{int(now)}.cmkd", b"".join(body)))
    return paths


def _tag(column: str) -> str:
    """History column -> TensorBoard tag: ``train_kd`` -> ``train/kd``, ``val_metric`` -> ``val/metric``."""
    for prefix in ("train_", "val_"):
        if column.startswith(prefix):
            return prefix[:-1] + "/" + column[len(prefix):]
    return column


# ---- warnings: recorded during a run, written to OUT/logs/warnings.log, counted in metrics.json ----

WARNINGS_LOG = "logs/warnings.log"  # relative to the output folder
FEW_PER_CLASS = 5  # fewer labelled training samples than this in a class: cmkd says so (note_few_samples)
_ACTIVE: list[WarningLog] = []  # the logs open now, innermost last (warnings are process-wide state too)


class WarningLog:
    """Records every warning shown while it is open instead of printing it (a context manager).

    The filters in force still decide what is shown (``-W`` and ``PYTHONWARNINGS`` apply; what they ignore is not
    recorded), and a warning raised in another thread (scikit-learn's forests fit in threads) is recorded too: the
    warnings machinery is process-wide. :func:`note` adds cmkd's own lines to the innermost open log.
    """

    def __init__(self) -> None:
        self.records: list[warnings.WarningMessage] = []
        self.notes: list[str] = []
        self._catch: warnings.catch_warnings | None = None

    def __enter__(self) -> WarningLog:
        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._catch is not None:
            self._catch.__exit__(*exc)
            self._catch = None


def active_log() -> WarningLog | None:
    """The innermost open :class:`WarningLog` (None outside a run)."""
    return _ACTIVE[-1] if _ACTIVE else None


def note(message: str, quiet: bool = False) -> None:
    """One line of cmkd's own about something the user should act on: printed to stderr as ``warning: ...``
    unless ``quiet``, and kept in the open :class:`WarningLog` (so in ``logs/warnings.log`` and metrics.json)."""
    log = active_log()
    if log is not None:
        log.notes.append(message)
    if not quiet:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def few_samples_message(data: object, train: np.ndarray, k: int = FEW_PER_CLASS) -> list[str]:
    """For each classification target with classes of fewer than ``k`` labelled training samples, one line
    naming how many and which (the smallest first), e.g. ``27 of 40 classes of y have fewer than 5 labelled
    training samples (a: 1, b: 2, ... and 24 more): ...``. ``data`` is a :class:`cmkd.data.arrays.MultimodalData`,
    ``train`` the training sample indices."""
    out = []
    for t, kind in data.target_kinds.items():  # type: ignore[attr-defined]
        if kind != "classification":
            continue
        names = data.classes[t]  # type: ignore[attr-defined]
        y = np.asarray(data.targets[t])[train]  # type: ignore[attr-defined]
        counts = np.bincount(y[y >= 0], minlength=len(names))
        few = [int(c) for c in np.argsort(counts, kind="stable") if counts[c] < k]
        if not few:
            continue
        shown = ", ".join(f"{names[c]}: {counts[c]}" for c in few[:8]) + (
            f", ... and {len(few) - 8} more" if len(few) > 8 else "")
        out.append(f"{len(few)} of {len(names)} classes of {t} have fewer than {k} labelled training samples "
                   f"({shown}); figures for them are unreliable: add samples of them or merge classes")
    return out


def note_few_samples(data: object, train: np.ndarray, quiet: bool = False) -> None:
    """:func:`note` each line of :func:`few_samples_message`."""
    for line in few_samples_message(data, train):
        note(line, quiet)


def write_warnings_log(out: str | Path, log: WarningLog | None = None) -> dict:
    """Write ``<out>/logs/warnings.log`` (atomically): cmkd's notes, then each distinct warning once with how
    often it was raised, most frequent first. ``log`` defaults to the innermost open one.

    Returns:
        metrics.json's ``warnings`` section: ``count`` (warnings raised, repeats included), ``distinct``,
        ``notes`` (cmkd's own lines) and ``log`` (the file, relative to the output folder).
    """
    log = log if log is not None else active_log()
    records = list(log.records) if log is not None else []
    notes = list(log.notes) if log is not None else []
    groups = Counter((w.category.__name__, str(w.message), str(w.filename), int(w.lineno)) for w in records)
    lines = [f"# {len(records)} warning(s) raised during the run ({len(groups)} distinct), {len(notes)} note(s)"]
    lines += [f"note: {n}" for n in notes]
    lines += [f"[{n}x] {file}:{line}: {cat}: {msg}" for (cat, msg, file, line), n in groups.most_common()]
    path = Path(out) / WARNINGS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return {"count": len(records), "distinct": len(groups), "notes": notes, "log": WARNINGS_LOG}
