"""Data as they come: the ``data.sources`` section of the experiment YAML and the arrays built from it.

Three shapes of data, one spec:

- **rows**: tables whose rows are the samples (no ``grid``): each modality is a set of columns, each target a
  column; several tables must have the same number of rows.
- **streams**: timestamped tables at their own rates, aligned onto one window ``grid`` (window length and step):
  each modality aggregates its readings within a window (``mean``, ``last``, ``min-max``, ``count``), a sequence
  modality looks back ``lookback`` windows, a window without a reading leaves the modality absent for that
  sample (``<m>__present``), a target is aggregated over the window ``horizon`` later.
- **cubes**: pixels (or patches) of image cubes and rasters of the same size; bands by index, nearest
  wavelength or wavelength range; a label raster's 0 (or any declared ``missing`` value) marks an unlabelled
  pixel, which stays as a paired unlabelled sample for the teacher terms; spatially blocked splits.

The build returns the dict of arrays an ``.npz`` holds (modality keys, ``<m>__present``, targets, ``split``) plus
``time`` (ISO UTC strings) or ``row``/``col`` (pixel positions) for the inspection table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cmkd.config import DataConfig, ModalitySpec
from cmkd.data import cubes as cb
from cmkd.data import tables as tb
from cmkd.errors import CmkdError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TableSpec(_Strict):
    """One table file."""

    path: str = Field(description="CSV (any other suffix) or Parquet (.parquet, .pq) file, relative to the YAML")
    sep: str = Field(",", description="CSV field separator")
    time: list[str] | None = Field(None, description="Column(s) holding each row's timestamp; several are joined "
                                   "with a space (e.g. [Date, Time]). Required for streams")
    time_format: str | None = Field(None, description="strftime format of the time text (default: inferred)")
    timezone: str | None = Field(None, description="IANA zone of timestamps without a UTC offset (e.g. "
                                 "Europe/Rome); the repeated autumn hour is inferred from the order of the rows, "
                                 "a time in the spring gap is refused. Default UTC")
    missing: list[float] = Field(default_factory=list, description="Sentinel values meaning missing, e.g. [-200]")


class CubeSpec(_Strict):
    """One image cube or raster file (every cube of a spec has the same rows and columns)."""

    path: str = Field(description="ENVI .hdr (or its .img), GeoTIFF .tif, MATLAB .mat or NetCDF/HDF5 .nc/.h5 file")
    format: Literal["auto", "envi", "tiff", "mat", "netcdf"] = Field("auto", description="Default: from the suffix")
    variable: str | None = Field(None, description="Variable of a .mat or NetCDF file holding several")
    layout: Literal["auto", "rows-cols-bands", "bands-rows-cols", "bands-pixels", "pixels-bands"] = Field(
        "auto", description="Axis order; auto takes a 3-D array's smallest end axis as bands. The pixel layouts "
        "are 2-D matrices of pixel spectra and need shape")
    shape: list[int] | None = Field(None, min_length=2, max_length=2, description="[rows, cols] of a pixel layout")
    order: Literal["C", "F"] = Field("C", description="Pixel order of a pixel layout: C row-major, F MATLAB's "
                                     "column-major")
    wavelengths: list[float] | None = Field(None, description="Band centres in nm (ENVI headers and NetCDF "
                                            "wavelength coordinates carry their own)")
    wavelength_range: list[float] | None = Field(None, min_length=2, max_length=2, description="[first, last] "
                                                 "band centre in nm of evenly spaced bands, instead of wavelengths")
    missing: list[float] = Field(default_factory=list, description="Values meaning missing (a label raster's "
                                 "unlabelled 0: [0])")
    at: str | None = Field(None, description="A pixel list (layout pixels-bands or bands-pixels) of the pixels this "
                           "raster (a key of cubes) labels, in row-major order, as labelled samples are often "
                           "shipped (e.g. Houston 2013's *_TrSet.mat); instead of shape")

    @model_validator(mode="after")
    def _one_wavelength_list(self) -> CubeSpec:
        if self.wavelengths is not None and self.wavelength_range is not None:
            raise ValueError("give wavelengths or wavelength_range, not both")
        if self.at is not None and (self.shape is not None or self.layout not in ("pixels-bands", "bands-pixels")):
            raise ValueError("at places a pixel list: give layout pixels-bands or bands-pixels, and no shape")
        return self


class ModalitySource(_Strict):
    """Where one modality (a key of data.modalities) comes from."""

    table: str | None = Field(None, description="Table it comes from (a key of tables)")
    cube: str | list[str] | None = Field(None, description="Cube it comes from (a key of cubes), or several: a "
                                         "pixel takes its value from the first that has one there (e.g. the label "
                                         "from the training map, else the test map); a target's list also orders "
                                         "the labelled pixels: those of its first cube, then the next (row-major "
                                         "within each)")
    columns: list[str] | None = Field(None, min_length=1, description="Table columns, one feature each")
    aggregate: Literal["mean", "last", "min-max", "count"] = Field("mean", description="Streams: how readings "
                                                                   "within a window combine (min-max: F minima "
                                                                   "then F maxima)")
    lookback: int = Field(1, ge=1, le=10_000, description="Streams: windows a sequence modality looks back "
                          "(>1 gives (N, lookback, F), kind sequence)")
    bands: list[int] | None = Field(None, min_length=1, description="Cubes: band indices (0-based)")
    wavelengths: list[float] | None = Field(None, min_length=1, description="Cubes: the band nearest each "
                                            "wavelength (e.g. [640, 550, 460] for RGB)")
    band_ranges: list[list[float]] | None = Field(None, min_length=1, description="Cubes: the mean of the bands "
                                                  "within each [low, high] nm (a broad camera channel)")
    patch: int = Field(1, ge=1, le=63, description="Cubes: patch side in pixels (odd; >1 gives kind image "
                       "(N, C, patch, patch))")
    units: str | None = Field(None, description="Units of the values, for the report")
    channels: list[str] | None = Field(None, description="Channel names (default: the columns or wavelengths)")

    @model_validator(mode="after")
    def _one_origin(self) -> ModalitySource:
        if (self.table is None) == (self.cube is None):
            raise ValueError("give exactly one of table or cube")
        if isinstance(self.cube, list) and not self.cube:
            raise ValueError("cube: give a cube or a non-empty list of cubes")
        if self.table is not None and not self.columns:
            raise ValueError("a table source needs columns")
        if sum(x is not None for x in (self.bands, self.wavelengths, self.band_ranges)) > 1:
            raise ValueError("give at most one of bands, wavelengths, band_ranges")
        if self.patch % 2 == 0:
            raise ValueError("patch must be odd")
        return self


class TargetSource(ModalitySource):
    """Where one target (a key of data.targets) comes from."""

    horizon: str = Field("0s", description="Streams: the target is aggregated over the window this much later "
                         "(e.g. 1h: predict the next hour)")


class GridSpec(_Strict):
    """The window grid of streams (all times UTC; windows are [start, start + window))."""

    window: str = Field(description="Window length, e.g. 1h, 10min")
    step: str | None = Field(None, description="Distance between window starts (default: the window length)")
    start: str | None = Field(None, description="First window start (default: the first reading, floored to step)")
    end: str | None = Field(None, description="Last window start (default: the last reading)")


class SplitSpec(_Strict):
    """How samples are split: by time for tables (train before validation before test), by spatial blocks for
    cubes."""

    val: float = Field(0.15, ge=0, lt=0.5, description="Share of samples in validation")
    test: float = Field(0.2, gt=0, lt=0.7, description="Share of samples in test")
    val_start: str | None = Field(None, description="Tables: validation starts at this time (instead of val)")
    test_start: str | None = Field(None, description="Tables: test starts at this time (instead of test)")
    gap: str = Field("0s", description="Tables: samples within this time before the next part starts are dropped "
                     "(at least the horizon plus the window keeps targets out of the next part)")
    block: int | None = Field(None, ge=1, description="Cubes: side of the square blocks dealt to the parts "
                              "(default: a tenth of the shorter side)")
    seed: int = Field(0, description="Cubes: seed of the block (or region) shuffle")
    test_cube: str | None = Field(None, description="Cubes: the pixels this raster (a key of cubes) labels are the "
                                  "test split (an official test map), instead of test blocks")
    regions: bool = Field(False, description="Cubes: validation holds out whole connected regions of one class "
                          "(annotated polygons), about val of each class's labelled pixels, instead of blocks")
    label_fraction: float | None = Field(None, gt=0, le=1, description="Keep the labels of only this seeded "
                                         "share of training samples (the rest stay as unlabelled pairs)")


class SourcesSpec(_Strict):
    """``data.sources``: the files and what each modality and target is made of."""

    tables: dict[str, TableSpec] = Field(default_factory=dict, description="Table files by name")
    cubes: dict[str, CubeSpec] = Field(default_factory=dict, description="Cube and raster files by name")
    grid: GridSpec | None = Field(None, description="Streams: the window grid (tables with time columns)")
    modalities: dict[str, ModalitySource] = Field(description="Source of each modality of data.modalities")
    targets: dict[str, TargetSource] = Field(description="Source of each target of data.targets")
    require: list[str] = Field(default_factory=list, description="Modalities/targets a sample must have (rows or "
                               "windows without them are dropped); default: at least one modality")
    pixels: Literal["all", "labelled"] = Field("all", description="Cubes: every pixel (unlabelled ones paired for "
                                               "the teacher terms) or only labelled pixels")
    split: SplitSpec | None = Field(None, description="Default: by time (tables with time), by blocks (cubes), "
                                    "else a seeded stratified split")


@dataclass
class Built:
    """What a spec built: the arrays and what the inspection table reports besides them."""

    arrays: dict[str, np.ndarray]
    mode: str  # rows | streams | cubes
    channels: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)


def parse_spec(raw: dict[str, Any], src: str) -> SourcesSpec:
    """Validate ``data.sources``: a one-line CmkdError naming the first bad field."""
    try:
        return SourcesSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise CmkdError(f"{src}: data.sources.{loc}: {err['msg']}") from None


def absolute_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of ``data.sources`` whose table and cube paths are absolute (relative ones start at ``base``), so
    the config saved with a model rebuilds the same data from anywhere."""
    out = dict(raw)
    for group in ("tables", "cubes"):
        if isinstance(raw.get(group), dict):
            out[group] = {k: ({**v, "path": str(tb.local_path(base, v["path"]).resolve())}
                              if isinstance(v, dict) and isinstance(v.get("path"), str) else v)
                          for k, v in raw[group].items()}
    return out


