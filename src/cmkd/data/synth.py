"""Random-process primitives shared by the synthetic data generators (the recipes' ``scene.py``).

One place for the smooth random fields and autoregressive series the scenes are built from, so that a new
generator reuses them instead of writing its own. Everything draws from the ``numpy.random.Generator`` it is
given, in a fixed order, so a seed gives the same arrays on every run (the scenes' figures depend on it).

- :func:`smooth_field`: Gaussian random fields smoothed over the last two axes (images, terrain, clouds);
- :func:`ar1`: a stationary AR(1) series set by its e-folding time and marginal std (weather, surge noise);
- :func:`ar1_from_rest`: an AR(1) recursion started at 0, set by its coefficient and innovation std;
- :func:`causal_filter`: causal convolution along the last axis (FFT).

Only numpy is imported at module level (scipy inside :func:`smooth_field` when a filter mode needs it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BOUNDARIES", "ar1", "ar1_from_rest", "causal_filter", "smooth_field"]

BOUNDARIES = ("pad", "reflect", "wrap")


def causal_filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Causal convolution ``y[t] = sum_k kernel[k] x[t - k]`` along the last axis (FFT); kernel broadcasts."""
    n = x.shape[-1]
    k = kernel.shape[-1]
    nfft = 1 << int(np.ceil(np.log2(n + k)))
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(kernel, nfft), nfft)
    return y[..., :n]


def ar1(rng: np.random.Generator, shape: tuple[int, ...], tau: float, std: float) -> np.ndarray:
    """Stationary AR(1) series along the last axis: e-folding ``tau`` steps, marginal std ``std``.

    Drawn with a burn-in of ``6 tau`` steps (dropped) and a kernel truncated at ``12 tau`` steps, so the first
    step is already at the stationary distribution.
    """
    a = np.exp(-1.0 / tau)
    burn = int(np.ceil(6 * tau))
    e = rng.standard_normal((*shape[:-1], shape[-1] + burn))
    k = int(np.ceil(12 * tau)) + 1
    x = causal_filter(e, a ** np.arange(k)) * np.sqrt(1 - a * a)
    return std * x[..., burn:]


def ar1_from_rest(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """AR(1) recursion ``x[i] = phi x[i-1] + e[i]``, ``e ~ N(0, sigma)``, started at ``x[0] = 0`` (length ``n``).

    Unlike :func:`ar1` it starts at rest, so its spread grows towards ``sigma / sqrt(1 - phi^2)`` over roughly
    ``1 / (1 - phi)`` steps: a slow drift that begins at the series' mean.
    """
    out = np.zeros(n)
    e = rng.normal(0, sigma, n)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + e[i]
    return out


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, *, boundary: str = "pad",
                 standardise: bool = False) -> np.ndarray:
    """Gaussian random fields of ``shape``, smoothed over its last two axes with a Gaussian of ``sigma`` pixels.

    Args:
        rng: the random generator (white noise is drawn from it once per call).
        shape: ``(*lead, H, W)``: one independent field per leading index.
        sigma: smoothing length in pixels.
        boundary: ``"pad"``: noise is drawn on a grid padded by ``ceil(2 sigma)`` pixels on every side and
            smoothed by a separable Gaussian matrix with unit-norm rows, so every pixel has unit variance and no
            edge effects (square fields only, ``H == W``); ``"reflect"`` / ``"wrap"``:
            :func:`scipy.ndimage.gaussian_filter` of noise drawn on the grid itself with that edge mode (the
            variance shrinks with ``sigma``; use ``standardise``).
        standardise: rescale each field to zero mean and unit standard deviation over its two last axes.

    Returns:
        float64 array of ``shape``.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if boundary == "pad":
        lead, size = tuple(shape[:-2]), shape[-1]
        if shape[-2] != size:
            raise ValueError(f"boundary 'pad' needs square fields, got {shape}")
        pad = int(np.ceil(2 * sigma))
        m = size + 2 * pad
        noise = rng.standard_normal((*lead, m, m))
        i = np.arange(size)[:, None] + pad
        j = np.arange(m)[None, :]
        kern = np.exp(-0.5 * ((i - j) / sigma) ** 2)
        kern = kern / np.sqrt((kern**2).sum(axis=1, keepdims=True))
        f = kern @ noise @ kern.T
    else:
        from scipy.ndimage import gaussian_filter

        sig = (0,) * (len(shape) - 2) + (sigma, sigma)
        f = gaussian_filter(rng.standard_normal(shape), sig, mode=boundary)
    if standardise:
        f = (f - f.mean(axis=(-2, -1), keepdims=True)) / f.std(axis=(-2, -1), keepdims=True)
    return f
