"""A seeded fuzzer of ``cmkd run``'s inputs: small random npz files and experiment YAMLs, mostly broken in some way.

Each case is run in this process: the ``cmkd run`` command's function under :func:`cmkd.exits.guarded` (the
CLI's own error handling; ``SystemExit`` caught, stderr captured; typer's argument parsing skipped), with the
pipeline cut after the data stage (validation, the output folder's lock and staging; no training) and then one
output file and the run folder's real swap, so hundreds of cases run in a minute.

The families: arrays of every kind with odd dtypes and ranks (complex, structured, text, dates, raw bytes,
uint64, 0-d, (N, 0), images below 5x5), broken targets and splits; config mutations (unknown keys, bad values,
out-of-order and out-of-range settings, mismatched impute sources, huge integers, deep nesting, alias bombs of
values and of bytes, invalid YAML, duplicated keys, the same through ``--set``); folder states of ``--out``
(absent, empty, an earlier run's results, an interrupted run's checkpoints, a folder of the user's own, a file)
with and without ``--overwrite`` / ``--resume``; swaps whose ``os.rename`` fails; and ``data.sources`` cases, one
per reader (tables, streams, cubes: :mod:`cmkd.data.source_cases`), valid or broken the ways users' files are.
The property checked on every case:

* exit code 0, or exit code 2 with exactly one line on stderr, starting ``error: ``;
* never a traceback, never longer than :data:`TIME_LIMIT_S`;
* on failure, ``--out`` exactly as it was before (absent, or an earlier run's files byte for byte);
* a folder of the user's own (no ``.cmkd-run``) never written into; results replaced only with ``--overwrite``;
  after a run, ``--out`` holds the new run and nothing is left beside it.

Used by ``tests/test_fuzz_inputs.py`` (a few hundred cases) and ``benchmarks/fuzz_inputs.py`` (thousands); in the
package so that neither imports the other's folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

TIME_LIMIT_S = 20.0
VALID_SHARE = 0.3  # cases built valid (the rest broken at random): the folder states and swaps need runs to succeed
KINDS = {"vector": 2, "sequence": 3, "image": 4, "signal": 3, "text": 1}
NAMES = ["a", "b2", "lidar", "x_y", "rgb-cam", "a.b", "", "x/y", "m__present", "split", " sp", "é"]
WORDS = ["reef", "clay", "vent", "ridge", "", " ", "plume"]


class Hang(BaseException):
    """Raised by the alarm when a case runs past :data:`TIME_LIMIT_S`."""


def _pick(rng: np.random.Generator, options: list) -> Any:
    """One of ``options`` as the Python object it is (``rng.choice`` would return numpy scalars)."""
    return options[int(rng.integers(len(options)))]


def _array(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A modality's array: usually the right shape, sometimes not; NaN, inf, huge values, odd dtypes."""
    if kind == "text":
        a = np.array([" ".join(rng.choice(WORDS, rng.integers(0, 4))) for _ in range(n)])
        return a if rng.random() > 0.1 else np.arange(n)  # numbers where text is needed
    ndim = KINDS[kind] if rng.random() > 0.1 else int(rng.integers(1, 5))
    if rng.random() < 0.03:  # one value, not one per sample
        return np.array(_pick(rng, [1.0, 0, "x"]))
    dims = [int(rng.integers(1, 4)) for _ in range(ndim - 1)]
    if kind == "image" and ndim == 4 and rng.random() < 0.8:  # mostly at least the 5x5 an image needs
        dims[1:] = [_pick(rng, [5, 6]), _pick(rng, [1, 5, 6])]
    shape = (n, *dims)
    a = rng.normal(size=shape)
    r = rng.random()
    if r < 0.1:
        a[rng.random(shape) < rng.random()] = np.nan
    elif r < 0.15 and a.size:
        a.flat[int(rng.integers(a.size))] = rng.choice([np.inf, -np.inf, 1e300, 3e38, -1e30])
    elif r < 0.2:
        a[:] = np.nan
    return _odd_dtype(rng, a, p_odd=0.14)


