"""The habitat recipe's deterministic rule engine: ground truth for compliance, with explanations.

ILLUSTRATIVE rules only (``rules.yaml`` beside this module): not the law, not legal advice.

A rule set (YAML) has a ``priority`` order of categories, ``zones`` (distance bands in nautical miles),
``jurisdictions`` (each in force in some zones) and ``rules``. A rule applies when its jurisdiction is in force
in the site's zone and each ``when`` condition holds; it requires one design parameter to satisfy
``param op value`` (times an optional ``factor``), where value is a number or a quantity computed from physics
(:func:`required`). Two
applicable rules that ask incompatible things of one parameter conflict; the rule whose category comes first in
the priority order prevails (ties: the one with more conditions, then the one listed first), and the result
says which rule prevailed over which. Compliance per jurisdiction is ``n/a`` (not in force in the zone),
``compliant`` or ``violation``. :func:`recommend` turns every violation into a concrete change of the design and
re-checks until nothing is violated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmkd.errors import CmkdError
from cmkd.validate import safe_load_yaml

STATUSES = ("n/a", "compliant", "violation")
SEABEDS = ("sediment", "clay", "basalt", "nodule_field", "hydrothermal_vent")
MATERIALS = {"steel": 550e6, "titanium": 830e6, "composite": 400e6}  # yield strength, Pa (illustrative)
DENSITY = {"steel": 7850.0, "titanium": 4430.0, "composite": 1900.0}  # kg/m3
SITE_FIELDS = ("depth_m", "distance_nm", "seabed", "current_m_s", "temperature_c", "oxygen_mg_l")
DESIGN_FIELDS = ("radius_m", "material", "crew", "mission_days", "hull_thickness_mm", "waste_capacity_m3",
                 "emergency_buoyancy_kn", "discharge_fraction", "external_lighting_lux", "vent_setback_m",
                 "national_permit", "isa_contract", "eia_done", "mining_support")
REQUIRED = ("required_hull_thickness_mm", "required_waste_capacity_m3", "required_emergency_buoyancy_kn")
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
       "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
       "in": lambda a, b: a in b}
RHO_SEA, G = 1025.0, 9.81
HULL_SF, BUOY_SF, WASTE_M3_PER_PERSON_DAY, WASTE_BUFFER, OUTFIT_T_PER_CREW, CD = 1.5, 1.25, 0.035, 1.2, 6.0, 0.5


def required(site: dict, design: dict) -> dict[str, float]:
    """What physics asks of a design at a site (illustrative engineering, not a design code).

    - hull (thin-walled sphere): ``t = SF p r / (2 sigma_y)``, p = rho g depth, SF 1.5;
    - waste: crew x mission days x 0.035 m3 x (1 - discharge_fraction) x 1.2 buffer;
    - emergency buoyancy: 1.25 x (the habitat's weight in water, when positive, + 5% of its displacement as
      hold-down margin) + current drag 0.5 rho Cd pi r^2 u^2, in kN.
    """
    p = RHO_SEA * G * float(site["depth_m"])
    r = float(design["radius_m"])
    sigma = MATERIALS[design["material"]]
    t_req = HULL_SF * p * r / (2 * sigma)
    waste = (float(design["crew"]) * float(design["mission_days"]) * WASTE_M3_PER_PERSON_DAY
             * (1 - float(design["discharge_fraction"])) * WASTE_BUFFER)
    t = max(float(design["hull_thickness_mm"]) / 1000, 1e-4)
    shell = 4 / 3 * math.pi * ((r + t) ** 3 - r**3)
    mass = DENSITY[design["material"]] * shell + OUTFIT_T_PER_CREW * 1000 * float(design["crew"])
    displacement = 4 / 3 * math.pi * (r + t) ** 3
    weight_in_water = (mass - RHO_SEA * displacement) * G
    drag = 0.5 * RHO_SEA * CD * math.pi * r**2 * float(site["current_m_s"]) ** 2
    buoy = BUOY_SF * (max(weight_in_water, 0.0) + 0.05 * RHO_SEA * G * displacement) + drag
    return {"required_hull_thickness_mm": 1000 * t_req, "required_waste_capacity_m3": waste,
            "required_emergency_buoyancy_kn": buoy / 1000}


@dataclass
class Rule:
    """One rule: where it applies and what it requires."""

    id: str
    jurisdiction: str
    category: str
    when: list[dict]
    require: dict
    text: str


@dataclass
class RuleSet:
    """A loaded, validated rule set."""

    priority: list[str]
    zones: dict[str, tuple[float, float]]
    jurisdictions: dict[str, dict]
    rules: list[Rule] = field(default_factory=list)

    def zone(self, distance_nm: float) -> str:
        """The zone of a site at ``distance_nm`` from the baseline."""
        for name, (lo, hi) in self.zones.items():
            if lo <= distance_nm < hi:
                return name
        raise CmkdError(f"distance {distance_nm} nm lies in no zone of the rule set ({self.zones})")

    def in_force(self, zone: str, only: list[str] | None = None) -> list[str]:
        """Jurisdictions in force in ``zone`` (restricted to ``only`` when given)."""
        return [j for j, spec in self.jurisdictions.items() if zone in spec["zones"] and (only is None or j in only)]

    def check_jurisdictions(self, names: list[str]) -> list[str]:
        """``names`` if every one is a jurisdiction of this rule set, else a CmkdError listing the valid ones."""
        bad = [j for j in names if j not in self.jurisdictions]
        if bad:
            raise CmkdError(f"unknown jurisdiction '{bad[0]}'; valid: {', '.join(self.jurisdictions)}")
        return names


DEFAULT_RULES = Path(__file__).with_name("rules.yaml")


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rule set (default: the shipped ILLUSTRATIVE ``rules.yaml``)."""
    p = Path(path) if path else DEFAULT_RULES
    raw = safe_load_yaml(p, "rule file")  # the one YAML door: bounded size and expansion, every failure one line
    if not isinstance(raw, dict) or not {"priority", "zones", "jurisdictions", "rules"} <= set(raw):
        raise CmkdError(f"{p}: a rule set needs the keys priority, zones, jurisdictions and rules")
    try:
        zones = {k: (float(v[0]), float(v[1])) for k, v in raw["zones"].items()}
        rs = RuleSet(list(raw["priority"]), zones, dict(raw["jurisdictions"]))
        for j, spec in rs.jurisdictions.items():
            bad = [z for z in spec.get("zones", []) if z not in zones]
            if bad or not spec.get("zones"):
                raise CmkdError(f"{p}: jurisdiction {j}: unknown zone {bad[0] if bad else '(none)'}")
        seen = set()
        for r in raw["rules"]:
            rule = Rule(str(r["id"]), str(r["jurisdiction"]), str(r["category"]), list(r.get("when") or []),
                        dict(r["require"]), str(r["text"]))
            _validate_rule(rule, rs, p)
            if rule.id in seen:
                raise CmkdError(f"{p}: rule id {rule.id} appears twice")
            seen.add(rule.id)
            rs.rules.append(rule)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CmkdError(f"{p}: malformed rule set ({type(e).__name__}: {e})") from None
    return rs


