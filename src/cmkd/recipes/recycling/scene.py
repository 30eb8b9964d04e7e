"""SYNTHETIC waste items for the ``recycling`` recipe: RGB images, active-thermography curves and NIR spectra.

Every item has a material (:data:`MATERIALS`), a degradation state (:data:`DEGRADATION`) and a quality score in
[0, 1]. Three sensors see it (all simulated; none of this is measured data):

- **visual** (3 x S x S RGB in [0, 1], default S = 16): the item's silhouette on a conveyor belt, with the colour,
  transparency, texture and shape drawn from per-material distributions, printed labels, dirt, scuffs, cracks,
  UV yellowing, and lighting (brightness and a gradient). Look-alike groups are deliberate: clear PET, clear PVC
  and clear PS bottles/trays share shapes and colours; HDPE and PP tubs share colours; aluminium and steel cans
  differ only in sheen; paper and cardboard overlap. Such items are separable only by spectra or thermal data.
- **thermal** (T x 1, apparent temperature in K over ``T`` frames): a lamp heats the item for the first third
  of the window, then it cools. A lumped model ``C dT/dt = a P - h (T - T_amb)`` with areal heat capacity
  ``C = rho c d`` (density x specific heat x thickness) and absorptance ``a``; metals conduct the heat into the
  whole item (a large effective ``C``). The IR camera sees ``eps T + (1 - eps) T_amb`` (reflected ambient): metals,
  with emissivity 0.05-0.3, look cold; glass and paper (eps ~0.92-0.95) show their real temperature.
- **spectral** (B bands, 1000-2500 nm, default 64): a reflectance spectrum, a base level and slope with
  Gaussian absorption bands at the literature positions of each material's overtones and combination bands:
  polyolefins' C-H 2nd overtone ~1210 nm and 1st overtone ~1730/1760 nm and combination ~2310/2350 nm
  (PP's CH3 at ~1195/1705 nm), PET's aromatic C-H ~1660 nm and ester features ~1130/2130 nm, PVC's C-H shifted by
  chlorine to ~1716 nm and ~1190/2280 nm, PS's aromatic ~1145/1680/2170 nm, cellulose ~1490/2100 nm (paper,
  cardboard, cotton; cardboard adds lignin ~1680 nm), textile blends of cotton and polyester with some polyamide or
  wool N-H ~2050 nm, water ~1450/1940 nm (moisture, wet dirt); metals flat and high, glass nearly flat and low.
  UV-weathering adds a broad carbonyl/hydroxyl feature near 1920 nm and lowers the blue end of the visible
  (yellowing); dirt mixes in a dark, wet soil spectrum. Band depths and positions jitter per item. The modality
  holds what an NIR sorter's spectrometer reports: absorbance ``-log10 R`` after a standard normal variate
  (:func:`snv_absorbance`), which removes level changes from probe distance and illumination.

Quality depends on the degradation state and on the visible dirt and damage; it is what a grader would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATERIALS = ["PET", "HDPE", "PVC", "LDPE", "PP", "PS", "aluminium", "steel", "glass", "paper", "cardboard",
             "textile"]
DEGRADATION = ["pristine", "worn", "damaged", "weathered", "contaminated"]
# items that look alike in RGB (shape and colour distributions overlap); only spectra or thermal tell them apart
LOOKALIKES = [("PET", "PVC"), ("PET", "PS"), ("HDPE", "PP"), ("aluminium", "steel"), ("paper", "cardboard")]
T_AMB = 293.0

# absorption bands per material: (centre nm, depth, half width nm)
BANDS: dict[str, list[tuple[float, float, float]]] = {
    "PET": [(1130, 0.10, 25), (1660, 0.32, 22), (1900, 0.06, 40), (2130, 0.28, 35), (2250, 0.12, 30)],
    "PVC": [(1190, 0.14, 25), (1716, 0.34, 20), (2280, 0.30, 28), (2350, 0.14, 25)],
    "HDPE": [(1210, 0.26, 28), (1730, 0.42, 20), (1762, 0.34, 18), (2310, 0.46, 25), (2350, 0.40, 22)],
    "LDPE": [(1210, 0.20, 30), (1195, 0.08, 20), (1730, 0.30, 22), (1762, 0.20, 20), (2310, 0.34, 28),
             (2350, 0.26, 25)],
    "PP": [(1195, 0.26, 25), (1390, 0.08, 30), (1705, 0.36, 20), (1730, 0.22, 18), (2300, 0.38, 25),
           (2330, 0.22, 20)],
    "PS": [(1145, 0.18, 25), (1680, 0.38, 20), (2170, 0.26, 30), (2310, 0.18, 25)],
    "aluminium": [],
    "steel": [],
    "glass": [(1400, 0.02, 40)],
    "paper": [(1490, 0.22, 45), (1930, 0.14, 45), (2100, 0.32, 50)],
    "cardboard": [(1490, 0.18, 45), (1680, 0.12, 40), (1930, 0.16, 45), (2100, 0.26, 50), (2270, 0.12, 30)],
    "textile": [(1490, 0.16, 45), (2100, 0.22, 50), (1660, 0.14, 22), (2130, 0.12, 35), (2050, 0.12, 30)],
}
# base reflectance (level at 1000 nm, slope per 1000 nm)
BASE = {"PET": (0.55, -0.05), "PVC": (0.55, -0.06), "HDPE": (0.75, -0.05), "LDPE": (0.55, -0.04),
        "PP": (0.72, -0.05), "PS": (0.62, -0.05), "aluminium": (0.86, 0.02), "steel": (0.50, 0.14),
        "glass": (0.09, -0.01), "paper": (0.80, -0.10), "cardboard": (0.58, -0.02), "textile": (0.62, -0.08)}
# thermal: emissivity, density kg/m3, specific heat J/kg/K, thickness mm, conduction factor (heat spread), absorptance
THERMAL = {"PET": (0.92, 1380, 1100, 0.35, 1.0, 0.55), "PVC": (0.91, 1390, 900, 0.40, 1.0, 0.55),
           "HDPE": (0.94, 950, 1900, 0.8, 1.0, 0.7), "LDPE": (0.93, 920, 2100, 0.06, 1.0, 0.5),
           "PP": (0.94, 905, 1800, 0.7, 1.0, 0.7), "PS": (0.93, 1050, 1300, 0.5, 1.0, 0.6),
           "aluminium": (0.07, 2700, 900, 0.12, 8.0, 0.15), "steel": (0.28, 7850, 470, 0.2, 2.0, 0.4),
           "glass": (0.92, 2500, 840, 3.0, 1.0, 0.5), "paper": (0.93, 800, 1300, 0.1, 1.0, 0.6),
           "cardboard": (0.93, 700, 1400, 0.6, 1.0, 0.8), "textile": (0.95, 300, 1300, 1.0, 1.0, 0.8)}
# visual: shapes (probabilities) and colour palettes (RGB, opacity)
SHAPES = ["bottle", "tub", "film", "tray", "can", "sheet", "cloth"]
SHAPE_P = {"PET": [0.75, 0.05, 0, 0.2, 0, 0, 0], "PVC": [0.7, 0.1, 0, 0.2, 0, 0, 0],
           "HDPE": [0.5, 0.5, 0, 0, 0, 0, 0], "LDPE": [0, 0, 0.9, 0, 0, 0.1, 0],
           "PP": [0.3, 0.6, 0.05, 0.05, 0, 0, 0], "PS": [0.3, 0.2, 0, 0.5, 0, 0, 0],
           "aluminium": [0, 0, 0, 0, 1, 0, 0], "steel": [0, 0, 0, 0, 1, 0, 0], "glass": [0.9, 0.1, 0, 0, 0, 0, 0],
           "paper": [0, 0, 0, 0, 0, 0.9, 0.1], "cardboard": [0, 0.2, 0, 0, 0, 0.8, 0],
           "textile": [0, 0, 0, 0, 0, 0.15, 0.85]}
CLEAR, WHITE = ((0.80, 0.86, 0.90), 0.35), ((0.92, 0.92, 0.90), 1.0)
PALETTE: dict[str, list[tuple[tuple[tuple[float, float, float], float], float]]] = {
    "PET": [(CLEAR, 0.7), (((0.45, 0.75, 0.50), 0.45), 0.15), (((0.45, 0.60, 0.85), 0.45), 0.15)],
    "PVC": [(CLEAR, 0.75), (((0.45, 0.60, 0.85), 0.45), 0.15), (WHITE, 0.1)],
    "PS": [(CLEAR, 0.5), (WHITE, 0.4), (((0.15, 0.15, 0.15), 1.0), 0.1)],
    "HDPE": [(WHITE, 0.5), (((0.85, 0.30, 0.25), 1.0), 0.15), (((0.25, 0.45, 0.80), 1.0), 0.15),
             (((0.95, 0.80, 0.25), 1.0), 0.2)],
    "PP": [(WHITE, 0.4), (((0.85, 0.30, 0.25), 1.0), 0.2), (((0.25, 0.45, 0.80), 1.0), 0.2),
           (((0.30, 0.30, 0.30), 1.0), 0.2)],
    "LDPE": [(((0.85, 0.85, 0.85), 0.5), 0.6), (((0.30, 0.55, 0.35), 0.7), 0.2), (((0.15, 0.15, 0.15), 0.9), 0.2)],
    "aluminium": [(((0.80, 0.80, 0.84), 1.0), 1.0)],
    "steel": [(((0.68, 0.68, 0.70), 1.0), 1.0)],
    "glass": [(((0.30, 0.55, 0.30), 0.6), 0.4), (((0.45, 0.28, 0.12), 0.7), 0.3), (CLEAR, 0.3)],
    "paper": [(((0.93, 0.93, 0.90), 1.0), 0.7), (((0.80, 0.70, 0.55), 1.0), 0.3)],
    "cardboard": [(((0.68, 0.52, 0.35), 1.0), 0.8), (((0.88, 0.86, 0.82), 1.0), 0.2)],
    "textile": [(((0.20, 0.25, 0.55), 1.0), 0.3), (((0.70, 0.15, 0.20), 1.0), 0.2), (((0.15, 0.15, 0.15), 1.0), 0.2),
                (((0.85, 0.85, 0.80), 1.0), 0.3)],
}
QUALITY_MEAN = {"pristine": 0.9, "worn": 0.7, "damaged": 0.45, "weathered": 0.35, "contaminated": 0.12}
DEGRADATION_P = [0.3, 0.25, 0.15, 0.15, 0.15]


@dataclass
class Items:
    """Generated items: sensor arrays and labels (all SYNTHETIC)."""

    visual: np.ndarray  # (N, 3, S, S) float32 RGB in [0, 1]
    thermal: np.ndarray  # (N, T, 1) float32 apparent temperature, K
    spectral: np.ndarray  # (N, B) float32 SNV absorbance (see :func:`snv_absorbance`)
    material: np.ndarray  # (N,) int64 index into MATERIALS
    degradation: np.ndarray  # (N,) int64 index into DEGRADATION
    quality: np.ndarray  # (N,) float32 in [0, 1]
    dirt: np.ndarray  # (N,) float32 dirt cover in [0, 1]
    wavelengths: np.ndarray  # (B,) nm


def wavelengths(bands: int = 64) -> np.ndarray:
    """Band centres of the NIR spectrometer, 1000-2500 nm."""
    return np.linspace(1000.0, 2500.0, bands)


def spectrum(material: str, wl: np.ndarray, rng: np.random.Generator, dirt: float = 0.0, moisture: float = 0.0,
             weathering: float = 0.0, noise: float = 0.008) -> np.ndarray:
    """One item's NIR reflectance at ``wl`` (nm)."""
    level, slope = BASE[material]
    level *= rng.uniform(0.9, 1.1)
    x = (wl - 1000.0) / 1000.0
    r = np.full_like(wl, level) + slope * x
    absorb = np.zeros_like(wl)
    if material == "textile":  # blends: cotton (cellulose) vs polyester (PET) share varies per item
        cotton = rng.uniform(0.25, 0.75)
        bands = [(c, d * (cotton if c in (1490, 2100) else 1 - cotton if c != 2050 else 0.5) * 2, w)
                 for c, d, w in BANDS["textile"]]
    else:
        bands = BANDS[material]
    for c, d, w in bands:
        c = c + rng.normal(0, 4)
        absorb += d * rng.uniform(0.8, 1.2) * np.exp(-0.5 * ((wl - c) / w) ** 2)
    absorb += weathering * 0.12 * np.exp(-0.5 * ((wl - 1920) / 60) ** 2)  # carbonyl / hydroxyl from oxidation
    absorb += moisture * (0.25 * np.exp(-0.5 * ((wl - 1450) / 40) ** 2) + 0.4 * np.exp(-0.5 * ((wl - 1940) / 50) ** 2))
    r = r * np.exp(-absorb)
    soil = 0.18 + 0.06 * x
    r = (1 - dirt) * r + dirt * soil
    r = r * rng.uniform(0.95, 1.05)  # distance / illumination of the probe spot
    return np.clip(r + rng.normal(0, noise, wl.shape), 0.0, 1.0)


