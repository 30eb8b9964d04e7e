"""The output folder of ``cmkd run`` as one coherent run: a lock against a second run into the same folder,
outputs staged in a hidden folder and swapped in only when the run has succeeded, ``--resume`` refused when the
config differs from the interrupted run's, and temporary files of killed runs cleaned.

Layout while a run works in ``OUT``: ``OUT/.lock`` (held with ``fcntl.flock``), ``OUT/.staging-<pid>/`` (every
output, written there), ``OUT/.ckpt/`` (per-epoch checkpoints and ``config.yaml``, the resolved config they
belong to, for ``--resume``). A failed run leaves ``OUT`` as it found it (an earlier run's results intact; its
own checkpoints removed, except after an interruption, which keeps them for ``--resume``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

from cmkd.errors import CmkdError
from cmkd.io import atomic_write_text, check_out_dir

__all__ = ["RunDir", "config_diff", "open_run_dir", "run_dirs"]

LOCK = ".lock"
STAGING_PREFIX = ".staging-"
CKPT = ".ckpt"
# settings that do not change results: a resumed run may differ in them
RESUME_IGNORED = ("threads",)
# hidden temporary files of the atomic writers (``.name.tmp123``, ``.name.tmp.npz``, mkstemp's ``.name.abc123_x``)
_TEMP = re.compile(r"^\..+\.(tmp\d*(\.\w+)?|[a-z0-9_]{8})$|^\.write-test-\d+$")

# the run folders opened by the current run (per thread / task: runs in threads of one process stay apart)
_OPENED: ContextVar[list[RunDir] | None] = ContextVar("cmkd_run_dirs", default=None)


class RunDir:
    """One run's hold on its output folder (see the module docs).

    Args:
        out: the ``--out`` folder.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.created = not self.out.exists()
        self.ck_dir = self.out / CKPT
        self.staging = self.out / f"{STAGING_PREFIX}{os.getpid()}"
        self.ck_created = False
        self.committed = False
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the folder and take its lock; another run holding it is a one-line error."""
        import fcntl

        check_out_dir(self.out)
        path = self.out / LOCK
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise CmkdError(f"--out {self.out} is in use by another cmkd run (it holds {path}); wait for it "
                                "to finish or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its holder removed while we waited for it
                self._fd = fd
                return
            os.close(fd)
        raise CmkdError(f"--out {self.out}: cannot take the lock {path}")

    def clean_stale(self) -> None:
        """Remove what killed runs left: staging folders and the atomic writers' hidden temporary files."""
        for d in (self.out, self.ck_dir):
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if p.name.startswith(STAGING_PREFIX) and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif _TEMP.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)

    def prepare(self, config_text: str, resume: bool) -> None:
        """The checkpoint folder (kept with ``resume`` when its config matches, else new) and the staging folder."""
        saved = self.ck_dir / "config.yaml"
        if resume and saved.is_file():
            diff = config_diff(yaml.safe_load(saved.read_text()) or {}, yaml.safe_load(config_text) or {})
            if diff:
                shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                raise CmkdError(f"--resume: the config differs from the interrupted run's in {shown} "
                                f"(saved in {saved}); resume with the same settings, or rerun without --resume")
        if not resume and self.ck_dir.exists():
            shutil.rmtree(self.ck_dir)
        if not self.ck_dir.exists():
            self.ck_dir.mkdir()
            self.ck_created = True
        atomic_write_text(saved, config_text)
        self.staging.mkdir()

    def commit(self) -> None:
        """Swap the staged outputs into the folder (each entry replaced by its new version)."""
        for p in sorted(self.staging.iterdir()):
            dest = self.out / p.name
            if p.is_dir() and dest.is_dir():
                shutil.rmtree(dest)
            os.replace(p, dest)
        self.staging.rmdir()
        self.committed = True

    def close(self, error: BaseException | None) -> None:
        """Release the lock; after a failure remove the staging folder, the checkpoints this run started (an
        interruption keeps them for ``--resume``) and the folder itself when this run created it and it is empty."""
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            interrupted = isinstance(error, KeyboardInterrupt)
            if error is not None and self.ck_created and not interrupted:
                shutil.rmtree(self.ck_dir, ignore_errors=True)
            (self.out / LOCK).unlink(missing_ok=True)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self.created and error is not None and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()


def open_run_dir(out: Path, config_text: str, resume: bool) -> RunDir:
    """Lock ``out``, clean stale temporary files, check a ``--resume``'s config, and stage the outputs."""
    rd = RunDir(out)
    rd.acquire()
    try:
        rd.clean_stale()
        rd.prepare(config_text, resume)
    except BaseException as e:
        rd.close(e)
        raise
    opened = _OPENED.get()
    if opened is not None:  # closed by the enclosing run_dirs()
        opened.append(rd)
    return rd


@contextmanager
def run_dirs() -> Iterator[None]:
    """Around one run (:func:`cmkd.pipeline.core.run`): every folder :func:`open_run_dir` opens inside is closed at the
    end, success or not (:meth:`RunDir.close`)."""
    token = _OPENED.set([])
    error: BaseException | None = None
    try:
        yield
    except BaseException as e:
        error = e
        raise
    finally:
        for rd in _OPENED.get() or []:
            rd.close(error)
        _OPENED.reset(token)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (settings in :data:`RESUME_IGNORED` aside)."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUME_IGNORED)
