"""The perfect-foresight oracle: a linear program (HiGHS via ``scipy.optimize.linprog``) over a window of steps.

Knowing the whole window's weather, prices, carbon intensity and pump cavitation, it chooses the five actions of
every step to minimise grid energy, each kWh weighted ``1 + 0.1 price / 0.3 + 0.1 carbon / 0.4`` (so price and
carbon break ties between equally self-sufficient plans), subject to:

- battery dynamics ``E_t = E_{t-1} + dt (eta c_t - d_t / eta)``, 0 <= c, d <= 10 kW, E within the SOC limits, and
  the final energy >= the initial one (no end-of-window discharge);
- power balance ``import - curtail = base + led_kw led + pump power + hvac + co2_kw valve + c - d - PV``,
  import, curtail >= 0 (no export);
- HVAC ``setpoint - T_out = heat - cool`` (power ``hvac_kw_per_k (heat + cool)``), setpoint in 15..30 C;
- crop: every calendar day ``sum dt (g_l + 0.3 g_c - 0.04 |setpoint - 24|) >= crop_req`` (less what was grown
  before the window started that day), with ``g_l <= min(daylight + led, 1)`` and ``g_c <= valve, g_l``
  (epigraphs of the proxy's minima, exact at the optimum or conservative);
- pumps: every calendar day ``sum dt speed >= 24 flow_req``, speed in 0.2..1.

Small penalties (1e-3 per kWh of battery throughput, 1e-3 per kelvin-hour of HVAC and temperature deviation,
``SMOOTH`` per kW of step-to-step change of the battery and LED power) remove degenerate plans and make them
smooth, hence learnable. The plan is open loop; since the simulator is deterministic given the weather, executing
it with :func:`cmkd.recipes.microgrid.scene.step` reproduces it exactly (the tests check this).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from cmkd.errors import CmkdError
from cmkd.recipes.microgrid.scene import DT_H, PLANT, STEPS_PER_DAY, Plant, Weather

# variables per step, in this order
VARS = ("c", "d", "e", "imp", "cur", "pump", "led", "valve", "temp", "heat", "cool", "tp", "tm", "gl", "gc", "db",
        "dl")
SMOOTH = 5e-3  # penalty per kW of change of the battery power or of the LED power between steps


def solve(w: Weather, start: int, n: int, energy0: float, crop_done: float = 0.0, flow_done: float = 0.0,
          plant: Plant = PLANT, energy_end: float | None = None) -> dict[str, np.ndarray]:
    """Optimal plan for steps ``start .. start + n - 1`` of ``w`` from battery energy ``energy0`` (kWh).

    Args:
        w: the weather (the oracle sees all of it).
        start: first step (any time of day; ``crop_done``/``flow_done``: growth and flow already achieved that day).
        n: number of steps.
        energy0: the battery energy at ``start``.
        energy_end: the least battery energy at the end (default ``energy0``: no end-of-window discharge).

    Returns:
        ``actions`` (n, 5) and per step ``import_kw``, ``energy_kwh`` (after the step), ``growth``; ``objective``.
    """
    if start < 0 or n < 1 or start + n > w.n:
        raise CmkdError(f"oracle window {start}..{start + n} outside the weather's {w.n} steps")
    k = len(VARS)
    col = {v: i for i, v in enumerate(VARS)}

    def idx(v: str) -> np.ndarray:
        return np.arange(n) * k + col[v]

    sl = slice(start, start + n)
    irr, tout, base, cav = w.irradiance[sl], w.t_out[sl], w.base_load[sl], w.cav[sl]
    dl = plant.daylight * irr / 1000
    lo_e, hi_e = plant.soc_min * plant.battery_kwh, plant.soc_max * plant.battery_kwh
    energy0 = float(np.clip(energy0, lo_e, hi_e))
    bounds = np.zeros((n * k, 2))
    spec = {"c": (0, plant.battery_kw), "d": (0, plant.battery_kw), "e": (lo_e, hi_e), "imp": (0, np.inf),
            "cur": (0, np.inf), "pump": (0.2, 1), "led": (0, 1), "valve": (0, 1), "temp": (15, 30),
            "heat": (0, np.inf), "cool": (0, np.inf), "tp": (0, np.inf), "tm": (0, np.inf), "gl": (0, 1),
            "gc": (0, 1), "db": (0, np.inf), "dl": (0, np.inf)}
    for v, (lo, hi) in spec.items():
        bounds[idx(v)] = (lo, hi)
    cost = np.zeros(n * k)
    cost[idx("imp")] = DT_H * (1 + 0.1 * w.price[sl] / 0.3 + 0.1 * w.carbon[sl] / 0.4)
    for v in ("c", "d"):
        cost[idx(v)] = 1e-3 * DT_H
    for v in ("heat", "cool", "tp", "tm"):
        cost[idx(v)] = 1e-3 * DT_H
    cost[idx("db")] = SMOOTH
    cost[idx("dl")] = SMOOTH

    rows, cols, vals, rhs = [], [], [], []
    r = 0

    def add(entries: list[tuple[np.ndarray, float | np.ndarray]], b: np.ndarray) -> None:
        nonlocal r
        for ix, coef in entries:
            rows.append(r + np.arange(n))
            cols.append(ix)
            vals.append(np.broadcast_to(np.asarray(coef, dtype=float), (n,)))
        rhs.append(b)
        r += n

    t = np.arange(n)
    # battery: e_t - e_{t-1} - eta dt c_t + dt/eta d_t = 0 (e_{-1} = energy0 on the right-hand side)
    add([(idx("e"), 1.0), (idx("c"), -plant.eta * DT_H), (idx("d"), DT_H / plant.eta)],
        np.where(t == 0, energy0, 0.0))
    rows.append(np.arange(1, n))
    cols.append(idx("e")[:-1])
    vals.append(-np.ones(n - 1))
    # power balance
    add([(idx("imp"), 1.0), (idx("cur"), -1.0), (idx("c"), -1.0), (idx("d"), 1.0), (idx("led"), -plant.led_kw),
         (idx("pump"), -plant.pump_kw * (1 + plant.cav_extra * cav)), (idx("heat"), -plant.hvac_kw_per_k),
         (idx("cool"), -plant.hvac_kw_per_k), (idx("valve"), -plant.co2_kw)], base - plant.pv_kw(irr))
    add([(idx("temp"), 1.0), (idx("heat"), -1.0), (idx("cool"), 1.0)], tout)
    add([(idx("temp"), 1.0), (idx("tp"), -1.0), (idx("tm"), 1.0)], np.full(n, plant.t_opt))
    a_eq = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(r, n * k))
    b_eq = np.concatenate(rhs)

    rows, cols, vals, rhs = [], [], [], []
    r = 0
    add([(idx("gl"), 1.0), (idx("led"), -1.0)], dl)  # g_l <= daylight + led
    add([(idx("gc"), 1.0), (idx("valve"), -1.0)], np.zeros(n))
    add([(idx("gc"), 1.0), (idx("gl"), -1.0)], np.zeros(n))
    # |change| epigraphs: +-(x_t - x_{t-1}) <= dx_t for the battery power c - d and the LED power
    for sign in (1.0, -1.0):
        for terms, dv in (([("c", 1.0), ("d", -1.0)], "db"), ([("led", plant.led_kw)], "dl")):
            r0 = r
            add([(idx(v), sign * coef) for v, coef in terms] + [(idx(dv), -1.0)], np.zeros(n))
            for v, coef in terms:
                rows.append(r0 + np.arange(1, n))
                cols.append(idx(v)[:-1])
                vals.append(np.full(n - 1, -sign * coef))
    # daily crop and flow requirements (calendar days of the window)
    day = (start + t) // STEPS_PER_DAY
    ub_rows = []
    for d in np.unique(day):
        sel = np.flatnonzero(day == d)
        whole = len(sel) + ((start + sel[0]) % STEPS_PER_DAY)  # steps of that day covered up to the window's end
        first = d == day[0]
        share = 1.0 if whole >= STEPS_PER_DAY else whole / STEPS_PER_DAY  # a day cut by the window's end: pro rata
        crop_need = plant.crop_req * share - (crop_done if first else 0.0)
        flow_need = 24 * plant.flow_req * share - (flow_done if first else 0.0)
        crop_row = np.zeros(n * k)
        crop_row[idx("gl")[sel]] = -DT_H
        crop_row[idx("gc")[sel]] = -0.3 * DT_H
        crop_row[idx("tp")[sel]] = 0.04 * DT_H
        crop_row[idx("tm")[sel]] = 0.04 * DT_H
        flow_row = np.zeros(n * k)
        flow_row[idx("pump")[sel]] = -DT_H
        ub_rows += [(crop_row, -crop_need), (flow_row, -flow_need)]
    term = np.zeros(n * k)
    term[idx("e")[-1]] = -1.0
    ub_rows.append((term, -(energy0 if energy_end is None else float(np.clip(energy_end, lo_e, hi_e)))))
    a_ub = sparse.vstack([sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                            shape=(r, n * k)),
                          sparse.csr_matrix(np.array([row for row, _ in ub_rows]))]).tocsr()
    b_ub = np.concatenate([np.concatenate(rhs), np.array([b for _, b in ub_rows])])
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        raise CmkdError(f"oracle LP failed: {res.message}")
    x = res.x.reshape(n, k)
    actions = np.stack([x[:, col["c"]] - x[:, col["d"]], x[:, col["pump"]], x[:, col["led"]], x[:, col["temp"]],
                        x[:, col["valve"]]], axis=1)
    return {"actions": actions, "import_kw": x[:, col["imp"]], "energy_kwh": x[:, col["e"]],
            "growth": x[:, col["gl"]] + 0.3 * x[:, col["gc"]] - 0.04 * (x[:, col["tp"]] + x[:, col["tm"]]),
            "objective": float(res.fun)}