def snv_absorbance(reflectance: np.ndarray) -> np.ndarray:
    """What the spectrometer reports, as NIR sorters do: absorbance ``-log10 R`` with a standard normal variate
    (per-spectrum centring and scaling), which removes the level changes of probe distance and illumination."""
    a = -np.log10(np.clip(reflectance, 1e-3, None))
    return (a - a.mean()) / max(float(a.std()), 1e-6)


def thermal_curve(material: str, frames: int, rng: np.random.Generator, dirt: float = 0.0,
                  noise: float = 0.08) -> np.ndarray:
    """Apparent temperature (K) of one item over ``frames`` frames (0.25 s apart): heated by a lamp for the first
    third, then cooling. Dirt raises absorptance and emissivity (a dull film on metals)."""
    eps, rho, c, d_mm, spread, absorb = THERMAL[material]
    eps = float(np.clip(eps * rng.uniform(0.93, 1.07) + dirt * (0.95 - eps) * 0.6, 0.02, 0.99))
    absorb = absorb * rng.uniform(0.9, 1.1) + dirt * 0.3
    heat_cap = rho * c * d_mm * 1e-3 * spread * rng.uniform(0.8, 1.25)  # J/m2/K
    power, h, dt = 2500.0, 12.0, 0.25  # lamp irradiance W/m2, convection W/m2/K, frame step s
    t_amb = T_AMB + rng.normal(0, 0.4)
    temp, out = t_amb, np.empty(frames)
    for k in range(frames):
        q = absorb * power if k < frames // 3 else 0.0
        temp += dt * (q - h * (temp - t_amb)) / heat_cap
        out[k] = eps * temp + (1 - eps) * t_amb
    return out + rng.normal(0, noise, frames)


