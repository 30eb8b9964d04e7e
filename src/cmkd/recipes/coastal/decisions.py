"""Decision layer of the coastal recipes: resilience recommendations from a forecast and its interval.

Each asset (a road, a pump station, a sea wall, ...) has a critical water level. For every forecast horizon the
layer compares the predicted level ``mu``, its calibrated 90% interval ``[lo, hi]`` and the exceedance
probability ``P(level > elevation)`` with the asset's elevation and assigns a risk class:

=========  =====================================================  ==========================================
risk       rule (first that holds)                                meaning
=========  =====================================================  ==========================================
severe     ``lo >= elevation`` (even the low end floods it)        act now: the asset will be under water
high       ``mu >= elevation`` or ``p >= 0.5``                    prepare: flooding is more likely than not
moderate   ``hi >= elevation`` or ``p >= 0.1``                    watch: flooding is plausible
low        otherwise                                              no action
=========  =====================================================  ==========================================

``p`` is taken from a Gaussian with the forecast mean and the calibrated half-width: ``sigma_eff = (hi - mu) /
1.645``, so it agrees with the interval. Every recommendation carries its evidence: the level, the interval,
the probability and the margin to the asset.

JSON schema of ``recommendations.json`` (see :data:`SCHEMA`; a test validates against it)::

    {"synthetic": bool, "generated_from": str, "interval": "90% split-conformal",
     "assets": [{"name", "kind", "station", "elevation_m"}],
     "recommendations": [{"station", "time_h", "asset", "kind", "horizon_h", "risk", "action",
                          "evidence": {"predicted_level_m", "interval_90_m": [lo, hi],
                                       "exceedance_probability", "margin_m"}}]}
"""

from __future__ import annotations

import math

import numpy as np

RISKS = ("low", "moderate", "high", "severe")

ACTIONS = {
    "road": {"severe": "close the road and set diversions before the horizon",
             "high": "stage barriers and diversion signs; warn road users",
             "moderate": "monitor; have road crews on standby",
             "low": "no action"},
    "pump_station": {"severe": "run pumps at full capacity and protect electrics (sandbags, raise panels)",
                     "high": "pre-start the pumps and check backup power",
                     "moderate": "check pumps and fuel for backup generators",
                     "low": "no action"},
    "sea_wall": {"severe": "close flood gates and evacuate the area behind the wall",
                 "high": "close flood gates and inspect the wall for weak points",
                 "moderate": "inspect flood gates; prepare to close",
                 "low": "no action"},
}

SCHEMA = {
    "type": "object",
    "required": ["synthetic", "interval", "assets", "recommendations"],
    "properties": {
        "synthetic": {"type": "boolean"},
        "interval": {"type": "string"},
        "assets": {"type": "array", "items": {
            "type": "object", "required": ["name", "kind", "station", "elevation_m"],
            "properties": {"name": {"type": "string"}, "kind": {"enum": list(ACTIONS)},
                           "station": {"type": "integer"}, "elevation_m": {"type": "number"}}}},
        "recommendations": {"type": "array", "items": {
            "type": "object",
            "required": ["station", "time_h", "asset", "kind", "horizon_h", "risk", "action", "evidence"],
            "properties": {
                "risk": {"enum": list(RISKS)}, "horizon_h": {"type": "integer"}, "action": {"type": "string"},
                "evidence": {"type": "object",
                             "required": ["predicted_level_m", "interval_90_m", "exceedance_probability",
                                          "margin_m"],
                             "properties": {"interval_90_m": {"type": "array", "minItems": 2, "maxItems": 2,
                                                              "items": {"type": "number"}},
                                            "exceedance_probability": {"type": "number", "minimum": 0,
                                                                       "maximum": 1}}}}}},
    },
}


def exceedance_probability(mu: np.ndarray, hi: np.ndarray, elevation: float) -> np.ndarray:
    """P(level > elevation) under a Gaussian whose 95th percentile is the interval's upper end."""
    sigma = np.maximum((np.asarray(hi) - np.asarray(mu)) / 1.6449, 1e-6)
    z = (elevation - np.asarray(mu)) / sigma
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2))


