"""SYNTHETIC farm-microgrid simulator: weather, sky images, PV, battery, pumps (with audio), LEDs, HVAC, CO2.

Everything here is simulated; nothing is measured. One step is 5 minutes (``DT_H`` hours). Exogenous series
(weather, prices, carbon intensity, pump cavitation) come from :func:`weather`; the controllable plant evolves by
:func:`step` from the five actions

    ``[battery_kw (+ charge / - discharge), pump_speed (0.2..1), led (0..1), hvac_setpoint_c (15..30), valve (0..1)]``.

Physics (all linear in the actions except the absolute values and minima noted):

- PV (kW) = ``pv_kwp * derate * irradiance / 1000``: proportional to irradiance.
- Irradiance = clear-sky(hour, season) x (1 - 0.8 cloud^1.5); the sky camera (3 x 16 x 16) shows the same cloud
  cover (white/grey pixels over blue, brightness from the sun's height).
- Battery: energy E (kWh) gains ``eta * P * dt`` when charging at P > 0 and loses ``|P| / eta * dt`` when
  discharging; |P| <= 10 kW and E stays within [soc_min, soc_max] x capacity (commands beyond are clipped).
- Loads (kW): base (staff, controls) + ``led_kw * led`` + ``pump_kw * speed * (1 + cav_extra * cavitating)``
  + ``hvac_kw_per_k * |setpoint - outdoor|`` + ``co2_kw * valve`` (the CO2 is drawn from an on-site capture unit).
- Grid: the farm has no export agreement: import = max(net load, 0); surplus PV is curtailed.
- Crop-growth proxy per step (hours x relative rate): ``min(light, 1) + 0.3 min(valve, min(light, 1))
  - 0.04 |setpoint - 24|`` with light = ``daylight * irradiance / 1000 + led`` (a glass-roofed farm).
- Pump audio (1 x 256 samples): harmonics of the rotation frequency (which follows the speed; the higher harmonics
  grow with wear) plus broadband bursts while cavitating. Cavitation costs ``cav_extra`` more pump energy and
  wears the pump ``cav_wear`` times faster; RUL = remaining life in thousands of hours at nominal wear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cmkd.data.synth import ar1_from_rest, smooth_field

DT_H = 5 / 60  # one step, hours
STEPS_PER_DAY = 288
IMG = 16
AUDIO_LEN = 256
ACTIONS = ("battery_kw", "pump_speed", "led", "hvac_setpoint_c", "valve")
LOW = np.array([-10.0, 0.2, 0.0, 15.0, 0.0])
HIGH = np.array([10.0, 1.0, 1.0, 30.0, 1.0])


@dataclass(frozen=True)
class Plant:
    """Sizes and coefficients of the simulated farm (SYNTHETIC)."""

    pv_kwp: float = 45.0
    derate: float = 0.9
    battery_kwh: float = 60.0
    battery_kw: float = 10.0
    eta: float = 0.95  # one-way efficiency (round trip ~0.90)
    soc_min: float = 0.1
    soc_max: float = 0.95
    led_kw: float = 10.0
    pump_kw: float = 1.5
    cav_extra: float = 0.6
    cav_wear: float = 5.0
    hvac_kw_per_k: float = 0.5
    co2_kw: float = 1.2
    daylight: float = 0.6  # light from full sun relative to LEDs at full power
    crop_req: float = 14.5  # growth-hours required per day
    flow_req: float = 0.5  # mean pump speed required per day (hydroponic circulation)
    t_opt: float = 24.0
    life_h: float = 5000.0  # pump life at speed 0.5 without cavitation

    def pv_kw(self, irradiance: np.ndarray | float) -> np.ndarray | float:
        """PV output (kW), proportional to irradiance (W/m2)."""
        return self.pv_kwp * self.derate * np.asarray(irradiance) / 1000.0

    def pump_power(self, speed: np.ndarray | float, cav: np.ndarray | float) -> np.ndarray | float:
        """Pump electrical power (kW); cavitation adds ``cav_extra`` of it."""
        return self.pump_kw * np.asarray(speed) * (1 + self.cav_extra * np.asarray(cav))


PLANT = Plant()


@dataclass
class Weather:
    """Exogenous series over ``n`` 5-minute steps from midnight (SYNTHETIC)."""

    seed: int
    hour: np.ndarray  # hour of day (0..24)
    clear: np.ndarray  # clear-sky irradiance W/m2
    cloud: np.ndarray  # cloud cover 0..1
    irradiance: np.ndarray  # W/m2
    t_out: np.ndarray  # outdoor temperature C
    base_load: np.ndarray  # kW
    price: np.ndarray  # $/kWh (time-of-use with noise)
    carbon: np.ndarray  # kg CO2 / kWh of grid energy
    cav: np.ndarray  # 1 while the pump inlet cavitates
    wear0: float  # pump life used at step 0 (0..1)
    patterns: np.ndarray = field(repr=False)  # (hours+2, IMG, IMG) smooth cloud-texture fields

    @property
    def n(self) -> int:
        return len(self.hour)


def weather(seed: int, days: float) -> Weather:
    """Simulate ``days`` of exogenous series (5-minute steps, starting at midnight) from ``seed``."""
    rng = np.random.default_rng(seed)
    n = int(round(days * STEPS_PER_DAY))
    t = np.arange(n)
    hour = (t * DT_H) % 24
    day = (t // STEPS_PER_DAY).astype(int)
    n_days = int(day.max()) + 1
    season = rng.uniform(-1, 1)  # -1 winter .. +1 summer
    sunrise, sunset = 6.0 - 1.5 * season, 18.0 + 1.5 * season
    frac = np.clip((hour - sunrise) / (sunset - sunrise), 0, 1)
    clear = (950 * (0.85 + 0.15 * season)) * np.sin(np.pi * frac) ** 1.3
    # daily regime (clear, mixed, overcast) sets the mean of a slow latent cloud process
    regime = rng.choice([-2.5, 0.0, 2.0], size=n_days + 1, p=[0.4, 0.35, 0.25])
    mu = regime[day]
    z = np.zeros(n)
    z[0] = mu[0]
    e = rng.normal(0, 0.22, n)
    for i in range(1, n):
        z[i] = mu[i] + 0.985 * (z[i - 1] - mu[i]) + e[i]
    cloud = 1 / (1 + np.exp(-z))
    irr = np.clip(clear * (1 - 0.8 * cloud ** 1.5) * (1 + 0.03 * rng.normal(size=n)), 0, None)
    daily_cloud = np.array([cloud[day == d].mean() for d in range(n_days)])[day]
    t_out = (14 + 6 * season + 6 * np.sin(2 * np.pi * (hour - 9) / 24) - 3 * daily_cloud
             + ar1_from_rest(rng, n, 0.995, 0.08))
    staff = ((hour >= 8) & (hour < 18)).astype(float)
    base = np.clip(2.0 + 1.0 * staff + ar1_from_rest(rng, n, 0.97, 0.06), 1.0, None)
    tou = np.where((hour >= 17) & (hour < 21), 0.36, np.where((hour < 7) | (hour >= 22), 0.10, 0.20))
    price = np.clip(tou * (1 + ar1_from_rest(rng, n, 0.99, 0.01)) + 0.01 * rng.normal(size=n), 0.02, None)
    sun = np.sin(np.pi * frac)
    carbon = np.clip(0.45 - 0.18 * sun + ar1_from_rest(rng, n, 0.99, 0.006), 0.05, None)
    cav = np.zeros(n)
    state = 0
    for i in range(n):  # two-state Markov chain: ~10% of the time cavitating, episodes ~ 40 min
        state = int(rng.random() < (0.97 if state else 0.004))
        cav[i] = state
    patterns = smooth_field(rng, (n // 12 + 2, IMG, IMG), 2.0, boundary="wrap")
    return Weather(seed=seed, hour=hour, clear=clear, cloud=cloud, irradiance=irr, t_out=t_out, base_load=base,
                   price=price, carbon=carbon, cav=cav, wear0=float(rng.uniform(0.1, 0.8)), patterns=patterns)


def sky_image(w: Weather, t: int, rng: np.random.Generator) -> np.ndarray:
    """(3, IMG, IMG) sky-camera frame at step ``t``: cloud pixels (share = cloud cover) over blue sky."""
    k, a = divmod(t, 12)
    f = (1 - a / 12) * w.patterns[k] + (a / 12) * w.patterns[k + 1]
    thr = np.quantile(f, 1 - w.cloud[t])
    mask = (f > thr).astype(np.float32)
    bright = 0.03 + w.clear[t] / 1000
    sky = np.array([0.35, 0.55, 0.9])[:, None, None] * bright
    grey = 0.6 + 0.35 * (1 - w.cloud[t])
    cloud = np.array([0.88, 0.88, 0.9])[:, None, None] * bright * grey
    img = sky * (1 - mask) + cloud * mask + 0.02 * rng.normal(size=(3, IMG, IMG))
    return img.astype(np.float32)


def pump_audio(speed: float, cavitating: float, wear: float, rng: np.random.Generator) -> np.ndarray:
    """(1, AUDIO_LEN) pump microphone clip: 4 harmonics of the rotation frequency (the 3rd and 4th grow with
    wear) plus low noise; while cavitating, 3-6 broadband bursts."""
    t = np.arange(AUDIO_LEN)
    f0 = 0.02 + 0.03 * speed  # cycles per sample
    amps = np.array([1.0, 0.5, 0.2 * (1 + 3 * wear), 0.1 * (1 + 3 * wear)]) * (0.3 + speed)
    ph = rng.uniform(0, 2 * np.pi, 4)
    x = sum(a * np.sin(2 * np.pi * (k + 1) * f0 * t + p) for k, (a, p) in enumerate(zip(amps, ph)))
    x = x + 0.05 * rng.normal(size=AUDIO_LEN)
    if cavitating:
        for _ in range(rng.integers(3, 7)):
            s, ln = rng.integers(0, AUDIO_LEN - 30), rng.integers(10, 30)
            x[s:s + ln] += (0.3 + 0.8 * speed) * rng.normal(size=ln)
    return x[None, :].astype(np.float32)


@dataclass
class State:
    """The plant's controllable state."""

    energy_kwh: float  # battery energy
    crop_today: float = 0.0  # growth-hours so far today
    flow_today: float = 0.0  # pump speed-hours so far today
    wear: float = 0.0  # pump life used (0..1)
    prev_speed: float = 0.5  # the pump speed of the last step (what the microphone hears)

    def soc(self, plant: Plant = PLANT) -> float:
        return self.energy_kwh / plant.battery_kwh


