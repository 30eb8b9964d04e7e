"""The output folder of ``cmkd run`` as one coherent run folder, all or nothing.

* A marker file, :data:`MARKER` (``OUT/.cmkd-run``), says a folder is a cmkd run folder. cmkd writes only into a
  new folder, an empty one or a marked one: a non-empty folder without the marker (a folder of the user's own) is
  refused in one line, with or without ``--overwrite`` / ``--resume``, and nothing in it is touched.
* A lock against a second run into the same folder: ``.OUT.cmkd-lock`` beside ``OUT`` (held with ``fcntl.flock``;
  beside, not inside, because ``OUT`` itself is replaced at the end).
* The new run is written into a sibling folder, ``.OUT.staging-<pid>``; per-epoch checkpoints and the resolved
  config they belong to go to ``OUT/.ckpt`` (for ``--resume``, which is refused when the config differs).
* The swap at the end replaces the whole folder: ``OUT`` is renamed to ``.OUT.old-<pid>``, the staging folder to
  ``OUT``, then the old folder is removed. A failure of the second rename renames the old folder back; a process
  killed between the two renames is repaired by the next run into ``OUT`` (under the lock). So ``OUT`` holds the
  earlier run or the new one, never a mix of the two.
* A failed run leaves ``OUT`` as it found it (its own checkpoints removed, except after an interruption, which keeps
  them and the marker for ``--resume``).
* Every other command that writes a folder (``cmkd tune``, ``select``, ``adapt``, ``habitat example``) goes through
  the same rules (:func:`output_folder`): its marker names the command, a folder of another command is refused even
  with ``--overwrite``, earlier outputs are replaced only with ``--overwrite``, and the outputs are staged and swapped
  in whole.
* A folder written by a cmkd version before the marker is accepted as the command's own only when it holds nothing
  but the files that command writes (:func:`cmkd.pipeline.owner.older_cmkd`: for ``cmkd run`` ``metrics.json`` and
  ``config.yaml`` and otherwise models, sidecars, the report, ``logs/``, ``.ckpt/``, ``adapt/``); anything else in it
  is the user's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from cmkd.errors import CmkdError
from cmkd.io import atomic_write_text
from cmkd.pipeline.owner import _TEMP, MARKER, MARKER_TEXT, marker_command, marker_text, older_cmkd

__all__ = ["MARKER", "MARKER_TEXT", "RunDir", "check_output_folder", "check_run_out", "config_diff", "marker_text",
           "open_run_dir", "output_folder", "run_dirs"]

LOCK_SUFFIX = ".cmkd-lock"
STAGING_PREFIX = ".staging-"  # inside OUT: left by cmkd versions before the whole-folder swap; removed
CKPT = ".ckpt"
# settings that do not change results: a resumed run may differ in them
RESUME_IGNORED = ("threads",)

# the run folders opened by the current run (per thread / task: runs in threads of one process stay apart)
_OPENED: ContextVar[list[RunDir] | None] = ContextVar("cmkd_run_dirs", default=None)


def _why(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _real(out: Path) -> Path:
    """The folder ``out`` names (symbolic links followed; a loop is a one-line error)."""
    try:
        real = Path(os.path.realpath(out))
        if os.path.islink(real):  # realpath stops at a loop without raising
            real.stat()
    except OSError as e:
        raise CmkdError(f"--out {out}: {_why(e)}") from None
    except RuntimeError:  # pathlib's "Symlink loop" on older Pythons
        raise CmkdError(f"--out {out}: too many levels of symbolic links") from None
    if real.parent == real:
        raise CmkdError(f"--out {out}: choose a folder below the file system's root")
    return real


def _entries(out: Path) -> list[str] | None:
    """The names in ``out`` (None when it does not exist); a file or an unreadable folder is a one-line error."""
    try:
        if not out.exists():
            return None
        if not out.is_dir():
            raise CmkdError(f"--out {out} is a file, not a folder; choose a folder for the run's outputs")
        return sorted(p.name for p in out.iterdir())
    except OSError as e:
        raise CmkdError(f"--out {out}: cannot read it ({_why(e)})") from None


def _siblings(path: Path, kind: str) -> list[Path]:
    """The hidden folders beside ``path`` of a kind (``old``, ``staging``) that cmkd's swap makes."""
    prefix = f".{path.name}.{kind}-"
    try:
        return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.is_dir())
    except OSError:
        return []


