"""Encoders: one per modality kind, in a registry (:data:`ENCODERS`), plus alternatives chosen per model
(``ModelConfig.encoders``, e.g. ``{image: mobilenet}``) with their options (``encoder_options``).

Every encoder maps one modality's RAW batch (NaN for missing values; int64 token ids for text) to (B, D)
features. Numeric encoders hold the training-set standardisation as buffers (:class:`NumericEncoder`) and see
values-with-zeros plus an explicit mask channel. The config checks of encoder names and options are registered
here (:func:`cmkd.config.register_name_check`), so config imports nothing from this layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from cmkd.config import register_name_check
from cmkd.errors import CmkdError

ENCODERS: dict[str, type[nn.Module]] = {}


def register_encoder(kind: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an encoder to the registry under ``kind``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        ENCODERS[kind] = cls
        return cls

    return deco


# alternative encoders, chosen per model with ``ModelConfig.encoders`` (modality kind -> name): name -> the kinds
# it accepts. The default encoder of a kind is the one registered under the kind's own name.
ALTERNATIVES: dict[str, tuple[str, ...]] = {"mobilenet": ("image",), "periodic": ("vector",), "flat": ("image",)}


def encoder_option_names(name: str, user: bool = True) -> list[str]:
    """The keyword options encoder ``name`` takes beyond shape, width and dropout; ``user``: only those a config's
    ``encoder_options`` may set (a text encoder's ``vocab`` is :data:`cmkd.data.arrays.TEXT_VOCAB`)."""
    import inspect

    params = list(inspect.signature(ENCODERS[name].__init__).parameters)
    fixed = ("self", "shape", "width", "dropout", "vocab") if user else ("self", "shape", "width", "dropout")
    return [p for p in params if p not in fixed]


@register_name_check("encoders")
def check_encoder_choices(choices: dict[str, str]) -> None:
    """CmkdError naming the valid encoders where a modality kind -> encoder choice is unknown."""
    for kind, name in choices.items():
        if name != kind and kind not in ALTERNATIVES.get(name, ()):
            valid = sorted([kind] + [n for n, ks in ALTERNATIVES.items() if kind in ks])
            raise CmkdError(f"encoder {name!r} for kind {kind!r} is unknown; valid: {', '.join(valid)}")


@register_name_check("encoder_options")
def check_all_encoder_options(options: dict[str, dict[str, float]]) -> None:
    """:func:`check_encoder_options` for every encoder of a config's ``encoder_options``."""
    for name, opts in options.items():
        check_encoder_options(name, opts)


def check_encoder_options(name: str, options: dict, user: bool = True) -> None:
    """CmkdError naming the valid choices where ``name`` is no encoder or ``options`` holds one it does not take."""
    if name not in ENCODERS:
        raise CmkdError(f"unknown encoder '{name}'; valid: {', '.join(sorted(ENCODERS))}")
    bad = sorted(set(options) - set(encoder_option_names(name, user)))
    if bad:
        raise CmkdError(f"encoder '{name}' has no option '{bad[0]}'; valid: "
                        f"{', '.join(encoder_option_names(name)) or 'none'}")


def create_encoder(kind: str, shape: tuple[int, ...], width: int, dropout: float = 0.1, name: str | None = None,
                   **kw: float) -> nn.Module:
    """Build the encoder ``name`` (default: the one registered for ``kind``) with options ``kw``; an unknown name
    or option lists the valid ones."""
    name = name or kind
    check_encoder_options(name, kw, user=False)
    if name != kind and kind not in ALTERNATIVES.get(name, ()):
        raise CmkdError(f"encoder '{name}' does not take modality kind '{kind}' (it takes "
                        f"{', '.join(ALTERNATIVES.get(name, (name,)))})")
    return ENCODERS[name](shape, width, dropout, **kw)


class NumericEncoder(nn.Module):
    """Shared part of numeric encoders: standardise, then values-with-zeros plus a mask channel."""

    def __init__(self, shape: tuple[int, ...], stat_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    def prepare(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = (x - self.mean) / self.std
        mask = ~torch.isnan(x)
        return torch.where(mask, x, torch.zeros_like(x)), mask.to(x.dtype)


def _mlp(n_in: int, width: int, dropout: float) -> nn.Sequential:
    """The two-layer MLP of the vector-like encoders: ``n_in`` -> 2 ``width`` -> ``width``, layer-normalised."""
    return nn.Sequential(nn.Linear(n_in, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width),
                         nn.LayerNorm(width))


@register_encoder("vector")
class VectorEncoder(NumericEncoder):
    """(B, F) -> (B, D): an MLP over values and their observed-mask."""

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (shape[0],))
        f = shape[0]
        self.net = _mlp(2 * f, width, dropout)

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)
        return self.net(torch.cat([v, m], dim=1))


@register_encoder("periodic")
class PeriodicVectorEncoder(NumericEncoder):
    """(B, F) -> (B, D): each feature through its own periodic embedding, then an MLP (vector modalities).

    Per feature ``i`` the standardised value ``x`` becomes ``[sin(2 pi c_ik x), cos(2 pi c_ik x)]`` for ``k``
    learned frequencies ``c_ik`` (initialised from N(0, ``sigma``); larger ``sigma``, sharper functions of each
    feature), then a per-feature linear map and ReLU; the embeddings of all features (zero where a value is
    missing) and the observed-mask feed the MLP of :class:`VectorEncoder`. The idea is that of
    the periodic numerical-feature embeddings of Gorishniy et al. (2022), which let an MLP draw the sharp,
    feature-wise boundaries tree ensembles draw on tabular data. Chosen per model with
    ``encoders: {vector: periodic}``; options (``n_freq``, ``sigma``, ``embed``) with
    ``encoder_options: {periodic: {sigma: 0.03}}``.
    """

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1, n_freq: int = 16,
                 sigma: float = 0.1, embed: int = 8) -> None:
        super().__init__(shape, (shape[0],))
        f, n_freq, embed = shape[0], int(n_freq), int(embed)
        self.freq = nn.Parameter(torch.randn(f, n_freq) * sigma)
        self.w = nn.Parameter(torch.randn(f, 2 * n_freq, embed) / math.sqrt(2 * n_freq))
        self.b = nn.Parameter(torch.zeros(f, embed))
        self.net = _mlp(f * embed + f, width, dropout)

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)  # (B, F)
        angle = 2 * math.pi * v.unsqueeze(-1) * self.freq  # (B, F, K)
        per = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)  # (B, F, 2K)
        e = torch.relu(torch.einsum("bfk,fke->bfe", per, self.w) + self.b) * m.unsqueeze(-1)  # missing -> 0
        return self.net(torch.cat([e.flatten(1), m], dim=1))