def _check_names(spec: SourcesSpec, cfg: DataConfig, src: str) -> None:
    for kind, have, want in (("modality", spec.modalities, cfg.modalities), ("target", spec.targets, cfg.targets)):
        for name in want:
            if name not in have:
                raise CmkdError(f"{src}: data.sources gives no source for {kind} '{name}' (declared in data)")
        for name, s in have.items():
            if name not in want:
                raise CmkdError(f"{src}: data.sources has a source for {kind} '{name}', which data does not "
                                "declare")
            if s.table is not None and s.table not in spec.tables:
                raise CmkdError(f"{src}: {kind} '{name}': no table '{s.table}' in data.sources.tables")
            for c in ([s.cube] if isinstance(s.cube, str) else s.cube or []):
                if c not in spec.cubes:
                    raise CmkdError(f"{src}: {kind} '{name}': no cube '{c}' in data.sources.cubes")
    for name, c in spec.cubes.items():
        if c.at is not None and (c.at not in spec.cubes or spec.cubes[c.at].at is not None):
            raise CmkdError(f"{src}: data.sources.cubes.{name}.at: '{c.at}' must be another cube of data.sources.cubes "
                            "that is a raster itself (no at)")
    sp = spec.split
    if sp is not None and sp.test_cube is not None and sp.test_cube not in spec.cubes:
        raise CmkdError(f"{src}: data.sources.split.test_cube: no cube '{sp.test_cube}' in data.sources.cubes")
    for r in spec.require:
        if r not in spec.modalities and r not in spec.targets:
            raise CmkdError(f"{src}: data.sources.require names '{r}', neither a modality nor a target")