def _shape_mask(shape: str, s: int, rng: np.random.Generator, damaged: bool) -> np.ndarray:
    """(S, S) float cover of the item's silhouette."""
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1) * 2 - 1  # [-1, 1]
    ang = rng.uniform(-0.5, 0.5)
    xr, yr = xx * np.cos(ang) - yy * np.sin(ang), xx * np.sin(ang) + yy * np.cos(ang)
    sc = rng.uniform(0.8, 1.05)
    xr, yr = xr / sc, yr / sc
    if shape == "bottle":
        body = (np.abs(xr) < 0.38) & (yr > -0.45) & (yr < 0.85)
        neck = (np.abs(xr) < 0.14) & (yr <= -0.45) & (yr > -0.9)
        m = body | neck
    elif shape == "tub":
        m = (np.abs(xr) < 0.6) & (np.abs(yr) < 0.5)
    elif shape == "film":
        r = np.hypot(xr, yr)
        th = np.arctan2(yr, xr)
        m = r < 0.55 + 0.18 * np.sin(3 * th + rng.uniform(0, 6)) + 0.1 * np.sin(5 * th + rng.uniform(0, 6))
    elif shape == "tray":
        m = (np.abs(xr) < 0.75) & (np.abs(yr) < 0.35)
    elif shape == "can":
        m = (np.abs(xr) < 0.42) & (np.abs(yr) < 0.72)
    elif shape == "sheet":
        m = (np.abs(xr) < rng.uniform(0.5, 0.8)) & (np.abs(yr) < rng.uniform(0.5, 0.8))
    else:  # cloth
        r = np.hypot(xr, yr)
        th = np.arctan2(yr, xr)
        m = r < 0.65 + 0.12 * np.sin(2 * th + rng.uniform(0, 6))
    m = m.astype(float)
    if damaged:  # a dent or a torn corner
        cy, cx = rng.uniform(-0.6, 0.6, 2)
        m[np.hypot(xx - cx, yy - cy) < rng.uniform(0.2, 0.35)] *= 0.0
    return m


