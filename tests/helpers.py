"""The tests' tiny seeded SYNTHETIC datasets: they live in :mod:`cmkd.data.cases` (the benchmarks use them too).
And the metrics.json contract, the JSON Schema shipped in the package (``cmkd/schemas/metrics.schema.json``)."""

from __future__ import annotations

import json
import sys
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


def cli_main(argv: list, capsys) -> tuple[int, str]:  # noqa: ANN001 - pytest's capsys fixture
    """``cmkd.cli.main`` in this process: (exit code, stderr); earlier captured output is dropped first."""
    from cmkd.cli import main

    old = sys.argv
    sys.argv = ["cmkd", *map(str, argv)]
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err
