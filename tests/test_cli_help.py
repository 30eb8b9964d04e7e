"""`--help` of every command renders, with the docstrings' paragraphs reflowed to the terminal's width."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cmkd.cli import app, mount_recipe_commands

COMMANDS = [[], ["run"], ["list"], ["predict"], ["export"], ["evaluate"], ["adapt"], ["tune"], ["select"],
            ["data"], ["habitat"], ["habitat", "design"], ["habitat", "example"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cmkd")
def test_help_renders(command: list[str]) -> None:
    mount_recipe_commands(command)  # as main() does: a recipe's own commands once the command line names it
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


def test_help_reflows_docstring_lines() -> None:
    # the docstring breaks its lines after "OUT/student.pt,"; on a wide terminal the paragraph is one line
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    assert "OUT/student.pt, OUT/student.onnx" in out
    assert "torchrun --nproc_per_node=N -m cmkd.cli run" in out
