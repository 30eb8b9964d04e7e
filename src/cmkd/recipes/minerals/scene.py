"""Synthetic survey scene for planetary geology and carbon-sequestration sites.

A scene is a ``size x size`` grid of 1 m pixels. The physical assumptions below were adjusted during
development, with simple classifiers only (logistic regression, random forest, a small MLP/CNN), until HSI was
clearly but not perfectly separable (~0.92) and RGB patches ambiguous (~0.56); they were never tuned on the
distillation results:

* **Minerals** (:data:`CLASS_NAMES`): per class a Gaussian random field (smoothing sigma 4 px) plus a bias;
  the argmax is the mapped unit (the label). Biases are calibrated so area fractions match ``_PRIOR``
  (wollastonite and carbonate ~4 %). Carbonate shares part of its field with serpentine, since
  carbonation of serpentinised peridotite is what a sequestration survey looks for.
* **Endmembers** (``_ENDMEMBERS``): reflectance over 400-2500 nm = linear continuum (albedo, slope) times
  ``exp(-sum depth * gaussian(centre, width))``: olivine Fe2+ 850/1050/1250 nm; pyroxene 950 & 2000 nm;
  serpentine OH 1390, Mg-OH 2110/2320 nm; carbonate CO3 1870/1990/2340 nm; clay H2O/OH 1400/1900, Al-OH
  2200 nm; wollastonite bright, weak 1400/2300 nm; basalt dark, weak pyroxene bands; regolith red slope,
  Fe3+ 400 nm edge and 900 nm band. Visible Fe bands (430-680 nm) give olive/green/tan/red colours; the
  white minerals (wollastonite, carbonate) differ mainly in the SWIR. Per pixel and endmember: albedo x
  lognormal(0, 0.2), band depths x U(0.6, 1.4), band centres + N(0, 15 nm), slope + N(0, 0.03).
* **Mixing** (areal, linear): a share ``pure ~ U(0.55, 0.9)`` belongs to the mapped unit, minus a
  sub-pixel share ``pure * 0.5 * exp(-margin / 0.4)`` of the neighbouring unit (``margin``: logit gap to
  the runner-up field, ~0 at unit boundaries, where labels become ambiguous); the rest ``1 - pure`` is a
  Dirichlet(0.5) draw over all endmembers.
* **Dust**: smooth cover fraction (sigma 10 px, mean 0.10, std 0.08, clipped to [0, 0.5]) mixing every
  spectrum toward a red ferric dust spectrum; it lies on the ground, so HSI sees it too.
* **HSI**: reflectance product x (1 + 0.05 smooth field) (imperfect topographic correction) + N(0, 0.006).
* **LiDAR**: terrain = smooth field (sigma 15 px, std 6 m) + class offsets (basalt flows +1.5 m, clay
  basins -1 m, ...; smoothed sigma 2 px) + class roughness (smoothed white noise scaled by 0.05-0.35 m)
  + N(0, 0.03 m) ranging noise. Channels: normalised elevation (minus a sigma 12 px trend) and roughness
  (3x3 local std of elevation).
* **RGB**: spectra integrated over Gaussian responses at 650/550/450 nm (sigma 40 nm), times a smooth
  illumination factor (exp of a field with std 0.15) and Lambertian slope shading (sun zenith 40 deg,
  random azimuth), plus N(0, 0.01) noise.
* **MSI**: a Sentinel-2-like multispectral camera: the HSI scene's reflectance (dust and topographic
  residual included) integrated over Gaussian band responses at the MSI centres and widths (FWHM) of
  :data:`MSI_BANDS` (B2-B8A, B11, B12; ESA Sentinel-2 spectral response summary), plus N(0, 0.008) noise from its
  own random stream (the other arrays do not change when it is added). It is the middle step of progressive
  distillation: richer than RGB, far cheaper than the imaging spectrometer.
* **Sites**: ``site > 0`` draws a new scene with a shifted mineral mix (priors x lognormal(0, 0.5)), sun
  zenith U(25, 60) deg, illumination gain U(0.7, 1.3) and dust mean raised by U(0.05, 0.2).

Samples are interior pixels; ``split`` uses vertical bands (train, val and one contiguous test band, in a
cyclic offset chosen so every class appears in train) and drops pixels whose patch would reach into a band
of another split, so no train patch overlaps a val/test patch.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter, uniform_filter

from cmkd.data.synth import smooth_field

CLASS_NAMES: list[str] = [
    "olivine", "pyroxene", "serpentine", "basalt", "wollastonite", "carbonate", "clay", "regolith",
]
_PRIOR = np.array([0.14, 0.13, 0.14, 0.20, 0.04, 0.04, 0.11, 0.20])
# name -> (albedo at 400 nm, slope per 2100 nm, [(centre nm, width sigma nm, depth)])
_ENDMEMBERS: dict[str, tuple[float, float, list[tuple[float, float, float]]]] = {
    "olivine": (0.22, 0.10, [(450, 70, 0.50), (850, 200, 0.40), (1050, 150, 0.50), (1250, 120, 0.30)]),
    "pyroxene": (0.13, 0.06, [(450, 60, 0.15), (950, 90, 0.35), (2000, 200, 0.30)]),
    "serpentine": (0.32, 0.15, [(450, 60, 0.50), (680, 60, 0.40), (1390, 25, 0.20), (2110, 30, 0.06),
                                (2320, 35, 0.25)]),
    "basalt": (0.07, 0.02, [(1000, 150, 0.10), (2000, 200, 0.06)]),
    "wollastonite": (0.60, 0.05, [(1400, 30, 0.04), (2300, 40, 0.04)]),
    "carbonate": (0.45, 0.10, [(1870, 40, 0.08), (1990, 40, 0.07), (2340, 40, 0.35)]),
    "clay": (0.30, 0.15, [(430, 70, 0.45), (650, 60, 0.12), (1400, 30, 0.20), (1900, 45, 0.32),
                          (2200, 35, 0.25)]),
    "regolith": (0.12, 0.25, [(400, 80, 0.60), (900, 110, 0.12)]),
}
# the scene's random fields: zero mean, unit std per field, mirrored edges (cmkd.data.synth.smooth_field)
_FIELD = {"boundary": "reflect", "standardise": True}
_ELEV_OFFSET = np.array([0.5, 0.5, 0.0, 1.5, 0.3, -0.3, -1.0, 0.0])  # m, per class
_ROUGHNESS = np.array([0.20, 0.20, 0.15, 0.35, 0.12, 0.10, 0.05, 0.10])  # m, per class


def endmember_spectra(wavelengths: np.ndarray, shift: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuum and absorption parts of the endmember spectra.

    Args:
        wavelengths: (B,) band centres in nm.
        shift: optional (..., K) band-centre shifts in nm (composition, e.g. olivine Fo#).

    Returns:
        albedo (K,), slope (K,) and absorption optical depth (..., K, B); reflectance is
        ``(albedo + slope * x) * exp(-absorption)`` with ``x = (wl - 400) / 2100``.
    """
    albedo = np.array([_ENDMEMBERS[n][0] for n in CLASS_NAMES])
    slope = np.array([_ENDMEMBERS[n][1] for n in CLASS_NAMES])
    shift = np.zeros(len(CLASS_NAMES)) if shift is None else shift
    absorb = np.zeros(shift.shape + (wavelengths.size,))
    for k, name in enumerate(CLASS_NAMES):
        wl = wavelengths - shift[..., k, None]  # (..., B)
        for centre, width, depth in _ENDMEMBERS[name][2]:
            absorb[..., k, :] += depth * np.exp(-0.5 * ((wl - centre) / width) ** 2)
    return albedo, slope, absorb


