"""SYNTHETIC deep-sea habitat sites and designs for the ``habitat`` recipe.

Every sample is a site (200-6000 m deep, at a distance from the coast that puts it in the territorial sea, the
EEZ or the Area) and a designer's proposed habitat. The four modalities are what a design team holds:

- ``structural`` (vector, 18): the design spec (radius, material one-hot, crew, mission days, hull thickness,
  waste capacity, emergency buoyancy, discharge fraction, lighting, vent setback, permits, mining support) and the
  site's distance to the coast;
- ``acoustic`` (signal, 1 x 512): a sonar ping: the seabed echo arrives at a delay set by the depth, its shape set
  by the seabed type (hard basalt: sharp; sediment: long tail; clay: weak; nodules: sub-echoes; vents: a plume
  scattering before the bottom), with spreading loss, noise and dropouts (NaN);
- ``oceanographic`` (sequence, 48 h x 4): temperature, dissolved oxygen, current speed and pressure (dbar) with
  tidal cycles, noise and gaps;
- ``legal_text`` (text): the clauses in force at the site (the zone's jurisdictions, rules whose site conditions
  hold), as a designer's legal brief would quote them.

Targets come from physics and the rule engine (:mod:`.rules`): the minimum compliant ``hull_thickness`` (mm),
``waste_capacity`` (m3) and ``emergency_buoyancy`` (kN) once every violation is fixed, the ``seabed`` type, and
``compliance_<jurisdiction>`` (n/a, compliant, violation) of the PROPOSED design.

``region`` 0 is the reference region; region 1 is a new region for continual learning: a deeper, stronger
oxygen-minimum zone, more vents and nodule fields, stronger currents and a different coastal state whose national
law asks for 80 lux of lighting and a hull 15% above the physics minimum (NAT-S-03).
"""

from __future__ import annotations

import copy

import numpy as np

from cmkd.recipes.habitat.rules import (
    MATERIALS,
    SEABEDS,
    STATUSES,
    Rule,
    RuleSet,
    evaluate,
    load_rules,
    recommend,
    required,
)

SIGNAL_LEN, SEQ_LEN = 512, 48
OCEAN_COLUMNS = ("temperature_c", "oxygen_mg_l", "current_m_s", "pressure_dbar")
STRUCTURAL = ("radius_m", "material_steel", "material_titanium", "material_composite", "crew", "mission_days",
              "hull_thickness_mm", "waste_capacity_m3", "emergency_buoyancy_kn", "discharge_fraction",
              "external_lighting_lux", "vent_setback_m", "national_permit", "isa_contract", "eia_done",
              "mining_support", "distance_nm", "log_distance_nm")
REGRESSION = ("hull_thickness", "waste_capacity", "emergency_buoyancy")


def region_rules(rs: RuleSet, region: int) -> RuleSet:
    """The rule set in force in ``region``: region 1's coastal state asks 80 lux and a 15% hull margin."""
    if region == 0:
        return rs
    out = copy.deepcopy(rs)
    for r in out.rules:
        if r.id == "NAT-S-02":
            r.require = {**r.require, "value": 80}
            r.text = r.text.replace("50 lux", "80 lux")
    out.rules.append(Rule("NAT-S-03", "national", "safety", [],
                          {"param": "hull_thickness_mm", "op": ">=", "value": "required_hull_thickness_mm",
                           "factor": 1.15},
                          "The national pressure-vessel code asks a hull at least 15 percent thicker than the "
                          "minimum for the ambient pressure."))
    return out


def legal_brief(rs: RuleSet, site: dict, zone: str) -> str:
    """The clauses in force at a site: zone, jurisdictions and every rule whose site conditions hold."""
    names = {"territorial_sea": "territorial sea", "eez": "exclusive economic zone", "area": "Area beyond national "
             "jurisdiction"}
    parts = [f"Site located in the {names.get(zone, zone)}."]
    for j in rs.in_force(zone):
        parts.append(f"{rs.jurisdictions[j]['name']} applies.")
        for r in rs.rules:
            if r.jurisdiction != j:
                continue
            site_conds = [c for c in r.when if c["field"] in site or c["field"] == "zone"]
            facts = {**site, "zone": zone}
            from cmkd.recipes.habitat.rules import OPS

            if all(OPS[c["op"]](facts[c["field"]], c["value"]) for c in site_conds):
                parts.append(f"{r.id} ({r.category}): {r.text}")
    return " ".join(parts)


