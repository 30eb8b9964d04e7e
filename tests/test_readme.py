"""The README's quickstart matches .ci/run, its bring-your-own-data example runs as written, and the docs' own
training-loop example runs (the edge-model client is run by tests/test_runtime.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_training_loop_example_runs() -> None:
    text = (ROOT / "docs" / "training-loop.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/training-loop.md has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "docs/training-loop.md", "exec"), scope)  # noqa: S102 - our own docs
    parts = scope["parts"]
    assert {"loss", "task", "kd", "feature", "relation"} <= set(parts)
    assert parts["loss"].item() > 0


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = 'pip install -q -c constraints.txt -e ".[test]" && pytest'
    assert cmd in readme and cmd in ci


def test_readme_quickstart_runs_the_minerals_recipe() -> None:
    quick = _section((ROOT / "README.md").read_text(), "Quickstart")
    assert "pip install -c constraints.txt -e . && cmkd run minerals --out runs/minerals" in quick


@pytest.mark.slow
def test_readme_own_data_example_runs(tmp_path: Path) -> None:
    """The npz writer and the YAML of "Bring your own data", run as written (a --quick run), then cmkd predict."""
    sec = _section((ROOT / "README.md").read_text(), "Bring your own data")
    code = re.search(r"```python\n(.*?)```", sec, re.S)
    yaml_text = re.search(r"```yaml\n(.*?)```", sec, re.S)
    assert code and yaml_text
    (tmp_path / "my.yaml").write_text(yaml_text.group(1))
    r = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    run = [sys.executable, "-m", "cmkd", "run", "my.yaml", "--out", "runs/mine", "--quick", "--quiet"]
    r = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "runs" / "mine" / "metrics.json").read_text())
    assert {"teacher", "student_baseline", "student"} <= set(m["models"])
    assert m["models"]["student"]["modalities"] == ["probe"]
    r = subprocess.run([sys.executable, "-m", "cmkd", "predict", "--model", "runs/mine", "--input", "mydata.npz",
                        "--output", "preds.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "preds.json").read_text())["n"] == 600