def image(material: str, degradation: str, s: int, rng: np.random.Generator, dirt: float) -> np.ndarray:
    """(3, S, S) RGB of one item on the belt."""
    shape = SHAPES[rng.choice(len(SHAPES), p=SHAPE_P[material])]
    pal = PALETTE[material]
    (rgb, alpha) = pal[rng.choice(len(pal), p=[p for _, p in pal])][0]
    rgb = np.clip(np.array(rgb) + rng.normal(0, 0.05, 3), 0, 1)
    belt = 0.22 + 0.012 * rng.normal(size=(1, s, s)) + 0.006 * rng.normal(size=(3, s, s))
    mask = _shape_mask(shape, s, rng, degradation == "damaged")
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1)
    item = np.ones((3, s, s)) * rgb[:, None, None]
    # texture: corrugation (cardboard), weave (textile), text lines (paper), crumples (film)
    if material == "cardboard":
        item *= 1 + 0.08 * np.sin(2 * np.pi * xx * s / 3)[None]
    elif material == "textile":
        item *= 1 + 0.10 * (np.sin(2 * np.pi * xx * s / 2) * np.sin(2 * np.pi * yy * s / 2))[None]
    elif material == "paper":
        item -= 0.25 * (((yy * s).astype(int) % 3 == 0) & (rng.random((s, s)) < 0.5))[None]
    elif shape == "film":
        item *= 1 + 0.08 * rng.normal(size=(1, s, s))
    if material in ("aluminium", "steel"):  # specular highlight: sharp on aluminium, broad and dull on steel
        sharp = 0.04 if material == "aluminium" else 0.12
        gain = 0.45 if material == "aluminium" else 0.25
        hx = rng.uniform(0.35, 0.65)
        item += gain * np.exp(-((xx - hx) ** 2) / sharp)[None]
    if material == "glass":  # thick walls: darker rim
        item *= 0.85
    if shape in ("bottle", "can", "tub") and rng.random() < 0.7:  # a printed label band
        y0 = rng.uniform(0.35, 0.6)
        band = (yy > y0) & (yy < y0 + rng.uniform(0.12, 0.25))
        lab = rng.uniform(0, 1, 3)
        item = np.where(band[None], lab[:, None, None], item)
        alpha_map = np.where(band, 1.0, alpha)
    else:
        alpha_map = np.full((s, s), alpha)
    if degradation == "weathered":  # UV yellowing and fading
        item = item * np.array([1.0, 0.88, 0.6])[:, None, None] * 0.85 + 0.1
    if degradation == "worn":  # scuffs
        item += 0.3 * (rng.random((1, s, s)) < 0.15)
    if degradation == "damaged":  # a crack across the item
        k = rng.integers(s // 4, 3 * s // 4)
        if rng.random() < 0.5:
            item[:, :, k] *= 0.3
        else:
            item[:, k, :] *= 0.3
    a = mask * alpha_map
    img = a[None] * item + (1 - a[None]) * belt
    # dirt: brown-black blotches over the item
    if dirt > 0:
        blot = rng.random((s, s)) < dirt
        img = np.where((blot & (mask > 0))[None], np.array([0.25, 0.18, 0.1])[:, None, None] * rng.uniform(0.6, 1.2),
                       img)
    # lighting: brightness and a gradient across the belt
    g = rng.uniform(0.8, 1.2) * (1 + rng.uniform(-0.15, 0.15) * (xx - 0.5) + rng.uniform(-0.15, 0.15) * (yy - 0.5))
    img = img * g[None] + rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0.0, 1.0)