def _site(rng: np.random.Generator, region: int) -> dict:
    u = rng.random()
    distance = rng.uniform(1, 12) if u < 0.25 else rng.uniform(12, 200) if u < 0.65 else rng.uniform(200, 600)
    depth = float(np.clip(200 + 14 * distance * rng.uniform(0.5, 1.6) + rng.normal(0, 500), 200, 6000))
    deep = depth / 6000
    p = np.array([0.45 - 0.3 * deep, 0.3 - 0.15 * deep, 0.15 + 0.15 * deep, 0.05 + 0.2 * deep, 0.05 + 0.1 * deep])
    if region == 1:
        p[3:] *= 1.8
    seabed = SEABEDS[rng.choice(5, p=p / p.sum())]
    centre, amp = (800, rng.uniform(2.0, 5.5)) if region == 0 else (1300, rng.uniform(3.0, 6.2))
    oxygen = float(np.clip(6.5 - amp * np.exp(-(((depth - centre) / 450) ** 2)) + rng.normal(0, 0.4), 0.2, 8))
    current = float(np.clip((0.04 + 0.35 * np.exp(-depth / 2500)) * rng.lognormal(0, 0.4)
                            * (1.5 if region == 1 else 1.0), 0.01, 1.2))
    temperature = float(2 + 14 * np.exp(-depth / 800) + rng.normal(0, 0.4))
    return {"depth_m": depth, "distance_nm": float(distance), "seabed": seabed, "current_m_s": current,
            "temperature_c": temperature, "oxygen_mg_l": oxygen}


def _design(rng: np.random.Generator, site: dict) -> dict:
    deep = site["depth_m"] / 6000  # deeper habitats are smaller and more often titanium
    mat_p = np.array([0.55 - 0.3 * deep, 0.25 + 0.35 * deep, 0.2 - 0.05 * deep])
    d = {"radius_m": float(rng.uniform(1.5, 5.5) * (1 - 0.5 * deep)),
         "material": list(MATERIALS)[rng.choice(3, p=mat_p / mat_p.sum())],
         "crew": int(rng.integers(2, 13)), "mission_days": int(rng.integers(14, 121)),
         "discharge_fraction": float(0.0 if rng.random() < 0.5 else rng.uniform(0.1, 0.6)),
         "external_lighting_lux": float(rng.uniform(0, 100)), "vent_setback_m": float(rng.uniform(0, 1500)),
         "national_permit": int(rng.random() < 0.75), "isa_contract": int(rng.random() < 0.7),
         "eia_done": int(rng.random() < 0.85), "mining_support": int(rng.random() < 0.3),
         "hull_thickness_mm": 1.0, "waste_capacity_m3": 0.0, "emergency_buoyancy_kn": 0.0}
    req = required(site, d)
    d["hull_thickness_mm"] = float(req["required_hull_thickness_mm"] * rng.uniform(0.8, 1.5))
    req = required(site, d)
    d["waste_capacity_m3"] = float(req["required_waste_capacity_m3"] * rng.uniform(0.75, 1.5))
    d["emergency_buoyancy_kn"] = float(req["required_emergency_buoyancy_kn"] * rng.uniform(0.75, 1.5))
    return d


def structural_vector(design: dict, site_distance_nm: float) -> np.ndarray:
    """The ``structural`` modality of one design (order: :data:`STRUCTURAL`)."""
    mats = list(MATERIALS)
    vals = {**design, **{f"material_{m}": float(design["material"] == m) for m in mats},
            "distance_nm": site_distance_nm, "log_distance_nm": float(np.log1p(site_distance_nm))}
    return np.array([float(vals[k]) for k in STRUCTURAL], dtype=np.float32)


