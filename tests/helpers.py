"""The tests' tiny seeded SYNTHETIC datasets: they live in :mod:`cmkd.data.cases` (the benchmarks use them too).
And the metrics.json contract, the JSON Schema shipped in the package (``cmkd/schemas/metrics.schema.json``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema

from cmkd.data.cases import (  # noqa: F401 - re-exported for the tests
    KINDS,
    WORDS,
    make_arrays,
    make_config,
    make_sparse_case,
    sparse_case_config,
    write_case,
)

METRICS_SCHEMA: dict = json.loads(resources.files("cmkd").joinpath("schemas/metrics.schema.json").read_text())


def check_metrics(doc: dict | str | Path) -> dict:
    """Validate a run's metrics.json (a dict, or the file) against :data:`METRICS_SCHEMA`; returns the dict.

    Raises:
        jsonschema.ValidationError: naming where the document breaks the contract.
    """
    if not isinstance(doc, dict):
        doc = json.loads(Path(doc).read_text())
    jsonschema.validate(doc, METRICS_SCHEMA)
    return doc