def _refuse_foreign(out: Path, entries: list[str] | None, real: Path | None = None, command: str = "run") -> None:
    """A non-empty folder without the marker is not cmkd's (unless an older cmkd wrote it:
    :func:`~cmkd.pipeline.owner.older_cmkd`), and one marked by another command is not this command's: never written
    into."""
    if entries and MARKER in entries:
        owner = marker_command(real or _real(out))
        if owner != command:
            raise CmkdError(f"--out {out} holds the outputs of `cmkd {owner}`, not of `cmkd {command}`; cmkd never "
                            "replaces one command's outputs by another's, even with --overwrite: choose another --out")
        return
    try:
        older = bool(entries) and older_cmkd(real or _real(out), command)
    except OSError:
        older = False
    if entries and not older:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        what, flags = ("run folder", "--overwrite or --resume") if command == "run" else ("output folder",
                                                                                          "--overwrite")
        raise CmkdError(f"--out {out} is not a cmkd {what} (it holds {shown} and no {MARKER}); cmkd writes only into "
                        f"a new or empty folder or its own {what}, even with {flags}: choose another --out")


def _check_out(out: Path, overwrite: bool, command: str) -> tuple[Path, list[str] | None]:
    """The checks every command's ``--out`` passes: not a folder of the user's or another command's, and not a
    missing folder whose earlier outputs an unfinished swap left beside it (without ``--overwrite``)."""
    real = _real(out)
    entries = _entries(real)
    _refuse_foreign(out, entries, real, command)
    if entries is None and not overwrite:
        olds = _siblings(real, "old")
        if olds:
            raise CmkdError(f"--out {out} is missing, but an earlier run of it is in {olds[0]} (a swap that did not "
                            "finish); pass --overwrite to replace it, or rename it back")
    return real, entries


def check_run_out(out: Path, resume: bool, overwrite: bool) -> None:
    """The CLI's check of ``--out`` before any work: a folder of the user's own is refused; a run folder holding
    results is replaced only with ``--overwrite``; ``--resume`` needs a checkpoint (or ``--overwrite``) when the
    folder holds results; a fresh run over an interrupted run's checkpoints needs ``--overwrite`` too."""
    out = Path(out)
    real, entries = _check_out(out, overwrite, "run")
    if not entries or overwrite:
        return
    results = [e for e in entries if not e.startswith(".")]
    ckpt = (real / CKPT / "config.yaml").is_file()
    if resume and results and not ckpt:
        raise CmkdError(f"--resume: --out {out} holds the results of a finished run ({', '.join(results[:4])}) and "
                        "no checkpoint to resume; pass --overwrite to replace them, or another --out")
    if not resume and results:
        raise CmkdError(f"--out {out} holds the results of another run ({', '.join(results[:4])}); pass "
                        "--overwrite to replace them, --resume to continue that run, or another --out")
    if not resume and ckpt:
        raise CmkdError(f"--out {out} holds the checkpoints of an interrupted run ({out / CKPT}); pass --resume to "
                        "continue it, --overwrite to start again, or another --out")


def check_output_folder(out: Path, command: str, overwrite: bool) -> None:
    """The check of another command's ``--out`` before any work (:func:`output_folder`): a folder of the user's own
    or of another command is refused; the command's earlier outputs are replaced only with ``--overwrite``."""
    out = Path(out)
    _, entries = _check_out(out, overwrite, command)
    results = [e for e in entries or [] if not e.startswith(".")]
    if results and not overwrite:
        raise CmkdError(f"--out {out} holds the outputs of an earlier `cmkd {command}` ({', '.join(results[:4])}); "
                        "pass --overwrite to replace them, or another --out")