def build(raw: dict[str, Any], cfg: DataConfig, base: Path, seed: int = 0, src: str = "data.sources") -> Built:
    """Build the arrays of ``data.sources`` (``raw``, as in the YAML) for the ``data`` section ``cfg``.

    Args:
        raw: the ``data.sources`` mapping.
        cfg: the validated ``data`` section (its modalities and targets name what the spec must give).
        base: the folder relative paths start from (the YAML's).
        seed: seeds ``split.label_fraction``.
        src: the YAML, for messages.
    """
    spec = parse_spec(raw, src)
    _check_names(spec, cfg, src)
    uses_cube = [s.cube is not None for s in [*spec.modalities.values(), *spec.targets.values()]]
    if any(uses_cube) and not all(uses_cube):
        raise CmkdError(f"{src}: data.sources mixes tables and cubes; every modality and target comes from one kind")
    if all(uses_cube):
        b = Built(*cb.build_cubes(spec, base, src, SplitSpec()))
    else:
        b = Built(*tb.build_tables(spec, base, src, SplitSpec()))
    sp = spec.split
    if sp is not None and sp.label_fraction is not None and sp.label_fraction < 1:
        _thin_labels(b.arrays, cfg, sp.label_fraction, seed)
    for m, s in spec.modalities.items():
        if s.units:
            b.units[m] = s.units
        if s.channels:
            b.channels[m] = list(s.channels)
    return b


