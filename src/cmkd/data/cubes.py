"""Cubes and rasters as they come: ENVI ``.hdr``/``.img``, GeoTIFF, MATLAB ``.mat`` and NetCDF/HDF5, read into
one (rows, cols, bands) float32 array; bands chosen by index or by wavelength; pixels or patches sampled from
it; spatially blocked splits.

ENVI is read by a small reader of the header (``samples``, ``lines``, ``bands``, ``interleave`` BSQ/BIL/BIP,
``data type``, ``byte order``, ``header offset``, ``wavelength``); GeoTIFF through tifffile, ``.mat`` through
scipy (HDF5-based v7.3 files through h5py), NetCDF/HDF5 through xarray. The GeoTIFF and NetCDF readers are in
the ``cubes`` extra.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cmkd.data.tables import local_path
from cmkd.errors import CmkdError, require

FORMATS = ("auto", "envi", "tiff", "mat", "netcdf")
LAYOUTS = ("auto", "rows-cols-bands", "bands-rows-cols", "bands-pixels", "pixels-bands")
ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_SUFFIX = {".hdr": "envi", ".img": "envi", ".dat": "envi", ".tif": "tiff", ".tiff": "tiff", ".mat": "mat",
           ".nc": "netcdf", ".nc4": "netcdf", ".h5": "netcdf", ".hdf5": "netcdf", ".he5": "netcdf"}


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The format of ``path`` from its suffix unless given."""
    if fmt != "auto":
        return fmt
    f = _SUFFIX.get(path.suffix.lower())
    if f is None:
        raise CmkdError(f"{path}: unknown cube format (suffix {path.suffix!r}); set format: "
                        f"{', '.join(FORMATS[1:])}")
    return f