def _validate_rule(rule: Rule, rs: RuleSet, p: Path) -> None:
    where = f"{p}: rule {rule.id}"
    if rule.jurisdiction not in rs.jurisdictions:
        raise CmkdError(f"{where}: unknown jurisdiction '{rule.jurisdiction}'")
    if rule.category not in rs.priority:
        raise CmkdError(f"{where}: category '{rule.category}' is not in the priority order {rs.priority}")
    for c in rule.when:
        if c.get("field") not in (*SITE_FIELDS, *DESIGN_FIELDS, "zone") or c.get("op") not in OPS:
            raise CmkdError(f"{where}: condition {c} needs a known field and an op in {list(OPS)}")
    req = rule.require
    if req.get("param") not in DESIGN_FIELDS or req.get("op") not in (">=", "<=", "=="):
        raise CmkdError(f"{where}: require needs a design parameter ({', '.join(DESIGN_FIELDS)}) and op >=, <= or ==")
    if not isinstance(req.get("value"), (int, float)) and req.get("value") not in REQUIRED:
        raise CmkdError(f"{where}: require.value must be a number or one of {', '.join(REQUIRED)}")


def _facts(rs: RuleSet, site: dict, design: dict) -> dict[str, Any]:
    return {**site, **design, "zone": rs.zone(float(site["distance_nm"])), **required(site, design)}


def _bound(rule: Rule, facts: dict) -> float:
    v = rule.require["value"]
    return (float(facts[v]) if isinstance(v, str) else float(v)) * float(rule.require.get("factor", 1.0))


def _incompatible(a: tuple[str, float], b: tuple[str, float]) -> bool:
    (oa, va), (ob, vb) = a, b
    lo = max([v for o, v in (a, b) if o in (">=", "==")], default=-math.inf)
    hi = min([v for o, v in (a, b) if o in ("<=", "==")], default=math.inf)
    if oa == "==" and ob == "==":
        return va != vb
    return lo > hi


