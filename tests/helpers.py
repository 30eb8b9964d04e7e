"""The tests' tiny seeded SYNTHETIC datasets: they live in :mod:`cmkd.data.cases` (the benchmarks use them too)."""

from cmkd.data.cases import (  # noqa: F401 - re-exported for the tests
    KINDS,
    WORDS,
    make_arrays,
    make_config,
    make_sparse_case,
    sparse_case_config,
    write_case,
)