def envi_header(path: Path) -> dict[str, str]:
    """The ``key = value`` pairs of an ENVI header (``{...}`` values may span lines), keys lower case."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CmkdError(f"{path}: cannot read the ENVI header ({e.strerror})") from None
    if not text.lstrip().upper().startswith("ENVI"):
        raise CmkdError(f"{path}: not an ENVI header (it must start with 'ENVI')")
    out: dict[str, str] = {}
    for m in re.finditer(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, flags=re.M):
        out[m.group(1).strip().lower()] = m.group(2).strip().strip("{}").strip()
    return out


def read_envi(path: Path) -> tuple[np.ndarray, list[float] | None]:
    """An ENVI cube (``.hdr`` beside the binary, or the binary beside its ``.hdr``) as (rows, cols, bands)."""
    hdr = path if path.suffix.lower() == ".hdr" else path.with_suffix(".hdr")
    if not hdr.is_file():
        raise CmkdError(f"{path}: ENVI header {hdr.name} not found beside it")
    h = envi_header(hdr)
    try:
        cols, rows, bands = int(h["samples"]), int(h["lines"]), int(h["bands"])
        code = int(h.get("data type", "4"))
        offset = int(h.get("header offset", "0"))
        big = int(h.get("byte order", "0")) == 1
    except KeyError as e:
        raise CmkdError(f"{hdr}: ENVI header lacks {e.args[0]!r}") from None
    except ValueError as e:
        raise CmkdError(f"{hdr}: ENVI header has a value that is not a number ({e})") from None
    if code not in ENVI_DTYPES:
        raise CmkdError(f"{hdr}: ENVI data type {code} is not supported (supported: {sorted(ENVI_DTYPES)})")
    inter = h.get("interleave", "bsq").lower()
    if inter not in ("bsq", "bil", "bip"):
        raise CmkdError(f"{hdr}: interleave {inter!r} is not bsq, bil or bip")
    if path.suffix.lower() == ".hdr":
        cands = [path.with_suffix(s) for s in (".img", ".dat", ".raw", ".bin", "")]
        data = next((c for c in cands if c.is_file() and c != hdr), None)
        if data is None:
            raise CmkdError(f"{hdr}: no binary file beside it (looked for .img, .dat, .raw, .bin)")
    else:
        data = path
    dt = np.dtype(ENVI_DTYPES[code]).newbyteorder(">" if big else "<")
    need = offset + rows * cols * bands * dt.itemsize
    size = data.stat().st_size
    if size < need:
        raise CmkdError(f"{data}: {size} bytes, but its header ({rows} lines x {cols} samples x {bands} bands of "
                        f"{dt.name}) needs {need}")
    flat = np.fromfile(data, dtype=dt, count=rows * cols * bands, offset=offset)
    shape = {"bsq": (bands, rows, cols), "bil": (rows, bands, cols), "bip": (rows, cols, bands)}[inter]
    order = {"bsq": (1, 2, 0), "bil": (0, 2, 1), "bip": (0, 1, 2)}[inter]
    cube = flat.reshape(shape).transpose(order).astype(np.float32)
    wl = None
    if "wavelength" in h:
        try:
            wl = [float(v) for v in h["wavelength"].replace("\n", " ").split(",") if v.strip()]
        except ValueError:
            raise CmkdError(f"{hdr}: its wavelength list holds a value that is not a number") from None
        if len(wl) != bands:
            raise CmkdError(f"{hdr}: {len(wl)} wavelengths for {bands} bands")
    if "data ignore value" in h:
        try:
            cube[cube == float(h["data ignore value"])] = np.nan
        except ValueError:
            pass
    return cube, wl


def _read_mat(path: Path, variable: str | None) -> np.ndarray:
    import scipy.io

    try:
        d = scipy.io.loadmat(path)
        names = [k for k in d if not k.startswith("__")]
        get = d.get
    except NotImplementedError:  # MATLAB v7.3: HDF5
        h5py = require("h5py", "cubes", "reading a MATLAB v7.3 (HDF5) file")
        f = h5py.File(path, "r")
        names = list(f.keys())
        get = lambda k: np.asarray(f[k]).T if k in f else None  # noqa: E731 - HDF5 stores MATLAB arrays transposed
    except (ValueError, OSError, TypeError) as e:
        raise CmkdError(f"{path}: not a readable .mat file ({str(e).splitlines()[0][:120]})") from None
    var = variable or (names[0] if len(names) == 1 else None)
    if var is None:
        raise CmkdError(f"{path}: holds {', '.join(names)}; set variable to one of them")
    a = get(var)
    if a is None:
        raise CmkdError(f"{path}: no variable {var!r} (variables: {', '.join(names)})")
    return np.asarray(a)


BAND_DIMS = ("band", "bands", "wavelength", "wavelengths", "lambda", "spectral")
WAVELENGTH_COORDS = ("wavelength", "wavelengths", "lambda", "center_wavelength")


def _read_netcdf(path: Path, variable: str | None) -> tuple[np.ndarray, list[float] | None, str | None]:
    """A NetCDF/HDF5 variable, its wavelengths (a numeric coordinate named wavelength, wavelengths, lambda or
    center_wavelength along a dimension) and, for a 3-D variable with a dimension named like a band axis (band,
    wavelength, ...), the array turned so that this axis is last."""
    xr = require("xarray", "cubes", "reading a NetCDF/HDF5 cube")
    try:
        ds = xr.open_dataset(path)
    except Exception as e:  # noqa: BLE001 - each engine raises its own
        msg = str(e).splitlines()[0][:120]
        if "backend" in msg or "engine" in msg:  # xarray without an engine for this file
            raise CmkdError(f"{path}: reading a NetCDF/HDF5 cube needs the optional package 'h5netcdf': "
                            "pip install 'cmkd[cubes]'") from None
        raise CmkdError(f"{path}: not a readable NetCDF/HDF5 file ({msg})") from None
    with ds:
        names = list(ds.data_vars)
        var = variable or (names[0] if len(names) == 1 else None)
        if var is None or var not in ds.data_vars:
            raise CmkdError(f"{path}: " + (f"no variable {var!r}" if var else "several variables")
                            + f" (variables: {', '.join(map(str, names))}); set variable")
        da = ds[var]
        dims = [str(d) for d in da.dims]
        band = next((d for d in dims if d.lower() in BAND_DIMS), None)
        wl = None
        for c in da.coords.values():
            if (str(c.name).lower() in WAVELENGTH_COORDS and c.ndim == 1 and c.dtype.kind in "fiu"
                    and str(c.dims[0]) in dims):
                wl, band = [float(v) for v in np.asarray(c.values)], band or str(c.dims[0])
                break
        if da.ndim == 3 and band is not None:
            return np.asarray(da.transpose(*[d for d in dims if d != band], band).values), wl, "rows-cols-bands"
        return np.asarray(da.values), wl, None


def read_array(path: Path, fmt: str = "auto", variable: str | None = None
               ) -> tuple[np.ndarray, list[float] | None, str | None]:
    """The raw array of a cube file, its wavelengths (ENVI headers) and the layout it implies (or None)."""
    if not path.exists():
        raise CmkdError(f"cube not found: {path}")
    fmt = detect_format(path, fmt)
    if variable is not None and fmt in ("envi", "tiff"):
        raise CmkdError(f"{path}: {'an ENVI' if fmt == 'envi' else 'a TIFF'} file holds one cube; variable "
                        f"({variable!r}) is for .mat and NetCDF/HDF5 files")
    if fmt == "envi":
        cube, wl = read_envi(path)
        return cube, wl, "rows-cols-bands"
    if fmt == "tiff":
        tifffile = require("tifffile", "cubes", "reading a GeoTIFF")
        try:
            with tifffile.TiffFile(path) as tf:
                s = tf.series[0]
                a, axes = s.asarray(), s.axes
        except Exception as e:  # noqa: BLE001 - tifffile raises several types
            raise CmkdError(f"{path}: not a readable TIFF ({str(e).splitlines()[0][:120]})") from None
        lay = None
        if a.ndim == 3:
            lay = "rows-cols-bands" if axes.endswith("S") else "bands-rows-cols" if axes.endswith("YX") else None
        return a, None, lay
    if fmt == "mat":
        return _read_mat(path, variable), None, None
    if fmt == "netcdf":
        return _read_netcdf(path, variable)
    raise CmkdError(f"{path}: unknown format {fmt!r}; choose one of {', '.join(FORMATS[1:])}")


def to_cube(a: np.ndarray, layout: str, src: str, shape: list[int] | None = None, order: str = "C") -> np.ndarray:
    """Any supported array as (rows, cols, bands) float32.

    Args:
        a: a 2-D raster (rows, cols), a 3-D cube, or a 2-D pixel list (``bands-pixels`` / ``pixels-bands``,
            with ``shape`` = [rows, cols] and ``order`` C (row-major) or F (MATLAB column-major)).
        layout: one of :data:`LAYOUTS`; ``auto`` takes the smallest axis of a 3-D array (first or last) as bands.
        src: the file, for messages.
    """
    if a.dtype.kind not in "fiub":
        raise CmkdError(f"{src}: holds {a.dtype} values, not numbers")
    a = np.asarray(a, dtype=np.float32)
    if layout in ("bands-pixels", "pixels-bands"):
        if a.ndim != 2 or not shape:
            raise CmkdError(f"{src}: layout {layout} needs a 2-D array and shape: [rows, cols] (got {a.shape})")
        px = a.T if layout == "bands-pixels" else a
        if px.shape[0] != shape[0] * shape[1]:
            raise CmkdError(f"{src}: {px.shape[0]} pixels, but shape {shape} makes {shape[0] * shape[1]}")
        return px.reshape(shape[0], shape[1], px.shape[1], order=order)
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim != 3:
        raise CmkdError(f"{src}: a cube must be 2-D or 3-D, got shape {a.shape}")
    if layout == "auto":
        layout = "bands-rows-cols" if a.shape[0] < a.shape[2] else "rows-cols-bands"
    return np.ascontiguousarray(np.moveaxis(a, 0, 2) if layout == "bands-rows-cols" else a)


def select_bands(cube: np.ndarray, wavelengths: list[float] | None, src: str, bands: list[int] | None = None,
                 nearest: list[float] | None = None, ranges: list[list[float]] | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """The chosen bands of a (rows, cols, B) cube and their names.

    Args:
        bands: band indices (0-based).
        nearest: wavelengths; the band nearest each (e.g. RGB from 640/550/460 nm).
        ranges: [low, high] wavelength intervals; the mean of the bands within each (a broad camera channel).
    """
    nb = cube.shape[2]

    def name(b: int) -> str:  # a band's wavelength where known, else its index
        return f"{wavelengths[b]:g}" if wavelengths is not None else f"band{b}"

    if bands is not None:
        bad = [b for b in bands if not 0 <= b < nb]
        if bad:
            raise CmkdError(f"{src}: band {bad[0]} is outside the cube's {nb} bands (0-{nb - 1})")
        return cube[:, :, bands], [name(b) for b in bands]
    if nearest is None and ranges is None:
        return cube, [name(b) for b in range(nb)]
    if wavelengths is None:
        raise CmkdError(f"{src}: bands chosen by wavelength, but the cube has none; give wavelengths")
    wl = np.asarray(wavelengths, dtype=np.float64)
    lo, hi = wl.min(), wl.max()
    step = float(np.median(np.diff(np.sort(wl)))) if nb > 1 else 0.0
    if nearest is not None:
        out = []
        for w in nearest:
            if not lo - step <= w <= hi + step:
                raise CmkdError(f"{src}: wavelength {w:g} is outside the cube's range {lo:g}-{hi:g}")
            out.append(int(np.argmin(np.abs(wl - w))))
        return cube[:, :, out], [f"{wl[b]:g}" for b in out]
    chans, names = [], []
    for r in ranges or []:
        if len(r) != 2 or r[0] > r[1]:
            raise CmkdError(f"{src}: band range {r} must be [low, high]")
        sel = np.flatnonzero((wl >= r[0]) & (wl <= r[1]))
        if len(sel) == 0:
            raise CmkdError(f"{src}: no band within {r[0]:g}-{r[1]:g} (the cube covers {lo:g}-{hi:g})")
        with np.errstate(all="ignore"):
            chans.append(np.nanmean(cube[:, :, sel], axis=2))
        names.append(f"{r[0]:g}-{r[1]:g}")
    return np.stack(chans, axis=2), names


def sample_pixels(cube: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int = 1) -> np.ndarray:
    """Pixel vectors (N, B) or patches (N, B, patch, patch) centred on (rows, cols); the border reflected."""
    if patch == 1:
        return cube[rows, cols]
    r = patch // 2
    pad = np.pad(cube, ((r, r), (r, r), (0, 0)), mode="reflect" if min(cube.shape[:2]) > r else "edge")
    off = np.arange(patch)
    p = pad[(rows[:, None] + off)[:, :, None], (cols[:, None] + off)[:, None, :]]  # (N, p, p, B)
    return np.ascontiguousarray(p.transpose(0, 3, 1, 2))


def block_split(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, block: int, val: float, test: float,
                seed: int) -> np.ndarray:
    """Spatially blocked split: square blocks of ``block`` pixels, shuffled (seeded), go to test until it holds
    ``test`` of the ``weight`` (e.g. labelled pixels), then to validation, the rest to training."""
    bid = (rows // block) * (int(cols.max()) // block + 1) + cols // block
    uniq, inv = np.unique(bid, return_inverse=True)
    w = np.bincount(inv, weights=weight, minlength=len(uniq))
    order = np.random.default_rng(seed).permutation(len(uniq))  # blocks in the order they are dealt out
    total = max(float(w.sum()), 1e-12)
    part = np.zeros(len(uniq), dtype=np.int64)
    if test > 0:  # 0: the test split is given otherwise (an official test map)
        acc = np.cumsum(w[order]) / total
        take = order[acc <= test + 1e-9]
        part[take if len(take) or len(order) < 3 else order[:1]] = 2
    rest = order[part[order] == 0]
    acc = np.cumsum(w[rest]) / total
    take = rest[acc <= val + 1e-9]
    part[take if len(take) or len(rest) < 2 else rest[:1]] = 1
    return part[inv.reshape(-1)]


def load_cube(spec, name: str, base: Path, cache: dict | None = None  # noqa: ANN001 - a SourcesSpec
              ) -> tuple[np.ndarray, list[float] | None, Path]:
    """Cube ``name`` of a :class:`cmkd.data.sources.SourcesSpec` as (rows, cols, bands) float32 with NaN for its
    ``missing`` values, its wavelengths and its path (kept in ``cache``, by name, where given). A pixel list
    ``at`` a raster fills the pixels that raster labels, in row-major order, and is NaN elsewhere."""
    if cache is not None and name in cache:
        return cache[name]
    c = spec.cubes[name]
    p = local_path(base, c.path)
    a, wl, lay = read_array(p, c.format, c.variable)
    if c.at is not None:
        raster, _, rp = load_cube(spec, c.at, base, cache)
        where = ~np.isnan(raster).all(axis=2)
        if a.dtype.kind not in "fiub" or a.ndim != 2:
            raise CmkdError(f"{p}: at needs a 2-D numeric pixel list, got {a.dtype} of shape {a.shape}")
        px = np.asarray(a.T if c.layout == "bands-pixels" else a, dtype=np.float32)
        if px.shape[0] != where.sum():
            raise CmkdError(f"{p}: {px.shape[0]} pixels, but {rp} (cube '{c.at}') labels {int(where.sum())}; at "
                            "needs one pixel per labelled pixel of that raster")
        cube = np.full((*where.shape, px.shape[1]), np.nan, dtype=np.float32)
        cube[where] = px
    else:
        cube = to_cube(a, lay if c.layout == "auto" and lay else c.layout, str(p), c.shape, c.order)
    for v in c.missing:
        cube[cube == v] = np.nan
    if c.wavelength_range is not None:
        wl = np.linspace(c.wavelength_range[0], c.wavelength_range[1], cube.shape[2]).tolist()
    wl = c.wavelengths or wl
    if wl is not None and len(wl) != cube.shape[2]:
        raise CmkdError(f"{p}: {len(wl)} wavelengths for {cube.shape[2]} bands")
    if cache is not None:
        cache[name] = (cube, wl, p)
    return cube, wl, p


def _names(cube: str | list[str]) -> list[str]:
    return [cube] if isinstance(cube, str) else list(cube)


def _split(spec, loaded: dict, maps: dict, rows: np.ndarray, cols: np.ndarray, lab: np.ndarray,  # noqa: ANN001
           default_split, src: str) -> np.ndarray:  # noqa: ANN001 - SourcesSpec, SplitSpec
    """Split codes of the sampled pixels: spatial blocks, or an official test map and whole class regions."""
    from cmkd.data.regions import region_split

    sp = spec.split or default_split
    h, w = lab.shape
    labelled = lab[rows, cols]
    test = np.zeros(len(rows), dtype=bool)
    if sp.test_cube is not None:
        test = ~np.isnan(loaded[sp.test_cube][0][rows, cols]).all(axis=1)
    split = np.where(test, 2, 0).astype(np.int64)
    rest = np.flatnonzero(~test)
    if sp.regions:
        t = next(iter(spec.targets))
        fit = rest[labelled[rest]]
        y = maps[t][rows[fit], cols[fit]]
        if y.shape[1] != 1 or np.any(y != np.round(y)):
            raise CmkdError(f"{src}: split.regions holds out regions of one class: target '{t}' must be one column "
                            "of class labels")
        split[fit[region_split(rows[fit], cols[fit], y[:, 0], sp.val, sp.seed)]] = 1
        return split
    block = sp.block or max(1, min(h, w) // 10)
    weight = labelled[rest].astype(np.float64) if labelled[rest].any() else np.ones(len(rest))
    split[rest] = block_split(rows[rest], cols[rest], weight, block, sp.val, 0.0 if test.any() else sp.test, sp.seed)
    return split


def build_cubes(spec, base: Path, src: str, default_split) -> tuple:  # noqa: ANN001 - SourcesSpec, SplitSpec
    """Pixels or patches of the cubes of :class:`cmkd.data.sources.SourcesSpec`: the arrays, the mode
    (``cubes``), channel names per modality and no warnings."""
    loaded: dict[str, tuple[np.ndarray, list[float] | None, Path]] = {}
    used = [c for s in [*spec.modalities.values(), *spec.targets.values()] for c in _names(s.cube)]
    if spec.split is not None and spec.split.test_cube is not None:
        used.append(spec.split.test_cube)
    for c in dict.fromkeys(used):
        load_cube(spec, c, base, loaded)
    (ref, (c0, _, p0)), *others = loaded.items()
    for _name, (c, _, p) in others:
        if c.shape[:2] != c0.shape[:2]:
            raise CmkdError(f"{p}: {c.shape[0]}x{c.shape[1]} pixels, but {p0} (cube '{ref}') has "
                            f"{c0.shape[0]}x{c0.shape[1]}; every cube and raster must cover the same pixels")
    h, w = c0.shape[:2]
    maps: dict[str, np.ndarray] = {}
    chans: dict[str, list[str]] = {}
    for m, s in [*spec.modalities.items(), *spec.targets.items()]:
        for i, c in enumerate(_names(s.cube)):  # several cubes: each pixel from the first that has a value there
            cube, wl, p = loaded[c]
            part, names = select_bands(cube, wl, f"{p} ({m})", s.bands, s.wavelengths, s.band_ranges)
            if i == 0:
                maps[m], chans[m] = part, names
                continue
            if part.shape[2] != maps[m].shape[2]:
                raise CmkdError(f"{p} ({m}): {part.shape[2]} bands, but the cube before it in the list gives "
                                f"{maps[m].shape[2]}; the cubes of one source need the same bands")
            if i == 1:
                maps[m] = maps[m].copy()  # it may be a loaded cube itself
            gap = np.isnan(maps[m]).all(axis=2)
            maps[m][gap] = part[gap]
    lab = np.zeros((h, w), dtype=bool)
    for t in spec.targets:
        lab |= ~np.isnan(maps[t]).all(axis=2)
    rows, cols = np.nonzero(lab) if spec.pixels == "labelled" else np.indices((h, w)).reshape(2, -1)
    if len(rows) == 0:
        raise CmkdError(f"{src}: no labelled pixel (every target value is missing)")
    first = _names(next(iter(spec.targets.values())).cube)
    if spec.pixels == "labelled" and len(first) > 1:  # the first target's rasters in turn, row-major within each
        rank = np.full(len(rows), len(first))
        for i, c in enumerate(first[::-1]):
            rank[~np.isnan(loaded[c][0][rows, cols]).all(axis=1)] = len(first) - 1 - i
        order = np.argsort(rank, kind="stable")
        rows, cols = rows[order], cols[order]
    arrays: dict[str, np.ndarray] = {}
    for m, s in spec.modalities.items():
        arrays[m] = sample_pixels(maps[m], rows, cols, s.patch).astype(np.float32)
        arrays[f"{m}__present"] = ~np.isnan(arrays[m].reshape(len(rows), -1)).all(axis=1)
    for t, s in spec.targets.items():
        y = sample_pixels(maps[t], rows, cols, 1)
        if s.patch > 1:
            raise CmkdError(f"{src}: target '{t}' has patch {s.patch}; a target is one pixel's value")
        arrays[t] = y[:, 0] if y.shape[1] == 1 else y
    arrays["split"] = _split(spec, loaded, maps, rows, cols, lab, default_split, src)
    for r in spec.require:
        keep = ~np.isnan(arrays[r].reshape(len(rows), -1)).any(axis=1)
        arrays = {k: v[keep] for k, v in arrays.items()}
        rows, cols = rows[keep], cols[keep]
    arrays["row"], arrays["col"] = rows.astype(np.int64), cols.astype(np.int64)
    return arrays, "cubes", {m: chans[m] for m in spec.modalities}, []