def evaluate(rs: RuleSet, site: dict, design: dict, jurisdictions: list[str] | None = None) -> dict:
    """Check a design at a site: applicable rules, resolved conflicts, violations (with the reason) and the
    compliance of every jurisdiction."""
    facts = _facts(rs, site, design)
    zone = facts["zone"]
    active = rs.in_force(zone, jurisdictions)
    applicable = [r for r in rs.rules if r.jurisdiction in active
                  and all(OPS[c["op"]](facts[c["field"]], c["value"]) for c in r.when)]
    rank = {r.id: (rs.priority.index(r.category), -len(r.when), i) for i, r in enumerate(applicable)}
    overridden: dict[str, str] = {}
    conflicts = []
    for i, a in enumerate(applicable):
        for b in applicable[i + 1:]:
            if a.require["param"] != b.require["param"]:
                continue
            if _incompatible((a.require["op"], _bound(a, facts)), (b.require["op"], _bound(b, facts))):
                win, lose = (a, b) if rank[a.id] < rank[b.id] else (b, a)
                overridden[lose.id] = win.id
                conflicts.append({"parameter": a.require["param"], "prevailing": win.id, "overridden": lose.id,
                                  "why": f"{win.category} ({win.id}, {win.jurisdiction}) takes priority over "
                                         f"{lose.category} ({lose.id}, {lose.jurisdiction}) in the order "
                                         f"{' > '.join(rs.priority)}"})
    violations = []
    for r in applicable:
        if r.id in overridden:
            continue
        param, op, bound = r.require["param"], r.require["op"], _bound(r, facts)
        value = float(facts[param])
        if not OPS[op](value + (1e-9 if op == ">=" else -1e-9 if op == "<=" else 0.0), bound):
            what = r.require["value"] if isinstance(r.require["value"], str) else None
            violations.append({"rule": r.id, "jurisdiction": r.jurisdiction, "category": r.category, "text": r.text,
                               "parameter": param, "value": value, "requirement": f"{param} {op} {bound:.6g}",
                               "why": f"{param} is {value:.6g} but the rule requires {op} {bound:.6g}"
                                      + (f" ({what} at this site)" if what else "")})
    compliance = {j: ("n/a" if j not in active else
                      "violation" if any(v["jurisdiction"] == j for v in violations) else "compliant")
                  for j in (jurisdictions or list(rs.jurisdictions))}
    return {"zone": zone, "required": {k: facts[k] for k in REQUIRED}, "applicable": [r.id for r in applicable],
            "conflicts": conflicts, "violations": violations, "compliance": compliance}


def fix(violation: dict, design: dict, site: dict, rs: RuleSet) -> dict:
    """The concrete change that clears one violation: the parameter set to the bound it must meet (rounded up for
    a minimum, down for a maximum)."""
    rule = next(r for r in rs.rules if r.id == violation["rule"])
    bound = _bound(rule, _facts(rs, site, design))
    param, op = rule.require["param"], rule.require["op"]
    if op == ">=":
        new = math.ceil(bound * 1000 - 1e-6) / 1000
    elif op == "<=":
        new = math.floor(bound * 1000) / 1000
    else:
        new = bound
    if param in ("national_permit", "isa_contract", "eia_done", "mining_support", "crew", "mission_days"):
        new = int(round(new))
    verb = {">=": "increase", "<=": "reduce", "==": "set"}[op]
    action = {"national_permit": "obtain the coastal state's authorisation", "isa_contract":
              "obtain a contract with the seabed authority", "eia_done": "complete an environmental impact assessment"}
    how = action.get(param, f"{verb} {param} from {design[param]:.6g} to {new:.6g}")
    return {"rule": violation["rule"], "parameter": param, "from": design[param], "to": new, "change": how}


def recommend(rs: RuleSet, site: dict, design: dict, jurisdictions: list[str] | None = None,
              max_rounds: int = 8) -> tuple[list[dict], dict, dict]:
    """Fix every violation, re-check (a fix can raise another requirement, e.g. a thicker hull needs more
    buoyancy) and repeat. Returns (recommendations, the fixed design, its evaluation)."""
    current = dict(design)
    recs: list[dict] = []
    for _ in range(max_rounds):
        res = evaluate(rs, site, current, jurisdictions)
        if not res["violations"]:
            return recs, current, res
        for v in res["violations"]:
            change = fix(v, current, site, rs)
            recs.append(change)
            current[change["parameter"]] = change["to"]
    return recs, current, evaluate(rs, site, current, jurisdictions)
