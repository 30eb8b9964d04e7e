"""Classical tidal harmonic analysis (numpy only): least squares on the available readings of a gappy series.

The water level is modelled as a mean, an optional linear trend and a sum of tidal constituents of known
angular speed ``w_k`` (degrees per hour)::

    h(t) = mean + trend * (t - t0) + sum_k A_k * cos(w_k * t - g_k)

fitted by ordinary least squares with one cosine and one sine column per constituent, on the readings that
exist (NaN readings are ignored, so any missingness pattern is fine). ``t`` is in hours since an epoch of the
caller's choice; phases ``g_k`` are relative to ``t = 0`` (not Greenwich phase lags: no astronomical arguments or
nodal corrections are applied, so fit at most a few years at a time when the 18.6-year nodal cycle matters).

Speeds are the standard Doodson values (e.g. Pugh & Woodworth, *Sea-Level Science*, 2014, table 4.2). Two
constituents can only be separated by a record longer than the synodic period ``360 / |w_a - w_b|`` hours
(Rayleigh criterion): K2/S2 and P1/K1 need half a year, SA needs a year.

Example:
    >>> t = np.arange(24 * 60.0)
    >>> h = 100 * np.cos(np.deg2rad(CONSTITUENTS["M2"] * t - 40))
    >>> model = fit(t, h, ["M2", "S2"])
    >>> round(model.amplitudes["M2"], 3), round(model.phases["M2"], 3)
    (100.0, 40.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmkd.errors import CmkdError

#: constituent name -> angular speed in degrees per hour
CONSTITUENTS: dict[str, float] = {
    # long period
    "SA": 0.0410686, "SSA": 0.0821373, "MM": 0.5443747, "MSF": 1.0158958, "MF": 1.0980331,
    # diurnal
    "2Q1": 12.8542862, "Q1": 13.3986609, "O1": 13.9430356, "M1": 14.4966939, "P1": 14.9589314,
    "S1": 15.0000000, "K1": 15.0410686, "J1": 15.5854433, "OO1": 16.1391017,
    # semidiurnal
    "2N2": 27.8953548, "MU2": 27.9682084, "N2": 28.4397295, "NU2": 28.5125831, "M2": 28.9841042,
    "LAM2": 29.4556253, "L2": 29.5284789, "T2": 29.9589333, "S2": 30.0000000, "K2": 30.0821373,
    "2SM2": 31.0158958,
    # shallow water (overtides and compound tides: strong where the tide runs into shallow estuaries)
    "MO3": 42.9271398, "M3": 43.4761563, "MK3": 44.0251729, "MN4": 57.4238337, "M4": 57.9682084,
    "MS4": 58.9841042, "MK4": 59.0662415, "S4": 60.0000000, "2MN6": 86.4079380, "M6": 86.9523127,
    "2MS6": 87.9682084, "2SM6": 88.9841042, "M8": 115.9364166,
}

#: the five main constituents
DEFAULT: tuple[str, ...] = ("M2", "S2", "N2", "K1", "O1")

#: a set for one year of hourly readings at a shallow-water station such as Vlissingen (Westerschelde):
#: main diurnal and semidiurnal lines, their neighbours, seasonal cycles and the strong overtides
SHALLOW_WATER: tuple[str, ...] = (
    "SA", "SSA", "MSF", "Q1", "O1", "P1", "K1", "2N2", "MU2", "N2", "NU2", "M2", "L2", "S2", "K2",
    "MO3", "MK3", "MN4", "M4", "MS4", "2MN6", "M6", "2MS6", "M8",
)


@dataclass(frozen=True)
class HarmonicModel:
    """A fitted harmonic model; see the module docstring for the formula.

    Attributes:
        constituents: constituent names, in fit order.
        speeds: (K,) angular speeds in degrees per hour.
        mean: the mean level at ``t0``.
        trend: the linear trend per hour (0.0 when fitted without trend).
        t0: the time origin of the trend (mean time of the fitted readings), in hours.
        coef: (K, 2) cosine and sine coefficients per constituent.
        n_obs: readings used by the fit.
        rms_residual: root mean square of the fit's residuals on those readings.
    """

    constituents: tuple[str, ...]
    speeds: np.ndarray
    mean: float
    trend: float
    t0: float
    coef: np.ndarray
    n_obs: int
    rms_residual: float

    @property
    def amplitudes(self) -> dict[str, float]:
        """Constituent name -> amplitude ``A_k`` (units of the level)."""
        amp = np.hypot(self.coef[:, 0], self.coef[:, 1])
        return {c: float(a) for c, a in zip(self.constituents, amp)}

    @property
    def phases(self) -> dict[str, float]:
        """Constituent name -> phase ``g_k`` in degrees in [0, 360), relative to ``t = 0``."""
        ph = np.degrees(np.arctan2(self.coef[:, 1], self.coef[:, 0])) % 360.0
        return {c: float(p) for c, p in zip(self.constituents, ph)}

    def tide(self, t_hours: np.ndarray) -> np.ndarray:
        """The constituents' sum alone (no mean, no trend) at times ``t_hours``."""
        return _design(np.asarray(t_hours, dtype=float), self.speeds) @ self.coef.reshape(-1)

    def predict(self, t_hours: np.ndarray) -> np.ndarray:
        """The predicted level (mean + trend + tide) at times ``t_hours`` (any shape, in hours)."""
        t = np.asarray(t_hours, dtype=float)
        flat = t.reshape(-1)
        out = self.mean + self.trend * (flat - self.t0) + self.tide(flat)
        return out.reshape(t.shape)


