"""Loader of the UCI Air Quality data (De Vito et al., 2008): hourly metal-oxide sensors vs reference analysers.

``AirQualityUCI.csv`` (comma-separated, ISO dates, ``-200`` = missing) from ``shared/data/FOLDER``, read through
the generic table reader (:mod:`cmkd.data.sources`, as ``examples/airquality_sources.yaml`` declares it). Rows with
any used column missing are dropped (6,941 of 9,357 hours); they stay in time order, which the chronological
split relies on.
"""

from __future__ import annotations

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


def sources(folder: Path) -> dict:
    """The ``data.sources`` of the UCI file in ``folder`` (what ``examples/airquality_sources.yaml`` declares): one
    table, ``Date`` + ``Time`` as its time, ``-200`` as missing, the sensor, reference and NO2 columns, every used
    value required."""
    return {"tables": {"uci": {"path": str(folder / FILE), "time": ["Date", "Time"],
                               "time_format": "%Y-%m-%d %H:%M:%S", "missing": [MISSING]}},
            "modalities": {"sensors": {"table": "uci", "columns": SENSORS},
                           "reference": {"table": "uci", "columns": REFERENCE},
                           "no2": {"table": "uci", "columns": [TARGET]}},
            "require": ["sensors", "reference", "no2"]}


def read_table(folder: str | Path | None = None) -> dict[str, np.ndarray]:
    """The complete hours, in time order, read through the generic table reader
    (:func:`cmkd.data.sources.build_inputs`).

    Args:
        folder: the data folder (default :func:`default_folder`).

    Returns:
        ``sensors`` (N, 8) float32 (five metal-oxide sensors, T, RH, AH), ``reference`` (N, 3) float32
        (CO, NOx, C6H6 reference analysers), ``no2`` (N,) float32 in µg/m3, ``time`` (N,) ISO strings.

    Raises:
        CmkdError: the file is missing, lacks a column or holds a value that is not a number.
    """
    from cmkd.data.sources import build_inputs

    folder = Path(folder) if folder else default_folder()
    path = folder / FILE
    if not path.is_file():
        raise CmkdError(f"air quality data not found: looked for {path}; set CMKD_DATA or --set data.path=FOLDER")
    a = build_inputs(sources(folder), ["sensors", "reference", "no2"], folder, "recipe airquality").arrays
    return {"sensors": a["sensors"], "reference": a["reference"], "no2": a["no2"][:, 0], "time": a["time"]}


def chronological_split(n: int, val: float = 0.1, test: float = 0.3) -> np.ndarray:
    """(n,) split ids in time order: the first ``1 - val - test`` train (0), then validation (1), then test (2)
    (the generic :func:`cmkd.data.tables.time_split` of ``n`` samples in order, no gap)."""
    from cmkd.data.tables import time_split

    return time_split(np.arange(n), val, test, 0)
