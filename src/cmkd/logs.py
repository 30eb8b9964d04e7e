"""Training logs that common tools read: one CSV per model, one row per epoch (``OUT/logs/<model>.csv``).

Columns: ``epoch``, ``lr``, ``train_loss`` and every named loss part (``train_task``, ``train_kd``, ...) averaged
over the epoch's batches, and ``val_metric`` (the primary metric on the validation split, the early-stopping
criterion). The same rows are in ``histories.json``; a CSV opens in a spreadsheet, pandas or any plotting tool.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path


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
        path = folder / f"{name}.csv"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(history_csv(rows))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths
