"""Hostile and careless inputs, one family at a time, refused where they enter: each case runs ``cmkd run`` in
this process (:func:`cmkd.fuzz.run_case`: the CLI's own error handling, the pipeline cut after its data stage) and
must give exactly one ``error:`` line naming the problem, exit code 2, in a few seconds, with ``--out`` untouched.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import make_arrays, make_config, write_case

from cmkd.fuzz import run_case, snapshot

Build = Callable[[Path], tuple[list[str], list[str]]]
CASES: dict[str, Build] = {}


def case(fn: Build) -> Build:
    CASES[fn.__name__] = fn
    return fn


def _exp(d: Path, arrays: Callable[[dict], None] | None = None, config: Callable[[dict], None] | None = None,
         **kw: object) -> Path:
    a, c = make_arrays(n=60, **kw), make_config(epochs=1, **{k: v for k, v in kw.items() if k == "task"})
    if arrays:
        arrays(a)
    if config:
        config(c)
    return write_case(d, a, c)


def _args(p: Path, *extra: str) -> list[str]:
    return ["run", str(p), "--out", str(p.parent / "out"), "--quiet", *extra]


def _with_yaml(d: Path, extra: str) -> Path:
    p = _exp(d)
    p.write_text(p.read_text() + extra)
    return p


# ---- config parsing: every parser failure, in the file and through --set ----

@case
def huge_int_in_yaml(d: Path):
    return _args(_with_yaml(d, "options: {n: " + "9" * 5000 + "}\n")), ["exp.yaml", "digits"]


@case
def huge_int_in_set(d: Path):
    return _args(_exp(d), "--set", "seed=" + "9" * 5000), ["--set seed", "digits"]


@case
def deep_nesting_in_yaml(d: Path):
    return _args(_with_yaml(d, "options: {n: " + "[" * 3000 + "]" * 3000 + "}\n")), ["exp.yaml", "nested"]


@case
def deep_nesting_in_set(d: Path):
    return _args(_exp(d), "--set", "name=" + "[" * 3000 + "]" * 3000), ["--set name", "nested"]


@case
def moderately_deep_nesting(d: Path):
    return _args(_with_yaml(d, "options: {n: " + "[" * 200 + "]" * 200 + "}\n")), ["exp.yaml", "deeper than"]


@case
def alias_bomb_of_bytes(d: Path):
    # 3,000 aliases of one 100 KB string: few values, 300 MB when written out
    text = "options:\n  s: &s " + "x" * 100_000 + "\n  l: [" + ", ".join(["*s"] * 3000) + "]\n"
    return _args(_with_yaml(d, text)), ["exp.yaml", "bytes of text"]


@case
def alias_bomb_in_set(d: Path):
    return _args(_exp(d), "--set", "options={a: &a " + "y" * 60_000 + ", b: [" + ", ".join(["*a"] * 40) + "]}"), [
        "bytes of text"]


# ---- settings checked by value ----

@case
def unsorted_availability_edges(d: Path):
    return _args(_exp(d, task="regression", config=lambda c: c.update(
        uncertainty={"availability_edges": [0.5, 0.2, 0.9]}))), ["availability_edges", "increasing"]


@case
def availability_edge_out_of_range(d: Path):
    return _args(_exp(d, task="regression"), "--set", "uncertainty.availability_edges=[0.2, 1.5]"), [
        "availability_edges", "[0, 1]"]


@case
def impute_source_of_another_shape(d: Path):
    def arrays(a: dict) -> None:
        a["img_full"] = np.zeros((len(a["y"]), 2, 6, 6), np.float32)

    def config(c: dict) -> None:
        c["data"]["modalities"]["img_full"] = {"kind": "image"}
        c["distill"] = {"term_options": {"impute": {"sources": {"img": "img_full"}}}}

    return _args(_exp(d, arrays=arrays, config=config)), ["distill.term_options.impute.sources", "img_full",
                                                          "(2, 6, 6)", "(2, 5, 5)"]


# ---- arrays of unexpected dtype or rank ----

@case
def split_complex(d: Path):
    return _args(_exp(d, arrays=lambda a: a.update(split=a["split"].astype(np.complex64)))), ["split", "complex64"]


@case
def split_structured(d: Path):
    def arrays(a: dict) -> None:
        s = np.zeros(len(a["split"]), dtype=[("a", "i8"), ("b", "f4")])
        s["a"] = a["split"]
        a["split"] = s

    return _args(_exp(d, arrays=arrays)), ["split", "dtype"]


@case
def split_fractional(d: Path):
    return _args(_exp(d, arrays=lambda a: a.update(split=a["split"] + 0.5))), ["split", "0 (train)"]


@case
def target_zero_d(d: Path):
    return _args(_exp(d, arrays=lambda a: a.update(y=np.array(1)))), ["'y'", "single value"]


@case
def target_zero_d_sharded(d: Path):
    p = _exp(d)
    from cmkd.data.shards import write_shards

    arrays = dict(np.load(d / "data.npz"))
    write_shards(d / "shards", arrays, 30)
    for shard in sorted((d / "shards").iterdir()):
        np.save(shard / "y.npy", np.array(1))
    cfg = yaml.safe_load(p.read_text())
    cfg["data"]["path"] = "shards"
    p.write_text(yaml.safe_dump(cfg))
    return _args(p), ["y.npy", "single value"]


@case
def target_structured(d: Path):
    def arrays(a: dict) -> None:
        y = np.zeros(len(a["y"]), dtype=[("id", "i8")])
        y["id"] = a["y"]
        a["y"] = y

    return _args(_exp(d, arrays=arrays)), ["target 'y'", "dtype"]


@case
def modality_complex(d: Path):
    return _args(_exp(d, arrays=lambda a: a.update(vec=a["vec"].astype(np.complex128)))), ["'vec'", "complex128"]


@case
def regression_target_without_columns(d: Path):
    return _args(_exp(d, task="regression", arrays=lambda a: a.update(y=np.zeros((len(a["y"]), 0))))), [
        "'y'", "no column"]


@case
def zero_width_text_header(d: Path):
    # a text member whose header claims 10**13 elements of a zero-width string dtype
    p = _exp(d)
    with zipfile.ZipFile(d / "data.npz", "a") as z, z.open("txt2.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<U0", "fortran_order": False, "shape": (10**13,)})
    return _args(p), ["data.npz", "txt2", "GiB"]


@case
def data_path_symlink_loop(d: Path):
    p = _exp(d)
    os.symlink(d / "loop.npz", d / "loop.npz")
    cfg = yaml.safe_load(p.read_text())
    cfg["data"]["path"] = "loop.npz"
    p.write_text(yaml.safe_dump(cfg))
    return _args(p), ["loop.npz"]


@case
def images_one_pixel(d: Path):
    def arrays(a: dict) -> None:
        a["img"] = a["img"][:, :, :1, :1].copy()

    def config(c: dict) -> None:
        for role in ("teacher", "student"):
            c[role]["encoders"] = {"image": "mobilenet"}

    return _args(_exp(d, arrays=arrays, config=config)), ["'img'", "1x1", "5x5"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    res = {}
    for name, build in CASES.items():
        argv, words = build(root / name)
        out = Path(argv[3])
        before = snapshot(out)
        code, err, secs = run_case(argv)
        res[name] = (code, err, secs, words, before, snapshot(out))
    return res


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_one_line(outcomes: dict, name: str) -> None:
    code, err, secs, words, before, after = outcomes[name]
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err[-3000:])
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert secs < 10, f"{name} took {secs:.1f} s"
    assert after == before, "--out changed"