def risk_class(mu: float, lo: float, hi: float, p: float, elevation: float) -> str:
    """The risk class of one forecast against one asset (rules in the module docstring); a forecast that is not
    finite has no risk class (never "low / no action"): a ValueError."""
    if not all(math.isfinite(v) for v in (mu, lo, hi, p)):
        raise ValueError(f"no risk class for a forecast that is not finite (level {mu}, interval [{lo}, {hi}])")
    if lo >= elevation:
        return "severe"
    if mu >= elevation or p >= 0.5:
        return "high"
    if hi >= elevation or p >= 0.1:
        return "moderate"
    return "low"


def default_assets(thresholds: dict[int, float]) -> list[dict]:
    """Three assets per station relative to its flood threshold (a level exceeded ~1% of hours): a coastal road at
    the threshold, a pump station 0.15 m above it, a sea-wall crest 0.5 m above it (illustrative values)."""
    out = []
    for s, thr in thresholds.items():
        out += [{"name": f"coastal road (station {s})", "kind": "road", "station": int(s), "elevation_m": thr},
                {"name": f"pump station (station {s})", "kind": "pump_station", "station": int(s),
                 "elevation_m": thr + 0.15},
                {"name": f"sea wall crest (station {s})", "kind": "sea_wall", "station": int(s),
                 "elevation_m": thr + 0.5}]
    return [{**a, "elevation_m": round(float(a["elevation_m"]), 3)} for a in out]


def recommend(station: int, time_h: float, mu: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              horizons: tuple[int, ...], assets: list[dict]) -> list[dict]:
    """Recommendations for one station and time: every asset of the station x every horizon.

    Args:
        station: station id.
        time_h: forecast issue time (hours).
        mu, lo, hi: (H,) predicted level and interval per horizon (m).
        horizons: hours ahead of each column.
        assets: asset dicts (``name``, ``kind``, ``station``, ``elevation_m``).
    """
    recs = []
    for a in assets:
        if int(a["station"]) != int(station):
            continue
        for k, h in enumerate(horizons):
            p = float(exceedance_probability(mu[k], hi[k], a["elevation_m"]))
            risk = risk_class(float(mu[k]), float(lo[k]), float(hi[k]), p, a["elevation_m"])
            recs.append({"station": int(station), "time_h": float(time_h), "asset": a["name"], "kind": a["kind"],
                         "horizon_h": int(h), "risk": risk, "action": ACTIONS[a["kind"]][risk],
                         "evidence": {"predicted_level_m": round(float(mu[k]), 3),
                                      "interval_90_m": [round(float(lo[k]), 3), round(float(hi[k]), 3)],
                                      "exceedance_probability": round(p, 4),
                                      "margin_m": round(float(a["elevation_m"] - mu[k]), 3)}})
    return recs


def warning_skill(mu: np.ndarray, lo: np.ndarray, hi: np.ndarray, y: np.ndarray, elevation: np.ndarray) -> dict:
    """Hits and false alarms of 'high or severe' warnings against true exceedances (flattened arrays)."""
    mu, lo, hi, y, elevation = (np.asarray(a, dtype=float).reshape(-1) for a in (mu, lo, hi, y, elevation))
    p = exceedance_probability(mu, hi, 0.0 * mu + elevation)
    warn = (mu >= elevation) | (p >= 0.5) | (lo >= elevation)
    watch = warn | (hi >= elevation) | (p >= 0.1)
    event = y > elevation
    n_ev = int(event.sum())
    return {"events": n_ev, "warned_events": int((warn & event).sum()),
            "hit_rate": float((warn & event).sum() / n_ev) if n_ev else float("nan"),
            "watch_or_warn_hit_rate": float((watch & event).sum() / n_ev) if n_ev else float("nan"),
            "false_alarm_ratio": float((warn & ~event).sum() / warn.sum()) if warn.sum() else 0.0}
