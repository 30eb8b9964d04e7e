"""SYNTHETIC coastal scene (numpy only): tide gauges on a straight coast hit by cyclones, with ground sensors and
daily satellite patches. Everything here is simulated; no real data is involved.

The generator returns the COMPLETE truth (no missing readings) plus what is needed to apply failures later:
a ``severity`` series for storm-correlated sensor outages (:func:`cmkd.data.missing.make_mask` with
``pattern="storm"``), a cloud mask and an overpass flag for the satellite. All parameters below are physical
textbook values or plain assumptions, stated with their source or rationale; none was tuned on any model's
results. Everything is drawn from one ``numpy.random.Generator`` seeded with ``seed``.

Geometry: a straight coast along ``x`` (km), land at ``y < 0``, sea at ``y > 0``; onshore is ``-y``. Stations sit
at ``y = 0``, ``x ~ U(0, 400) km`` (sorted), so storms reach them with a lag set by the track. Time is in hours
since 1 January (hour 0); the series is hourly, ``T = 24 * days``. Northern hemisphere (cyclones turn
anticlockwise, Ekman transport is to the right of the wind).

* **Tide** (:data:`TIDAL_PERIODS_H`, Doodson speeds as in Pugh & Woodworth, *Sea-Level Science*, 2014):
  ``tide = sum_k A_k cos(w_k t - g_k)`` (``g_k`` in radians relative to hour 0, the convention of
  :mod:`cmkd.recipes.coastal.harmonic`). Amplitudes per station: M2 ~ U(0.5, 1.5) m (meso- to macrotidal
  coasts); S2 = M2 x U(0.25, 0.35), N2 = M2 x U(0.17, 0.23) (equilibrium-tide ratios 0.47 and 0.19, S2 reduced
  as on most shelves); K1 ~ U(0.05, 0.3) m and O1 = K1 x U(0.6, 0.8) (equilibrium ratio 0.71). Phases: a
  regional phase per constituent ~ U(0, 2 pi), plus propagation along the coast as a shelf Kelvin wave at
  ``sqrt(g h)`` with ``h = 80 m`` (~100 km/h, so ``w_k x / c``), plus N(0, 0.15 rad) local distortion. No nodal
  modulation (a two-year record barely sees the 18.6-year cycle) and no shallow-water overtides.
* **Cyclones**: a Poisson process thinned by season, ``rate(t) = r0 (1 + 0.6 cos(2 pi (doy - 15) / 365.25))`` with
  ``r0 = 1 / (17.5 days)`` (~21 per year, winter-peaked, like extratropical lows crossing a mid-latitude coast; ~42 in
  two years), drawn over ``[-3 days, end + 3 days]`` so the series starts in a stationary state. Each storm: central
  pressure deficit ``dp = 8 + Exp(14)`` hPa, capped at 80 hPa; Holland (1980) parametric profile with radius of
  maximum wind ``Rmw ~ U(50, 200) km`` and shape ``B ~ U(1.0, 1.6)``: pressure deficit at distance ``r`` ``dp (1 -
  exp(-(Rmw/r)^B))``, cyclostrophic gradient wind ``V(r) = sqrt(B dp / rho_air (Rmw/r)^B exp(-(Rmw/r)^B))`` times a
  surface reduction factor 0.8 (e.g. Harper et al., WMO 2010); anticlockwise with a 20 deg inflow angle. Straight
  track: closest approach to the coast centre (x = 200 km) at the peak hour ``t0``, at a signed distance ``U(-150,
  350) km`` perpendicular to the track (positive on the sea side; negative = the centre passes inland), heading
  ``N(-30 deg, 35 deg)`` from +x (mostly along the coast, drifting onshore), translation speed ``U(15, 45) km/h``. A
  life cycle envelope ``exp(-(t - t0)^2 / (2 sigma^2))`` with ``sigma = duration / 4`` and ``duration ~ U(24, 72) h``
  scales both deficit and wind: intensification and decay over 1-3 days. ``storms`` records each storm's parameters
  and, per station, the maximum total surge in ``[t0 - 24 h, t0 + 48 h]`` and its hour.
* **Background weather** (what the sensors see between storms): pressure = 1013 hPa + 4 cos(annual, peak in summer) +
  regional AR(1) anomaly (std 6 hPa, e-folding 60 h: synoptic variability) + local AR(1) (std 1 hPa, 24 h). Wind =
  prevailing (4, 1) m/s (westerly, slightly offshore) + regional AR(1) vector (std 3 m/s per component, 24 h) + local
  AR(1) (1 m/s, 12 h) + a 1 m/s onshore sea breeze peaking at 15 h. Winds blowing offshore have crossed land, whose
  roughness slows them: the total wind is scaled by ``1 - 0.3 cos(angle to offshore)`` when it blows offshore
  (over-land reduction to ~0.7 of the marine wind, as in Powell et al. 1996); this is also why set-down in offshore
  winds is weaker than setup in onshore winds of the same storm.
* **Surge**: forcing = inverse barometer ``0.0099 m/hPa x (1013.25 - p)`` (1 cm per hPa) + wind setup
  ``k |W| (W_on + 0.5 W_along)`` with ``k = rho_air Cd L / (rho_w g h)``: the steady setup of a shelf of width
  ``L ~ U(20, 100) km`` and mean depth ``h ~ U(20, 50) m`` (station-specific exposure), ``rho_air = 1.2``,
  ``rho_w = 1025 kg/m^3``, drag ``Cd = (0.8 + 0.065 |W|) 1e-3`` (Wu 1982) capped at 2.5e-3 (saturation at high
  winds, Powell et al. 2003); the alongshore term is the onshore Ekman transport of a wind with the coast on its
  right (half weight, an assumption). Offshore winds give a set-down (negative surge). The shelf does not adjust
  instantly: forcing is relaxed with a first-order lag, e-folding ``tau ~ U(4, 10) h`` per station, so surge
  lags the local pressure drop and wind rise. Plus an unresolved persistent residual (AR(1), std 3 cm,
  e-folding 30 h; 70 % regional, 30 % local) so that surge is not only storms.
* **Level** (m above a chart datum near lowest astronomical tide): ``Z0 + tide + surge + trend``, with
  ``Z0 = sum_k A_k + 0.2 m`` and a sea-level trend of 3.3 mm/yr (global mean 1993-2020 from altimetry, IPCC
  AR6 WG1 ch. 9). No seasonal steric cycle beyond the inverse barometer of the seasonal pressure.
* **Sensors** (:data:`CHANNELS`, float32, complete):
  ``water_level`` = level + N(0, 2.5 cm) (gauge noise, wave aliasing);
  ``wind_speed`` = |W| of wind measured with N(0, 0.7 m/s) per component (hourly-average turbulence);
  ``wind_dir_onshore`` = cosine between that wind and the onshore direction (-1 offshore .. 1 onshore);
  ``pressure`` = p + N(0, 0.2 hPa);
  ``wave_height`` = significant wave height: (0.3 m swell x lognormal AR(1)) + 0.0107 |W|^2 (half the
  Pierson-Moskowitz fully developed ``0.21 U^2/g``: fetch and duration limits), relaxed with a 4 h lag (growth),
  capped at 0.55 x local depth (depth-limited breaking; depth ``U(5, 12) m`` + tide + surge), x lognormal 5 %;
  ``salinity`` (PSU) = base U(27, 34) - spring freshet 1.5 cos(annual, peak doy 100) - river runoff drop
  ``U(3, 8) R / (R + 1 mm/h)``, ``R`` the storm rain (0.15 mm/h per hPa of local deficit) routed through a
  gamma(3, 12 h) unit hydrograph (peak a day after the rain), + AR(1) 0.3 PSU (2 days) + N(0, 0.1);
  ``turbidity`` (NTU) = base U(2, 8) x lognormal AR(1) (std 0.3, 2 days) + resuspension 3 Hs^2 (orbital
  velocity) and river load 10 R, both relaxed over 24 h (settling), x lognormal 15 %;
  ``water_temp`` (deg C) = U(12, 16) + U(4, 8) cos(annual, peak doy 225) + 0.2 diurnal (peak 15 h) - storm
  mixing ``c max(|W| - 8, 0)^2`` relaxed over 72 h, ``c = 0.01 x (0.5 + 0.5 summer stratification)``,
  + N(0, 0.05).
  Pressure falls and wind rises while a storm approaches, hours before the lagged surge peaks, so the sensors
  carry information on the level at +6 h and +24 h.
* **Severity** (for storm-correlated outages): ``max(surge, 0) / 0.25 m + (|W| / 15 m/s)^2 + Hs / 3 m``,
  dimensionless: median ~0.5, 99th percentile ~5, ~10 in the strongest storms.
* **Satellite** (:data:`BANDS`, ``(S, D, B, H, W)``, float32, one overpass a day at 10 h, sun-synchronous):
  patch rows run from offshore (row 0) to inland; a wavy shoreline (the mean-sea-level line) near the middle
  row; land elevation above datum rises linearly from mean sea level ``Z0`` at the shoreline to MHWS
  (``Z0 + A_M2 + A_S2``) + U(0.2, 0.5) m two pixels inland, and on, + smooth noise (0.1 m), so the first land
  pixels are intertidal flats and the higher ones flood only in storms. ``sediment_plume`` (sea) =
  ``log1p(turbidity (0.3 + exp(-d_mouth / E)) exp(-d_offshore / 2E))``: turbidity at the pass spread as a plume
  from a river mouth (``d_mouth`` pixels away), extent ``E = 1.5 px (1 + 2 R / (R + 1) + max(surge24, 0) /
  0.5 m)`` growing with runoff ``R`` and the past day's peak surge; a bare-soil constant 1.0 on land;
  + N(0, 0.05). ``surface_temp`` = water temperature + cross-shore gradient + extra mixing cooling offshore +
  smooth noise 0.2 deg C (sea); land surface temperature = water temperature + 3 cos(annual, peak doy 200) +
  1.5 + smooth noise 0.5 (land). ``sar_wetness`` = 1 on sea pixels; on land the flooded fraction
  ``sigmoid((L - e) / 0.05 m)`` with ``L`` the level at the pass and ``e`` the pixel elevation; above MHWS, water
  flooded in the past 24 h stays ponded (0.6 x the same sigmoid of the day's peak level); plus soil moisture
  0.3 R / (R + 0.5); clipped to [0, 1], + N(0, 0.08) speckle.
  Cloud: the daily cover fraction is ``sigmoid(0.2 + 1.5 z + 1.2 (1013 hPa - p) / 10 hPa)`` (``z`` a
  unit-variance daily AR(1), correlation 0.6 day to day, 36 % of its variance shared by all stations; ``p`` the
  local pressure at the pass: lows and fronts bring cloud, anticyclones clear skies), ~55 % on average (mostly
  clear or mostly overcast, the U-shaped distribution of observed cloud fractions), ~40 % under high pressure
  (> 1015 hPa) and ~80 % under lows (< 1000 hPa): the satellite is partly blind exactly when it matters; the
  cloudy
  pixels are the lowest-ranked of a smooth Gaussian field (sigma = patch / 3 px). Overpass lost (``overpass``
  False, the whole modality absent) on ~20 % of days: 14 % shared by all stations (orbit gaps, downlink), 7 %
  per station (swath edge).

Generation of 6 stations x 730 days takes well under a second on one core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cmkd.data.synth import ar1, causal_filter, smooth_field
from cmkd.errors import CmkdError

CHANNELS: tuple[str, ...] = (
    "water_level", "wind_speed", "wind_dir_onshore", "pressure", "wave_height", "salinity", "turbidity",
    "water_temp",
)
BANDS: tuple[str, ...] = ("sediment_plume", "surface_temp", "sar_wetness")
WINDOW = 48  # hours of gauge history a sample sees
HORIZONS = (6, 24)  # forecast lead times in hours
#: constituent -> period in hours (360 / Doodson speed in degrees per hour)
TIDAL_PERIODS_H: dict[str, float] = {
    "M2": 12.4206012, "S2": 12.0, "N2": 12.65834751, "K1": 23.93447213, "O1": 25.81934171,
}

_HOURS_PER_YEAR = 8766.0
_P_REF = 1013.25            # hPa, standard pressure for the inverse barometer
_IB = 0.0099                # m per hPa, inverse barometer (1 / (rho_w g) x 100 Pa)
_RHO_AIR, _RHO_W, _G = 1.2, 1025.0, 9.81
_COAST_CENTRE_KM = 200.0
_OVERPASS_HOUR = 10


@dataclass
class CoastalScene:
    """The complete synthetic truth of one coastal scene (see the module docstring for the physics).

    Attributes:
        hours: (T,) hours since the start (hourly).
        level: (S, T) true water level, metres above datum.
        tide: (S, T) astronomical tide component (m).
        surge: (S, T) storm-surge (meteorological residual) component (m); mostly >= 0, set-down allowed.
        sensors: (S, T, C) complete sensor readings in :data:`CHANNELS` order, float32.
        severity: (S, T) how extreme conditions are, for storm-correlated outages.
        satellite: (S, D, B, H, W) daily patches in :data:`BANDS` order, float32, complete (before clouds).
        cloud: (S, D, H, W) True where a pixel is under cloud.
        overpass: (S, D) False where no usable pass exists that day (whole modality absent).
        amplitudes: constituent -> (S,) amplitude (m).
        phases: constituent -> (S,) phase (rad), ``tide = A cos(w t - phase)``.
        trend_m_per_year: sea-level trend.
        storms: one dict per cyclone (see :func:`generate`).
    """

    hours: np.ndarray
    level: np.ndarray
    tide: np.ndarray
    surge: np.ndarray
    sensors: np.ndarray
    severity: np.ndarray
    satellite: np.ndarray
    cloud: np.ndarray
    overpass: np.ndarray
    amplitudes: dict[str, np.ndarray]
    phases: dict[str, np.ndarray]
    trend_m_per_year: float
    storms: list[dict] = field(default_factory=list)


def _relax(x: np.ndarray, tau: float | np.ndarray) -> np.ndarray:
    """First-order lag ``dy/dt = (x - y) / tau`` (hours, unit gain) along the last axis; ``tau`` may be (S, 1)."""
    tau_arr = np.asarray(tau, dtype=float)
    k = int(np.ceil(10 * tau_arr.max())) + 1
    a = np.exp(-1.0 / tau_arr)
    kern = (1 - a) * a ** np.arange(k)
    kern = kern / kern.sum(axis=-1, keepdims=True)
    return causal_filter(x, kern)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _tides(rng: np.random.Generator, hours: np.ndarray, x_km: np.ndarray):
    """Station amplitudes, phases and the (S, T) tide."""
    n = len(x_km)
    m2 = rng.uniform(0.5, 1.5, n)
    k1 = rng.uniform(0.05, 0.3, n)
    amplitudes = {
        "M2": m2, "S2": m2 * rng.uniform(0.25, 0.35, n), "N2": m2 * rng.uniform(0.17, 0.23, n),
        "K1": k1, "O1": k1 * rng.uniform(0.6, 0.8, n),
    }
    c_kmh = np.sqrt(_G * 80.0) * 3.6  # shelf Kelvin wave speed, km/h
    phases: dict[str, np.ndarray] = {}
    tide = np.zeros((n, len(hours)))
    for name, period in TIDAL_PERIODS_H.items():
        w = 2 * np.pi / period
        phi = rng.uniform(0, 2 * np.pi) + w * x_km / c_kmh + rng.normal(0, 0.15, n)
        phases[name] = np.mod(phi, 2 * np.pi)
        tide += amplitudes[name][:, None] * np.cos(w * hours[None, :] - phases[name][:, None])
    return amplitudes, phases, tide


def _draw_storms(rng: np.random.Generator, n_hours: int) -> list[dict]:
    """Seasonally thinned Poisson process of cyclones with their parameters (no station quantities yet)."""
    r0 = 1.0 / (17.5 * 24.0)
    rmax = r0 * 1.6
    lo, hi = -72.0, n_hours + 72.0
    cand = np.sort(rng.uniform(lo, hi, rng.poisson(rmax * (hi - lo))))
    doy = (cand / 24.0) % 365.25
    keep = rng.random(len(cand)) < (1 + 0.6 * np.cos(2 * np.pi * (doy - 15) / 365.25)) / 1.6
    storms = []
    for t0 in cand[keep]:
        storms.append({
            "peak_hour": float(t0),
            "pressure_deficit_hpa": float(min(8.0 + rng.exponential(14.0), 80.0)),
            "rmw_km": float(rng.uniform(50, 200)),
            "holland_b": float(rng.uniform(1.0, 1.6)),
            "offshore_km": float(rng.uniform(-150, 350)),
            "heading_rad": float(np.deg2rad(rng.normal(-30, 35))),
            "speed_kmh": float(rng.uniform(15, 45)),
            "duration_h": float(rng.uniform(24, 72)),
        })
    return storms


def _storm_fields(storms: list[dict], x_km: np.ndarray, n_hours: int):
    """Storm pressure deficit (S, T) in hPa and surface wind (2, S, T) in m/s at the stations."""
    n = len(x_km)
    dp_tot = np.zeros((n, n_hours))
    wind = np.zeros((2, n, n_hours))
    alpha = np.deg2rad(20.0)
    for s in storms:
        sig = s["duration_h"] / 4.0
        t0 = s["peak_hour"]
        a, b = max(0, int(t0 - 4 * sig)), min(n_hours, int(t0 + 4 * sig) + 1)
        if a >= b:
            continue
        t = np.arange(a, b, dtype=float)
        env = np.exp(-0.5 * ((t - t0) / sig) ** 2)
        u = np.array([np.cos(s["heading_rad"]), np.sin(s["heading_rad"])])
        normal = np.array([-u[1], u[0]])
        p0 = np.array([_COAST_CENTRE_KM, 0.0]) + s["offshore_km"] * normal * np.sign(normal[1] + 1e-12)
        cx = p0[0] + u[0] * s["speed_kmh"] * (t - t0)
        cy = p0[1] + u[1] * s["speed_kmh"] * (t - t0)
        dx = x_km[:, None] - cx[None, :]
        dy = 0.0 - cy[None, :]
        r = np.maximum(np.hypot(dx, dy), 1.0)
        q = (s["rmw_km"] / r) ** s["holland_b"]
        dp = s["pressure_deficit_hpa"] * env[None, :]
        dp_tot[:, a:b] += dp * (1.0 - np.exp(-q))
        v = 0.8 * np.sqrt(s["holland_b"] * dp * 100.0 / _RHO_AIR * q * np.exp(-q))
        rx, ry = dx / r, dy / r
        wind[0, :, a:b] += v * (np.cos(alpha) * -ry - np.sin(alpha) * rx)
        wind[1, :, a:b] += v * (np.cos(alpha) * rx - np.sin(alpha) * ry)
    return dp_tot, wind


def generate(seed: int = 0, n_stations: int = 6, days: int = 730, patch: int = 8) -> CoastalScene:
    """Generate a synthetic coastal scene (complete truth; apply failures with :mod:`cmkd.data.missing`).

    Args:
        seed: seed of the one random generator everything is drawn from.
        n_stations: number of tide-gauge stations along the coast.
        days: length of the hourly record in days (``T = 24 * days``, ``D = days`` satellite passes).
        patch: satellite patch side in pixels (``H = W = patch``).

    Returns:
        The scene. ``storms`` holds one dict per cyclone with ``peak_hour``, ``pressure_deficit_hpa`` (intensity),
        ``max_wind_ms`` (Holland maximum surface wind), ``duration_h``, track parameters (``rmw_km``,
        ``holland_b``, ``offshore_km``, ``heading_rad``, ``speed_kmh``), and per station ``peak_surge_m`` and
        ``peak_surge_hour`` (the maximum total surge in ``[peak_hour - 24, peak_hour + 48]``; NaN when that
        window lies outside the record).

    Raises:
        CmkdError: if a size is out of range.
    """
    if n_stations < 1 or days < 2 or patch < 2:
        raise CmkdError(f"need n_stations >= 1, days >= 2, patch >= 2; got {n_stations}, {days}, {patch}")
    rng = np.random.default_rng(seed)
    n, n_hours = n_stations, 24 * days
    hours = np.arange(n_hours, dtype=float)
    doy = (hours / 24.0) % 365.25
    annual = 2 * np.pi / 365.25
    x_km = np.sort(rng.uniform(0, 400, n))

    # --- tide
    amplitudes, phases, tide = _tides(rng, hours, x_km)

    # --- weather: background + storms
    pressure = (1013.0 + 4.0 * np.cos(annual * (doy - 200)))[None, :] + ar1(rng, (1, n_hours), 60, 6.0) \
        + ar1(rng, (n, n_hours), 24, 1.0)
    breeze = np.maximum(np.cos(2 * np.pi * (hours % 24 - 15) / 24), 0.0)[None, :]
    wx = 4.0 + ar1(rng, (1, n_hours), 24, 3.0) + ar1(rng, (n, n_hours), 12, 1.0)
    wy = 1.0 + ar1(rng, (1, n_hours), 24, 3.0) + ar1(rng, (n, n_hours), 12, 1.0) - 1.0 * breeze
    storms = _draw_storms(rng, n_hours)
    dp_storm, w_storm = _storm_fields(storms, x_km, n_hours)
    pressure = pressure - dp_storm
    wx, wy = wx + w_storm[0], wy + w_storm[1]
    # winds blowing offshore come over land: rougher surface, slower at the coast
    land_fetch = np.maximum(wy, 0.0) / np.maximum(np.hypot(wx, wy), 1e-6)
    wx, wy = wx * (1 - 0.3 * land_fetch), wy * (1 - 0.3 * land_fetch)
    speed = np.hypot(wx, wy)
    w_on = -wy

    # --- surge
    shelf_l = rng.uniform(20e3, 100e3, n)[:, None]
    shelf_h = rng.uniform(20, 50, n)[:, None]
    cd = np.minimum((0.8 + 0.065 * speed) * 1e-3, 2.5e-3)
    setup = _RHO_AIR * cd * shelf_l / (_RHO_W * _G * shelf_h) * speed * (w_on + 0.5 * wx)
    forcing = _IB * (_P_REF - pressure) + setup
    tau = rng.uniform(4, 10, n)[:, None]
    surge = _relax(forcing, tau) + 0.7 * ar1(rng, (1, n_hours), 30, 0.03) + 0.3 * ar1(rng, (n, n_hours), 30, 0.03)

    trend = 0.0033
    z0 = sum(amplitudes.values()) + 0.2
    level = z0[:, None] + tide + surge + trend * hours[None, :] / _HOURS_PER_YEAR

    # --- sensors
    wxm = wx + rng.normal(0, 0.7, wx.shape)
    wym = wy + rng.normal(0, 0.7, wy.shape)
    speed_m = np.hypot(wxm, wym)
    dir_on = -wym / np.maximum(speed_m, 1e-6)
    depth = rng.uniform(5, 12, n)[:, None] + tide + surge
    swell = 0.3 * np.exp(ar1(rng, (n, n_hours), 36, 0.4))
    hs = np.minimum(_relax(swell + 0.0107 * speed**2, 4.0), 0.55 * np.maximum(depth, 0.5))
    hs_m = hs * np.exp(rng.normal(0, 0.05, hs.shape))
    rain = 0.15 * dp_storm                                       # mm/h
    hk = np.arange(240, dtype=float)
    hydro = hk**2 * np.exp(-hk / 12.0)
    runoff = causal_filter(rain, hydro / hydro.sum())
    salinity = rng.uniform(27, 34, n)[:, None] - 1.5 * np.cos(annual * (doy - 100))[None, :] \
        - rng.uniform(3, 8, n)[:, None] * runoff / (runoff + 1.0) + ar1(rng, (n, n_hours), 48, 0.3)
    turb_true = rng.uniform(2, 8, n)[:, None] * np.exp(ar1(rng, (n, n_hours), 48, 0.3)) \
        + _relax(3.0 * hs**2 + 10.0 * runoff, 24.0)
    strat = 0.5 + 0.5 * np.cos(annual * (doy - 225))[None, :]
    mixing = _relax(0.01 * strat * np.maximum(speed - 8.0, 0.0) ** 2, 72.0)
    water_temp = rng.uniform(12, 16, n)[:, None] + rng.uniform(4, 8, n)[:, None] * np.cos(annual * (doy - 225)) \
        + 0.2 * np.cos(2 * np.pi * (hours % 24 - 15) / 24)[None, :] - mixing
    sensors = np.stack([
        level + rng.normal(0, 0.025, level.shape),
        speed_m,
        dir_on,
        pressure + rng.normal(0, 0.2, pressure.shape),
        hs_m,
        salinity + rng.normal(0, 0.1, salinity.shape),
        turb_true * np.exp(rng.normal(0, 0.15, turb_true.shape)),
        water_temp + rng.normal(0, 0.05, water_temp.shape),
    ], axis=-1).astype(np.float32)
    severity = np.maximum(surge, 0.0) / 0.25 + (speed / 15.0) ** 2 + hs / 3.0

    # --- storm records
    for s in storms:
        s["max_wind_ms"] = float(0.8 * np.sqrt(s["holland_b"] * s["pressure_deficit_hpa"] * 100.0
                                               / (_RHO_AIR * np.e)))
        a, b = int(np.floor(s["peak_hour"])) - 24, int(np.floor(s["peak_hour"])) + 49
        a, b = max(a, 0), min(b, n_hours)
        if a < b:
            win = surge[:, a:b]
            s["peak_surge_m"] = win.max(axis=1)
            s["peak_surge_hour"] = (a + win.argmax(axis=1)).astype(float)
        else:
            s["peak_surge_m"] = np.full(n, np.nan)
            s["peak_surge_hour"] = np.full(n, np.nan)

    # --- satellite
    satellite, cloud, overpass = _satellite(rng, patch, days, amplitudes, z0, level, turb_true, runoff, surge,
                                            water_temp, mixing, pressure, doy)
    return CoastalScene(hours=hours, level=level, tide=tide, surge=surge, sensors=sensors, severity=severity,
                        satellite=satellite, cloud=cloud, overpass=overpass, amplitudes=amplitudes, phases=phases,
                        trend_m_per_year=trend, storms=storms)


def _satellite(rng: np.random.Generator, patch: int, days: int, amplitudes: dict[str, np.ndarray],
               z0: np.ndarray, level: np.ndarray, turb: np.ndarray, runoff: np.ndarray, surge: np.ndarray,
               water_temp: np.ndarray, mixing: np.ndarray, pressure: np.ndarray, doy: np.ndarray):
    """Daily patches (S, D, B, H, W), cloud (S, D, H, W) and overpass (S, D)."""
    n = level.shape[0]
    size = patch
    t_pass = 24 * np.arange(days) + _OVERPASS_HOUR
    rows = np.arange(size, dtype=float)[:, None]
    cols = np.arange(size, dtype=float)[None, :]
    # static geometry per station: shoreline row, land mask, elevation, river mouth
    shore = size * 0.5 + 0.6 * smooth_field(rng, (n, size, size), size / 3)[:, 0, :][:, None, :]  # (S, 1, W)
    dist = rows[None] - shore                                                                 # (S, H, W)
    land = dist > 0
    mhws = z0 + amplitudes["M2"] + amplitudes["S2"]
    rise = (mhws - z0 + rng.uniform(0.2, 0.5, n))[:, None, None]
    elev = z0[:, None, None] + rise * np.maximum(dist, 0.0) / 2.0 + 0.1 * smooth_field(rng, (n, size, size), size / 4)
    mouth = rng.uniform(0, size - 1, n)[:, None, None]
    d_mouth = np.hypot(rows[None] - shore, cols[None] - mouth)                                # (S, H, W)
    offshore = np.maximum(-dist, 0.0)

    # per day drivers (S, D)
    turb_d = turb[:, t_pass]
    run_d = runoff[:, t_pass]
    idx = np.clip(t_pass[:, None] - np.arange(24)[None, :], 0, None)
    surge_day = surge[:, idx].max(axis=-1)
    level_now = level[:, t_pass]
    level_day = level[:, idx].max(axis=-1)
    temp_d = water_temp[:, t_pass]
    mix_d = mixing[:, t_pass]
    season = np.cos(2 * np.pi * (doy[t_pass] - 200) / 365.25)[None, :]

    # sediment plume
    extent = 1.5 * (1.0 + run_d / (run_d + 1.0) * 2.0 + np.maximum(surge_day, 0.0) / 0.5)            # px
    conc = turb_d[..., None, None] * (0.3 + np.exp(-d_mouth[:, None] / extent[..., None, None])) \
        * np.exp(-offshore[:, None] / (2.0 * extent[..., None, None]))
    sed = np.where(land[:, None], 1.0, np.log1p(conc)) + rng.normal(0, 0.05, (n, days, size, size))
    # surface temperature
    sst = temp_d[..., None, None] + 0.1 * offshore[:, None] - 0.5 * mix_d[..., None, None] * \
        (offshore[:, None] / size) + 0.2 * smooth_field(rng, (n, days, size, size), size / 4)
    lst = (temp_d + 3.0 * season + 1.5)[..., None, None] + 0.5 * smooth_field(rng, (n, days, size, size), size / 4)
    temp = np.where(land[:, None], lst, sst)
    # SAR wetness
    flood = _sigmoid((level_now[..., None, None] - elev[:, None]) / 0.05)
    above_hw = (elev > mhws[:, None, None])[:, None]
    ponded = 0.6 * _sigmoid((level_day[..., None, None] - elev[:, None]) / 0.05) * above_hw
    flood = np.maximum(flood, ponded)
    soil = 0.3 * run_d / (run_d + 0.5)
    wet = np.where(land[:, None], np.clip(flood + soil[..., None, None], 0.0, 1.0), 1.0)
    wet = wet + rng.normal(0, 0.08, wet.shape)
    satellite = np.stack([sed, temp, wet], axis=2).astype(np.float32)

    # clouds and overpasses
    z = 0.6 * ar1(rng, (1, days), 1.0 / -np.log(0.6), 1.0) + 0.8 * ar1(rng, (n, days), 1.0 / -np.log(0.6), 1.0)
    z = z / np.hypot(0.6, 0.8)
    low = (1013.0 - pressure[:, t_pass]) / 10.0
    frac = _sigmoid(0.2 + 1.5 * z + 1.2 * low)
    field_ = smooth_field(rng, (n, days, size, size), size / 3).reshape(n, days, -1)
    rank = np.argsort(np.argsort(field_, axis=-1), axis=-1)
    cloud = (rank < np.round(frac * size * size)[..., None]).reshape(n, days, size, size)
    overpass = (rng.random((1, days)) >= 0.14) & (rng.random((n, days)) >= 0.07)
    return satellite, cloud, overpass


def flood_threshold(scene: CoastalScene, station: int, quantile: float = 0.99) -> float:
    """A flood level for one station: the level exceeded in ``1 - quantile`` of hours (about 1 % by default).

    Args:
        scene: the scene.
        station: station index.
        quantile: quantile of the hourly true level.

    Returns:
        The threshold in metres above datum.
    """
    if not 0.0 < quantile < 1.0:
        raise CmkdError(f"quantile must be in (0, 1), got {quantile}")
    return float(np.quantile(scene.level[station], quantile))
