"""A run folder is all or nothing, and cmkd touches only what it wrote (:mod:`cmkd.pipeline.rundir`).

Each case runs ``cmkd run`` in this process through :func:`cmkd.cli.main` with the pipeline cut to its data stage
and a small output stage (a few files, then the real swap), so the folder logic is the real one and no network
is trained: a folder of the user's own, results kept without ``--overwrite``, ``--resume`` without a checkpoint,
and a failure injected at every step of the final swap.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_main, make_arrays, make_config, write_case

from cmkd.pipeline import core as pipeline
from cmkd.pipeline import rundir

# the output stage is cut short to a stand-in metrics.json (the seed only): the folder logic is under test here
pytestmark = pytest.mark.fake_metrics


def _write_outputs(st: pipeline.RunState) -> None:
    """The output stage, cut short: a few files (the seed in metrics.json), then the real swap."""
    (st.out / "metrics.json").write_text(json.dumps({"seed": st.cfg.seed}))
    (st.out / "logs").mkdir()
    (st.out / "logs" / "teacher.csv").write_text(f"seed,{st.cfg.seed}\n")
    st.rundir.commit()
    st.out = st.rundir.out


@pytest.fixture(autouse=True)
def cut_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "TRAIN_STAGES", (pipeline.stage_data,))
    monkeypatch.setattr(pipeline, "OUTPUT_STAGES", (_write_outputs,))



def _main(argv: list, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    return cli_main(argv, capsys)


def _snap(folder: Path) -> dict[str, bytes] | None:
    """Every entry under ``folder`` (files by content), None when it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def _refused(code: int, err: str, *words: str) -> None:
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for w in words:
        assert w in lines[0], (w, err)


@pytest.fixture()
def exp(tmp_path: Path) -> Path:
    return write_case(tmp_path / "case", make_arrays(n=60), make_config(epochs=1))


