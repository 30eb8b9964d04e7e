"""The microgrid recipe (SYNTHETIC data): simulator physics, the oracle LP on a hand-checkable case, the rule-based
controller, magnitude pruning, and a tiny run checking metrics.json and closed_loop.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import check_metrics
from torch import nn

import cmkd
from cmkd.errors import CmkdError
from cmkd.export.onnx import prune_magnitude
from cmkd.recipes.microgrid.control import (
    Observer,
    inverter_limits,
    plan_policy,
    rule_based,
    run_loop,
    stop_when_met,
    store_surplus,
)
from cmkd.recipes.microgrid.oracle import solve
from cmkd.recipes.microgrid.recipe import aggregate, aggregate_rounds, build, default_config
from cmkd.recipes.microgrid.rollouts import dagger_window, feasible_progress
from cmkd.recipes.microgrid.scene import DT_H, PLANT, State, Weather, pump_audio, step, weather

FAST = ["teacher.epochs=1", "student.epochs=1", "export.latency_runs=5", "options.train_windows=1",
        "options.window_days=0.5", "options.eval_days=0.5", "options.stride=8", "options.dagger_rounds=1"]


def _flat(n: int, price: np.ndarray, irradiance: float = 0.0, t_out: float = 20.0, base: float = 3.0) -> Weather:
    """Hand-made weather: constant except the price."""
    return Weather(seed=0, hour=(np.arange(n) * DT_H) % 24, clear=np.full(n, irradiance), cloud=np.zeros(n),
                   irradiance=np.full(n, irradiance), t_out=np.full(n, t_out), base_load=np.full(n, base),
                   price=np.asarray(price, dtype=float), carbon=np.full(n, 0.4), cav=np.zeros(n), wear0=0.2,
                   patterns=np.zeros((n // 12 + 2, 16, 16)))


def test_battery_energy_balance_efficiency_and_bounds() -> None:
    w = _flat(4, np.full(4, 0.2))
    e0 = 30.0
    st, rec = step(State(e0), np.array([10.0, 0.5, 0, 20, 0]), w, 0)
    assert st.energy_kwh == pytest.approx(e0 + PLANT.eta * 10 * DT_H)  # charging loses (1 - eta)
    st, rec = step(State(e0), np.array([-10.0, 0.5, 0, 20, 0]), w, 0)
    assert st.energy_kwh == pytest.approx(e0 - 10 / PLANT.eta * DT_H)  # discharging draws 1/eta
    _, rec = step(State(e0), np.array([25.0, 0.5, 0, 20, 0]), w, 0)
    assert rec["actions"][0] == 10.0  # power bound
    full = PLANT.soc_max * PLANT.battery_kwh - 0.1
    st, rec = step(State(full), np.array([10.0, 0.5, 0, 20, 0]), w, 0)
    assert st.energy_kwh == pytest.approx(PLANT.soc_max * PLANT.battery_kwh)  # SOC bound
    assert rec["actions"][0] == pytest.approx(0.1 / (PLANT.eta * DT_H))
    # grid import = load + charge - PV, never negative (no export): base 3 + pump 0.75 + HVAC 0 at setpoint 20
    _, rec = step(State(e0), np.array([0.0, 0.5, 0, 20, 0]), w, 0)
    assert rec["import_kw"] == pytest.approx(3.0 + 1.5 * 0.5)


def test_pv_is_proportional_to_irradiance() -> None:
    irr = np.array([0.0, 200.0, 400.0, 800.0])
    pv = PLANT.pv_kw(irr)
    assert pv[0] == 0 and np.allclose(pv[1:] / irr[1:], pv[3] / irr[3])
    w = weather(3, 1)
    assert w.irradiance.max() > 300 and (w.irradiance[w.clear == 0] == 0).all()


def test_cavitation_adds_broadband_energy_to_pump_audio() -> None:
    def high_band(cav: int) -> float:
        x = np.mean([np.abs(np.fft.rfft(pump_audio(0.6, cav, 0.3, np.random.default_rng(s))[0])) ** 2
                     for s in range(20)], axis=0)
        return float(x[60:].sum())  # above the 4th harmonic of the rotation frequency (0.038 cycles/sample)

    assert high_band(1) > 20 * high_band(0)


def test_oracle_charges_when_cheap_and_discharges_when_expensive() -> None:
    # no sun, no crop or flow requirement (a crop "requirement" far below zero never binds); 1 h cheap then 1 h
    # expensive; the battery starts (and must end) empty
    plant = replace(PLANT, crop_req=-100.0, flow_req=0.0)
    n = 24
    w = _flat(n, np.r_[np.full(12, 0.05), np.full(12, 1.5)])
    e_min = plant.soc_min * plant.battery_kwh
    plan = solve(w, 0, n, e_min, plant=plant)
    a = plan["actions"]
    load = 3.0 + plant.pump_kw * 0.2  # base + pumps at minimum speed; HVAC at the outdoor temperature: 0
    assert np.allclose(a[:, 1], 0.2) and np.allclose(a[:, 2], 0) and np.allclose(a[:, 3], 20.0)
    assert (a[:12, 0] > 0).any() and np.allclose(a[12:, 0], -load)  # discharges exactly the load when expensive
    assert np.allclose(plan["import_kw"][12:], 0, atol=1e-7)
    # hand-computed optimum: the expensive hour's energy is bought in the cheap hour, through both efficiencies
    expected = load * 12 * DT_H + load * 12 * DT_H / plant.eta ** 2
    assert plan["import_kw"].sum() * DT_H == pytest.approx(expected, rel=1e-6)
    assert plan["energy_kwh"][-1] == pytest.approx(e_min, abs=1e-6)
    # without the price difference storing would only lose energy: the oracle does not cycle the battery
    flat = solve(_flat(n, np.full(n, 0.2)), 0, n, e_min, plant=plant)
    assert np.allclose(flat["actions"][:, 0], 0, atol=1e-7)


def test_oracle_plan_replays_exactly_and_meets_requirements() -> None:
    w = weather(5, 1.6)
    plan = solve(w, 0, 288, 30.0)
    res = run_loop(w, plan_policy(plan["actions"]), 288, 30.0)
    assert np.allclose(res["series"]["import_kw"], plan["import_kw"], atol=1e-6)
    assert res["totals"]["crop_vs_requirement"] >= 1 - 1e-6
    assert res["series"]["actions"][:, 1].mean() >= PLANT.flow_req - 1e-6
    assert res["totals"]["final_soc"] >= 0.5 - 1e-6


def test_rule_based_controller_is_sane() -> None:
    w = weather(7, 1.6)
    obs = Observer(w)
    noon, night = 144, 12
    a_noon = rule_based(obs.observe(State(30.0), noon), State(30.0), noon, w)
    a_night = rule_based(obs.observe(State(30.0), night), State(30.0), night, w)
    assert a_night[2] == 0 and a_noon[2] == pytest.approx(0.75) and a_noon[3] == 22.0
    assert a_night[0] == 3.0  # off-peak grid charging below 70% SOC
    res = run_loop(w, lambda o, s, t: rule_based(o, s, t, w), 288, 30.0)
    soc = res["series"]["soc"]
    assert soc.min() >= PLANT.soc_min - 1e-9 and soc.max() <= PLANT.soc_max + 1e-9
    sunny = res["series"]["pv_kw"] > res["series"]["load_kw"] + 11  # more surplus than the battery can take
    charging = res["series"]["actions"][:, 0]
    assert (charging[res["series"]["pv_kw"] > res["series"]["load_kw"]] >= 0).all()
    assert not sunny.any() or (res["series"]["soc"][sunny] >= 0.9).any() or (charging[sunny] == 10).all()


def test_magnitude_pruning_zeroes_the_smallest_weights_globally() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Conv1d(30, 10, 3))
    weights = torch.cat([m.weight.detach().abs().flatten() for m in (net[0], net[2])])
    thr = weights.kthvalue(int(0.4 * len(weights))).values
    sparsity = prune_magnitude(net, 0.4)
    assert sparsity == pytest.approx(0.4, abs=1e-3)
    for m in (net[0], net[2]):
        assert "weight_orig" not in dict(m.named_parameters())  # permanent: plain weights again
    kept = torch.cat([m.weight.detach().abs().flatten() for m in (net[0], net[2])])
    assert (kept[kept > 0] >= thr).all()


def test_bad_options_are_one_line_errors() -> None:
    cfg = default_config(quick=True)
    cfg["options"]["stride"] = 0
    with pytest.raises(CmkdError, match="options.stride"):
        build(cfg, quick=True)


def test_inverter_limits_stop_discharging_into_curtailment_and_charging_from_the_grid() -> None:
    # load: base 3 + pump 0.75 (speed 0.5) + HVAC 0 (setpoint = outdoor 20) + LED 10 x 0.2 = 5.75 kW
    # PV at 300 W/m2: 45 x 0.9 x 0.3 = 12.15 kW
    for irr, cmd, want in ((0.0, -10.0, -5.75), (0.0, 4.0, 0.0), (300.0, 10.0, 12.15 - 5.75), (300.0, -3.0, 0.0),
                           (300.0, 5.0, 5.0), (0.0, -2.0, -2.0)):
        w = _flat(4, np.full(4, 0.2), irradiance=irr)
        pol = inverter_limits(lambda o, s, t, c=cmd: np.array([c, 0.5, 0.2, 20.0, 0.0]), w)
        a = pol({}, State(30.0), 0)
        assert a[0] == pytest.approx(want)
        _, rec = step(State(30.0), a, w, 0)
        assert rec["import_kw"] * rec["curtail_kw"] == 0 and (a[0] <= 0 or rec["import_kw"] == 0)
        assert (a[0] >= 0 or rec["curtail_kw"] == 0)


def test_store_surplus_charges_with_the_pv_surplus_and_leaves_deficits_to_the_policy() -> None:
    # same plant as above: load 5.75 kW; PV 12.15 kW at 300 W/m2 (surplus 6.4), 45 x 0.9 x 0.6 = 24.3 at 600
    for irr, cmd, want in ((300.0, -3.0, 12.15 - 5.75), (300.0, 2.0, 12.15 - 5.75), (600.0, 0.0, 10.0),
                           (0.0, -2.0, -2.0), (0.0, 0.0, 0.0)):
        w = _flat(4, np.full(4, 0.2), irradiance=irr)
        pol = store_surplus(inverter_limits(lambda o, s, t, c=cmd: np.array([c, 0.5, 0.2, 20.0, 0.0]), w), w)
        a = pol({}, State(30.0), 0)
        assert a[0] == pytest.approx(want)
        _, rec = step(State(30.0), a, w, 0)
        assert rec["import_kw"] == 0 or irr == 0  # a surplus never leads to an import
        assert rec["curtail_kw"] == pytest.approx(max(12.15 * irr / 300 - 5.75 - 10.0, 0.0), abs=1e-9)


def test_stop_when_met_switches_growth_and_pumps_off_once_the_days_requirements_are_met() -> None:
    w = _flat(4, np.full(4, 0.2), t_out=33.0)
    pol = stop_when_met(lambda o, s, t: np.array([2.0, 1.0, 1.0, 24.0, 1.0]), w)
    behind = pol({}, State(30.0, crop_today=PLANT.crop_req - 0.1, flow_today=0.0), 0)
    assert np.allclose(behind, [2.0, 1.0, 1.0, 24.0, 1.0])  # unchanged while a requirement is open
    met = pol({}, State(30.0, crop_today=PLANT.crop_req, flow_today=24 * PLANT.flow_req), 0)
    assert np.allclose(met, [2.0, 0.2, 0.0, 30.0, 0.0])  # setpoint: the outdoor 33 C within 15..30
    crop_only = pol({}, State(30.0, crop_today=PLANT.crop_req + 1, flow_today=1.0), 0)
    assert crop_only[1] == 1.0 and crop_only[2] == 0.0


def test_dagger_labels_the_states_the_policy_visits_with_the_oracles_actions() -> None:
    w = weather(11, 1.6)
    e0, every, n = 30.0, 24, 72

    def policy(o: dict, s: State, t: int) -> np.ndarray:  # a poor controller: drains the battery, no light
        return np.array([-10.0, 0.5, 0.0, 22.0, 0.0])

    arr = dagger_window(w, policy, 0, n, e0, 0.0, 0.0, every, stride=6)
    assert len(arr["actions"]) == 3 * (every // 6) and {"sky", "audio", "history", "state", "foresight",
                                                         "forecast", "rul"} <= set(arr)
    ref = run_loop(w, policy, n, e0)  # the states the policy itself visits
    for k, t in enumerate((0, 24, 48)):
        soc_t = e0 / PLANT.battery_kwh if t == 0 else ref["series"]["soc"][t - 1]
        first = arr["state"][k * (every // 6)]
        assert first[0] == pytest.approx(soc_t, abs=1e-5)  # the sample is the policy's own state ...
        st = State(soc_t * PLANT.battery_kwh)
        # the progress handed to the LP: raised to what the rest of the (6 h, pro rata) window can still reach
        crop, flow = feasible_progress(t, n, float(first[4] * PLANT.crop_req), float(first[5] * 24 * PLANT.flow_req))
        assert crop >= PLANT.crop_req * 0.25 - 1.2 * (n - t) * DT_H - 1e-9
        # the window's LP (to its end, final energy >= e0 where reachable at full charging power) from that state
        reach = st.energy_kwh + 0.98 * PLANT.eta * PLANT.battery_kw * DT_H * (n - t)
        label = solve(w, t, n - t, st.energy_kwh, crop, flow,
                      energy_end=min(e0, reach))["actions"][0]
        assert np.allclose(arr["actions"][k * (every // 6)], label, atol=1e-4)  # ... labelled by the oracle
    assert ref["series"]["soc"][47] < e0 / PLANT.battery_kwh - 0.1  # and it drifted off the oracle's path
    # aggregate(): one round by default at full settings, none in quick mode; None after the last round
    cfg = default_config(quick=True)
    assert aggregate(cfg, nn.Linear(1, 1), 0) is None
    assert default_config()["options"]["dagger_rounds"] >= 1
    # the rounds it announces (the classical fits start beside the last one's retraining): as many as it runs
    assert aggregate_rounds(cfg) == 0 and aggregate_rounds(default_config()) == default_config()["options"][
        "dagger_rounds"]
    assert aggregate_rounds({**cfg, "options": {**cfg["options"], "dagger_rounds": 3}}) == 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("microgrid") / "run"
    cmkd.run("microgrid", out, quick=True, quiet=True, overrides=FAST)
    return out


@pytest.mark.slow  # the microgrid recipe's quick run (module fixture)
def test_tiny_run_writes_closed_loop_results_and_edge_figures(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["synthetic"] is True and m["primary_metric"] == "rmse"
    check_metrics(m)
    assert {"teacher", "teacher_visual", "teacher_acoustic", "teacher_numeric", "teacher_oracle",
            "student_baseline", "student"} <= set(m["models"])
    assert {"cavitation/accuracy", "irradiance/rmse", "rul/rmse", "forecast/rmse"} <= set(m["models"]["student"]
                                                                                         ["metrics"])
    ex = m["export"]
    assert ex["prune"] == 0.4 and 0.39 < ex["sparsity"] < 0.41 and 0 < ex["int8_bytes"] < 4.2e6
    mg = m["microgrid"]
    ctl = {"rule_based", "student", "student_no_sky", "student_no_audio", "student_no_history", "oracle"}
    assert ctl <= set(mg["controllers"])
    for name in ctl:
        assert {"grid_import_kwh", "cost_usd", "co2_kg", "crop_per_day"} <= set(mg["controllers"][name])
    acc = mg["acceptance"]
    for name in ("student", "student_no_sky", "student_no_audio", "student_no_history"):
        assert {"reduction_vs_rule_pct", "gap_to_oracle_pct", "beats_rule"} <= set(acc[name])
    assert mg["edge"]["int8_latency_ms"] > 0 and mg["edge"]["control_step_ms"] > 0
    # one DAgger round: samples labelled at the student's states were added to the training split
    assert len(m["data"]["n_train_aggregated"]) == 1 and m["data"]["n_train_aggregated"][0] > 0
    # the oracle never imports more than the rule-based controller on the same weather
    assert mg["controllers"]["oracle"]["grid_import_kwh"] <= mg["controllers"]["rule_based"]["grid_import_kwh"]
    cl = json.loads((tiny_run / "closed_loop.json").read_text())
    assert cl["synthetic"] is True and len(cl["series"]["student"]["soc"]) == cl["steps"] == 144
    assert cl["student_guards"] == {"stop_when_met": True, "inverter_limits": True, "store_surplus": True}
    assert "Microgrid: closed loop" in (tiny_run / "report.html").read_text()
