"""The README's Python example runs as written, and its quickstart matches .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "EdgeModel" not in b]
    assert blocks, "README has no python example"  # (the edge-model client is run by tests/test_runtime.py)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102 - our own README
    parts = scope["parts"]
    assert {"loss", "task", "kd", "feature", "relation"} <= set(parts)
    assert parts["loss"].item() > 0


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = 'pip install -q -c constraints.txt -e ".[test]" && pytest'
    assert cmd in readme and cmd in ci