def _run(exp: Path, out: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    return _main(["run", exp, "--out", out, "--quiet", *extra], capsys)


def _hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_first_run_writes_a_marked_folder(exp: Path, capsys: pytest.CaptureFixture) -> None:
    out = exp.parent / "out"
    code, err = _run(exp, out, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [rundir.MARKER, "config.yaml", "logs", "metrics.json"]
    assert _hidden_siblings(out) == []  # no lock, staging or old folder left beside it


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"], ["--resume", "--overwrite"]])
def test_user_folder_refused_untouched(exp: Path, capsys: pytest.CaptureFixture, flags: list[str]) -> None:
    """Data-loss case 1: --out is a folder of the user's own (their npz, commented config.yaml, logs/notes.txt)."""
    user = exp.parent  # holds exp.yaml and data.npz
    (user / "config.yaml").write_text("# my settings\nlr: 0.1\n")
    (user / "logs").mkdir()
    (user / "logs" / "notes.txt").write_text("do not lose me\n")
    before = _snap(user)
    code, err = _run(exp, user, capsys, *flags)
    _refused(code, err, "not a cmkd run folder", rundir.MARKER)
    assert _snap(user) == before
    assert _hidden_siblings(user) == []


def test_user_folder_refused_by_the_api_too(exp: Path) -> None:
    """pipeline.run (no CLI): the run folder itself refuses a folder that is not cmkd's."""
    from cmkd.errors import CmkdError

    before = _snap(exp.parent)
    with pytest.raises(CmkdError, match="not a cmkd run folder"):
        pipeline.run(str(exp), exp.parent, quiet=True)
    assert _snap(exp.parent) == before


def test_empty_folder_accepted(exp: Path, capsys: pytest.CaptureFixture) -> None:
    out = exp.parent / "empty"
    out.mkdir()
    code, err = _run(exp, out, capsys)
    assert code == 0, err
    assert (out / rundir.MARKER).is_file() and (out / "metrics.json").is_file()


def test_results_kept_without_overwrite(exp: Path, capsys: pytest.CaptureFixture) -> None:
    out = exp.parent / "out"
    assert _run(exp, out, capsys)[0] == 0
    before = _snap(out)
    code, err = _run(exp, out, capsys, "--set", "seed=3")
    _refused(code, err, "--overwrite", "--resume", "metrics.json")
    assert _snap(out) == before
    code, err = _run(exp, out, capsys, "--set", "seed=3", "--overwrite")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text()) == {"seed": 3}


def test_resume_without_checkpoint_refused(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """Data-loss case 2: --resume with another seed into a finished run that has no checkpoint left."""
    out = exp.parent / "out"
    assert _run(exp, out, capsys)[0] == 0
    assert not (out / ".ckpt").exists()
    before = _snap(out)
    code, err = _run(exp, out, capsys, "--resume", "--set", "seed=7")
    _refused(code, err, "--resume", "no checkpoint", "--overwrite")
    assert _snap(out) == before
    code, err = _run(exp, out, capsys, "--resume", "--overwrite", "--set", "seed=7")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text()) == {"seed": 7}


def test_interrupted_checkpoints_kept_without_flags(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """A fresh run over an interrupted run's checkpoints needs --resume or --overwrite."""
    out = exp.parent / "out"
    (out / ".ckpt").mkdir(parents=True)
    (out / rundir.MARKER).write_text(rundir.MARKER_TEXT)
    (out / ".ckpt" / "config.yaml").write_text("seed: 0\n")
    before = _snap(out)
    code, err = _run(exp, out, capsys)
    _refused(code, err, "interrupted run", "--resume", "--overwrite")
    assert _snap(out) == before


def test_out_a_file_or_a_symlink_loop(exp: Path, capsys: pytest.CaptureFixture) -> None:
    f = exp.parent / "afile"
    f.write_text("mine")
    _refused(*_run(exp, f, capsys), "is a file")
    assert f.read_text() == "mine"
    loop = exp.parent / "loop"
    os.symlink(loop, loop)
    _refused(*_run(exp, loop, capsys), "symbolic links")
    assert os.path.islink(loop)


def test_out_a_symlink_to_a_run_folder(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """The swap replaces the folder the link points to; the link stays a link."""
    real, link = exp.parent / "real", exp.parent / "link"
    assert _run(exp, real, capsys)[0] == 0
    os.symlink(real, link)
    code, err = _run(exp, link, capsys, "--overwrite", "--set", "seed=4")
    assert code == 0, err
    assert os.path.islink(link) and json.loads((real / "metrics.json").read_text()) == {"seed": 4}


# ---- a failure injected at every step of the swap ----

class Boom(OSError):
    pass


# (what fails, which call): the marker written into the staging folder, the earlier run renamed away, the new run
# renamed in (rolled back), that and the roll-back, the earlier run's removal
SWAP_STEPS = {"marker": ("atomic_write_text", 1), "rename_old_away": ("os.rename", 1),
              "rename_new_in": ("os.rename", 2), "rename_new_in_and_back": ("os.rename", (2, 3)),
              "remove_old": ("shutil.rmtree", 1)}


@pytest.mark.parametrize("step", list(SWAP_STEPS))
def test_swap_failure_leaves_old_or_new(exp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                        step: str) -> None:
    """Data-loss case 3: --overwrite whose swap fails part-way: OUT holds the earlier run or the new one."""
    out = exp.parent / "out"
    assert _run(exp, out, capsys)[0] == 0
    old = _snap(out)
    ref = exp.parent / "ref"  # what the new run writes, made without a failure
    assert _run(exp, ref, capsys, "--set", "seed=5")[0] == 0
    new = _snap(ref)
    what, n = SWAP_STEPS[step]
    with pytest.MonkeyPatch.context() as mp:
        if what == "atomic_write_text":  # as the real one fails: the one-line error of a failed write
            from cmkd.io import write_error

            real_write = rundir.atomic_write_text

            def marker(path: Path, text: str) -> None:
                if ".staging-" in str(path):
                    raise write_error(Path(path), Boom(5, "Input/output error (injected)"))
                real_write(path, text)

            mp.setattr(rundir, "atomic_write_text", marker)
        elif what == "shutil.rmtree":
            real_rmtree = shutil.rmtree

            def rmtree(path: object, *a: object, **k: object) -> None:
                if ".old-" in str(path):
                    raise Boom(5, "injected")
                real_rmtree(path, *a, **k)

            mp.setattr(rundir.shutil, "rmtree", rmtree)
        else:
            real_rename = os.rename
            calls = [0]
            bad = n if isinstance(n, tuple) else (n,)

            def rename(a: object, b: object) -> None:
                calls[0] += 1
                if calls[0] in bad:
                    raise Boom(5, "Input/output error (injected)")
                real_rename(a, b)

            mp.setattr(rundir.os, "rename", rename)
        code, err = _run(exp, out, capsys, "--overwrite", "--set", "seed=5")
    now = _snap(out)
    if step == "remove_old":  # the new run is in place; the old folder beside it goes with the next run
        assert code == 0, err
        assert now == new
    elif step == "rename_new_in_and_back":  # OUT renamed away and not back: the message says where it is
        _refused(code, err, "earlier run is in")
        assert now is None
        # the next run puts it back before anything else (and refuses to replace it without --overwrite)
        code, err = _run(exp, out, capsys, "--set", "seed=5")
        _refused(code, err, "--overwrite")
        code, err = _run(exp, out, capsys, "--set", "seed=5", "--overwrite")
        assert code == 0, err
        assert _snap(out) == new
    else:
        _refused(code, err, "cannot write" if step == "marker" else str(out))
        assert now == old, step
    leftovers = [n for n in _hidden_siblings(out) if ".old-" not in n or step != "remove_old"]
    assert leftovers == [], leftovers
    # whatever is there, the next run into OUT works and leaves nothing beside it
    assert _run(exp, out, capsys, "--overwrite", "--set", "seed=6")[0] == 0
    assert json.loads((out / "metrics.json").read_text()) == {"seed": 6}
    assert _hidden_siblings(out) == []


def test_killed_between_renames_repaired(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """A process killed after renaming OUT away and before renaming the new run in: the next run restores it."""
    out = exp.parent / "out"
    assert _run(exp, out, capsys)[0] == 0
    old = _snap(out)
    os.rename(out, out.parent / f".{out.name}.old-999999")
    code, err = _run(exp, out, capsys, "--set", "seed=2")
    _refused(code, err, "--overwrite", ".old-999999")
    code, err = _run(exp, out, capsys, "--set", "seed=2", "--resume", "--overwrite")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text()) == {"seed": 2}
    assert _hidden_siblings(out) == []
    assert old is not None


def test_failed_run_leaves_no_trace(exp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run failing after the folder was opened: a new folder removed, an empty one left empty, a run folder as
    it was (the marker and checkpoints of this run removed)."""
    from cmkd.errors import CmkdError

    def fail(st: pipeline.RunState) -> None:
        (st.out / "metrics.json").write_text("{}")
        raise CmkdError("training failed (injected)")

    monkeypatch.setattr(pipeline, "OUTPUT_STAGES", (fail,))
    new, empty = exp.parent / "new", exp.parent / "empty"
    empty.mkdir()
    for out in (new, empty):
        _refused(*_run(exp, out, capsys), "injected")
    assert not new.exists() and list(empty.iterdir()) == []
    assert _hidden_siblings(new) == [] and _hidden_siblings(empty) == []


def test_uint64_class_ids_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Data-loss case 4: class ids stored as uint64 at or above 2**63 (they wrapped negative through int64)."""
    a = make_arrays(n=60)
    y = a["y"].astype(np.uint64)
    y[y == 1] = np.uint64(2**63 + 5)
    a["y"] = y
    exp = write_case(tmp_path / "u64", a, make_config(epochs=1))
    code, err = _run(exp, exp.parent / "out", capsys)
    _refused(code, err, "'y'", str(2**63 + 5))
    assert not (exp.parent / "out").exists()
    a["y"] = (a["y"] == np.uint64(2**63 + 5)).astype(np.uint64) + np.uint64(2**63 - 10)  # below 2**63: a run
    exp = write_case(tmp_path / "u64ok", a, make_config(epochs=1))
    code, err = _run(exp, exp.parent / "out", capsys)
    assert code == 0, err


def test_failed_fresh_run_keeps_interrupted_checkpoints(exp: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--overwrite over an interrupted run's checkpoints, failing: the checkpoints are back as they were (found by
    the fuzzer: they were removed when the new run started)."""
    from cmkd.errors import CmkdError

    out = exp.parent / "out"
    (out / ".ckpt").mkdir(parents=True)
    (out / rundir.MARKER).write_text(rundir.MARKER_TEXT)
    (out / ".ckpt" / "config.yaml").write_text("seed: 0\n")
    (out / ".ckpt" / "teacher.pt").write_bytes(b"weights of the interrupted run")
    before = _snap(out)

    def fail(st: pipeline.RunState) -> None:
        (st.ck_dir / "teacher.pt").write_bytes(b"this run's")
        raise CmkdError("training failed (injected)")

    monkeypatch.setattr(pipeline, "OUTPUT_STAGES", (fail,))
    _refused(*_run(exp, out, capsys, "--overwrite"), "injected")
    assert _snap(out) == before
    monkeypatch.setattr(pipeline, "OUTPUT_STAGES", (_write_outputs,))
    assert _run(exp, out, capsys, "--overwrite")[0] == 0
    assert not (out / ".ckpt").exists() and _hidden_siblings(out) == []


def _older_run_folder(out: Path) -> Path:
    """A run folder of a cmkd version before the marker: only files cmkd writes, no marker."""
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"seed": 7}))
    (out / "config.yaml").write_text("seed: 7\n")
    for name in ("report.html", "histories.json", "student.pt", "teacher.pt", "student.onnx", "student.json",
                 "student.int8.onnx", "student.int8.json"):
        (out / name).write_text("x")
    (out / "logs" / "tensorboard" / "student").mkdir(parents=True)
    (out / "logs" / "student.csv").write_text("epoch\n")
    (out / "logs" / "tensorboard" / "student" / "events.out.tfevents.123.cmkd").write_bytes(b"\0")
    (out / "adapt").mkdir()
    (out / "adapt" / "adapt.json").write_text("{}")
    return out


def test_older_run_folder_accepted(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """A pre-marker run folder holding nothing but cmkd's files is a run folder: its results kept without
    --overwrite, replaced (in one swap, then marked) with it."""
    out = _older_run_folder(exp.parent / "old")
    before = _snap(out)
    code, err = _run(exp, out, capsys)
    _refused(code, err, "--overwrite", "results of another run")
    assert _snap(out) == before
    code, err = _run(exp, out, capsys, "--resume")
    _refused(code, err, "no checkpoint")
    assert _snap(out) == before
    code, err = _run(exp, out, capsys, "--overwrite")
    assert code == 0, err
    assert (out / rundir.MARKER).is_file() and not (out / "student.pt").exists()
    assert _hidden_siblings(out) == []


@pytest.mark.parametrize("extra", ["notes.txt", "logs/notes.txt", "my.json", "data.npz", "link"])
def test_older_run_folder_with_a_user_file_refused(exp: Path, capsys: pytest.CaptureFixture, extra: str) -> None:
    """The same folder with one file cmkd does not write (or a symbolic link) is the user's: refused untouched."""
    out = _older_run_folder(exp.parent / "old")
    if extra == "link":
        (out / "student_net.onnx").symlink_to(exp)
    else:
        (out / extra).write_text("mine")
    before = _snap(out)
    for flags in ([], ["--overwrite"], ["--resume"]):
        code, err = _run(exp, out, capsys, *flags)
        _refused(code, err, "not a cmkd run folder")
        assert _snap(out) == before and _hidden_siblings(out) == []


def test_metrics_and_config_alone_make_no_run_folder(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """Without metrics.json and config.yaml both, files of cmkd's names do not make a run folder."""
    out = exp.parent / "models"
    out.mkdir()
    (out / "student.pt").write_text("mine")
    (out / "config.yaml").write_text("mine: 1\n")
    before = _snap(out)
    _refused(*_run(exp, out, capsys, "--overwrite"), "not a cmkd run folder")
    assert _snap(out) == before


def test_a_refused_second_run_keeps_the_first_runs_lock(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """A run refused because another holds the lock leaves that lock in place (else a third run could start)."""
    first = rundir.RunDir(exp.parent / "out")
    first.acquire()
    try:
        code, err = _run(exp, exp.parent / "out", capsys)
        _refused(code, err, "in use by another cmkd run")
        assert first.lock.is_file()
        with pytest.raises(rundir.CmkdError, match="in use"):
            rundir.RunDir(exp.parent / "out").acquire()
    finally:
        first.close(None)
    assert not first.lock.exists()


def test_out_below_a_file_is_one_line(exp: Path, capsys: pytest.CaptureFixture) -> None:
    (exp.parent / "afile").write_text("mine\n")
    code, err = _run(exp, exp.parent / "afile" / "sub", capsys)
    _refused(code, err, "--out", "afile")
    assert (exp.parent / "afile").read_text() == "mine\n"
