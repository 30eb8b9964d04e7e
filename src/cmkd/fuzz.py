"""A seeded fuzzer of ``cmkd run``'s inputs: small random npz files and experiment YAMLs, mostly broken in some way.

Each case is run in this process: the ``cmkd run`` command's function under :func:`cmkd.cli.guarded` (the
CLI's own error handling; ``SystemExit`` caught, stderr captured; typer's argument parsing skipped), with the
pipeline cut after the data stage (validation, the output folder's lock and staging; no training), so hundreds
of cases run in a minute. The property checked on every case:

* exit code 0, or exit code 2 with exactly one line on stderr, starting ``error: ``;
* never a traceback, never longer than :data:`TIME_LIMIT_S`;
* on failure, ``--out`` exactly as it was before (absent, or an earlier run's files byte for byte).

Used by ``tests/test_fuzz_inputs.py`` (a few hundred cases) and ``benchmarks/fuzz_inputs.py`` (thousands); in the
package so that neither imports the other's folder.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

TIME_LIMIT_S = 20.0
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
    shape = (n, *[int(rng.integers(1, 4)) for _ in range(ndim - 1)])
    a = rng.normal(size=shape)
    r = rng.random()
    if r < 0.1:
        a[rng.random(shape) < rng.random()] = np.nan
    elif r < 0.15 and a.size:
        a.flat[int(rng.integers(a.size))] = rng.choice([np.inf, -np.inf, 1e300, 3e38, -1e30])
    elif r < 0.2:
        a[:] = np.nan
    dt = rng.choice(["float32", "float64", "int64", "bool", "float16", "uint8", "complex64", "U3"],
                    p=[0.6, 0.1, 0.08, 0.04, 0.04, 0.04, 0.05, 0.05])
    with np.errstate(all="ignore"):
        return a.astype(dt)


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
        return y
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
    (folder / "exp.yaml").write_text(text)
    argv = ["run", str(folder / "exp.yaml"), "--out", str(folder / "out"), "--quiet"]
    if rng.random() < 0.1:
        argv += ["--set", str(_pick(rng, ["seed=-5", "seed=1e20", "seed=4294967296", "student.lr=nan",
                                          "data.text_len=2", "student.epochs=0", "teacher.width=3",
                                          "data.max_classes=2", "nosuch=1", "seed"]))]
    return argv


def _mutate(rng: np.random.Generator, cfg: dict) -> None:
    """Break the config in one or two random ways (or not at all)."""
    for _ in range(_pick(rng, [0, 0, 1, 2])):
        r = int(rng.integers(12))
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
        else:
            cfg["student"]["lr"] = _pick(rng, [1e-9, 1e9, 0.0])


def snapshot(out: Path) -> dict[str, bytes] | None:
    """Every file under ``out`` (relative path -> bytes), or None when it does not exist."""
    if not out.exists():
        return None
    return {str(p.relative_to(out)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(out.rglob("*"))}


def _earlier_run(rng: np.random.Generator, out: Path) -> None:
    """Sometimes an earlier run's results in ``out`` (what a failed run must leave intact)."""
    if rng.random() < 0.3:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text('{"models": {}}\n')
        (out / "config.yaml").write_text("name: earlier\n")
        (out / "student.pt").write_bytes(b"earlier weights")


def run_case(argv: list[str]) -> tuple[int, str, float]:
    """``cmkd ARGV`` in this process, the pipeline cut after its data stage: (exit code, stderr, seconds)."""
    from cmkd.cli import guarded, run
    from cmkd.pipeline import core as pipeline

    assert argv[0] == "run" and argv[2] == "--out"
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    saved = (pipeline.TRAIN_STAGES, pipeline.OUTPUT_STAGES, sys.argv)
    pipeline.TRAIN_STAGES, pipeline.OUTPUT_STAGES = (pipeline.stage_data,), ()
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
                guarded(lambda: run(argv[1], Path(argv[3]), quick=False, overrides=sets, resume=False,
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
        pipeline.TRAIN_STAGES, pipeline.OUTPUT_STAGES, sys.argv = saved
    return code, err.getvalue(), time.monotonic() - t0


def check_case(seed: int, root: Path) -> dict:
    """Build case ``seed`` under ``root``, run it and check the property; returns its record (``problem``: None
    when it holds)."""
    rng = np.random.default_rng(seed)
    folder = root / f"case{seed}"
    argv = make_case(rng, folder)
    out = folder / "out"
    _earlier_run(rng, out)
    if (out / "metrics.json").exists() and rng.random() < 0.7:
        argv.append("--overwrite")
    before = snapshot(out)
    code, err, secs = run_case(argv)
    lines = err.splitlines()
    problem = None
    if "Traceback" in err or code not in (0, 2):
        problem = f"exit {code}: {err[-2000:]}"
    elif code == 2 and not (len(lines) == 1 and lines[0].startswith("error: ") and err.endswith("\n")):
        problem = f"stderr is not one error line: {err[-2000:]!r}"
    elif code == 2 and snapshot(out) != before:
        problem = f"--out changed by a failed run: {sorted(set(snapshot(out) or {}) ^ set(before or {}))}"
    return {"seed": seed, "code": code, "seconds": secs, "error": lines[0] if code == 2 and lines else None,
            "problem": problem}
