"""Loader of the UCI Air Quality data (De Vito et al., 2008): hourly metal-oxide sensors vs reference analysers.

``AirQualityUCI.csv`` (comma-separated, ISO dates, ``-200`` = missing) from ``shared/data/FOLDER``. Rows with
any used column missing are dropped (6,941 of 9,357 hours); they stay in time order, which the chronological
split relies on.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError

FOLDER = "air_quality_uci_cheap_vs_reference"
FILE = "AirQualityUCI.csv"
SENSORS = ["PT08.S1(CO)", "PT08.S2(NMHC)", "PT08.S3(NOx)", "PT08.S4(NO2)", "PT08.S5(O3)", "T", "RH", "AH"]
REFERENCE = ["CO(GT)", "NOx(GT)", "C6H6(GT)"]
TARGET = "NO2(GT)"
MISSING = -200.0


def default_folder() -> Path:
    """``$CMKD_DATA`` if set, else ``shared/data/air_quality_uci_cheap_vs_reference`` beside the project."""
    from cmkd.io import shared_data_folder

    return shared_data_folder(FOLDER)


def read_table(folder: str | Path | None = None) -> dict[str, np.ndarray]:
    """The complete hours, in time order.

    Args:
        folder: the data folder (default :func:`default_folder`).

    Returns:
        ``sensors`` (N, 8) float32 (five metal-oxide sensors, T, RH, AH), ``reference`` (N, 3) float32
        (CO, NOx, C6H6 reference analysers), ``no2`` (N,) float32 in µg/m3, ``time`` (N,) ISO strings.

    Raises:
        CmkdError: the file is missing or lacks a column.
    """
    folder = Path(folder) if folder else default_folder()
    path = folder / FILE
    if not path.is_file():
        raise CmkdError(f"air quality data not found: looked for {path}; set CMKD_DATA or --set data.path=FOLDER")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    cols = SENSORS + REFERENCE + [TARGET]
    missing = [c for c in cols + ["Date", "Time"] if c not in header]
    if missing:
        raise CmkdError(f"{path}: no column {missing[0]!r}")
    idx = [header.index(c) for c in cols]
    try:
        vals = np.array([[float(r[i]) if r[i] != "" else MISSING for i in idx] for r in body], dtype=np.float64)
    except (ValueError, IndexError) as e:
        raise CmkdError(f"{path}: unreadable value ({e})") from None
    keep = ~(np.isclose(vals, MISSING) | np.isnan(vals)).any(axis=1)
    vals = vals[keep].astype(np.float32)
    di, ti = header.index("Date"), header.index("Time")
    time = np.array([f"{r[di]}T{r[ti]:0>8}" for r, k in zip(body, keep, strict=True) if k])  # 1:00:00 -> 01:00:00
    order = np.argsort(time, kind="stable")  # the file is in time order already; the split relies on it
    vals, time = vals[order], time[order]
    ns = len(SENSORS)
    return {"sensors": vals[:, :ns], "reference": vals[:, ns:ns + len(REFERENCE)], "no2": vals[:, -1], "time": time}


def chronological_split(n: int, val: float = 0.1, test: float = 0.3) -> np.ndarray:
    """(n,) split ids in time order: the first ``1 - val - test`` train (0), then validation (1), then test (2)."""
    n_tr = int(round(n * (1 - val - test)))
    n_va = int(round(n * val))
    split = np.full(n, 2, dtype=np.int64)
    split[:n_tr] = 0
    split[n_tr:n_tr + n_va] = 1
    return split
