"""Whose folder is this: the marker that makes a folder a cmkd command's output folder, and the recognition of a
folder written by a cmkd version before the marker (:mod:`cmkd.pipeline.rundir` applies both)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["MARKER", "MARKER_TEXT", "marker_command", "marker_text", "older_cmkd"]

MARKER = ".cmkd-run"
MARKER_TEXT = "a cmkd run folder: `cmkd run --overwrite` may replace everything in it\n"
# hidden temporary files of the atomic writers (``.name.tmp123``, ``.name.tmp.npz``, mkstemp's ``.name.abc123_x``)
_TEMP = re.compile(r"^\..+\.(tmp\d*(\.\w+)?|[a-z0-9_]{8})$|^\.write-test-\d+$")
# what cmkd versions before the marker wrote, per command: the files that make such a folder (all of them), and the
# pattern every file in it must match (a path relative to the folder); a folder holding anything else is the user's
_OLD_RUN_FILES = (r"(metrics|histories|closed_loop|recommendations|coastal_tides|habitat|survey|sorting|policy)\.json"
                  r"|config\.yaml|report\.html|[\w.-]+\.(pt|onnx)"
                  r"|logs/[\w.-]+\.csv|logs/tensorboard/[\w.-]+/events\.out\.tfevents\.[\w.-]+"
                  r"|\.ckpt/([\w.-]+\.pt|config\.yaml)|adapt/(student_adapted\.pt|adapt\.json)")
_OLDER: dict[str, tuple[tuple[str, ...], re.Pattern]] = {
    "run": (("metrics.json", "config.yaml"), re.compile(rf"^(\.staging-\w+/)?({_OLD_RUN_FILES})$")),
    "tune": (("trials.json", "best.yaml"), re.compile(r"^(trials\.json|best\.yaml)$")),
    "select": (("select.json",), re.compile(r"^(select\.json|pareto\.png)$")),
    "adapt": (("adapt.json", "student_adapted.pt"), re.compile(r"^(adapt\.json|student_adapted\.pt)$")),
}
_OLDER_MAX_FILES = 10_000


def marker_text(command: str) -> str:
    """The marker's text for the output folder of ``cmkd <command>`` (``run``: :data:`MARKER_TEXT`)."""
    if command == "run":
        return MARKER_TEXT
    return f"a cmkd output folder of `cmkd {command}`: `cmkd {command} --overwrite` may replace everything in it\n"


def marker_command(folder: Path) -> str:
    """The command whose outputs a marked folder holds (the marker of ``cmkd run``, and an unreadable one: run)."""
    try:
        text = (folder / MARKER).read_text(encoding="utf-8", errors="replace")[:200]
    except OSError:
        return "run"
    m = re.match(r"a cmkd output folder of `cmkd ([\w -]+)`", text)
    return m.group(1) if m else "run"


def older_cmkd(folder: Path, command: str) -> bool:
    """Whether ``folder`` (no marker) was written by a cmkd version before the marker: it holds every file that
    makes the command's folder and nothing but what the command writes (no symbolic link, no other file)."""
    if command not in _OLDER:
        return False
    needed, pattern = _OLDER[command]
    if not all((folder / n).is_file() and not (folder / n).is_symlink() for n in needed):
        return False
    seen = 0
    for root, dirs, files in os.walk(folder, onerror=_raise):
        for name in dirs + files:
            seen += 1
            p = Path(root, name)
            if seen > _OLDER_MAX_FILES or p.is_symlink() or not (p.is_dir() or p.is_file()):
                return False
            if p.is_file() and not (_TEMP.match(name) or pattern.match(p.relative_to(folder).as_posix())
                                    or _sidecar(p)):
                return False
    return True


def _sidecar(p: Path) -> bool:
    """An ONNX model's sidecar (``student.json`` beside ``student.onnx``)."""
    return p.suffix == ".json" and p.with_suffix(".onnx").is_file()


def _raise(e: OSError) -> None:
    """``os.walk``'s error handler: an unreadable folder is not recognised (the caller refuses it)."""
    raise e
