"""The microgrid recipe's samples (SYNTHETIC): the perfect-foresight oracle's plans replayed over windows of
simulated weather (:func:`rollout`), DAgger rollouts of a trained student labelled by the oracle
(:func:`dagger_window`), and the student's controller as deployed (:func:`deployed_controller`, the guards of
``options``). :mod:`cmkd.recipes.microgrid.recipe` builds the data contract and the closed loop from these."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from cmkd.recipes.microgrid.control import Observer, Policy, inverter_limits, stop_when_met, store_surplus
from cmkd.recipes.microgrid.oracle import solve
from cmkd.recipes.microgrid.scene import DT_H, PLANT, STEPS_PER_DAY, State, Weather, step

SEED_STRIDE = 100_000  # weather seeds of a run: seed * SEED_STRIDE + part offset + window

PART_OFFSET = {"train": 0, "val": 10_000, "test": 20_000, "eval": 90_000}


def window_seed(seed: int, part: str, i: int) -> int:
    """The weather seed of window ``i`` of a part (train, val, test, eval) of a run with ``seed``."""
    return int(seed) * SEED_STRIDE + PART_OFFSET[part] + i


def rollout(w: Weather, start: int, n: int, energy0: float, crop_done: float, flow_done: float, stride: int
            ) -> dict[str, np.ndarray]:
    """Solve the oracle from a state and replay its plan; observations and targets every ``stride`` steps."""
    plan = solve(w, start, n, energy0, crop_done, flow_done)
    obs_maker = Observer(w)
    st = State(energy_kwh=energy0, crop_today=crop_done, flow_today=flow_done,
               wear=w.wear0, prev_speed=0.5)
    socs = np.empty(n + 1)
    socs[0] = energy0 / PLANT.battery_kwh
    rows: dict[str, list] = {k: [] for k in ("sky", "audio", "history", "state", "foresight", "actions",
                                             "irradiance", "cavitation", "rul", "t")}
    for i in range(n):
        t = start + i
        obs = obs_maker.observe(st, t)
        if i % stride == 0:
            for k in ("sky", "audio", "history", "state", "foresight"):
                rows[k].append(obs[k])
            rows["actions"].append(plan["actions"][i])
            rows["irradiance"].append(w.irradiance[t])
            rows["cavitation"].append(int(w.cav[t]))
            rows["rul"].append((1 - st.wear) * PLANT.life_h / 1000)
            rows["t"].append(i)
        st, _ = step(st, plan["actions"][i], w, t)
        socs[i + 1] = st.soc()
    out = {k: np.asarray(v) for k, v in rows.items()}
    ti = out.pop("t")
    nxt = start + ti[:, None] + np.arange(1, 13)[None, :]
    out["forecast"] = np.stack([w.price[nxt].mean(1), w.base_load[nxt].mean(1),
                                socs[np.minimum(ti + 12, n)]], axis=1)
    return out


def torch_policy(net: torch.nn.Module) -> Policy:
    """A policy from a torch student: one batch-1 forward pass per step (CPU, eval mode)."""
    net = net.cpu().eval()

    @torch.no_grad()
    def act(obs: dict[str, np.ndarray], st: State, t: int) -> np.ndarray:
        x = {m: torch.from_numpy(obs[m][None].astype(np.float32)) for m in net.encoders}
        return net(x)["actions"]["value"][0].numpy().astype(float)

    return act


def feasible_progress(t: int, end: int, crop_done: float, flow_done: float) -> tuple[float, float]:
    """Today's crop and flow progress at step ``t`` for an oracle LP that ends at step ``end``, raised where needed
    so that the rest of the day within the LP (its requirement pro rata when ``end`` cuts the day, as
    :func:`cmkd.recipes.microgrid.oracle.solve` counts it) can still be met at 1.2 growth-hours and 0.95
    speed-hours per hour: the LP from a state that has fallen too far behind would be infeasible; its plan from
    the raised progress catches up as fast as the plant allows, which is the right action from the real state
    too."""
    day0 = (t // STEPS_PER_DAY) * STEPS_PER_DAY
    day_end = min(end, day0 + STEPS_PER_DAY)
    share = min((day_end - day0) / STEPS_PER_DAY, 1.0)
    hours = (day_end - t) * DT_H
    return (max(crop_done, PLANT.crop_req * share - 1.2 * hours),
            max(flow_done, 24 * PLANT.flow_req * share - 0.95 * hours))


def dagger_window(w: Weather, policy: Policy, start: int, n: int, energy0: float, crop_done: float,
                  flow_done: float, every: int, stride: int) -> dict[str, np.ndarray]:
    """One DAgger rollout: ``policy`` runs in closed loop for ``n`` steps from ``start``; every ``every`` steps the
    oracle LP of the window (the one :func:`cmkd.recipes.microgrid.recipe.build` solves from its start: up to the
    window's end, final energy at least ``energy0``) is re-solved from the state the policy reached, and its plan
    is replayed from that state for ``every`` steps, keeping the observations (the same history as the policy's
    run) and the oracle's actions and other targets every ``stride`` steps.

    The first sample of each segment is the state the policy visited, labelled with the oracle's action there
    (Ross et al. 2011); the rest follow the oracle's recovery from it. Where the policy left the battery too low
    to reach the final energy even charging at full power, the target is lowered to what it can reach; the crop
    and flow progress handed to the LP are raised likewise (:func:`feasible_progress`)."""
    obs_maker = Observer(w)
    st = State(energy_kwh=energy0, crop_today=crop_done, flow_today=flow_done, wear=w.wear0, prev_speed=0.5)
    keys = ("sky", "audio", "history", "state", "foresight", "actions", "irradiance", "cavitation", "rul",
            "forecast")
    rows: dict[str, list] = {k: [] for k in keys}
    for i in range(n):
        t = start + i
        obs = obs_maker.observe(st, t)
        if i % every == 0:
            h = start + n - t
            crop_lp, flow_lp = feasible_progress(t, start + n, st.crop_today, st.flow_today)
            reach = st.energy_kwh + 0.98 * PLANT.eta * PLANT.battery_kw * DT_H * h
            plan = solve(w, t, h, st.energy_kwh, crop_lp, flow_lp, energy_end=min(energy0, reach))
            branch = Observer(w)
            branch.hist = obs_maker.hist.copy()
            bst = replace(st)
            socs = [bst.soc()]
            samples = []
            for j in range(min(every + 12, h, w.n - t - 13)):
                bobs = obs if j == 0 else branch.observe(bst, t + j)
                if j < every and j % stride == 0:
                    samples.append((j, bobs, plan["actions"][j], (1 - bst.wear) * PLANT.life_h / 1000))
                bst, _ = step(bst, plan["actions"][j], w, t + j)
                socs.append(bst.soc())
            for j, bobs, a, rul in samples:
                for k in ("sky", "audio", "history", "state", "foresight"):
                    rows[k].append(bobs[k])
                nxt = t + j + np.arange(1, 13)
                rows["actions"].append(a)
                rows["irradiance"].append(w.irradiance[t + j])
                rows["cavitation"].append(int(w.cav[t + j]))
                rows["rul"].append(rul)
                rows["forecast"].append([w.price[nxt].mean(), w.base_load[nxt].mean(),
                                         socs[min(j + 12, len(socs) - 1)]])
        st, _ = step(st, policy(obs, st, t), w, t)
    return {k: np.asarray(v) for k, v in rows.items()}


def deployed_controller(policy: Policy, w: Weather, options: dict) -> Policy:
    """The student's controller as deployed: the network's actions with ``options.stop_when_met`` (the day's
    requirements as hard stops), behind ``options.inverter_limits`` and ``options.store_surplus``."""
    if options["stop_when_met"]:
        policy = stop_when_met(policy, w)
    if options["inverter_limits"]:
        policy = inverter_limits(policy, w)
    return store_surplus(policy, w) if options["store_surplus"] else policy


def progress(start: int, rng: np.random.Generator) -> tuple[float, float]:
    """A random but feasible progress towards the day's crop and flow requirements at step ``start`` of a day:
    roughly on schedule (a 16 h photoperiod from 06:00 for the crop, uniform for the flow), +-20%."""
    h = (start % STEPS_PER_DAY) * DT_H
    left = 24 - h
    crop = PLANT.crop_req * np.clip((h - 6) / 16, 0, 1) * rng.uniform(0.8, 1.2)
    flow = 24 * PLANT.flow_req * h / 24 * rng.uniform(0.8, 1.2)
    crop = float(np.clip(crop, PLANT.crop_req - 1.0 * left, PLANT.crop_req))
    flow = float(np.clip(flow, 24 * PLANT.flow_req - 0.9 * left, 24 * PLANT.flow_req))
    return crop, flow