class RunDir:
    """One run's hold on its output folder (see the module docs).

    Args:
        out: the ``--out`` folder.
        command: the command writing it (``run``, ``tune``, ...).
    """

    def __init__(self, out: Path, command: str = "run") -> None:
        self.out = Path(out)
        self.command = command  # whose folder it is (its marker names it)
        self.path = _real(self.out)  # the folder renamed at the end (not a symbolic link to it)
        parent, name, pid = self.path.parent, self.path.name, os.getpid()
        self.lock = parent / f".{name}{LOCK_SUFFIX}"
        self.staging = parent / f".{name}.staging-{pid}"
        self.old = parent / f".{name}.old-{pid}"
        self.ck_dir = self.path / CKPT
        self.ck_prev = self.path / f"{CKPT}.prev-{pid}"  # an interrupted run's checkpoints while a fresh run works
        self.ck_moved = False
        self.created = False  # OUT made by this run
        self.marked = False  # the marker written by this run into OUT
        self.ck_created = False
        self.committed = False
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, repair an interrupted swap, refuse a folder that is not cmkd's, create / mark ``OUT``."""
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CmkdError(f"--out {self.out}: cannot create its parent folder {self.path.parent} "
                            f"({_why(e)})") from None
        for _ in range(5):
            try:
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise CmkdError(f"output folder {self.out} is not writable: cannot create {self.lock} beside it "
                                f"({_why(e)})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise CmkdError(f"--out {self.out} is in use by another cmkd run (it holds {self.lock}); wait for "
                                "it to finish or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its holder removed while we waited for it
                self._fd = fd
                break
            os.close(fd)
        else:
            raise CmkdError(f"--out {self.out}: cannot take the lock {self.lock}")
        self._repair()
        entries = _entries(self.path)
        _refuse_foreign(self.out, entries, self.path, self.command)
        try:
            if entries is None:
                self.path.mkdir()
                self.created = True
            if MARKER not in (entries or []):
                atomic_write_text(self.path / MARKER, marker_text(self.command))
                self.marked = True
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise CmkdError(f"output folder {self.out} is not writable ({_why(e)})") from None

    def _repair(self) -> None:
        """After a process killed mid-swap: an earlier run renamed away and nothing in its place is renamed back;
        an old folder beside a swapped-in run, and staging folders of killed runs, are removed."""
        olds = sorted(_siblings(self.path, "old"), key=lambda p: p.stat().st_mtime)
        if olds and not os.path.lexists(self.path):
            os.rename(olds.pop(), self.path)
        for p in olds + _siblings(self.path, "staging"):
            shutil.rmtree(p, ignore_errors=True)

    def clean_stale(self) -> None:
        """Remove what killed runs left inside the folder: the atomic writers' hidden temporary files (and staging
        folders of older cmkd versions)."""
        for d in (self.path, self.ck_dir):
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if p.name.startswith(f"{CKPT}.prev-") and p.is_dir():  # a killed fresh run's: its own are newer
                    if self.ck_dir.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        os.rename(p, self.ck_dir)
                elif p.name.startswith(STAGING_PREFIX) and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif _TEMP.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)

    def prepare(self, config_text: str, resume: bool) -> None:
        """The checkpoint folder (kept with ``resume`` when its config matches, else new) and the staging folder."""
        from cmkd.validate import safe_load_yaml

        saved = self.ck_dir / "config.yaml"
        if resume and saved.is_file():  # the saved one through the YAML door (it is a file in --out); ours is ours
            import yaml

            diff = config_diff(safe_load_yaml(saved) or {}, yaml.safe_load(config_text) or {})
            if diff:
                shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                raise CmkdError(f"--resume: the config differs from the interrupted run's in {shown} "
                                f"(saved in {saved}); resume with the same settings, or rerun without --resume")
        if not resume and self.ck_dir.exists():  # an earlier interrupted run's: set aside, back if this run fails
            os.rename(self.ck_dir, self.ck_prev)
            self.ck_moved = True
        if not self.ck_dir.exists():
            self.ck_dir.mkdir()
            self.ck_created = True
        atomic_write_text(saved, config_text)
        self.stage()

    def stage(self) -> None:
        """Create the staging folder beside ``OUT`` that the outputs are written into."""
        try:
            self.staging.mkdir()
        except OSError as e:
            raise CmkdError(f"--out {self.out}: cannot create {self.staging} beside it ({_why(e)})") from None

    def commit(self) -> None:
        """Replace ``OUT`` by the staged run in one rename (the earlier run renamed away first, back on failure)."""
        atomic_write_text(self.staging / MARKER, marker_text(self.command))
        moved = False
        if os.path.lexists(self.path):
            try:
                os.rename(self.path, self.old)
            except OSError as e:
                raise CmkdError(f"cannot replace {self.out} by the new run ({_why(e)}); it holds the earlier "
                                "run, unchanged") from None
            moved = True
        try:
            os.rename(self.staging, self.path)
        except OSError as e:
            if moved:
                try:
                    os.rename(self.old, self.path)
                except OSError as e2:
                    raise CmkdError(f"cannot move the new run into {self.out} ({_why(e)}) nor the earlier run back "
                                    f"({_why(e2)}): the earlier run is in {self.old}") from None
            raise CmkdError(f"cannot move the new run into {self.out} ({_why(e)}); it holds the earlier run, "
                            "unchanged") from None
        self.committed = True
        if moved:  # a failure here leaves a hidden old folder beside OUT: removed by the next run (_repair)
            try:
                shutil.rmtree(self.old)
            except OSError:
                pass

    def close(self, error: BaseException | None) -> None:
        """Release the lock; after a failure remove the staging folder, the checkpoints this run started (an
        interruption keeps them, and the marker, for ``--resume``), the marker this run wrote and the folder
        itself when this run created it."""
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            if error is not None and not self.committed:
                keep = isinstance(error, KeyboardInterrupt) and self.ck_dir.is_dir()
                if self.ck_created and not keep:
                    shutil.rmtree(self.ck_dir, ignore_errors=True)
                if self.ck_moved and not keep:  # the earlier interrupted run's checkpoints, as they were
                    os.rename(self.ck_prev, self.ck_dir)
                elif self.ck_moved:
                    shutil.rmtree(self.ck_prev, ignore_errors=True)
                if self.marked and not keep:
                    (self.path / MARKER).unlink(missing_ok=True)
                if self.created and self.path.is_dir() and not any(self.path.iterdir()):
                    self.path.rmdir()
            if self._fd is not None:  # only the holder removes the lock (not a run refused because another holds it)
                self.lock.unlink(missing_ok=True)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def open_run_dir(out: Path, config_text: str, resume: bool) -> RunDir:
    """Lock ``out``, clean stale temporary files, check a ``--resume``'s config, and stage the outputs."""
    rd = RunDir(out)
    try:
        rd.acquire()
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


@contextmanager
def output_folder(out: Path, command: str, overwrite: bool) -> Iterator[Path]:
    """The output folder of ``cmkd <command>`` under the run-folder rules (see the module docs): checked, locked and
    marked on entry; the body writes into the staging folder it yields; on a clean exit the staging folder replaces
    ``OUT`` in one rename; on a failure ``OUT`` is left as it was found.

    Args:
        out: the ``--out`` folder.
        command: the command, e.g. ``tune`` (named in the marker and in errors).
        overwrite: whether earlier outputs of the command in ``out`` may be replaced.
    """
    check_output_folder(out, command, overwrite)
    rd = RunDir(out, command)
    error: BaseException | None = None
    try:
        rd.acquire()
        rd.clean_stale()
        rd.stage()
        yield rd.staging
        rd.commit()
    except BaseException as e:
        error = e
        raise
    finally:
        rd.close(error)


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