def sonar(site: dict, rng: np.random.Generator) -> np.ndarray:
    """(1, SIGNAL_LEN) sonar trace: echo delay from the depth, echo shape from the seabed type."""
    t = np.arange(SIGNAL_LEN, dtype=np.float64)
    i0 = 30 + site["depth_m"] / 6000 * 440
    gain = 1 / (1 + site["depth_m"] / 3000)
    kind = site["seabed"]
    x = np.zeros(SIGNAL_LEN)
    after = t >= i0
    if kind == "basalt":
        x += 1.0 * np.exp(-((t - i0) / 1.5) ** 2)
    elif kind == "sediment":
        x += 0.7 * after * np.exp(-(t - i0).clip(0) / 12)
    elif kind == "clay":
        x += 0.35 * np.exp(-((t - i0) / 4) ** 2)
    elif kind == "nodule_field":
        for k in range(4):
            x += 0.6 * 0.75**k * np.exp(-((t - i0 - 5 * k) / 1.2) ** 2)
    else:  # hydrothermal vent: plume scattering above the bottom, then a hard echo
        x += 0.9 * np.exp(-((t - i0) / 1.5) ** 2)
        plume = (t > i0 - 45) & (t < i0 - 5)
        x += plume * np.abs(rng.normal(0, 0.25, SIGNAL_LEN))
    x = gain * x + np.abs(rng.normal(0, 0.03, SIGNAL_LEN))
    x[rng.random(SIGNAL_LEN) < 0.03] = np.nan
    return x[None, :].astype(np.float32)


def ocean_series(site: dict, rng: np.random.Generator) -> np.ndarray:
    """(SEQ_LEN, 4) hourly temperature, oxygen, current and pressure at the site, with tides, noise and gaps."""
    h = np.arange(SEQ_LEN)
    tide = np.sin(2 * np.pi * h / 12.42 + rng.uniform(0, 2 * np.pi))
    temp = site["temperature_c"] + 0.15 * tide + rng.normal(0, 0.05, SEQ_LEN)
    oxy = site["oxygen_mg_l"] + 0.1 * tide + rng.normal(0, 0.08, SEQ_LEN)
    cur = np.abs(site["current_m_s"] * (1 + 0.5 * tide) + rng.normal(0, 0.01, SEQ_LEN))
    pres = site["depth_m"] * 1.0 + 0.8 * tide + rng.normal(0, 0.5, SEQ_LEN)  # ~1 dbar per metre
    out = np.stack([temp, oxy, cur, pres], axis=1)
    out[rng.random(out.shape) < 0.1] = np.nan
    return out.astype(np.float32)


def generate(n: int, seed: int, region: int = 0, rules: RuleSet | None = None) -> tuple[dict, list[dict]]:
    """``n`` SYNTHETIC samples. Returns the arrays (modalities, targets, a 60/20/20 split) and per-sample records
    (site, design, the rule engine's evaluation and recommendations)."""
    rs = region_rules(rules or load_rules(), region)
    rng = np.random.default_rng([seed, region, 4242])
    juris = list(rs.jurisdictions)
    cols: dict[str, list] = {k: [] for k in ("structural", "acoustic", "oceanographic", "legal_text", "seabed",
                                             *REGRESSION, *[f"compliance_{j}" for j in juris])}
    records = []
    for _ in range(n):
        site = _site(rng, region)
        design = _design(rng, site)
        res = evaluate(rs, site, design)
        recs, fixed, _ = recommend(rs, site, design)
        req = required(site, fixed)
        cols["structural"].append(structural_vector(design, site["distance_nm"]))
        cols["acoustic"].append(sonar(site, rng))
        cols["oceanographic"].append(ocean_series(site, rng))
        cols["legal_text"].append(legal_brief(rs, site, res["zone"]))
        cols["seabed"].append(SEABEDS.index(site["seabed"]))
        cols["hull_thickness"].append(fixed["hull_thickness_mm"])
        cols["waste_capacity"].append(req["required_waste_capacity_m3"])
        cols["emergency_buoyancy"].append(req["required_emergency_buoyancy_kn"])
        for j in juris:
            cols[f"compliance_{j}"].append(STATUSES.index(res["compliance"][j]))
        records.append({"site": site, "design": design, "evaluation": res, "recommendations": recs})
    arrays: dict[str, np.ndarray] = {
        "structural": np.stack(cols["structural"]), "acoustic": np.stack(cols["acoustic"]),
        "oceanographic": np.stack(cols["oceanographic"]), "legal_text": np.array(cols["legal_text"]),
        "seabed": np.array(cols["seabed"], dtype=np.int64)}
    for k in REGRESSION:
        arrays[k] = np.array(cols[k], dtype=np.float32)
    for j in juris:
        arrays[f"compliance_{j}"] = np.array(cols[f"compliance_{j}"], dtype=np.int64)
    arrays["split"] = rng.choice(3, size=n, p=[0.6, 0.2, 0.2]).astype(np.int64)
    return arrays, records
