"""The one atomic writer (:func:`cmkd.io.atomic_write`) behind every file cmkd writes: the content lands whole or
not at all, the temporary file is one a run folder's cleaning recognises, and a full disk is one line naming the
folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from cmkd.errors import CmkdError
from cmkd.io import atomic_save, atomic_write, atomic_write_bytes, atomic_write_text
from cmkd.pipeline.rundir import _TEMP


def _full(*a: object, **k: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_writers_write_and_leave_nothing_else(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.json", '{"é": 1}')
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "c.npz", lambda tmp: np.savez(tmp, x=np.arange(3)))  # numpy keeps a .npz name as is
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{"é": 1}'
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert np.load(tmp_path / "c.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "c.npz"]
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in tmp_path.iterdir())


def test_temporary_file_is_hidden_beside_the_target_and_keeps_its_suffix(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write(tmp_path / "student.int8.onnx", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    tmp = seen[0]
    assert tmp.parent == tmp_path and tmp.name.startswith(".student.int8.onnx.") and tmp.suffix == ".onnx"
    assert _TEMP.match(tmp.name), tmp.name  # what a killed run leaves, the next run's cleaning removes


@pytest.mark.parametrize("writer", ["text", "bytes", "callback", "torch"])
def test_full_disk_is_one_line_and_the_earlier_file_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          writer: str) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"earlier")
    if writer == "text":
        monkeypatch.setattr(Path, "write_text", _full)
        call = lambda: atomic_write_text(path, "new")  # noqa: E731
    elif writer == "bytes":
        monkeypatch.setattr(Path, "write_bytes", _full)
        call = lambda: atomic_write_bytes(path, b"new")  # noqa: E731
    elif writer == "callback":
        call = lambda: atomic_write(path, _full)  # noqa: E731
    else:
        import torch

        def zip_writer_fails(obj: object, f: object, *a: object, **k: object) -> None:
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

        monkeypatch.setattr(torch, "save", zip_writer_fails)
        call = lambda: atomic_save({"x": 1}, path)  # noqa: E731
    with pytest.raises(CmkdError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and f"cannot write out.bin in folder {tmp_path}" in msg, msg
    assert ("No space left on device" in msg) if writer != "torch" else ("failed writing" in msg), msg
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_other_errors_of_a_callback_pass_through(tmp_path: Path) -> None:
    def bad(tmp: Path) -> None:
        raise ValueError("not a write error")

    with pytest.raises(ValueError, match="not a write error"):
        atomic_write(tmp_path / "x", bad)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CmkdError, match="cannot write"):
        atomic_write_text(tmp_path / "nope" / "x.json", "{}")
