"""Missingness patterns for sensor time series: random (MCAR), bursty outages, event-correlated (MNAR).

Every function returns a boolean mask, True where a reading is MISSING, and hits the requested missing fraction
to within one reading. Outages are laid down one at a time (a start and a length) until the requested fraction of
hours is missing; the last outage is cut short so the fraction is exact:

- ``random``: single readings missing completely at random (outage length 1).
- ``bursty``: outages whose lengths are geometric with mean ``mean_len`` (telemetry dropouts, power failures),
  starting anywhere with equal probability.
- ``storm``: outages start preferentially where ``severity`` is high (``P(start at t) ~ exp(beta * z_t)`` with
  ``z`` the standardised severity) and last longer there (a destroyed sensor waits for a repair crew), so the
  readings are missing precisely during the extremes that matter: missing not at random.

Whole-modality dropout of a sample (a satellite pass lost to cloud, a sensor station down) is the data's
``<modality>__present`` flag; in training, :class:`cmkd.nn.models.MultimodalNet` drops modalities with the model's
``modality_dropout`` (:func:`cmkd.nn.models.drop_modalities`), and the sequence encoder computes the time since each
feature was last observed (:meth:`cmkd.nn.encoders.SequenceEncoder.time_since`).
"""

from __future__ import annotations

import numpy as np

from cmkd.errors import CmkdError

PATTERNS = ("random", "bursty", "storm")


def _lay_outages(n: int, rate: float, rng: np.random.Generator, start_p: np.ndarray | None,
                 mean_len: np.ndarray | float) -> np.ndarray:
    """Add outages (start drawn from ``start_p``, geometric length) until ``round(rate * n)`` readings miss."""
    if not 0.0 <= rate <= 1.0:
        raise CmkdError(f"missing rate must be in [0, 1], got {rate}")
    want = int(round(rate * n))
    miss = np.zeros(n, dtype=bool)
    if want == 0:
        return miss
    if want >= n:
        return ~miss
    ml = np.broadcast_to(np.asarray(mean_len, dtype=float), (n,))
    count = 0
    while count < want:
        # draw a batch of starts at once (fast), lay them in order until the budget is spent
        # outages start where readings still arrive (a start inside an outage would add nothing)
        w = (start_p if start_p is not None else np.ones(n)) * ~miss
        w = w / w.sum() if w.sum() > 0 else (~miss) / (~miss).sum()
        starts = rng.choice(n, size=64, p=w)
        for s in starts:
            length = int(rng.geometric(1.0 / max(ml[s], 1.0)))
            seg = np.arange(s, min(n, s + length))
            new = seg[~miss[seg]]
            if len(new) == 0:
                continue
            new = new[: want - count]
            miss[new] = True
            count += len(new)
            if count >= want:
                break
    return miss


def random_mask(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Readings missing completely at random: (n,) bool, True = missing (exactly ``round(rate * n)``)."""
    if not 0.0 <= rate <= 1.0:
        raise CmkdError(f"missing rate must be in [0, 1], got {rate}")
    miss = np.zeros(n, dtype=bool)
    miss[rng.choice(n, size=int(round(rate * n)), replace=False)] = True
    return miss


def bursty_mask(n: int, rate: float, rng: np.random.Generator, mean_len: float = 24.0) -> np.ndarray:
    """Outages of geometric length (mean ``mean_len`` readings) at uniformly random starts: (n,) bool."""
    return _lay_outages(n, rate, rng, None, mean_len)


def storm_mask(severity: np.ndarray, rate: float, rng: np.random.Generator, mean_len: float = 24.0,
               beta: float = 2.5, storm_len_factor: float = 3.0) -> np.ndarray:
    """Event-correlated outages: sensors fail during extremes and stay down until repaired.

    Args:
        severity: (n,) how extreme conditions are at each reading (e.g. storm surge, wind speed).
        rate: missing fraction.
        rng: random generator.
        mean_len: mean outage length in calm conditions, in readings.
        beta: how strongly outage starts concentrate on severe readings (0 = bursty).
        storm_len_factor: outages starting at ``z = 2`` last about this many times longer than calm ones.

    Returns:
        (n,) bool, True = missing.
    """
    sev = np.asarray(severity, dtype=float)
    if sev.ndim != 1:
        raise CmkdError(f"severity must be one value per reading, got shape {sev.shape}")
    z = (sev - np.nanmean(sev)) / (np.nanstd(sev) + 1e-12)
    z = np.nan_to_num(z, nan=0.0)
    w = np.exp(beta * np.clip(z, -3.0, 5.0))
    lengths = mean_len * np.exp(np.log(storm_len_factor) / 2.0 * np.clip(z, 0.0, 4.0))
    return _lay_outages(len(sev), rate, rng, w / w.sum(), lengths)


def make_mask(pattern: str, n: int, rate: float, rng: np.random.Generator, severity: np.ndarray | None = None,
              mean_len: float = 24.0) -> np.ndarray:
    """The mask of a named pattern (``random``, ``bursty``, ``storm``); ``storm`` needs ``severity``."""
    if pattern == "random":
        return random_mask(n, rate, rng)
    if pattern == "bursty":
        return bursty_mask(n, rate, rng, mean_len)
    if pattern == "storm":
        if severity is None:
            raise CmkdError("the storm missingness pattern needs a severity series")
        return storm_mask(severity, rate, rng, mean_len)
    raise CmkdError(f"unknown missingness pattern '{pattern}'; valid: {', '.join(PATTERNS)}")


def channel_masks(station_down: np.ndarray, n_channels: int, rng: np.random.Generator,
                  channel_rate: float = 0.05, mean_len: float = 12.0) -> np.ndarray:
    """(n,) station-wide outages plus independent bursty failures of single channels: (n, C) bool."""
    out = np.repeat(np.asarray(station_down, dtype=bool)[:, None], n_channels, axis=1)
    for c in range(n_channels):
        out[:, c] |= bursty_mask(len(station_down), channel_rate, rng, mean_len)
    return out
