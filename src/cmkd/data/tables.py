"""Tables as they come: CSV and Parquet files, their timestamps, and timestamped streams at different rates
aligned onto one window grid.

Readers go through pandas (and pyarrow for Parquet), both in the ``tables`` extra. Times are converted to UTC
nanoseconds once they are read: a table's naive local timestamps are localised in its declared IANA zone
(the repeated autumn hour inferred from the order of the readings; a time in the spring gap is refused), so
windows never shift at a daylight-saving change. A window of a stream is the half-open interval
``[start, start + window)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError, require

AGGREGATES = ("mean", "last", "min-max", "count")


def _pd():  # noqa: ANN202 - the pandas module
    import pandas as pd  # a dependency of cmkd (imported where a table is read: `cmkd --help` stays fast)

    return pd


def to_ns(text: str, what: str) -> int:
    """A duration such as ``"10min"``, ``"1h"``, ``"2D"`` in nanoseconds (one-line error naming ``what``)."""
    pd = _pd()
    try:
        return int(pd.Timedelta(str(text)).as_unit("ns").value)
    except (ValueError, TypeError):
        raise CmkdError(f"{what}: {text!r} is not a duration (e.g. 10min, 1h, 2D)") from None


def read_table(path: Path, sep: str = ",", missing: list[float] | None = None,
               columns: list[str] | None = None):  # noqa: ANN201 - a pandas DataFrame
    """A CSV (``.csv``, ``.txt``, ``.csv.gz``, ...) or Parquet (``.parquet``, ``.pq``) file as a DataFrame.

    Args:
        path: the file.
        sep: the CSV field separator.
        missing: sentinel values meaning missing (e.g. ``[-200]``); they become NaN in numeric columns.
        columns: columns that must be there (a missing one is a one-line error naming it and the file).
    """
    pd = _pd()
    if not path.is_file():
        raise CmkdError(f"table not found: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            require("pyarrow", "tables", "reading a Parquet table")
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", skipinitialspace=True)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise CmkdError(f"{path}: not a readable table ({str(e).splitlines()[0][:160]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    for c in columns or []:
        if c not in df.columns:
            raise CmkdError(f"{path}: no column {c!r} (columns: {', '.join(map(str, df.columns[:20]))})")
    if missing:
        num = df.select_dtypes("number").columns
        df[num] = df[num].mask(df[num].isin(missing))
    return df


def numeric(df, cols: list[str], path: Path) -> np.ndarray:  # noqa: ANN001 - a DataFrame
    """Columns ``cols`` as float64 (N, F); a value that is not a number is a one-line error naming the column."""
    pd = _pd()
    out = np.empty((len(df), len(cols)), dtype=np.float64)
    for j, c in enumerate(cols):
        s = df[c]
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(v) & s.notna().to_numpy() & (s.astype(str).str.strip() != "").to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CmkdError(f"{path}: column {c!r} row {i + 2}: {str(s.iloc[i])[:40]!r} is not a number")
        if np.isinf(v).any():
            raise CmkdError(f"{path}: column {c!r} holds infinite values; use an empty cell for missing")
        out[:, j] = v
    return out


def parse_times(df, cols: list[str], path: Path, fmt: str | None = None,  # noqa: ANN001 - a DataFrame
                timezone: str | None = None) -> np.ndarray:
    """The time column(s) as int64 UTC nanoseconds (N,).

    Several columns (e.g. ``[Date, Time]``) are joined with a space. Timestamps that carry an offset
    (``2024-03-31T02:00:00+02:00``) are exact; naive ones are local times of ``timezone`` (default UTC).

    Raises:
        CmkdError: a value that does not parse (named with its row), a time in a daylight-saving gap, or an
            ambiguous repeated hour whose order does not tell which one it is.
    """
    pd = _pd()
    label = "+".join(cols)
    text = df[cols[0]].astype(str).str.strip()
    for c in cols[1:]:
        text = text + " " + df[c].astype(str).str.strip()
    try:
        t = pd.to_datetime(text, format=fmt, errors="coerce", utc=False)
    except (ValueError, TypeError):  # mixed offsets: parse each to UTC
        t = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    if t.dtype == object:  # mixed offsets
        t = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    bad = t.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CmkdError(f"{path}: time column {label!r} row {i + 2}: {text.iloc[i][:40]!r} does not parse as a time"
                        + (f" (format {fmt!r})" if fmt else " (set time_format)"))
    idx = pd.DatetimeIndex(t)
    if idx.tz is None:
        try:
            idx = idx.tz_localize(timezone or "UTC", ambiguous="infer", nonexistent="raise")
        except Exception as e:  # noqa: BLE001 - pytz/zoneinfo errors of a bad zone or a DST problem
            msg = str(e).splitlines()[0][:120]
            raise CmkdError(f"{path}: time column {label!r} in zone {timezone or 'UTC'}: {msg} (a time in a "
                            "daylight-saving gap, an ambiguous hour, or an unknown zone; give times with their "
                            "UTC offset, e.g. 2024-10-27T02:30:00+01:00)") from None
    return idx.tz_convert("UTC").as_unit("ns").asi8.astype(np.int64)


def iso(ns: np.ndarray) -> np.ndarray:
    """UTC nanoseconds as ISO strings (``2024-03-31T01:00:00``, UTC, no offset)."""
    return np.datetime_as_string(ns.astype("datetime64[ns]"), unit="s")


def aggregate(times: np.ndarray, values: np.ndarray, starts: np.ndarray, window: int, how: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate readings within the windows ``[start, start + window)``.

    Args:
        times: (M,) sorted int64 ns of the readings.
        values: (M, F) float64 with NaN for missing values.
        starts: (N,) int64 ns window starts.
        window: window length in ns.
        how: ``mean`` (NaN-ignoring), ``last`` (last non-NaN per column), ``min-max`` (F minima then F maxima)
            or ``count`` (non-NaN readings per column).

    Returns:
        (N, F') float32 values (NaN where a column has no reading) and (N,) bool: the window holds at least one
        non-NaN value (a window with none is absent).
    """
    lo = np.searchsorted(times, starts, side="left")
    hi = np.searchsorted(times, starts + window, side="left")
    ok = ~np.isnan(values)
    z = np.where(ok, values, 0.0)
    csum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(z, axis=0)])
    ccnt = np.vstack([np.zeros((1, values.shape[1]), dtype=np.int64), np.cumsum(ok, axis=0)])
    cnt = ccnt[hi] - ccnt[lo]
    present = (cnt > 0).any(axis=1)
    if how == "count":
        out = np.where(present[:, None], cnt, np.nan)
    elif how == "mean":
        with np.errstate(all="ignore"):
            out = np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)
    elif how == "last":
        m = len(times)
        pos = np.where(ok, np.arange(m)[:, None], -1)
        last = np.maximum.accumulate(pos, axis=0) if m else pos  # last valid row at or before each row
        prev = np.where((hi > 0)[:, None], last[np.maximum(hi - 1, 0)], -1)
        good = prev >= lo[:, None]
        out = np.where(good, values[np.maximum(prev, 0), np.arange(values.shape[1])], np.nan)
    elif how == "min-max":
        out = np.full((len(starts), 2 * values.shape[1]), np.nan)
        f = values.shape[1]
        with np.errstate(all="ignore"):
            for i in np.flatnonzero(present):
                seg = values[lo[i]:hi[i]]
                out[i, :f] = np.where(cnt[i] > 0, np.nanmin(np.where(ok[lo[i]:hi[i]], seg, np.inf), axis=0), np.nan)
                out[i, f:] = np.where(cnt[i] > 0, np.nanmax(np.where(ok[lo[i]:hi[i]], seg, -np.inf), axis=0), np.nan)
    else:
        raise CmkdError(f"aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")
    return out.astype(np.float32), present


