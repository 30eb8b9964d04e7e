"""Models: one encoder per modality kind (a registry), cross-modal attention fusion, task heads.

One :class:`MultimodalNet` serves as teacher and as student. It takes RAW inputs (NaN for missing values) and
holds the training-set standardisation as buffers, so an exported model needs no preprocessing beyond
tokenising text. Missing values become zeros plus an explicit mask channel; a wholly absent modality is masked
out of attention with a key-padding mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
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


class _Numeric(nn.Module):
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
class VectorEncoder(_Numeric):
    """(B, F) -> (B, D): an MLP over values and their observed-mask."""

    def __init__(self, shape: tuple[int, ...], width: int, dropout: float = 0.1) -> None:
        super().__init__(shape, (shape[0],))
        f = shape[0]
        self.net = _mlp(2 * f, width, dropout)

    def forward(self, x: Tensor) -> Tensor:
        v, m = self.prepare(x)
        return self.net(torch.cat([v, m], dim=1))


@register_encoder("periodic")
class PeriodicVectorEncoder(_Numeric):
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
class SequenceEncoder(_Numeric):
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
class ImageEncoder(_Numeric):
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
class FlatImageEncoder(_Numeric):
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
class MobileNetEncoder(_Numeric):
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
class SignalEncoder(_Numeric):
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


class FusionBlock(nn.Module):
    """Pre-norm multi-head self-attention over modality tokens with a key-padding mask, then an MLP."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise CmkdError(f"model width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * width, width))

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        b, t, d = x.shape  # pad: (B, T) True where the token is absent
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)  # (B, H, T, T)
        att = att.masked_fill(pad[:, None, None, :], -1e4).softmax(dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


def drop_modalities(absent: Tensor, p: float) -> Tensor:
    """Whole-modality dropout: mark each present modality of a sample absent with probability ``p``, unless that
    would leave the sample with none (then it keeps what it had).

    Args:
        absent: (B, M) bool, True where a sample's modality is already absent.
        p: drop probability per present modality.

    Returns:
        (B, M) bool, the new absent flags (a superset of ``absent``).
    """
    drop = torch.rand(absent.shape, device=absent.device) < p
    keep_any = (~(absent | drop)).any(dim=1, keepdim=True)
    return torch.where(keep_any, absent | drop, absent)


class MultimodalNet(nn.Module):
    """Per-modality encoders -> cross-modal attention fusion -> one head per target.

    Args:
        modalities: name -> {"kind": str, "shape": per-sample shape}.
        targets: name -> {"kind": "classification" | "regression", "n_out": classes or outputs}.
        width: token and feature width D.
        heads: attention heads.
        depth: fusion blocks.
        dropout: dropout rate.
        modality_dropout: probability, in training, of dropping each present modality of a sample
            (at least one is always kept).
        text_vocab: token ids for text encoders.
        impute: numeric modalities to reconstruct from the fused features (cross-modal imputation): the output
            gains ``imputed`` {modality: (B, *shape)} in the modality's standardised units, trained by the
            ``impute`` loss term against complete values (e.g. the full sensor record a teacher sees).
        encoders: modality kind -> encoder name for kinds that should not use their default encoder, e.g.
            ``{"image": "mobilenet"}``.
        encoder_options: encoder name -> its keyword options, e.g. ``{"periodic": {"sigma": 0.03}}``.
    """

    def __init__(self, modalities: dict[str, dict], targets: dict[str, dict], width: int = 64, heads: int = 4,
                 depth: int = 1, dropout: float = 0.1, modality_dropout: float = 0.0,
                 text_vocab: int = 4096, impute: list[str] | None = None,
                 encoders: dict[str, str] | None = None,
                 encoder_options: dict[str, dict[str, float]] | None = None) -> None:
        super().__init__()
        encoders = dict(encoders or {})
        options = {k: dict(v) for k, v in (encoder_options or {}).items()}
        impute = list(impute or [])
        bad = [m for m in impute if m not in modalities or modalities[m]["kind"] == "text"]
        if bad:
            raise CmkdError(f"cannot impute '{bad[0]}': not a numeric modality of this model "
                            f"({', '.join(modalities)})")
        self.hparams = {"modalities": {k: {"kind": v["kind"], "shape": list(v["shape"])} for k, v in
                                       modalities.items()},
                        "targets": {k: dict(v) for k, v in targets.items()}, "width": width, "heads": heads,
                        "depth": depth, "dropout": dropout, "modality_dropout": modality_dropout,
                        "text_vocab": text_vocab, "impute": impute, "encoders": encoders,
                        "encoder_options": options}
        self.names = list(modalities)
        self.width = width
        self.modality_dropout = modality_dropout
        self.encoders = nn.ModuleDict({
            m: create_encoder(s["kind"], tuple(s["shape"]), width, dropout, name=encoders.get(s["kind"]),
                              **({"vocab": text_vocab} if s["kind"] == "text" else {}),
                              **options.get(encoders.get(s["kind"], s["kind"]), {}))
            for m, s in modalities.items()})
        self.mod_emb = nn.Parameter(torch.zeros(len(self.names), width))
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mod_emb, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList([FusionBlock(width, heads, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.target_kinds = {t: s["kind"] for t, s in targets.items()}
        self.heads = nn.ModuleDict({
            t: nn.Linear(width, s["n_out"] if s["kind"] == "classification" else 2 * s["n_out"])
            for t, s in targets.items()})
        self.imputers = nn.ModuleDict({m: nn.Linear(width, math.prod(modalities[m]["shape"])) for m in impute})
        for t, s in targets.items():  # regression targets are predicted in train-standardised units
            if s["kind"] == "regression":
                self.register_buffer(f"tmean_{t}", torch.zeros(s["n_out"]))
                self.register_buffer(f"tstd_{t}", torch.ones(s["n_out"]))

    def set_stats(self, stats: dict[str, dict]) -> None:
        """Load standardisation statistics (from :func:`cmkd.data.arrays.fit_stats`) into the buffers."""
        for m, enc in self.encoders.items():
            s = stats.get(f"in:{m}")
            if s is not None and isinstance(enc, _Numeric):
                enc.mean.copy_(torch.as_tensor(s["mean"]).reshape(enc.mean.shape))
                enc.std.copy_(torch.as_tensor(s["std"]).reshape(enc.std.shape))
        for t, kind in self.target_kinds.items():
            if kind == "regression":
                getattr(self, f"tmean_{t}").copy_(torch.as_tensor(stats[f"tg:{t}"]["mean"]))
                getattr(self, f"tstd_{t}").copy_(torch.as_tensor(stats[f"tg:{t}"]["std"]))

    @staticmethod
    def _empty(x: Tensor) -> Tensor:
        """(B,) True where a sample's modality holds no value (all NaN; all padding for token ids)."""
        flat = x.reshape(x.shape[0], -1)
        return torch.isnan(flat).all(dim=1) if flat.dtype.is_floating_point else (flat == 0).all(dim=1)

    def forward_features(self, inputs: dict[str, Tensor], present: dict[str, Tensor] | None = None
                         ) -> dict[str, Tensor]:
        """Encode and fuse. Returns ``features`` (B, D) and ``tokens`` (B, M, D)."""
        toks = torch.stack([self.encoders[m](inputs[m]) for m in self.names], dim=1) + self.mod_emb  # (B, M, D)
        b = toks.shape[0]
        # a modality with no value at all (every entry NaN, or no token) is absent, flagged or not: the exported
        # model, which gets no presence flags, then behaves exactly like this one
        absent = torch.stack([self._empty(inputs[m]) for m in self.names], dim=1)  # (B, M)
        if present is not None:
            absent = absent | torch.stack([~present[m].to(torch.bool) for m in self.names], dim=1)
        if self.training and self.modality_dropout > 0 and len(self.names) > 1:
            absent = drop_modalities(absent, self.modality_dropout)
        toks = toks * (~absent).unsqueeze(-1).to(toks.dtype)
        x = torch.cat([self.cls.expand(b, -1, -1), toks], dim=1)  # (B, 1+M, D)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), absent], dim=1)
        for blk in self.blocks:
            x = blk(x, pad)
        return {"features": self.norm(x[:, 0]), "tokens": x[:, 1:]}

    def forward_head(self, features: Tensor) -> dict[str, dict[str, Tensor]]:
        """Per target: ``{"logits"}`` or ``{"mean", "logvar", "value"}`` (value in raw units)."""
        out: dict[str, dict[str, Tensor]] = {}
        for t, head in self.heads.items():
            h = head(features)
            if self.target_kinds[t] == "classification":
                out[t] = {"logits": h}
            else:
                mean, logvar = h.chunk(2, dim=1)
                value = mean * getattr(self, f"tstd_{t}") + getattr(self, f"tmean_{t}")
                out[t] = {"mean": mean, "logvar": logvar.clamp(-10, 10), "value": value}
        return out

    def forward(self, inputs: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> dict:
        """Features, tokens and every head's outputs in one dict."""
        f = self.forward_features(inputs, present)
        out = {**f, **self.forward_head(f["features"])}
        if len(self.imputers):
            shapes = self.hparams["modalities"]
            out["imputed"] = {m: lin(f["features"]).reshape(-1, *shapes[m]["shape"])
                              for m, lin in self.imputers.items()}
        return out

    def standardise(self, modality: str, x: Tensor) -> Tensor:
        """Raw values of ``modality`` (or of a complete version of it) in the encoder's standardised units."""
        enc = self.encoders[modality]
        return (x - enc.mean) / enc.std


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class EnsembleTeacher(nn.Module):
    """Several teachers, each on its own modalities and targets, acting as one (multi-teacher distillation).

    Per sample, a member counts only when it has every one of its modalities (else its prediction is left out;
    where no member of a target has them, all of that target's members count). Per target, over its members:

    - classification: ``logits = log(sum_k w_k softmax(z_k))`` (the weighted mean of their probabilities), and
      ``soft_logp = log(sum_k w_k softmax(z_k / T_k))``, the kd soft target with each member's temperature;
    - regression: the weighted mean of the members' means, with the mixture's variance
      ``sum_k w_k (s_k^2 + mu_k^2) - mu^2`` as ``logvar`` (standardised units; members share the target
      statistics).

    ``features`` are the members' L2-normalised features, each scaled by ``sqrt(w_k / sum w)``, concatenated
    (zeros for a member without its modalities): cosine, similarity-preserving and contrastive terms against them
    weigh every member by its ``w``. The module mimics :class:`MultimodalNet` where the pipeline needs it
    (``encoders``, ``target_kinds``, ``width``, ``tstd_<target>``).

    Args:
        members: name -> a trained MultimodalNet.
        temperatures: name -> kd temperature of that member.
        weights: name -> ensemble weight (positive).
    """

    def __init__(self, members: dict[str, MultimodalNet], temperatures: dict[str, float],
                 weights: dict[str, float]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(members)
        self.temperatures = {k: float(temperatures[k]) for k in members}
        self.member_weights = {k: float(weights[k]) for k in members}
        self.hparams = {"ensemble": {k: m.hparams for k, m in members.items()},
                        "temperatures": self.temperatures, "weights": self.member_weights}
        self.target_kinds: dict[str, str] = {}
        for m in members.values():
            for t, kind in m.target_kinds.items():
                self.target_kinds.setdefault(t, kind)
                if kind == "regression" and not hasattr(self, f"tstd_{t}"):
                    self.register_buffer(f"tmean_{t}", getattr(m, f"tmean_{t}").clone())
                    self.register_buffer(f"tstd_{t}", getattr(m, f"tstd_{t}").clone())
        self.width = sum(m.width for m in members.values())
        self.imputers: dict[str, nn.Module] = {}

    @property
    def encoders(self) -> dict[str, nn.Module]:
        """Modality -> encoder, over every member (the first member's encoder of a shared modality)."""
        out: dict[str, nn.Module] = {}
        for m in self.members.values():
            for name, enc in m.encoders.items():
                out.setdefault(name, enc)
        return out

    def set_stats(self, stats: dict[str, dict]) -> None:
        """Load standardisation statistics into every member and the ensemble's target buffers."""
        for m in self.members.values():
            m.set_stats(stats)
        for t, kind in self.target_kinds.items():
            if kind == "regression":
                getattr(self, f"tmean_{t}").copy_(torch.as_tensor(stats[f"tg:{t}"]["mean"]))
                getattr(self, f"tstd_{t}").copy_(torch.as_tensor(stats[f"tg:{t}"]["std"]))

    def forward(self, inputs: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> dict:
        """Combined features and per-target outputs (see the class docs); ``members`` holds each member's."""
        outs, avail = {}, {}
        b = next(iter(inputs.values())).shape[0]
        for name, net in self.members.items():
            sub_in = {m: inputs[m] for m in net.encoders}
            sub_pr = {m: present[m] for m in net.encoders} if present is not None else None
            outs[name] = net(sub_in, sub_pr)
            ok = torch.ones(b, dtype=torch.bool, device=outs[name]["features"].device)
            for m in net.encoders:
                ok = ok & ~MultimodalNet._empty(inputs[m])
                if present is not None:
                    ok = ok & present[m].to(torch.bool)
            avail[name] = ok
        total_w = sum(self.member_weights.values())
        feats = [F.normalize(outs[k]["features"], dim=1) * math.sqrt(self.member_weights[k] / total_w)
                 * avail[k].unsqueeze(1).to(outs[k]["features"].dtype) for k in self.members]
        result: dict = {"features": torch.cat(feats, dim=1)}
        for t, kind in self.target_kinds.items():
            names = [k for k, net in self.members.items() if t in net.target_kinds]
            w = torch.stack([avail[k].float() * self.member_weights[k] for k in names], dim=1)  # (B, K)
            none = w.sum(dim=1, keepdim=True) == 0
            w = torch.where(none, torch.tensor([self.member_weights[k] for k in names], device=w.device), w)
            w = w / w.sum(dim=1, keepdim=True)
            if kind == "classification":
                probs = torch.stack([outs[k][t]["logits"].softmax(dim=1) for k in names], dim=1)  # (B, K, C)
                soft = torch.stack([(outs[k][t]["logits"] / self.temperatures[k]).softmax(dim=1) for k in names],
                                   dim=1)
                result[t] = {"logits": torch.log((w.unsqueeze(2) * probs).sum(dim=1).clamp_min(1e-12)),
                             "soft_logp": torch.log((w.unsqueeze(2) * soft).sum(dim=1).clamp_min(1e-12))}
            else:
                mu = torch.stack([outs[k][t]["mean"] for k in names], dim=1)  # (B, K, n)
                var = torch.stack([outs[k][t]["logvar"].exp() for k in names], dim=1)
                ww = w.unsqueeze(2)
                mean = (ww * mu).sum(dim=1)
                mix_var = ((ww * (var + mu**2)).sum(dim=1) - mean**2).clamp_min(1e-8)
                value = mean * getattr(self, f"tstd_{t}") + getattr(self, f"tmean_{t}")
                result[t] = {"mean": mean, "logvar": torch.log(mix_var).clamp(-10, 10), "value": value}
        return result


def ensemble_of(members: list[MultimodalNet], temperature: float = 1.0) -> EnsembleTeacher:
    """Networks on the same modalities and targets as one model (``student.ensemble``): an
    :class:`EnsembleTeacher` of equal weights, members ``m0``, ``m1``, ... (class probabilities averaged;
    regression means averaged, the mixture's variance). Its ``hparams`` also carry the members' ``modalities``
    and ``targets``, as a network's do (the edge sidecar reads them)."""
    names = [f"m{k}" for k in range(len(members))]
    ens = EnsembleTeacher(dict(zip(names, members, strict=True)), dict.fromkeys(names, float(temperature)),
                          dict.fromkeys(names, 1.0))
    ens.hparams.update({k: members[0].hparams[k] for k in ("modalities", "targets")})
    return ens
