"""Larger-than-memory datasets: a directory of ``.npy`` shards, read memory-mapped and gathered batch by batch.

Layout: ``DATA_DIR/<shard>/<key>.npy``, one sub-folder per shard (sorted by name), every shard holding the same
keys (modalities, targets, ``split``, optional ``<modality>__present``) for its own samples, in the same row
order. Point ``data.path`` at the directory. Numeric modalities stay on disk: each is a :class:`ShardedArray`
whose rows are gathered on demand (a batch, a chunk), and the pages it touched are released right after, so
the resident memory stays bounded whatever the dataset's size. One-dimensional keys (targets, split, masks) and
text are read into memory (they are small: one value per sample).
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cmkd.errors import CmkdError
from cmkd.io import atomic_write
from cmkd.validate import check_regular_file


class ShardedArray:
    """Rows of several memory-mapped ``.npy`` files seen as one array (first axis concatenated).

    Indexing with an int, a slice, an integer or boolean array returns an in-memory ``np.ndarray`` (float data as
    float32); rows flagged in ``absent`` come back all NaN (a modality marked absent for those samples).
    """

    def __init__(self, files: list[Path], name: str = "") -> None:
        self.files = list(files)
        self.name = name
        self.maps = []
        for f in self.files:
            check_regular_file(f, "shard file")  # a FIFO would block np.load forever
            try:
                self.maps.append(np.load(f, mmap_mode="r", allow_pickle=False))
            except (ValueError, OSError) as e:
                raise CmkdError(f"{f}: not a readable .npy shard ({str(e).splitlines()[0][:100]})") from None
        for f, m in zip(self.files, self.maps, strict=True):
            if m.ndim == 0:  # one value, not one per sample
                raise CmkdError(f"{f}: '{name}' is a single value (shape ()); a shard holds one row per sample")
            if m.dtype.kind not in "fiubUS" or m.dtype.fields is not None:
                raise CmkdError(f"{f}: '{name}' has dtype {m.dtype}; shards hold numbers (or text)")
        tails = {m.shape[1:] for m in self.maps}
        dtypes = {m.dtype for m in self.maps}
        if len(tails) != 1 or len(dtypes) != 1:
            raise CmkdError(f"shards of '{name}' disagree on per-sample shape or dtype: {sorted(map(str, tails))} "
                            f"{sorted(map(str, dtypes))}")
        self.lengths = np.array([len(m) for m in self.maps], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        raw = dtypes.pop()
        self.raw_dtype = raw
        self.dtype = np.dtype(np.float32) if raw.kind in "fiub" else raw
        self.shape = (int(self.offsets[-1]), *tails.pop())
        self.ndim = len(self.shape)
        self.absent: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def _release(self, s: int) -> None:
        """Drop shard ``s``'s touched pages from this process (they stay in the OS page cache)."""
        mm = getattr(self.maps[s], "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    def __getitem__(self, key: object) -> np.ndarray:
        scalar = isinstance(key, (int, np.integer))
        if scalar:
            idx = np.array([int(key) % len(self)])
        elif isinstance(key, slice):
            idx = np.arange(len(self))[key]
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            rows = idx[sel] - self.offsets[s]
            order = np.argsort(rows, kind="stable")  # read each shard front to back
            out[sel[order]] = self.maps[s][rows[order]]
            self._release(int(s))
        if self.absent is not None and self.dtype.kind == "f":
            out[self.absent[idx]] = np.nan
        return out[0] if scalar else out

    def chunks(self, rows: np.ndarray | None = None, size: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, values) for ``rows`` (default all), ``size`` rows at a time."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        for s in range(0, len(rows), size):
            part = rows[s:s + size]
            yield part, self[part]


def is_sharded(path: str | Path) -> bool:
    """True when ``path`` is a directory (a sharded dataset)."""
    return Path(path).is_dir()


def load_shards(path: str | Path, big: set[str] | None = None) -> dict[str, np.ndarray | ShardedArray]:
    """Open a sharded dataset (see the module docs). Keys whose arrays have more than one dimension (or that are
    named in ``big``) stay on disk as :class:`ShardedArray`; the others are read into memory."""
    root = Path(path)
    shards = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not shards:
        raise CmkdError(f"{root}: a sharded dataset needs sub-folders (one per shard) of .npy files")
    keys = sorted(f.stem for f in shards[0].glob("*.npy"))
    if not keys:
        raise CmkdError(f"{shards[0]}: no .npy file in the first shard")
    for s in shards[1:]:
        have = sorted(f.stem for f in s.glob("*.npy"))
        if have != keys:
            raise CmkdError(f"{s}: shard keys {have} differ from {shards[0].name}'s {keys}")
    out: dict[str, np.ndarray | ShardedArray] = {}
    for k in keys:
        arr = ShardedArray([s / f"{k}.npy" for s in shards], k)
        lens = arr.lengths
        if k in (big or set()) or arr.ndim > 1:
            out[k] = arr
        else:
            out[k] = np.concatenate([np.asarray(m) for m in arr.maps]) if len(lens) else np.empty(0)
    n = {len(v) for v in out.values()}
    if len(n) != 1:
        raise CmkdError(f"{root}: keys have different sample counts across the shards")
    return out


def write_shards(folder: str | Path, arrays: dict[str, np.ndarray], shard: int) -> Path:
    """Write one shard (a sub-folder of ``.npy`` files) of a sharded dataset; returns its path."""
    d = Path(folder) / f"shard_{shard:05d}"
    d.mkdir(parents=True, exist_ok=True)
    for k, v in arrays.items():
        atomic_write(d / f"{k}.npy", functools.partial(np.save, arr=v, allow_pickle=False))
    return d