def clip_actions(a: np.ndarray) -> np.ndarray:
    """Actions clipped to their bounds (NaN -> the bound's midpoint)."""
    a = np.asarray(a, dtype=float).copy()
    a = np.where(np.isnan(a), (LOW + HIGH) / 2, a)
    return np.clip(a, LOW, HIGH)


def growth(irradiance: float, led: float, valve: float, setpoint: float, plant: Plant = PLANT) -> float:
    """Crop-growth rate (relative, per hour) of one step."""
    light = min(plant.daylight * irradiance / 1000 + led, 1.0)
    return light + 0.3 * min(valve, light) - 0.04 * abs(setpoint - plant.t_opt)



def load_kw(speed: float, led: float, setpoint: float, valve: float, w: Weather, t: int, plant: Plant = PLANT
            ) -> float:
    """The farm's load at step ``t`` (kW) with pump speed, LED intensity, HVAC setpoint and CO2 valve as given."""
    return float(w.base_load[t] + plant.led_kw * led + plant.pump_power(speed, w.cav[t])
                 + plant.hvac_kw_per_k * abs(setpoint - w.t_out[t]) + plant.co2_kw * valve)


def step(state: State, actions: np.ndarray, w: Weather, t: int, plant: Plant = PLANT) -> tuple[State, dict]:
    """Advance the plant one 5-minute step under ``actions`` (clipped to bounds and to the battery's limits).

    Returns:
        The new state and a record: the applied actions, grid import/curtailment (kW), energy (kWh), cost ($),
        CO2 (kg), growth, loads.
    """
    a = clip_actions(actions)
    b = float(a[0])
    e0 = state.energy_kwh
    lo, hi = plant.soc_min * plant.battery_kwh, plant.soc_max * plant.battery_kwh
    if b >= 0:
        b = min(b, max(hi - e0, 0.0) / (plant.eta * DT_H))
        e1 = e0 + plant.eta * b * DT_H
    else:
        b = -min(-b, max(e0 - lo, 0.0) * plant.eta / DT_H)
        e1 = e0 + b / plant.eta * DT_H
    a[0] = b
    speed, led, setp, valve = float(a[1]), float(a[2]), float(a[3]), float(a[4])
    pv = float(plant.pv_kw(w.irradiance[t]))
    pump = float(plant.pump_power(speed, w.cav[t]))
    load = load_kw(speed, led, setp, valve, w, t, plant)
    net = load + b - pv
    imp, cur = max(net, 0.0), max(-net, 0.0)
    g = growth(w.irradiance[t], led, valve, setp, plant)
    rate = (speed / 0.5) * (1 + (plant.cav_wear - 1) * w.cav[t]) / plant.life_h
    new_day = (t + 1) % STEPS_PER_DAY == 0
    new = State(energy_kwh=e1,
                crop_today=0.0 if new_day else state.crop_today + g * DT_H,
                flow_today=0.0 if new_day else state.flow_today + speed * DT_H,
                wear=state.wear + rate * DT_H, prev_speed=speed)
    rec = {"actions": a, "import_kw": imp, "curtail_kw": cur, "import_kwh": imp * DT_H,
           "cost": imp * DT_H * w.price[t], "co2_kg": imp * DT_H * w.carbon[t], "growth": g * DT_H,
           "load_kw": load, "pv_kw": pv, "pump_kw": pump, "soc": e1 / plant.battery_kwh}
    return new, rec