def _dust_spectrum(wavelengths: np.ndarray) -> np.ndarray:
    """Red ferric dust: dark blue, steep rise to ~750 nm, flat beyond. (B,)"""
    return 0.08 + 0.30 / (1.0 + np.exp(-(wavelengths - 600.0) / 60.0))


def _site_params(site: int) -> dict[str, float | np.ndarray]:
    """Acquisition and geology parameters of a site; site 0 is the reference site."""
    if site == 0:
        return {"prior": _PRIOR, "zenith": 40.0, "gain": 1.0, "dust": 0.10}
    rng = np.random.default_rng([site, 7])  # a site's conditions do not depend on the scene seed
    prior = _PRIOR * rng.lognormal(0.0, 0.5, _PRIOR.size)
    return {"prior": prior / prior.sum(), "zenith": rng.uniform(25, 60), "gain": rng.uniform(0.7, 1.3),
            "dust": 0.10 + rng.uniform(0.05, 0.2)}


def _mineral_map(rng: np.random.Generator, size: int, prior: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the (H, W) class map, second-choice class map and logit margin between them."""
    fields = smooth_field(rng, (len(CLASS_NAMES), size, size), 4.0, **_FIELD)  # (K, H, W)
    fields[5] = 0.6 * fields[2] + 0.8 * fields[5]  # carbonate follows serpentine
    bias = np.zeros(len(CLASS_NAMES))
    for _ in range(40):  # calibrate area fractions to the prior
        labels = np.argmax(fields + bias[:, None, None], axis=0)
        freq = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)) / labels.size
        bias += 0.5 * np.log(prior / np.maximum(freq, 1e-3))
    logits = fields + bias[:, None, None]
    order = np.argsort(-logits, axis=0)
    margin = np.take_along_axis(logits, order[:1], 0)[0] - np.take_along_axis(logits, order[1:2], 0)[0]
    return order[0], order[1], margin


def _usable_columns(col_split: np.ndarray, half: int) -> np.ndarray:
    """Centre columns whose patch (width 2 * half + 1) stays inside one split."""
    win = sliding_window_view(col_split, 2 * half + 1)  # (W - 2h, patch)
    return np.flatnonzero((win == win[:, :1]).all(1)) + half


def _split_columns(labels: np.ndarray, half: int, rng: np.random.Generator) -> np.ndarray:
    """Assign each column to a split: cyclic bands of 58 % train, 17 % val, 25 % contiguous test (about
    60/15/25 after guard columns), at one of 7 offsets (those keeping test in one piece) that puts every
    class in train (then as many classes as possible in val and test)."""
    size = labels.shape[1]
    inner = labels[half:size - half]
    best, best_score = None, -1
    for shift in rng.permutation(7):
        pos = ((np.arange(size) + shift * size // 8) % size) / size  # (W,) in [0, 1)
        col_split = np.digitize(pos, [0.58, 0.75])
        cols = _usable_columns(col_split, half)
        score = sum(np.unique(inner[:, cols[col_split[cols] == s]]).size * (100 if s == 0 else 1)
                    for s in range(3))
        if score > best_score:
            best, best_score = col_split, score
    return best


# Sentinel-2 MSI bands used by the "msi" modality: (centre nm, FWHM nm) of B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12
MSI_BANDS = ((490.0, 65.0), (560.0, 35.0), (665.0, 30.0), (705.0, 15.0), (740.0, 15.0), (783.0, 20.0),
             (842.0, 115.0), (865.0, 20.0), (1610.0, 90.0), (2190.0, 180.0))


def generate(seed: int = 0, size: int = 96, patch: int = 5, n_bands: int = 128, site: int = 0,
             return_fractions: bool = False) -> dict[str, np.ndarray]:
    """Generate one synthetic mineral survey scene as per-pixel samples.

    Args:
        seed: random seed; the output is fully determined by (seed, size, patch, n_bands, site).
        size: scene side in pixels.
        patch: odd side of the RGB / LiDAR patch around each pixel.
        n_bands: number of hyperspectral bands over 400-2500 nm.
        site: 0 for the reference site; > 0 for a new site with shifted mix, illumination and dust.
        return_fractions: also return the true endmember fractions as "fractions" (N, 8).

    Returns:
        Arrays dict: "hsi" (N, n_bands) float32, "lidar" (N, 2, patch, patch) float32, "rgb"
        (N, 3, patch, patch) float32, "msi" (N, 10) float32, "mineral" (N,) int64, "coord_row" / "coord_col" (N,) int64,
        "split" (N,) int8 and optionally "fractions" (N, 8) float32.
    """
    if patch % 2 != 1 or patch > size // 8:
        raise ValueError(f"patch must be odd and at most size // 8, got patch={patch}, size={size}")
    rng = np.random.default_rng([seed, site])
    sp = _site_params(site)
    n_cls, half = len(CLASS_NAMES), patch // 2
    wl = np.linspace(400.0, 2500.0, n_bands)  # (B,)
    labels, second, margin = _mineral_map(rng, size, sp["prior"])  # (H, W)

    # endmember fractions per pixel: (H, W, K)
    pure = rng.uniform(0.55, 0.9, (size, size, 1))  # mapped unit + boundary neighbour
    edge = pure * 0.5 * np.exp(-margin / 0.4)[..., None]  # sub-pixel share of the neighbouring unit
    eye = np.eye(n_cls)
    frac = (pure - edge) * eye[labels] + edge * eye[second] \
        + (1 - pure) * rng.dirichlet(np.full(n_cls, 0.5), (size, size))
    # per-pixel endmember variability: (H, W, K, B)
    albedo, slope, absorb = endmember_spectra(wl, rng.normal(0.0, 15.0, (size, size, n_cls)))
    x = (wl - 400.0) / 2100.0
    a = albedo * rng.lognormal(0.0, 0.2, (size, size, n_cls))
    s = slope + rng.normal(0.0, 0.03, (size, size, n_cls))
    d = rng.uniform(0.6, 1.4, (size, size, n_cls, 1))
    em = (a[..., None] + s[..., None] * x) * np.exp(-d * absorb)
    refl = np.einsum("hwk,hwkb->hwb", frac, em)  # (H, W, B)
    dust = np.clip(sp["dust"] + 0.08 * smooth_field(rng, (size, size), 10.0, **_FIELD), 0.0, 0.5)[..., None]
    refl = (1 - dust) * refl + dust * _dust_spectrum(wl)
    resid = 1.0 + 0.05 * smooth_field(rng, (size, size), 6.0, **_FIELD)[..., None]  # imperfect topographic correction
    hsi = refl * resid + rng.normal(0.0, 0.006, refl.shape)

    # LiDAR: elevation (H, W) in m and roughness
    terrain = 6.0 * smooth_field(rng, (size, size), 15.0, **_FIELD)
    offset = gaussian_filter(_ELEV_OFFSET[labels], 2.0)
    rough = gaussian_filter(rng.standard_normal((size, size)), 0.7) * 2.0 * _ROUGHNESS[labels]
    elev = terrain + offset + rough + rng.normal(0.0, 0.03, (size, size))
    mean = uniform_filter(elev, 3)
    roughness = np.sqrt(np.maximum(uniform_filter(elev**2, 3) - mean**2, 0.0))
    lidar = np.stack([elev - gaussian_filter(elev, 12.0), roughness])  # (2, H, W)

    # RGB: band responses (3, B), illumination and slope shading
    resp = np.exp(-0.5 * ((wl[None] - np.array([[650.0], [550.0], [450.0]])) / 40.0) ** 2)
    rgb = np.einsum("hwb,cb->chw", refl, resp / resp.sum(1, keepdims=True))  # (3, H, W)
    gy, gx = np.gradient(elev)
    zen, azi = np.deg2rad(sp["zenith"]), rng.uniform(0, 2 * np.pi)
    shade = (np.cos(zen) - np.sin(zen) * (gx * np.cos(azi) + gy * np.sin(azi))) / np.sqrt(1 + gx**2 + gy**2)
    illum = sp["gain"] * np.exp(0.15 * smooth_field(rng, (size, size), 12.0, **_FIELD)) * np.clip(shade, 0.05, None)
    rgb = rgb * illum / np.cos(zen) + rng.normal(0.0, 0.01, rgb.shape)

    # samples: interior pixels whose patch stays inside one split's stripes
    col_split = _split_columns(labels, half, rng)
    ok_col = _usable_columns(col_split, half)
    rows = np.arange(half, size - half)
    rr, cc = (g.ravel() for g in np.meshgrid(rows, ok_col, indexing="ij"))
    out = {
        "hsi": hsi[rr, cc].astype(np.float32),
        "lidar": sliding_window_view(lidar, (patch, patch), axis=(1, 2))[:, rr - half, cc - half]
        .transpose(1, 0, 2, 3).astype(np.float32),
        "rgb": sliding_window_view(rgb, (patch, patch), axis=(1, 2))[:, rr - half, cc - half]
        .transpose(1, 0, 2, 3).astype(np.float32),
        "mineral": labels[rr, cc].astype(np.int64),
        "coord_row": rr.astype(np.int64),
        "coord_col": cc.astype(np.int64),
        "split": col_split[cc].astype(np.int8),
    }
    centres, fwhm = np.array(MSI_BANDS).T
    msi_resp = np.exp(-0.5 * ((wl[None] - centres[:, None]) / (fwhm[:, None] / 2.3548)) ** 2)  # (10, B)
    msi_refl = np.einsum("hwb,cb->hwc", refl * resid, msi_resp / msi_resp.sum(1, keepdims=True))
    msi_noise = np.random.default_rng([seed, site, 11]).normal(0.0, 0.008, msi_refl.shape)
    out["msi"] = (msi_refl + msi_noise)[rr, cc].astype(np.float32)
    if return_fractions:
        out["fractions"] = frac[rr, cc].astype(np.float32)
    return out
