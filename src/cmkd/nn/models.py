"""Models: per-modality encoders (:mod:`cmkd.nn.encoders`), cross-modal attention fusion, task heads; several
networks as one (:class:`EnsembleTeacher`, :func:`ensemble_of`).

One :class:`MultimodalNet` serves as teacher and as student. It takes RAW inputs (NaN for missing values) and
holds the training-set standardisation as buffers, so an exported model needs no preprocessing beyond
tokenising text. Missing values become zeros plus an explicit mask channel; a wholly absent modality is masked
out of attention with a key-padding mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmkd.errors import CmkdError
from cmkd.nn.encoders import NumericEncoder, create_encoder


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
            gains ``imputed`` ``{modality: (B, *shape)}`` in the modality's standardised units, trained by the
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
            if s is not None and isinstance(enc, NumericEncoder):
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