def sequence(times: np.ndarray, values: np.ndarray, starts: np.ndarray, window: int, step: int, lookback: int,
             how: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``lookback`` windows ending with each sample's own, oldest first: (N, lookback, F') float32 and (N,)
    bool (at least one of them holds a reading). Windows before the first reading are NaN."""
    parts, pres = [], np.zeros(len(starts), dtype=bool)
    for k in range(lookback - 1, -1, -1):
        v, p = aggregate(times, values, starts - k * step, window, how)
        parts.append(v)
        pres |= p
    return np.stack(parts, axis=1), pres


def grid_starts(first: int, last: int, step: int, start: int | None = None, end: int | None = None) -> np.ndarray:
    """Window starts ``start, start + step, ...`` up to ``end`` (or the last reading): ``start`` defaults to the
    first reading floored to a multiple of ``step`` (UTC epoch)."""
    s = start if start is not None else (first // step) * step
    e = end if end is not None else last
    if e < s:
        raise CmkdError(f"the window grid is empty: it ends ({iso(np.array([e]))[0]}) before it starts "
                        f"({iso(np.array([s]))[0]})")
    # integer arithmetic: np.arange sizes its result in float64, which drops the last start of a long ns grid
    return s + step * np.arange((e - s) // step + 1, dtype=np.int64)


def longest_gap(times: np.ndarray) -> int:
    """The longest interval between consecutive readings, in ns (0 for fewer than two)."""
    return int(np.diff(times).max()) if len(times) > 1 else 0


def time_split(times: np.ndarray, val: float, test: float, gap: int, val_start: int | None = None,
               test_start: int | None = None) -> np.ndarray:
    """Split ids in time order: train (0) before validation (1) before test (2), by fraction of the samples or at
    the given start times; the samples within ``gap`` before the start of the next part get -1 (dropped)."""
    n = len(times)
    order = np.argsort(times, kind="stable")
    split = np.full(n, 2, dtype=np.int64)
    if val_start is not None or test_start is not None:
        vs = val_start if val_start is not None else test_start
        ts = test_start if test_start is not None else np.iinfo(np.int64).max
        split[times < ts] = 1
        split[times < vs] = 0
    else:
        n_tr = int(round(n * (1 - val - test)))
        n_va = int(round(n * val))
        split[order[:n_tr]] = 0
        split[order[n_tr:n_tr + n_va]] = 1
    if gap > 0:
        for part in (1, 2):
            if (split == part).any():
                begin = times[split == part].min()
                split[(split < part) & (split >= 0) & (times > begin - gap)] = -1
    return split


def local_path(base: Path, p: str) -> Path:
    """``p``, relative to ``base`` unless absolute (``~`` expanded)."""
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _complete(a: np.ndarray) -> np.ndarray:
    """(N,) every value of a sample is there (not NaN)."""
    return ~np.isnan(a.reshape(len(a), -1)).any(axis=1)


def build_tables(spec, base: Path, src: str, default_split) -> tuple:  # noqa: ANN001 - SourcesSpec, SplitSpec
    """Rows or streams of :class:`cmkd.data.sources.SourcesSpec` (see :mod:`cmkd.data.sources`): the arrays,
    the mode (``rows`` or ``streams``), channel names per modality and warnings."""
    need: dict[str, list[str]] = {}
    for s in [*spec.modalities.values(), *spec.targets.values()]:
        need.setdefault(s.table, []).extend(c for c in s.columns if c not in need.get(s.table, []))
    frames, times, paths = {}, {}, {}
    for name in need:
        t = spec.tables[name]
        p = local_path(base, t.path)
        paths[name] = p
        df = read_table(p, t.sep, t.missing, need[name] + list(t.time or []))
        if t.time:
            ns = parse_times(df, list(t.time), p, t.time_format, t.timezone)
            order = np.argsort(ns, kind="stable")
            df, ns = df.iloc[order].reset_index(drop=True), ns[order]
            times[name] = ns
        elif spec.grid is not None:
            raise CmkdError(f"{src}: table '{name}' ({p}) has no time column, but a grid aligns streams; set time")
        frames[name] = df
    warnings: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    if spec.grid is None:
        lens = {name: len(df) for name, df in frames.items()}
        if len(set(lens.values())) > 1:
            raise CmkdError(f"{src}: tables {', '.join(f'{k} ({v} rows)' for k, v in lens.items())} differ in length;"
                            " rows are samples only when they line up (or set a grid to align them by time)")
        for m, s in [*spec.modalities.items(), *spec.targets.items()]:
            if s.lookback > 1:
                raise CmkdError(f"{src}: '{m}' looks back {s.lookback} windows, which needs a grid")
            arrays[m] = numeric(frames[s.table], s.columns, paths[s.table]).astype(np.float32)
        stamps = next(iter(times.values()), None)
        mode = "rows"
    else:
        g = spec.grid
        window = to_ns(g.window, f"{src}: data.sources.grid.window")
        step = to_ns(g.step, f"{src}: data.sources.grid.step") if g.step else window
        if window <= 0 or step <= 0:
            raise CmkdError(f"{src}: data.sources.grid: window and step must be positive")
        first = min(int(t[0]) for t in times.values() if len(t))
        last = max(int(t[-1]) for t in times.values() if len(t))
        edge = [_instant(v, f"{src}: data.sources.grid.{k}") for k, v in (("start", g.start), ("end", g.end))]
        try:
            starts = grid_starts(first, last, step, *edge)
        except CmkdError as e:
            raise CmkdError(f"{src}: data.sources.grid: {e}") from None
        for m, s in [*spec.modalities.items(), *spec.targets.items()]:
            v = numeric(frames[s.table], s.columns, paths[s.table])
            shift = to_ns(s.horizon, f"{src}: target '{m}' horizon") if m in spec.targets else 0
            if s.lookback > 1:
                arrays[m], _ = sequence(times[s.table], v, starts + shift, window, step, s.lookback, s.aggregate)
            else:
                arrays[m], _ = aggregate(times[s.table], v, starts + shift, window, s.aggregate)
        for name, t in times.items():
            gap = longest_gap(t)
            if gap > window:
                warnings.append(f"table '{name}': a gap of {_pd().Timedelta(gap)} between readings, longer than "
                                f"the window ({g.window})")
        stamps = starts
        mode = "streams"
    for t in spec.targets:
        if arrays[t].shape[1] == 1:
            arrays[t] = arrays[t][:, 0]
    keep = np.zeros(len(next(iter(arrays.values()))), dtype=bool)
    for m in spec.modalities:
        keep |= ~np.isnan(arrays[m].reshape(len(keep), -1)).all(axis=1)
    for r in spec.require:
        keep &= _complete(arrays[r])
    if not keep.any():
        raise CmkdError(f"{src}: no sample is left (no row or window has "
                        + (f"all of {', '.join(spec.require)})" if spec.require else "any modality)"))
    arrays = {k: v[keep] for k, v in arrays.items()}
    stamps = stamps[keep] if stamps is not None else None
    sp = spec.split
    if stamps is not None or sp is not None:
        sp = sp or default_split
        order_t = stamps if stamps is not None else np.arange(int(keep.sum()), dtype=np.int64)
        tsv = [_instant(v, f"{src}: data.sources.split.{k}") for k, v in (("val_start", sp.val_start),
                                                                           ("test_start", sp.test_start))]
        if stamps is None and any(v is not None for v in tsv):
            raise CmkdError(f"{src}: data.sources.split.val_start/test_start need tables with a time column")
        gap = to_ns(sp.gap, f"{src}: data.sources.split.gap") if stamps is not None else 0
        split = time_split(order_t, sp.val, sp.test, gap, *tsv)
        ok = split >= 0
        arrays = {k: v[ok] for k, v in arrays.items()}
        arrays["split"] = split[ok]
        stamps = stamps[ok] if stamps is not None else None
    for m in spec.modalities:
        arrays[f"{m}__present"] = ~np.isnan(arrays[m].reshape(len(arrays[m]), -1)).all(axis=1)
    if stamps is not None:
        arrays["time"] = iso(stamps)
    chans = {m: _channel_names(s) for m, s in spec.modalities.items()}
    return arrays, mode, chans, warnings


def _instant(text: str | None, what: str) -> int | None:
    """A point in time (UTC unless it carries an offset) as ns, or None."""
    if text is None:
        return None
    pd = _pd()
    try:
        t = pd.Timestamp(str(text))
    except (ValueError, TypeError):
        raise CmkdError(f"{what}: {text!r} is not a time (e.g. 2024-03-31T00:00:00)") from None
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def _channel_names(s) -> list[str]:  # noqa: ANN001 - a ModalitySource
    if s.aggregate == "min-max":
        return [f"{c} min" for c in s.columns] + [f"{c} max" for c in s.columns]
    return list(s.columns)