@register_encoder("sequence")
class SequenceEncoder(NumericEncoder):
    """(B, T, F) -> (B, D): mask-aware temporal convolutions for sparse series.

    Per time step and feature the convolutions see the standardised value (0 where missing), the observed-mask
    and the time since that feature was last observed, ``log1p(dt) / log1p(T)`` (Che et al., 2018, GRU-D): a
    reading 2 h old and one 40 h old are different evidence. Pooling: masked-free mean and max over time plus a
    learned position-weighted sum (it can favour the latest or the central step).
    """

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (1, shape[1]))
        t, f = shape[0], shape[1]
        self.conv = nn.Sequential(nn.Conv1d(3 * f, width, 5, padding=2), nn.GELU(),
                                  nn.Conv1d(width, width, 5, padding=2), nn.GELU())
        self.pos = nn.Parameter(torch.zeros(t))  # position weights of the learned pooling
        steps = torch.arange(t, dtype=torch.float32)
        self.register_buffer("steps", steps, persistent=False)
        self.log_t = math.log1p(t)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(3 * width, width), nn.LayerNorm(width))

    def time_since(self, m: Tensor) -> Tensor:
        """(B, T, F) observed-mask -> (B, T, F) steps since the last observation (counted from step -1).

        A running maximum of the observed steps' indices, by log2(T) shift-and-max passes (exportable to ONNX,
        which has no cumulative maximum).
        """
        s = self.steps[None, :, None]
        last = torch.where(m > 0, s.expand_as(m), torch.full_like(m, -1.0))  # (B, T, F)
        k, t = 1, m.shape[1]
        while k < t:
            shifted = torch.cat([torch.full_like(last[:, :k], -1.0), last[:, :-k]], dim=1)
            last = torch.maximum(last, shifted)
            k *= 2
        return s - last

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)  # (B, T, F)
        dt = torch.log1p(self.time_since(m)) / self.log_t
        h = self.conv(torch.cat([v, m, dt], dim=2).transpose(1, 2))  # (B, D, T)
        pooled = (h * self.pos.softmax(dim=0)).sum(dim=2)
        return self.out(torch.cat([h.mean(dim=2), h.amax(dim=2), pooled], dim=1))