def _design(t: np.ndarray, speeds: np.ndarray) -> np.ndarray:
    """(n, 2K) columns cos(w_k t), sin(w_k t) interleaved per constituent."""
    arg = np.deg2rad(np.outer(t.reshape(-1), speeds))  # (n, K)
    return np.stack([np.cos(arg), np.sin(arg)], axis=2).reshape(len(arg), -1)


def _solve(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares by QR (several times faster than SVD for tall systems); SVD when nearly rank deficient."""
    q, r = np.linalg.qr(a)
    d = np.abs(np.diag(r))
    if d.min() > 1e-8 * d.max():
        return np.linalg.solve(r, q.T @ y)
    return np.linalg.lstsq(a, y, rcond=None)[0]


def speeds_of(constituents: Sequence[str]) -> np.ndarray:
    """Angular speeds (degrees per hour) of named constituents; an unknown name lists the valid ones."""
    bad = [c for c in constituents if c not in CONSTITUENTS]
    if bad:
        raise CmkdError(f"unknown tidal constituent '{bad[0]}'; valid: {', '.join(CONSTITUENTS)}")
    if len(set(constituents)) != len(constituents):
        raise CmkdError("tidal constituents listed twice: " + ", ".join(constituents))
    return np.array([CONSTITUENTS[c] for c in constituents], dtype=float)


def fit(t_hours: np.ndarray, level: np.ndarray, constituents: Sequence[str] = DEFAULT,
        trend: bool = True) -> HarmonicModel:
    """Least-squares harmonic fit on the available (non-NaN) readings.

    Args:
        t_hours: (n,) reading times in hours since an epoch of your choice (need not be regular).
        level: (n,) water levels; NaN marks a missing reading, which the fit ignores.
        constituents: constituent names (keys of :data:`CONSTITUENTS`).
        trend: also fit a linear trend.

    Returns:
        The fitted :class:`HarmonicModel`.

    Raises:
        CmkdError: on mismatched shapes, an unknown constituent, or fewer available readings than
            twice the number of unknowns.
    """
    t = np.asarray(t_hours, dtype=float).reshape(-1)
    y = np.asarray(level, dtype=float).reshape(-1)
    if t.shape != y.shape:
        raise CmkdError(f"harmonic fit: {len(t)} times but {len(y)} levels")
    speeds = speeds_of(tuple(constituents))
    ok = np.isfinite(y) & np.isfinite(t)
    n_unknown = 1 + int(trend) + 2 * len(speeds)
    if ok.sum() < 2 * n_unknown:
        raise CmkdError(f"harmonic fit: {int(ok.sum())} available readings are too few for {n_unknown} unknowns "
                        f"({len(speeds)} constituents{' + trend' if trend else ''}); need at least {2 * n_unknown}")
    t, y = t[ok], y[ok]
    t0 = float(t.mean())
    cols = [np.ones((len(t), 1))]
    if trend:
        cols.append(((t - t0) / max(float(np.ptp(t)), 1.0))[:, None])  # scaled for conditioning
    a = np.concatenate([*cols, _design(t, speeds)], axis=1)
    sol = _solve(a, y)
    resid = y - a @ sol
    slope = float(sol[1]) / max(float(np.ptp(t)), 1.0) if trend else 0.0
    k = 1 + int(trend)
    return HarmonicModel(constituents=tuple(constituents), speeds=speeds, mean=float(sol[0]), trend=slope, t0=t0,
                         coef=sol[k:].reshape(-1, 2), n_obs=int(ok.sum()),
                         rms_residual=float(np.sqrt(np.mean(resid**2))))
