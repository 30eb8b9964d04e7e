"""Tiny ``data.sources`` cases, one per reader: a CSV or Parquet table, a timestamped stream, an ENVI, GeoTIFF,
MATLAB ``.mat`` or NetCDF cube with its label raster, pixel lists placed at label maps, each written into a folder
with an experiment YAML, valid or broken in one of the ways a user's files are (a missing column, a cell that is not
a number, a time that does not parse, a damaged or absent file, a band outside the cube, a wavelength outside its
range, a label raster of another size, an absent variable, a pixel list of the wrong length, ...).
:mod:`cmkd.fuzz` runs them through ``cmkd run`` (exit 0, or exit 2 with one ``error:`` line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

READERS = ("csv", "parquet", "stream", "envi", "tiff", "mat", "netcdf", "pixels")
_SPEC = ("no-source", "unknown-file", "aggregate", "patch")  # spec mistakes any reader may get
BREAKS = {
    "csv": ("none", "column", "cell", "damaged", "absent", "empty", *_SPEC),
    "parquet": ("none", "column", "cell", "damaged", "absent", "empty", *_SPEC),
    "stream": ("none", "column", "time", "window", "dst", "horizon", "damaged", "grid-end", *_SPEC),
    **{c: ("none", "band", "wavelength", "labels", "damaged", "absent", "variable", "layout", *_SPEC)
       for c in ("envi", "tiff", "mat", "netcdf")},
    "pixels": ("none", "count", "at", "test-map", "damaged", *_SPEC),  # pixel lists at label maps (.mat)
}
MAY_RUN = ("none", "damaged")  # breaks a run may get through (random bytes in a binary file can read as numbers)
_SUFFIX = {"envi": ".hdr", "tiff": ".tif", "mat": ".mat", "netcdf": ".nc"}


def all_cases() -> list[tuple[str, str]]:
    """Every (reader, break) pair."""
    return [(r, b) for r in READERS for b in BREAKS[r]]


def _damage(path: Path, rng: np.random.Generator, text: bool = False) -> None:
    """Truncate ``path`` or overwrite part of it with random bytes (a text file: bytes that are not UTF-8, since a
    truncated CSV is still a CSV)."""
    raw = bytearray(path.read_bytes())
    if text:
        at = int(rng.integers(0, len(raw) // 2))
        raw[at: at + 8] = b"\xff\xfe\x00\xc3(\x80\xff\x00"
    elif rng.random() < 0.5 or len(raw) < 16:
        raw = raw[: int(rng.integers(0, max(len(raw) // 2, 1)))]
    else:
        at = int(rng.integers(0, len(raw) // 2))
        raw[at: at + 64] = rng.integers(0, 256, size=len(raw[at: at + 64]), dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def _tables(folder: Path, reader: str, brk: str, rng: np.random.Generator) -> dict[str, Any]:
    import pandas as pd

    n = 60
    x = rng.normal(size=(n, 3))
    df = pd.DataFrame({"a1": x[:, 0], "a2": x[:, 1], "b1": x[:, 2], "y": x[:, 0] - x[:, 2]})
    df.loc[rng.random(n) < 0.1, "a2"] = -999.0
    if brk == "cell":
        df["a1"] = df["a1"].astype(str)
        df.loc[int(rng.integers(n)), "a1"] = "n/a?"
    name = "t.parquet" if reader == "parquet" else "t.csv"
    df.to_parquet(folder / name) if reader == "parquet" else df.to_csv(folder / name, index=False)
    if brk == "damaged":
        _damage(folder / name, rng, text=reader == "csv")
    elif brk == "empty":
        (folder / name).write_bytes(b"")
    return {"tables": {"T": {"path": "nothere.csv" if brk == "absent" else name, "missing": [-999]}},
            "modalities": {"a": {"table": "T", "columns": ["a1", "nope" if brk == "column" else "a2"]},
                           "b": {"table": "T", "columns": ["b1"]}},
            "targets": {"y": {"table": "T", "columns": ["y"]}}}


def _stream(folder: Path, brk: str, rng: np.random.Generator) -> dict[str, Any]:
    import pandas as pd

    fast = pd.date_range("2024-03-30 20:00", periods=240, freq="10min")  # naive local times, 40 hours
    a = rng.normal(size=(len(fast), 2))
    when = fast.strftime("%Y-%m-%d %H:%M:%S").tolist()
    if brk == "time":
        when[int(rng.integers(len(when)))] = "yesterday"
    pd.DataFrame({"when": when, "a1": a[:, 0], "a2": a[:, 1]}).to_csv(folder / "fast.csv", index=False)
    slow = pd.date_range("2024-03-30 20:00", periods=40, freq="1h", tz="UTC")
    b = rng.normal(size=40)
    pd.DataFrame({"t": slow.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "b1": b, "y": b + rng.normal(size=40)}).to_csv(
        folder / "slow.csv", index=False)
    if brk == "damaged":
        _damage(folder / "fast.csv", rng, text=True)
    fast_spec: dict[str, Any] = {"path": "fast.csv", "time": ["nope" if brk == "column" else "when"]}
    if brk == "dst":  # naive times through 02:00-03:00 on 2024-03-31, an hour Berlin's clocks skip
        fast_spec["timezone"] = "Europe/Berlin"
    grid: dict[str, Any] = {"window": "ten minutes" if brk == "window" else "1h"}
    if brk == "grid-end":
        grid["end"] = "2000-01-01"
    return {"tables": {"F": fast_spec, "S": {"path": "slow.csv", "time": ["t"]}}, "grid": grid,
            "modalities": {"a": {"table": "F", "columns": ["a1", "a2"], "lookback": 3},
                           "b": {"table": "S", "columns": ["b1"], "aggregate": "last"}},
            "targets": {"y": {"table": "S", "columns": ["y"], "horizon": "soon" if brk == "horizon" else "1h"}},
            "split": {"val": 0.2, "test": 0.2, "gap": "2h"}}


def _write_cube(folder: Path, fmt: str, name: str, a: np.ndarray, wl: list[float] | None) -> dict[str, Any]:
    """``a`` (rows, cols[, bands]) as a ``fmt`` file; returns its cube spec."""
    path = folder / f"{name}{_SUFFIX[fmt]}"
    cube = a if a.ndim == 3 else a[:, :, None]
    if fmt == "envi":
        cube.astype("<f4").transpose(2, 0, 1).tofile(path.with_suffix(".img"))  # bsq
        path.write_text(f"ENVI\nsamples = {cube.shape[1]}\nlines = {cube.shape[0]}\nbands = {cube.shape[2]}\n"
                        "header offset = 0\ndata type = 4\ninterleave = bsq\nbyte order = 0\n"
                        + (f"wavelength = {{{', '.join(f'{w:g}' for w in wl)}}}\n" if wl else ""))
        return {"path": path.name}
    if fmt == "mat":
        import scipy.io

        scipy.io.savemat(path, {"v": a})
        return {"path": path.name, "variable": "v", **({"wavelengths": wl} if wl else {})}
    if fmt == "netcdf":
        import xarray as xr

        da = (xr.DataArray(a.transpose(2, 0, 1), dims=("band", "y", "x"), coords={"wavelength": ("band", wl)})
              if a.ndim == 3 else xr.DataArray(a, dims=("y", "x")))
        xr.Dataset({"v": da}).to_netcdf(path)
        return {"path": path.name, "variable": "v"}
    import tifffile

    tifffile.imwrite(path, a.transpose(2, 0, 1) if a.ndim == 3 else a)  # bands first, as GDAL writes
    return {"path": path.name, **({"wavelengths": wl} if wl else {})}


def _cubes(folder: Path, fmt: str, brk: str, rng: np.random.Generator) -> dict[str, Any]:
    wl = [450.0, 500, 550, 600, 650, 700]
    cube = rng.random((8, 8, 6)).astype(np.float32)
    labels = np.where(rng.random((8, 8)) < 0.6, rng.integers(1, 3, (8, 8)), 0).astype(np.float32 if fmt == "envi"
                                                                                      else np.uint8)
    try:
        scene = _write_cube(folder, fmt, "scene", cube, wl)
        lab = _write_cube(folder, fmt, "labels", labels[:7] if brk == "labels" else labels, None)
    except ImportError:  # the writer's package is absent: a file the reader refuses (or names the extra for)
        (folder / f"scene{_SUFFIX[fmt]}").write_bytes(b"not a cube")
        scene, lab = {"path": f"scene{_SUFFIX[fmt]}"}, {"path": f"scene{_SUFFIX[fmt]}"}
    if brk == "damaged":
        target = folder / ("scene.img" if fmt == "envi" and rng.random() < 0.5 else scene["path"])
        _damage(target, rng)
    elif brk == "absent":
        scene["path"] = f"nothere{_SUFFIX[fmt]}"
    elif brk == "variable":
        scene["variable"] = "nope"
    elif brk == "layout":
        scene["layout"] = "bands-pixels"  # without shape
    rgb: dict[str, Any] = {"cube": "scene", "wavelengths": [640, 550, 460]}
    if brk == "band":
        rgb = {"cube": "scene", "bands": [0, int(rng.integers(6, 300))]}
    elif brk == "wavelength":
        rgb["wavelengths"] = [float(rng.choice([120.0, 900.0, 2500.0]))]
    return {"cubes": {"scene": scene, "labels": {**lab, "missing": [0]}},
            "modalities": {"a": {"cube": "scene"}, "b": rgb}, "targets": {"y": {"cube": "labels"}},
            "split": {"block": 2, "val": 0.2, "test": 0.25}}


def _pixels(folder: Path, brk: str, rng: np.random.Generator) -> dict[str, Any]:
    """Labelled-pixel sets: a training and a test label map, pixel lists placed at their pixels (``at``), an
    official test map and validation by whole class regions."""
    import scipy.io

    lab = rng.random((8, 8))
    train = np.where(lab < 0.6, rng.integers(1, 3, (8, 8)), 0).astype(np.uint8)
    test = np.where(lab > 0.8, rng.integers(1, 3, (8, 8)), 0).astype(np.uint8)
    n_tr, n_te = int((train > 0).sum()), int((test > 0).sum())
    mats = {"train": train, "test": test[:7] if brk == "test-map" else test,
            "a_tr": rng.random((n_tr - (brk == "count"), 6)), "b_tr": rng.random((n_tr, 3)),
            "b_te": rng.random((n_te, 3))}
    for k, v in mats.items():
        scipy.io.savemat(folder / f"{k}.mat", {"v": v})
    if brk == "damaged":
        _damage(folder / f"{rng.choice(list(mats))}.mat", rng)
    pl = {"layout": "pixels-bands"}
    return {"cubes": {"train": {"path": "train.mat", "missing": [0]}, "test": {"path": "test.mat", "missing": [0]},
                      "a_tr": {"path": "a_tr.mat", **pl, "at": "nowhere" if brk == "at" else "train"},
                      "b_tr": {"path": "b_tr.mat", **pl, "at": "train"},
                      "b_te": {"path": "b_te.mat", **pl, "at": "test"}},
            "modalities": {"a": {"cube": "a_tr"}, "b": {"cube": ["b_tr", "b_te"]}},
            "targets": {"y": {"cube": ["train", "test"]}}, "pixels": "labelled",
            "split": {"test_cube": "test", "regions": True, "val": 0.3}}


def write_source_case(folder: Path, reader: str, brk: str, seed: int = 0) -> Path:
    """Write case (``reader``, ``brk``) into ``folder``: the files and ``exp.yaml`` (modalities ``a`` for the
    teacher, ``b`` for the student, target ``y``); returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if reader in ("csv", "parquet"):
        src = _tables(folder, reader, brk, rng)
    elif reader == "stream":
        src = _stream(folder, brk, rng)
    elif reader == "pixels":
        src = _pixels(folder, brk, rng)
    else:
        src = _cubes(folder, reader, brk, rng)
    if brk == "no-source":
        del src["modalities"]["b"]
    elif brk == "unknown-file":
        src["modalities"]["b"] = {**src["modalities"]["b"], **({"table": "Z"} if "table" in src["modalities"]["b"]
                                                               else {"cube": "Z"})}
    elif brk == "aggregate":
        src["modalities"]["b"]["aggregate"] = "median"
    elif brk == "patch":
        src["modalities"]["b"]["patch"] = 4
    a_kind = "sequence" if reader == "stream" else "vector"
    cfg = {"name": f"sources-{reader}", "seed": 0,
           "data": {"modalities": {"a": {"kind": a_kind}, "b": {"kind": "vector"}},
                    "targets": {"y": {"kind": "classification" if reader in (*_SUFFIX, "pixels") else "regression"}},
                    "sources": src},
           "teacher": {"modalities": ["a", "b"], "width": 8, "heads": 2, "epochs": 1},
           "student": {"modalities": ["b"], "width": 8, "heads": 2, "epochs": 1},
           "export": {"enabled": False}, "references": False, "trees": False}
    p = folder / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p