@register_encoder("image")
class ImageEncoder(NumericEncoder):
    """(B, C, H, W) -> (B, D): a small CNN; pools globally and keeps the centre pixel (per-pixel tasks)."""

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (shape[0], 1, 1))
        c = shape[0]
        self.conv = nn.Sequential(nn.Conv2d(2 * c, width, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.centre = (shape[1] // 2, shape[2] // 2)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, width), nn.LayerNorm(width))

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)
        h = self.conv(torch.cat([v, m], dim=1))  # (B, D, H, W)
        return self.out(torch.cat([h.mean(dim=(2, 3)), h[:, :, self.centre[0], self.centre[1]]], dim=1))


@register_encoder("flat")
class FlatImageEncoder(NumericEncoder):
    """(B, C, H, W) -> (B, D): the patch flattened into the MLP of :class:`VectorEncoder` (every pixel of every
    band one feature, as a tree ensemble on the flattened patch sees it; no weight sharing across positions).
    Meant for small patches (a 7 x 7 neighbourhood around a labelled pixel). Select it per model with
    ``encoders: {image: flat}``.
    """

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (shape[0], 1, 1))
        self.net = _mlp(2 * math.prod(shape), width, dropout)

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)
        return self.net(torch.cat([v.flatten(1), m.flatten(1)], dim=1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al., 2018): 1x1 expansion, 3x3 depthwise, linear 1x1 projection; a residual
    connection when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hid = c_in * expand
        self.res = stride == 1 and c_in == c_out
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, hid, 3, stride=stride, padding=1, groups=hid, bias=False), nn.BatchNorm2d(hid),
            nn.ReLU6(),
            nn.Conv2d(hid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)
        return x + y if self.res else y


@register_encoder("mobilenet")
class MobileNetEncoder(NumericEncoder):
    """(B, C, H, W) -> (B, D): a small MobileNetV2-like image encoder for edge students.

    A 3x3 stem, then inverted residual blocks with depthwise-separable convolutions (two of them halve the
    resolution while it is at least 8 pixels), a 1x1 convolution to the width D, global average pooling.
    Select it per model with ``encoders: {image: mobilenet}``.
    """

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (shape[0], 1, 1))
        c, h = shape[0], min(shape[1], shape[2])
        s1, s2 = (2 if h >= 8 else 1), (2 if h >= 16 else 1)
        ch = max(8, width // 2)
        self.conv = nn.Sequential(
            nn.Conv2d(2 * c, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU6(),
            InvertedResidual(ch, ch, 1, expand=2), InvertedResidual(ch, width, s1),
            InvertedResidual(width, width, 1), InvertedResidual(width, width, s2),
            InvertedResidual(width, width, 1),
            nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, width), nn.LayerNorm(width))

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)
        h = self.conv(torch.cat([v, m], dim=1))  # (B, D, H', W')
        return self.out(h.mean(dim=(2, 3)))


@register_encoder("signal")
class SignalEncoder(NumericEncoder):
    """(B, C, L) -> (B, D): strided 1-D convolutions for waveforms, global mean and max pooling."""

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (shape[0], 1))
        c = shape[0]
        self.conv = nn.Sequential(nn.Conv1d(2 * c, width, 7, stride=2, padding=3), nn.GELU(),
                                  nn.Conv1d(width, width, 7, stride=2, padding=3), nn.GELU(),
                                  nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, width), nn.LayerNorm(width))

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)
        h = self.conv(torch.cat([v, m], dim=1))  # (B, D, L')
        return self.out(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


@register_encoder("text")
class TextEncoder(nn.Module):
    """(B, L) int64 hashed token ids (0 = padding) -> (B, D): embeddings, a convolution, masked mean pooling."""

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1, vocab: int = 4096) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width, padding_idx=0)
        self.conv = nn.Conv1d(width, width, 3, padding=1)
        self.out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(width, width), nn.LayerNorm(width))

    def forward(self, x: Tensor) -> Tensor:
        keep = (x > 0).to(torch.float32).unsqueeze(1)  # (B, 1, L)
        h = self.conv(self.emb(x).transpose(1, 2)) * keep  # (B, D, L)
        return self.out(h.sum(dim=2) / keep.sum(dim=2).clamp_min(1.0))
