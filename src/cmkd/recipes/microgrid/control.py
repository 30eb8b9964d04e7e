"""Controllers and the closed loop: observations, the rule-based controller, policies from the oracle or an ONNX
student, and the metrics of a run (grid import kWh, energy cost $, CO2 kg, crop proxy) on SYNTHETIC weather."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cmkd.recipes.microgrid.scene import (
    DT_H,
    HIGH,
    LOW,
    PLANT,
    STEPS_PER_DAY,
    Plant,
    State,
    Weather,
    clip_actions,
    load_kw,
    pump_audio,
    sky_image,
    step,
)

HISTORY = 24  # steps of history (2 h)
HIST_FEATURES = ("pv_kw", "base_load_kw", "price", "carbon", "t_out", "soc")
FORESIGHT = 36  # points of foresight, every FORESIGHT_EVERY steps (12 h)
FORESIGHT_EVERY = 4
FORESIGHT_FEATURES = ("irradiance", "price", "carbon", "t_out", "base_load_kw", "cavitating")
STATE_FEATURES = ("soc", "hour_sin", "hour_cos", "day_elapsed", "crop_done", "flow_done", "crop_need_rate",
                  "flow_need_rate")
STREAMS = ("sky", "audio", "history")  # the student's sensor streams (``state`` is the controller's own)

Policy = Callable[[dict[str, np.ndarray], State, int], np.ndarray]


def state_vector(st: State, w: Weather, t: int, plant: Plant = PLANT) -> np.ndarray:
    """(8,) the controller's own state: SOC, clock, and today's crop and flow against their requirements."""
    h = w.hour[t]
    left = max(24 - h, 0.25)
    return np.array([st.soc(plant), np.sin(2 * np.pi * h / 24), np.cos(2 * np.pi * h / 24), h / 24,
                     st.crop_today / plant.crop_req, st.flow_today / (24 * plant.flow_req),
                     (plant.crop_req - st.crop_today) / left, (24 * plant.flow_req - st.flow_today) / left],
                    dtype=np.float32)


def foresight(w: Weather, t: int) -> np.ndarray:
    """(FORESIGHT, 6) what the oracle knows: the next 12 h of weather, prices, carbon, loads and cavitation."""
    ix = np.minimum(t + FORESIGHT_EVERY * np.arange(FORESIGHT), w.n - 1)
    return np.stack([w.irradiance[ix] / 1000, w.price[ix], w.carbon[ix], w.t_out[ix], w.base_load[ix],
                     w.cav[ix]], axis=1).astype(np.float32)


class Observer:
    """Builds the modalities at each step of a run from the weather and the plant's logged state.

    The history ring holds measurements of the last ``HISTORY`` steps (NaN before the run started); the noise of
    images and audio is seeded per (weather, step), so every controller sees the same sky and the same noise.
    """

    def __init__(self, w: Weather, plant: Plant = PLANT) -> None:
        self.w, self.plant = w, plant
        self.hist = np.full((w.n, len(HIST_FEATURES)), np.nan, dtype=np.float32)

    def observe(self, st: State, t: int) -> dict[str, np.ndarray]:
        """Per modality, one sample's array (no batch axis)."""
        w = self.w
        self.hist[t] = [self.plant.pv_kw(w.irradiance[t]), w.base_load[t], w.price[t], w.carbon[t], w.t_out[t],
                        st.soc(self.plant)]
        h = np.full((HISTORY, len(HIST_FEATURES)), np.nan, dtype=np.float32)
        lo = max(0, t - HISTORY + 1)
        h[HISTORY - (t + 1 - lo):] = self.hist[lo:t + 1]
        rng = np.random.default_rng((w.seed, t, 17))
        return {"sky": sky_image(w, t, rng),
                "audio": pump_audio(st.prev_speed, w.cav[t], st.wear, rng),
                "history": h, "state": state_vector(st, w, t, self.plant), "foresight": foresight(w, t)}


def rule_based(obs: dict[str, np.ndarray], st: State, t: int, w: Weather, plant: Plant = PLANT) -> np.ndarray:
    """A typical rule-based farm controller (time-of-use battery schedule, fixed climate recipe).

    - LEDs at 75% for a 16 h photoperiod (06:00-22:00), CO2 valve 50% during it, HVAC setpoint 22 C,
      pumps at 60% (above the 50% circulation requirement).
    - Battery: charge with any PV surplus; charge 3 kW from the grid off-peak (00:00-06:00) up to 70% SOC;
      discharge to cover the load at the evening peak (17:00-22:00) down to 20% SOC.
    """
    h = w.hour[t]
    photo = 6 <= h < 22
    led, valve, setp, speed = (0.75 if photo else 0.0), (0.5 if photo else 0.0), 22.0, 0.6
    load = load_kw(speed, led, setp, valve, w, t, plant)
    surplus = float(plant.pv_kw(w.irradiance[t])) - load
    soc = st.soc(plant)
    if surplus > 0:
        b = min(surplus, plant.battery_kw)
    elif h < 6 and soc < 0.7:
        b = 3.0
    elif 17 <= h < 22 and soc > 0.2:
        b = -min(-surplus, plant.battery_kw)
    else:
        b = 0.0
    return np.array([b, speed, led, setp, valve])