def generate(n: int = 4000, seed: int = 0, size: int = 16, bands: int = 64, frames: int = 36) -> Items:
    """``n`` SYNTHETIC items with balanced materials, degradation states drawn from :data:`DEGRADATION_P`.

    Args:
        n: number of items.
        seed: the random seed (same seed, same items).
        size: image side in pixels.
        bands: NIR bands.
        frames: thermal frames.
    """
    rng = np.random.default_rng(seed)
    wl = wavelengths(bands)
    mat = rng.permutation(np.arange(n) % len(MATERIALS))
    deg = rng.choice(len(DEGRADATION), size=n, p=DEGRADATION_P)
    vis = np.empty((n, 3, size, size), dtype=np.float32)
    th = np.empty((n, frames, 1), dtype=np.float32)
    spec = np.empty((n, bands), dtype=np.float32)
    qual = np.empty(n, dtype=np.float32)
    dirt = np.empty(n, dtype=np.float32)
    for i in range(n):
        m, d = MATERIALS[mat[i]], DEGRADATION[deg[i]]
        dirt[i] = rng.uniform(0.3, 0.6) if d == "contaminated" else rng.uniform(0, 0.12)
        moisture = rng.uniform(0.3, 1.0) if d == "contaminated" else rng.uniform(0, 0.2)
        weathering = rng.uniform(0.5, 1.0) if d == "weathered" else 0.0
        vis[i] = image(m, d, size, rng, float(dirt[i]))
        th[i, :, 0] = thermal_curve(m, frames, rng, float(dirt[i]))
        spec[i] = snv_absorbance(spectrum(m, wl, rng, float(dirt[i]), moisture, weathering))
        qual[i] = np.clip(QUALITY_MEAN[d] - 0.3 * dirt[i] + rng.normal(0, 0.06), 0.0, 1.0)
    return Items(vis, th, spec, mat.astype(np.int64), deg.astype(np.int64), qual, dirt, wl)