def build_inputs(raw: dict[str, Any], modalities: list[str], base: Path, src: str = "data.sources") -> Built:
    """Build ``data.sources`` whose modalities are the raw inputs of a recipe's domain code (no targets), e.g.
    coastal-real's two gauges on an hourly grid, from which the recipe derives the run's modalities and target.

    Args:
        raw: the ``data.sources`` mapping (``targets`` may be empty).
        modalities: the names the recipe reads (each must have a source, and no other).
        base: the folder relative paths start from.
        src: the YAML or recipe, for messages.
    """
    cfg = DataConfig.model_construct(modalities={m: ModalitySpec(kind="vector") for m in modalities}, targets={})
    return build({"targets": {}, **raw}, cfg, base, 0, src)


def declare_names(b: Built, raw: dict[str, Any], cfg: DataConfig) -> None:
    """Carry the names and units that ``data.sources`` declares into ``cfg`` (the ``data`` section) where it
    leaves them unset, so that they reach metrics.json, the report and the edge model's sidecar: a modality's
    ``channels`` (declared, else its columns or band wavelengths) when they name every channel of its feature
    axis; a target's ``units``, and a regression target's output ``columns`` (its declared ``channels``, else its
    table columns) when it has several. A modality's ``units`` stay in ``data.sources`` (the sidecar reads them
    there)."""
    from cmkd.data.arrays import FEATURE_AXIS

    spec = parse_spec(raw, "data.sources")
    for m, names in b.channels.items():
        ms, a = cfg.modalities.get(m), b.arrays.get(m)
        if ms is None or ms.channels is not None or ms.kind not in FEATURE_AXIS or a is None:
            continue
        axis = 1 + FEATURE_AXIS[ms.kind]
        if a.ndim > axis and a.shape[axis] == len(names):
            ms.channels = list(names)
    for t, s in spec.targets.items():
        ts = cfg.targets[t]
        if ts.units is None and s.units:
            ts.units = s.units
        y = b.arrays.get(t)
        cols = s.channels or (s.columns if s.table is not None else None)
        if (ts.kind == "regression" and ts.columns is None and cols and y is not None and y.ndim == 2
                and y.shape[1] == len(cols)):
            ts.columns = list(cols)


def _thin_labels(arrays: dict[str, np.ndarray], cfg: DataConfig, fraction: float, seed: int) -> None:
    """Keep the labels of ``round(fraction * n_train)`` seeded training samples (at least 2), as the recipes'
    label-sparse regime does; the others become unlabelled (NaN, or -1 for class ids)."""
    split = arrays["split"]
    keep = split != 0
    tr = np.flatnonzero(split == 0)
    k = max(2, int(round(fraction * len(tr))))
    keep[np.random.default_rng(seed).choice(tr, size=min(k, len(tr)), replace=False)] = True
    for t in cfg.targets:
        y = arrays[t]
        arrays[t] = np.where(keep if y.ndim == 1 else keep[:, None], y, np.nan).astype(np.float32)