def run_loop(w: Weather, policy: Policy, n: int, energy0: float, plant: Plant = PLANT,
             drop: str | None = None) -> dict:
    """Run ``policy`` in closed loop for ``n`` steps from midnight; ``drop``: a stream sent as all-NaN.

    Returns:
        ``series`` (per-step arrays: actions, soc, import_kw, pv_kw, load_kw, price) and ``totals``.
    """
    obs_maker = Observer(w, plant)
    st = State(energy_kwh=energy0, wear=w.wear0)
    recs = []
    for t in range(n):
        obs = obs_maker.observe(st, t)
        if drop:
            obs[drop] = np.full_like(obs[drop], np.nan)
        a = policy(obs, st, t)
        st, rec = step(st, a, w, t, plant)
        recs.append(rec)
    series = {k: np.array([r[k] for r in recs]) for k in ("import_kw", "pv_kw", "load_kw", "soc", "curtail_kw")}
    series["actions"] = np.stack([r["actions"] for r in recs])
    series["price"] = w.price[:n]
    return {"series": series, "totals": totals(recs, energy0, st, w.wear0, plant)}


def totals(recs: list[dict], energy0: float, st: State, wear0: float = 0.0, plant: Plant = PLANT
           ) -> dict[str, float]:
    """Grid import (kWh; ``grid_import_adj_kwh`` also charges the battery energy used up over the run, so runs that
    end at different SOC compare fairly), cost ($), CO2 (kg), crop proxy (growth-hours per day and share of the
    requirement), curtailed PV, final SOC and pump wear of a run."""
    days = len(recs) / STEPS_PER_DAY
    crop = float(sum(r["growth"] for r in recs))
    imp = float(sum(r["import_kwh"] for r in recs))
    # stored energy spent (or saved) over the run, valued as grid energy: restoring it would take 1/eta per kWh
    # (a surplus would save eta per kWh later)
    de = energy0 - st.energy_kwh
    adj = imp + (de / plant.eta if de > 0 else de * plant.eta)
    return {"grid_import_kwh": imp, "grid_import_adj_kwh": adj,
            "cost_usd": float(sum(r["cost"] for r in recs)), "co2_kg": float(sum(r["co2_kg"] for r in recs)),
            "crop_per_day": crop / days, "crop_vs_requirement": crop / days / plant.crop_req,
            "curtailed_kwh": float(sum(r["curtail_kw"] for r in recs) * DT_H),
            "final_soc": st.soc(plant), "initial_soc": energy0 / plant.battery_kwh,
            "pump_wear_h": float(st.wear - wear0) * plant.life_h}


def _net_load_kw(a: np.ndarray, w: Weather, t: int, plant: Plant) -> float:
    """The load the four non-battery actions ``a[1:]`` draw at step ``t``, less the PV output (negative: surplus)."""
    return load_kw(float(a[1]), float(a[2]), float(a[3]), float(a[4]), w, t, plant) - float(plant.pv_kw(
        w.irradiance[t]))


def inverter_limits(policy: Policy, w: Weather, plant: Plant = PLANT) -> Policy:
    """``policy`` behind a hybrid inverter's zero-export and no-grid-charging limits (a standard firmware mode):
    the battery command is clipped to ``[-max(load - PV, 0), max(PV - load, 0)]``, with the load that the other
    four actions draw at this step as the inverter's meter sees it. Discharging beyond the net load could only be
    curtailed (the farm cannot export) and charging beyond the PV surplus is bought from the grid; the oracle's
    plans do neither."""
    def act(obs: dict[str, np.ndarray], st: State, t: int) -> np.ndarray:
        a = clip_actions(policy(obs, st, t))
        net = _net_load_kw(a, w, t, plant)
        a[0] = min(max(a[0], -max(net, 0.0)), max(-net, 0.0))
        return a
    return act


def store_surplus(policy: Policy, w: Weather, plant: Plant = PLANT) -> Policy:
    """``policy`` with the PV surplus stored before it is curtailed: when PV exceeds the load that the other four
    actions draw, the battery charges with the surplus (up to its rate; the simulator stops it at full), whatever
    the battery command. The farm cannot export, so a surplus not stored is thrown away, and storing it costs no
    import, money or CO2 now and can only replace an import later; the rule-based controller charges with any
    surplus too, and the oracle's LP stores it whenever that pays. Only the battery command at a surplus changes:
    at a deficit the policy still decides how much to discharge."""
    def act(obs: dict[str, np.ndarray], st: State, t: int) -> np.ndarray:
        a = clip_actions(policy(obs, st, t))
        net = _net_load_kw(a, w, t, plant)
        if net < 0:
            a[0] = max(float(a[0]), min(-net, plant.battery_kw))
        return a
    return act


def stop_when_met(policy: Policy, w: Weather, plant: Plant = PLANT) -> Policy:
    """``policy`` with the day's requirements as hard stops: once today's crop growth reaches ``crop_req`` the LEDs
    and the CO2 valve go off and the HVAC setpoint follows the outdoor temperature (within 15-30 C), since more
    growth earns nothing today; once today's pump flow reaches the circulation requirement the pumps run at their
    minimum speed. The oracle's plans stop there too (it meets each requirement exactly)."""
    def act(obs: dict[str, np.ndarray], st: State, t: int) -> np.ndarray:
        a = clip_actions(policy(obs, st, t))
        if st.crop_today >= plant.crop_req:
            a[2], a[4], a[3] = 0.0, 0.0, float(np.clip(w.t_out[t], LOW[3], HIGH[3]))
        if st.flow_today >= 24 * plant.flow_req:
            a[1] = LOW[1]
        return a
    return act


def plan_policy(actions: np.ndarray) -> Policy:
    """A policy that replays a plan (the oracle's)."""
    return lambda obs, st, t: actions[t]


def onnx_policy(session, names: list[str]) -> Policy:  # noqa: ANN001 - onnxruntime session
    """A policy from an exported student: one batch-1 inference per step; output 0 is the actions."""
    def act(obs: dict[str, np.ndarray], st: State, t: int) -> np.ndarray:
        feed = {m: obs[m][None].astype(np.float32) for m in names}
        return np.asarray(session.run(None, feed)[0][0], dtype=float)
    return act
