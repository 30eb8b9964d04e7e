"""Sorting policy of the ``recycling`` recipe: routes, mis-sort costs and stream purity.

An item goes to one route: ``reuse``, ``repair``, a recycling stream (``recycle:<stream>``) or ``disposal``. The
rules, in order (every threshold and list configurable through ``options.policy``):

1. degradation in ``dispose_states`` (default: contaminated) or quality < ``q_dispose`` (0.15) -> ``disposal``;
2. quality >= ``q_reuse`` (0.75) and degradation in ``reuse_states`` (pristine, worn) -> ``reuse``;
3. degradation in ``repair_states`` (damaged), material in ``repairable`` and quality >= ``q_repair`` (0.35)
   -> ``repair``;
4. else ``recycle:<streams[material]>`` (paper and cardboard share the fibre stream).

Mis-sort cost of an item whose true route is ``r`` sent to ``r'`` (0 when equal), ILLUSTRATIVE relative units:

- ``r'`` a recycling stream that does not take the item's material: ``contamination[material][stream]`` when
  given, else ``contamination_default`` (1.0). Defaults put PVC in the PET stream at 10 (chlorine degrades
  a whole PET melt batch), PET in the PVC stream at 4, glass in the fibre stream at 4, metals in plastic streams at 3.
- otherwise ``route_cost[r][r']`` with ``route_cost_default`` (1.0) for pairs not listed: e.g. a reusable item
  recycled loses its reuse value (2.0), a contaminated item sent to reuse costs 5.0.

Purity of a route: the share of the items sent there whose true route is that route (for a recycling stream:
whose material the stream takes, whatever their true route), on the TEST split against the routes the true labels
imply. All of it runs on SYNTHETIC items.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from cmkd.errors import CmkdError
from cmkd.recipes.recycling.scene import DEGRADATION, MATERIALS

DEFAULT_POLICY: dict[str, Any] = {
    "q_reuse": 0.75, "q_repair": 0.35, "q_dispose": 0.15,
    "reuse_states": ["pristine", "worn"], "repair_states": ["damaged"], "dispose_states": ["contaminated"],
    "repairable": ["textile", "HDPE", "PP", "steel", "aluminium", "glass"],
    "streams": {"PET": "PET", "HDPE": "HDPE", "PVC": "PVC", "LDPE": "LDPE", "PP": "PP", "PS": "PS",
                "aluminium": "aluminium", "steel": "steel", "glass": "glass", "paper": "fibre",
                "cardboard": "fibre", "textile": "textile"},
    "contamination_default": 1.0,
    "contamination": {"PVC": {"PET": 10.0}, "PET": {"PVC": 4.0}, "glass": {"fibre": 4.0, "PET": 3.0},
                      "aluminium": {"PET": 3.0, "HDPE": 3.0, "PP": 3.0, "steel": 1.5},
                      "steel": {"PET": 3.0, "HDPE": 3.0, "PP": 3.0, "aluminium": 2.0},
                      "PS": {"PET": 3.0}, "textile": {"fibre": 2.0}},
    "route_cost_default": 1.0,
    "route_cost": {"reuse": {"disposal": 3.0, "repair": 0.5}, "repair": {"disposal": 2.0, "reuse": 2.0},
                   "disposal": {"reuse": 5.0, "repair": 3.0}},
}
FIXED_ROUTES = ["reuse", "repair", "disposal"]


class Policy:
    """A configured sorting policy (see the module docstring)."""

    def __init__(self, overrides: dict | None = None) -> None:
        cfg = copy.deepcopy(DEFAULT_POLICY)
        for k, v in (overrides or {}).items():
            if k not in cfg:
                raise CmkdError(f"options.policy: unknown key '{k}'; valid: {', '.join(sorted(cfg))}")
            if isinstance(cfg[k], dict) and isinstance(v, dict):
                cfg[k] = _merge(cfg[k], v)
            else:
                cfg[k] = v
        self.cfg = cfg
        for key in ("q_reuse", "q_repair", "q_dispose"):
            if not isinstance(cfg[key], int | float) or not 0 <= cfg[key] <= 1:
                raise CmkdError(f"options.policy.{key} must be a number in [0, 1], got {cfg[key]!r}")
        for key in ("reuse_states", "repair_states", "dispose_states"):
            bad = [s for s in cfg[key] if s not in DEGRADATION]
            if bad:
                raise CmkdError(f"options.policy.{key}: unknown state '{bad[0]}'; valid: {', '.join(DEGRADATION)}")
        bad = [m for m in [*cfg["repairable"], *cfg["streams"], *cfg["contamination"]] if m not in MATERIALS]
        if bad:
            raise CmkdError(f"options.policy: unknown material '{bad[0]}'; valid: {', '.join(MATERIALS)}")
        missing = [m for m in MATERIALS if m not in cfg["streams"]]
        if missing:
            raise CmkdError(f"options.policy.streams: no stream for '{missing[0]}'")
        self.streams = sorted(set(cfg["streams"].values()))
        self.routes = ["reuse", "repair", *[f"recycle:{s}" for s in self.streams], "disposal"]
        bad = [r for r in cfg["route_cost"] if r not in self.routes] + [
            r for row in cfg["route_cost"].values() for r in row if r not in self.routes]
        bad += [s for row in cfg["contamination"].values() for s in row if s not in self.streams]
        if bad:
            raise CmkdError(f"options.policy: unknown route or stream '{bad[0]}'; routes: {', '.join(self.routes)}")

    def route(self, material: np.ndarray, quality: np.ndarray, degradation: np.ndarray) -> np.ndarray:
        """Route names (N,) from material ids, quality scores and degradation ids."""
        c = self.cfg
        material, degradation = np.asarray(material), np.asarray(degradation)
        quality = np.asarray(quality, dtype=float).reshape(len(material))
        deg = np.array(DEGRADATION)[degradation]
        mat = np.array(MATERIALS)[material]
        out = np.array([f"recycle:{c['streams'][m]}" for m in mat], dtype=object)
        repair = np.isin(deg, c["repair_states"]) & np.isin(mat, c["repairable"]) & (quality >= c["q_repair"])
        reuse = (quality >= c["q_reuse"]) & np.isin(deg, c["reuse_states"])
        dispose = np.isin(deg, c["dispose_states"]) | (quality < c["q_dispose"])
        out[repair] = "repair"
        out[reuse] = "reuse"
        out[dispose] = "disposal"
        return out.astype(str)

    def cost(self, material: str, true_route: str, pred_route: str) -> float:
        """Mis-sort cost of one item (0 when the route is right)."""
        if true_route == pred_route:
            return 0.0
        c = self.cfg
        if pred_route.startswith("recycle:"):
            stream = pred_route.split(":", 1)[1]
            if c["streams"][material] != stream:
                return float(c["contamination"].get(material, {}).get(stream, c["contamination_default"]))
        return float(c["route_cost"].get(true_route, {}).get(pred_route, c["route_cost_default"]))

    def cost_matrix(self) -> dict[str, dict[str, float]]:
        """Contamination cost of each material in each recycling stream (0 where the stream takes it)."""
        return {m: {s: (0.0 if self.cfg["streams"][m] == s else self.cost(m, "x", f"recycle:{s}"))
                    for s in self.streams} for m in MATERIALS}

    def evaluate(self, material: np.ndarray, true_route: np.ndarray, pred_route: np.ndarray) -> dict:
        """Purity per route, route accuracy and mis-sort cost (total and per item) of routed items."""
        material = np.asarray(material)
        mats = np.array(MATERIALS)[material]
        costs = np.array([self.cost(m, t, p) for m, t, p in zip(mats, true_route, pred_route)])
        purity, counts = {}, {}
        for r in self.routes:
            sent = pred_route == r
            counts[r] = int(sent.sum())
            if not sent.any():
                continue
            if r.startswith("recycle:"):
                ok = np.array([self.cfg["streams"][m] == r.split(":", 1)[1] for m in mats[sent]])
            else:
                ok = true_route[sent] == r
            purity[r] = float(ok.mean())
        pvc_in_pet = int(((mats == "PVC") & (pred_route == f"recycle:{self.cfg['streams']['PET']}")).sum())
        return {"purity": purity, "sent": counts, "route_accuracy": float(np.mean(true_route == pred_route)),
                "missort_cost_total": float(costs.sum()), "missort_cost_per_item": float(costs.mean()),
                "missorted": int((costs > 0).sum()), "pvc_in_pet_stream": pvc_in_pet, "n": int(len(costs))}

    def to_json(self) -> dict:
        """The resolved policy (saved with a run as ``policy.json`` for ``cmkd predict``)."""
        return copy.deepcopy(self.cfg)


def _merge(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out
