"""Spatially disjoint validation for label maps annotated as polygons: whole connected regions of one class held
out (used by cube sources with ``split.regions`` and by the houston recipe)."""

from __future__ import annotations

import numpy as np


def polygons(rows: np.ndarray, cols: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) polygon id of every pixel: connected components (8-neighbourhood) of same-class labelled pixels.

    Annotated training pixels often come as small polygons (Houston 2013: median 9 pixels, up to ~120); a pixel's
    neighbours in its polygon are near copies of it.
    """
    from scipy import ndimage

    ids = np.zeros(len(labels), dtype=np.int64)
    r0, c0 = rows.min(), cols.min()
    shape = (int(rows.max() - r0) + 1, int(cols.max() - c0) + 1)
    offset = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        grid = np.zeros(shape, dtype=bool)
        grid[rows[members] - r0, cols[members] - c0] = True
        lab, n = ndimage.label(grid, structure=np.ones((3, 3), dtype=bool))
        ids[members] = lab[rows[members] - r0, cols[members] - c0] + offset
        offset += n
    return ids


def hold_out_groups(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Hold out whole groups of each class: about ``fraction`` of every class's samples, never part of a group.

    For every class its groups are shuffled (seeded) and taken until they hold ``fraction`` of the class's
    samples, skipping one that would overshoot the share by more than 40%; where every group is too big, the
    smallest is taken.

    Args:
        groups: (N,) group id of every sample (pixels of one polygon, or of one spatial block).
        labels: (N,) class of every sample.
        fraction: share of each class to hold out.
        seed: shuffles the groups.

    Returns:
        (N,) bool, True for held-out samples.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keys = groups[members]
        ids = np.unique(keys)
        rng.shuffle(ids)
        sizes = np.array([(keys == g).sum() for g in ids])
        want, taken = fraction * len(members), 0
        for g, size in zip(ids, sizes):
            if taken >= want:
                break
            if taken + size <= 1.4 * want:
                out[members[keys == g]] = True
                taken += size
        if taken == 0:
            out[members[keys == ids[np.argmin(sizes)]]] = True
    return out


def region_split(rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for validation: whole polygons (:func:`polygons`) of each class, about ``fraction`` of its
    pixels (:func:`hold_out_groups`), so that no validation pixel has a training pixel of its polygon beside it."""
    return hold_out_groups(polygons(rows, cols, labels), labels, fraction, seed)