def _odd_dtype(rng: np.random.Generator, a: np.ndarray, p_odd: float) -> np.ndarray:
    """``a`` as itself or, with probability ``p_odd``, of a dtype where real numbers are expected: complex,
    structured, text, dates, raw bytes, or another numeric width."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rng.random() >= p_odd:
            return a.astype(_pick(rng, ["float32", "float32", "float64", "int64"])) if a.dtype.kind == "f" else a
        r = int(rng.integers(8))
        if r == 0:
            return a.astype(_pick(rng, ["complex64", "complex128"]))
        if r == 1:
            out = np.zeros(a.shape, dtype=[("v", "f8"), ("w", "i4")])
            out["v"] = np.real(a)
            return out
        if r == 2:
            return a.astype("U3")
        if r == 3:
            return np.zeros(a.shape, dtype="datetime64[s]")
        if r == 4:
            return np.zeros(a.shape, dtype="V4")
        return a.astype(_pick(rng, ["bool", "float16", "uint8", "uint64"]))


def _target(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "classification":
        k = int(rng.choice([1, 2, 3, 5, 40]))
        y: np.ndarray = rng.integers(0, k, n)
        r = rng.random()
        if r < 0.15:
            y = y.astype(np.float64)
            if n:
                y[int(rng.integers(n))] = rng.choice([np.nan, np.inf, 0.5, -1, 1e30, -np.inf])
        elif r < 0.2:
            y = y[:, None]
        elif r < 0.25:
            y = y.astype(str)
        elif r < 0.29:  # uint64 class ids at or above 2**63 (int64 would wrap them negative)
            y = y.astype(np.uint64) + np.uint64(2**63 - 1)
        elif r < 0.31:
            y = np.array(int(rng.integers(3)))  # one value, not one per sample
        elif r < 0.36:
            y = _odd_dtype(rng, y, p_odd=1.0)
        return y
    if rng.random() < 0.04:
        return _pick(rng, [np.array(0.5), np.zeros((n, 0))])  # 0-d, or (N, 0): no column
    y = rng.normal(size=(n,) if rng.random() < 0.7 else (n, int(rng.integers(1, 3))))
    r = rng.random()
    if r < 0.15 and y.size:
        y.flat[int(rng.integers(y.size))] = rng.choice([np.nan, np.inf, 1e300, 3e38, -1e20])
    elif r < 0.2:
        y[:] = np.nan
    with np.errstate(all="ignore"):
        return y.astype(rng.choice(["float32", "float64", "int64"]))


def _names(rng: np.random.Generator, k: int) -> list[str]:
    """``k`` distinct names, usually valid ones."""
    good = ["vec", "seq", "img", "sig", "txt", "aux"]
    out: list[str] = []
    while len(out) < k:
        name = str(rng.choice(NAMES)) if rng.random() < 0.08 else f"{rng.choice(good)}{len(out)}"
        if name not in out:
            out.append(name)
    return out


def make_case(rng: np.random.Generator, folder: Path) -> list[str]:
    """Write ``data.npz`` and ``exp.yaml`` (random, often broken) into ``folder``; returns the ``cmkd`` argv."""
    folder.mkdir(parents=True, exist_ok=True)
    n = int(rng.choice([0, 3, 9, 12, 30, 60]))
    mods = _names(rng, int(rng.integers(1, 4)))
    kinds = {m: str(rng.choice(list(KINDS), p=[0.5, 0.15, 0.15, 0.1, 0.1])) for m in mods}
    task = str(rng.choice(["classification", "regression"]))
    arrays: dict[str, Any] = {m: _array(rng, kinds[m], n if rng.random() > 0.05 else n + 1) for m in mods}
    arrays["y"] = _target(rng, task, n)
    r = rng.random()
    if r < 0.6:
        arrays["split"] = rng.choice([0, 1, 2], size=n, p=[0.6, 0.2, 0.2])
    elif r < 0.7:
        arrays["split"] = rng.integers(-1, 5, size=n)
    elif r < 0.75:
        arrays["split"] = np.zeros(max(n - 1, 0), dtype=int)
    elif r < 0.83:  # a split of another dtype or rank: complex, structured, 0-d, fractions
        split = rng.choice([0, 1, 2], size=n, p=[0.6, 0.2, 0.2])
        arrays["split"] = _pick(rng, [split.astype(np.complex64), _odd_dtype(rng, split, 1.0), np.array(0),
                                      split + 0.5, split.astype(np.float64)])
    if rng.random() < 0.1 and mods:
        arrays[f"{mods[0]}__present"] = rng.choice([0, 1, 0.5, 2], size=n)
    if rng.random() < 0.05 and mods:
        del arrays[mods[-1]]
    np.savez(folder / "data.npz", **arrays)
    if rng.random() < 0.03:  # a damaged npz
        raw = bytearray((folder / "data.npz").read_bytes())
        for _ in range(8):
            if raw:
                raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        (folder / "data.npz").write_bytes(bytes(raw))
    student = [m for m in mods if rng.random() < 0.6] or mods[:1]
    teacher = mods if rng.random() < 0.9 else [*mods, "undeclared"]
    cfg: dict[str, Any] = {
        "name": "fuzz", "seed": int(rng.integers(0, 5)),
        "data": {"path": "data.npz", "modalities": {m: {"kind": kinds[m]} for m in mods},
                 "targets": {"y": {"kind": task}}, "split": "split"},
        "teacher": {"modalities": teacher, "width": 8, "heads": 2, "epochs": 1},
        "student": {"modalities": student, "width": 8, "heads": 2, "epochs": 1},
        "export": {"enabled": False}, "references": False, "trees": False,
    }
    _mutate(rng, cfg)
    text = yaml.safe_dump(cfg, sort_keys=False)
    r = rng.random()
    if r < 0.03:
        text += "student: {modalities: [x]}\n"  # a duplicated key
    elif r < 0.05:
        text += "options:\n  a0: &a0 [x, x, x, x, x, x, x, x]\n" + "".join(
            f"  a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n" for i in range(1, 8))
    elif r < 0.07:
        text = text[: int(rng.integers(len(text)))] + "\n  - [:\n"  # truncated / invalid YAML
    elif r < 0.09:  # an integer past Python's digit limit
        text += f"options: {{n: {'9' * int(rng.choice([4000, 5000]))}}}\n"
    elif r < 0.11:  # nesting past the depth limit (and, rarely, past the parser's recursion limit)
        depth = 3000 if rng.random() < 0.1 else int(rng.choice([40, 70, 300]))
        text += "options: {n: " + "[" * depth + "]" * depth + "}\n"
    elif r < 0.13:  # few aliases of one long string: small file, hundreds of MB written out
        text += "options:\n  s: &s " + "x" * 20_000 + "\n  l: [" + ", ".join(["*s"] * 600) + "]\n"
    (folder / "exp.yaml").write_text(text)
    argv = ["run", str(folder / "exp.yaml"), "--out", str(folder / "out"), "--quiet"]
    if rng.random() < 0.12:
        argv += ["--set", str(_pick(rng, ["seed=-5", "seed=1e20", "seed=4294967296", "student.lr=nan",
                                          "data.text_len=2", "student.epochs=0", "teacher.width=3",
                                          "data.max_classes=2", "nosuch=1", "seed", "seed=" + "7" * 5000,
                                          "name=" + "[" * 100 + "]" * 100,
                                          "uncertainty.availability_edges=[0.9, 0.1]",
                                          "uncertainty.availability_edges=[0.2, 1.5]"]))]
    return argv


def _mutate(rng: np.random.Generator, cfg: dict) -> None:
    """Break the config in one or two random ways (or not at all)."""
    for _ in range(_pick(rng, [0, 0, 1, 2])):
        r = int(rng.integers(15))
        if r == 0:
            cfg["seed"] = _pick(rng, [-1, 2**40, 1.5, "zero", None])
        elif r == 1:
            cfg["data"]["text_len"] = _pick(rng, [0, 3, -1, "x", 64])
        elif r == 2:
            cfg["colour"] = "red"
        elif r == 3:
            cfg["student"]["modalities"] = []
        elif r == 4:
            cfg["data"]["targets"] = {}
        elif r == 5:
            cfg["data"]["split"] = None
        elif r == 6:
            cfg["teacher"]["batch_size"] = _pick(rng, [0, 1, 10**9])
        elif r == 7:
            cfg["data"]["modalities"] = {}
        elif r == 8:
            cfg["data"]["path"] = _pick(rng, ["nothere.npz", "/dev/null", ".", "exp.yaml"])
        elif r == 9 and "y" in cfg["data"]["targets"]:
            cfg["data"]["targets"]["y"]["kind"] = _pick(rng, ["classification", "regression", "ranking"])
        elif r == 10:
            cfg["data"]["max_classes"] = _pick(rng, [1, 2, 3])
        elif r == 11:
            cfg["student"]["lr"] = _pick(rng, [1e-9, 1e9, 0.0])
        elif r == 12:  # out of order / out of range
            cfg["uncertainty"] = {"availability_edges": _pick(rng, [[0.5, 0.2], [0.1, 0.1], [-0.1, 0.5], [0.3, 2]])}
        elif r == 13 and len(cfg["data"]["modalities"]) > 1 and cfg["student"]["modalities"]:
            mods = list(cfg["data"]["modalities"])  # an impute source, often of another shape
            sources = {cfg["student"]["modalities"][0]: _pick(rng, mods)}
            cfg["distill"] = {"term_options": {"impute": {"sources": sources}}}
        else:
            for role in ("teacher", "student"):
                cfg[role]["encoders"] = {"image": "mobilenet"}


def snapshot(out: Path) -> dict[str, bytes] | None:
    """Every file under ``out`` (relative path -> bytes), or None when it does not exist."""
    if not out.exists():
        return None
    return {str(p.relative_to(out)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(out.rglob("*"))}


def _valid_case(rng: np.random.Generator, folder: Path) -> list[str]:
    """A valid tiny case (cmkd.data.cases), so that runs get through and the folder states and swaps are tried."""
    from cmkd.data.cases import make_arrays, make_config, write_case

    task = _pick(rng, ["classification", "regression"])
    p = write_case(folder, make_arrays(n=60, seed=int(rng.integers(1000)), task=task), make_config(task=task, epochs=1))
    return ["run", str(p), "--out", str(folder / "out"), "--quiet"]


def make_source_case(rng: np.random.Generator, folder: Path, case: tuple[str, str] | None = None) -> list[str]:
    """A ``data.sources`` case (:mod:`cmkd.data.source_cases`): one reader's tiny files and YAML, valid or broken
    in one way (``case`` = (reader, break), else drawn); returns the ``cmkd`` argv."""
    from cmkd.data.source_cases import all_cases, write_source_case

    reader, brk = case or _pick(rng, all_cases())
    p = write_source_case(folder, reader, brk, int(rng.integers(1000)))
    return ["run", str(p), "--out", str(folder / "out"), "--quiet"]


def _earlier_run(rng: np.random.Generator, out: Path) -> str:
    """The state of ``out`` before the run (what a failed run must leave intact); returns its name: ``none``,
    ``empty``, ``results`` (an earlier run's, marked), ``older`` (an earlier run's written before the marker: only
    cmkd's files), ``interrupted`` (marked, checkpoints), ``foreign`` (a folder of the user's own, an older run's
    files with the user's notes among them: never written into) or ``file``."""
    from cmkd.pipeline.rundir import MARKER, MARKER_TEXT

    state = str(rng.choice(["none", "empty", "results", "older", "interrupted", "foreign", "file"],
                           p=[0.5, 0.05, 0.18, 0.04, 0.08, 0.12, 0.03]))
    if state == "none":
        return state
    if state == "file":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("a file of the user's own\n")
        return state
    out.mkdir(parents=True, exist_ok=True)
    if state in ("results", "interrupted"):
        (out / MARKER).write_text(MARKER_TEXT)
    if state in ("results", "older", "foreign"):
        (out / "metrics.json").write_text('{"models": {}}\n')
        (out / "config.yaml").write_text("# the user's notes\nname: earlier\n")
        (out / "student.pt").write_bytes(b"earlier weights")
    if state in ("older", "foreign"):
        (out / "logs").mkdir()
        (out / "logs" / "student.csv").write_text("epoch,loss\n0,1.0\n")
    if state == "foreign":
        (out / "logs" / "notes.txt").write_text("my notes\n")
    if state == "interrupted":
        (out / ".ckpt").mkdir()
        (out / ".ckpt" / "config.yaml").write_text("name: interrupted\n")
        (out / ".ckpt" / "teacher.pt").write_bytes(b"a checkpoint")
    return state


def _output_stage(st: Any) -> None:
    """The pipeline's output stage, cut short: one file, then the run folder's real swap."""
    from cmkd.io import atomic_write_text

    atomic_write_text(st.out / "metrics.json", '{"fuzz": true}\n')
    st.rundir.commit()
    st.out = st.rundir.out


class _FailingRename:
    """``os.rename`` failing on its ``n``-th call (a failing swap: the earlier run renamed away, the new run in)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls, self.real = n, 0, os.rename

    def __call__(self, a: Any, b: Any) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise OSError(5, "Input/output error (fuzz)")
        self.real(a, b)


def run_case(argv: list[str], fail_rename: int | None = None) -> tuple[int, str, float]:
    """``cmkd ARGV`` in this process, the pipeline cut after its data stage (then one output file and the real
    swap; ``os.rename`` failing on its ``fail_rename``-th call): (exit code, stderr, seconds)."""
    from cmkd.cli import run
    from cmkd.exits import guarded
    from cmkd.pipeline import core as pipeline

    assert argv[0] == "run" and argv[2] == "--out"
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    saved = (pipeline.TRAIN_STAGES, pipeline.OUTPUT_STAGES, sys.argv, os.rename)
    pipeline.TRAIN_STAGES, pipeline.OUTPUT_STAGES = (pipeline.stage_data,), (_output_stage,)
    if fail_rename is not None:
        os.rename = _FailingRename(fail_rename)
    sys.argv = ["cmkd", *argv]
    err = io.StringIO()
    t0 = time.monotonic()

    def alarm(signum: int, frame: object) -> None:
        raise Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("always")  # every warning shows, as in a fresh process
            try:
                guarded(lambda: run(argv[1], Path(argv[3]), quick=False, overrides=sets, resume="--resume" in argv,
                                    overwrite="--overwrite" in argv, quiet=True, device=None))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Hang:
                code = -1
                err.write(f"HANG: past {TIME_LIMIT_S} s\n")
            except BaseException as e:  # noqa: BLE001 - reported as a failure of the property
                import traceback

                code = -2
                err.write("Traceback (escaped main)\n" + "".join(traceback.format_exception(e)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        pipeline.TRAIN_STAGES, pipeline.OUTPUT_STAGES, sys.argv, os.rename = saved
    return code, err.getvalue(), time.monotonic() - t0


def check_case(seed: int, root: Path, source: tuple[str, str] | None = None) -> dict:
    """Build case ``seed`` under ``root`` (with ``source`` = (reader, break), a ``data.sources`` case:
    :func:`make_source_case`), run it and check the property; returns its record (``problem``: None when it
    holds). Besides the one-line refusal: a folder that is not cmkd's is never written into, results are replaced
    only with ``--overwrite``, and after a run ``--out`` holds the earlier run or the new one (a failing swap
    included), with nothing left beside it."""
    from cmkd.pipeline.rundir import MARKER

    rng = np.random.default_rng(seed)
    folder = root / f"case{seed}"
    if source is not None:
        argv = make_source_case(rng, folder, source)
    else:
        argv = make_case(rng, folder) if rng.random() >= VALID_SHARE else _valid_case(rng, folder)
    out = folder / "out"
    state = "none" if source is not None else _earlier_run(rng, out)  # a data.sources case reaches its reader
    if state in ("results", "older", "interrupted", "foreign") and rng.random() < 0.6:
        argv.append("--overwrite")
    if source is None and rng.random() < (0.5 if state == "interrupted" else 0.1):
        argv.append("--resume")
    fail = int(rng.integers(1, 3)) if rng.random() < 0.1 else None
    before = snapshot(out)
    code, err, secs = run_case(argv, fail)
    lines = err.splitlines()
    after = snapshot(out)
    beside = sorted(p.name for p in folder.iterdir() if p.name.startswith(".out."))
    problem = None
    if "Traceback" in err or code not in (0, 2):
        problem = f"exit {code}: {err[-2000:]}"
    elif code == 2 and not (len(lines) == 1 and lines[0].startswith("error: ") and err.endswith("\n")):
        problem = f"stderr is not one error line: {err[-2000:]!r}"
    elif code == 2 and after != before:
        problem = f"--out changed by a failed run: {sorted(set(after or {}) ^ set(before or {}))}"
    elif code == 0 and state in ("foreign", "file"):
        problem = f"a run wrote into --out holding the user's own {state}"
    elif code == 0 and state in ("results", "older") and "--overwrite" not in argv:
        problem = "an earlier run's results replaced without --overwrite"
    elif code == 0 and sorted(after or {}) != sorted([MARKER, "config.yaml", "metrics.json"]):
        problem = f"--out after a run is not the new run: {sorted(after or {})}"
    elif beside:
        problem = f"left beside --out: {beside}"
    return {"seed": seed, "code": code, "seconds": secs, "error": lines[0] if code == 2 and lines else None,
            "state": state, "problem": problem, "source": source}
