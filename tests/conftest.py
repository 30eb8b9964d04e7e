"""Shared test set-up: one torch thread per xdist worker, the ``slow`` / ``fake_metrics`` markers (registered in
pyproject.toml), and the metrics.json contract checked on every run a test makes.

Every ``metrics.json`` that appears under pytest's temporary folders (``tmp_path``, ``tmp_path_factory``: API runs,
CLI subprocess runs, module fixtures) is validated against the package's schema when the test that made it ends,
so a run that breaks the contract fails that test (an error at its teardown naming the file). Tests that write a
stand-in metrics.json on purpose (an "earlier run" of a few bytes) say so with ``@pytest.mark.fake_metrics``.
"""

import os
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import touched  # noqa: E402 - after the path above
from helpers import check_metrics  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist workers (one per core) share the machine: one torch thread each, and in the CLI subprocesses
    # they start
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

_seen: set[tuple[Path, int]] = set()  # (file, mtime) of the metrics.json already checked (or excused) here


@pytest.fixture(autouse=True)
def _metrics_follow_the_schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """After each test: every new metrics.json under this process's temporary folders follows the schema."""
    yield
    fake = request.node.get_closest_marker("fake_metrics") is not None
    bad = []
    for path in sorted(tmp_path_factory.getbasetemp().rglob("metrics.json")):
        try:
            key = (path, path.stat().st_mtime_ns)  # a file rewritten by a later run is checked again
        except OSError:  # removed meanwhile
            continue
        if key in _seen:
            continue
        _seen.add(key)
        if fake:
            continue
        try:
            check_metrics(path)
        except (jsonschema.ValidationError, ValueError) as e:  # ValueError: not JSON at all
            bad.append(f"{path}: {getattr(e, 'message', e)} (at {list(getattr(e, 'absolute_path', []))})")
    assert not bad, "metrics.json breaks cmkd/schemas/metrics.schema.json:\n" + "\n".join(bad)


# ---- the fast tier's reach: with CMKD_TOUCHED=<folder>, which modules' functions ran (tests/touched.py) ----

def pytest_configure(config: pytest.Config) -> None:
    folder = touched.enabled()
    if folder:
        if not hasattr(config, "workerinput"):  # the main process, before any worker starts: a clean folder
            for old in Path(folder).glob("*.txt"):
                old.unlink()
        touched.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    folder = touched.enabled()
    if not folder:
        return
    touched.save(folder, os.environ.get("PYTEST_XDIST_WORKER", "main"))
    if hasattr(session.config, "workerinput"):  # an xdist worker: the main process checks them all
        return
    missing = touched.untouched(folder)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"{touched.ENV}: no function ran in {len(missing)} module(s) of src/cmkd"
                            + (": " + ", ".join(missing) if missing else ""))
    if missing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
