"""UR-DMU: Dual Memory Units with Uncertainty Regulation (Zhou et al., AAAI 2023), π-VAD's teacher and student.

Computes what the official code (henrryzh1/UR-DMU, commit 40cfdf5) computes, in train and test
mode, including its quirks that change the numbers (each marked ``QUIRK``):

- the fixed distance attention is column-normalised (see :mod:`pivad.models.distance_kernel`);
- the KL term sums over the *time* axis and averages over the latent axis;
- top-k sizes are ``T // 16 + 1`` over time and ``slots // 16 + 1`` over memory slots;
- memory slots are drawn twice at init (so ``torch.manual_seed(s)`` gives the official initial weights).

What differs (same outputs, less work): no CUDA calls; the distance kernel is shared by all heads,
cached, and applied as a band for long videos (``O(T)`` memory); the softmax branch uses
``F.scaled_dot_product_attention``; concatenations feeding a linear layer are split into sums of
products; dropout and reparameterisation noise can be switched off cleanly (``dropout=0``,
``sample=False``) for deterministic runs.

Axes: B batch (videos x crops in eval), b videos, n crops, T snippets, D input width, H hidden width,
S memory slots.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pivad.config import URDMUConfig
from pivad.errors import CheckpointError
from pivad.models.distance_kernel import apply_distance_kernel

Hook = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class URDMUOutput:
    """Train-mode outputs (normal half of the batch first). ``*_att`` are ``[B/2, T]``, losses 0-d."""

    scores: torch.Tensor  # (B, T) snippet anomaly scores
    A_att: torch.Tensor  # abnormal videos read from the abnormal memory
    N_att: torch.Tensor  # normal videos read from the normal memory
    A_Natt: torch.Tensor  # normal videos read from the abnormal memory
    N_Aatt: torch.Tensor  # abnormal videos read from the normal memory
    triplet: torch.Tensor  # triplet margin loss
    kl: torch.Tensor  # KL of the normal latent (official sum over time)
    distance: torch.Tensor  # relu(100 - |abnormal mu| + |normal z|), mean


def topk_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest values along the last axis."""
    return torch.topk(x, k, dim=-1)[0].mean(-1)


def time_topk(T: int) -> int:
    """QUIRK (official): top-k over time is ``T // 16 + 1`` (13 at T=200, 1 at T<16)."""
    return T // 16 + 1


class Attention(nn.Module):
    """Softmax self-attention beside the fixed distance branch; outputs are concatenated per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 4 * inner, bias=False)  # q, k, v, t
        self.to_out = nn.Linear(2 * inner, dim)  # input per head: [softmax branch, distance branch]
        self.distance_impl = "auto"  # auto | dense | banded (dense exports with a dynamic T)

    def forward(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        B, T, _ = x.shape
        h, d = self.heads, self.dim_head
        qkvt = self.to_qkv(x).view(B, T, 4, h, d)  # (B, T, 4, h, d)
        q, k, v = (qkvt[:, :, i].transpose(1, 2) for i in range(3))  # (B, h, T, d)
        att = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d), scale d^-0.5 as official
        att = att.transpose(1, 2).reshape(B, T, h * d)  # (B, T, h*d)
        # the distance kernel is the same for every head: apply it once to all heads' t
        t = qkvt[:, :, 3].reshape(B, T, h * d)  # (B, T, h*d)
        dist = apply_distance_kernel(t, self.distance_impl)  # (B, T, h*d)
        # official: cat per head [att_h, dist_h] -> (B, T, h*2d) -> to_out; here the weight is split instead
        w = self.to_out.weight.view(-1, h, 2, d)  # (dim, h, 2, d)
        out = F.linear(att, w[:, :, 0].reshape(-1, h * d), self.to_out.bias)
        out = out + F.linear(dist, w[:, :, 1].reshape(-1, h * d))  # (B, T, dim)
        return F.dropout(out, self.dropout, training=drop)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        x = F.dropout(F.gelu(self.fc1(x)), self.dropout, training=drop)
        return F.dropout(self.fc2(x), self.dropout, training=drop)


class TransformerLayer(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))``, then ``x + ff(LN(x))``."""

    def __init__(self, cfg: URDMUConfig) -> None:
        super().__init__()
        H = cfg.hidden_dim
        self.norm1 = nn.LayerNorm(H)
        self.attn = Attention(H, cfg.heads, cfg.dim_head, cfg.dropout)
        self.norm2 = nn.LayerNorm(H)
        self.ff = FeedForward(H, cfg.mlp_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), drop)
        return x + self.ff(self.norm2(x), drop)


class MemoryUnit(nn.Module):
    """``S`` learnable slots; read = sigmoid similarity, slot top-k mean score and weighted read-out."""

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.slots, self.dim = slots, dim
        self.memory = nn.Parameter(torch.empty(slots, dim))
        bound = 1.0 / math.sqrt(dim)
        self.memory.data.uniform_(-bound, bound)
        # QUIRK (official memory.py): the slots are drawn twice; kept so seeded inits match the official
        self.memory.data.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att = torch.sigmoid(torch.matmul(x, self.memory.t()) / self.dim**0.5)  # (B, T, S)
        score = topk_mean(att, self.slots // 16 + 1)  # (B, T); QUIRK: k = S // 16 + 1 (4 for 60 slots)
        return score, torch.matmul(att, self.memory)  # (B, T), (B, T, H)


class ClassifierHead(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x)))).squeeze(-1)  # (B, T)


class URDMU(nn.Module):
    """UR-DMU. Eval: ``model(x)`` with x ``[b, n, T, D]`` or ``[B, T, D]`` -> crop-mean scores ``[b, T]``.
    Train: x ``[B, T, D]`` (normal half first) -> :class:`URDMUOutput`.

    ``early(F)`` / ``late(F)`` optionally replace the embedding output ``[B, T, H]`` (before the
    transformer) and the classifier-head input ``[B, T, 2H]``.
    """

    def __init__(self, cfg: URDMUConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or URDMUConfig()
        self.cfg = cfg
        H = cfg.hidden_dim
        # construction order mirrors the official WSAD so a seeded init gives the official weights
        self.embed = nn.Conv1d(cfg.input_dim, H, kernel_size=3, padding=1)
        self.head = ClassifierHead(2 * H, cfg.head_dim)
        self.memory_a = MemoryUnit(cfg.a_nums, H)
        self.memory_n = MemoryUnit(cfg.n_nums, H)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.depth))
        self.encoder_mu = nn.Linear(H, H)
        self.encoder_var = nn.Linear(H, H)  # log-variance
        self.sample = True  # draw the reparameterisation noise in train mode (False: z = mu)

    # ------------------------------------------------------------------------------------------ trunk

    def embed_features(self, x: torch.Tensor) -> torch.Tensor:
        """Temporal Conv1d(k=3, pad=1) + ReLU: ``[B, T, D]`` -> ``[B, T, H]``."""
        return F.relu(self.embed(x.transpose(1, 2))).transpose(1, 2)

    def transformer(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, drop)
        return x  # (B, T, H)

    def _trunk(self, x: torch.Tensor, early: Hook | None, drop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed_features(x)  # (B, T, H)
        if early is not None:
            e = early(e)
        return e, self.transformer(e, drop)

    def _eval_late(self, h: torch.Tensor) -> torch.Tensor:
        """Test-mode head input ``cat(h, mu(A_aug) + mu(N_aug))`` ``[B, T, 2H]``."""
        _, a_aug = self.memory_a(h)
        _, n_aug = self.memory_n(h)
        return torch.cat([h, self.encoder_mu(a_aug) + self.encoder_mu(n_aug)], dim=-1)

    # ---------------------------------------------------------------------------------------- forward

    def forward(
        self,
        x: torch.Tensor,
        early: Hook | None = None,
        late: Hook | None = None,
        *,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | URDMUOutput:
        """``sample`` overrides :attr:`sample`; ``generator`` draws the train-mode noise."""
        if self.training:
            return self._forward_train(x, early, late, self.sample if sample is None else sample, generator)
        return self._forward_eval(x, early, late)

    def _forward_eval(self, x: torch.Tensor, early: Hook | None, late: Hook | None) -> torch.Tensor:
        if x.dim() == 4:
            b, n, T, D = x.shape
            x = x.reshape(b * n, T, D)
        elif x.dim() == 3:
            b, n = x.shape[0], 1
        else:
            raise ValueError(f"URDMU expects [b,n,T,D] or [B,T,D] features, got shape {list(x.shape)}")
        _, h = self._trunk(x, early, drop=False)
        f = self._eval_late(h)  # (B, T, 2H)
        if late is not None:
            f = late(f)
        return self.head(f).view(b, n, -1).mean(1)  # (b, T) crop mean

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Early ``[B, T, H]`` and late ``[B, T, 2H]`` features as in eval mode (no dropout, no hooks)."""
        e, h = self._trunk(x, None, drop=False)
        return {"early": e, "late": self._eval_late(h)}

    def _forward_train(
        self, x: torch.Tensor, early: Hook | None, late: Hook | None, sample: bool, generator: torch.Generator | None
    ) -> URDMUOutput:
        if x.dim() != 3 or x.shape[0] % 2:
            raise ValueError(f"URDMU train mode expects [B,T,D] with B even (normal half first), got {list(x.shape)}")
        B, T, _ = x.shape
        half = B // 2
        _, h = self._trunk(x, early, drop=self.training)
        n_x, a_x = h[:half], h[half:]  # (B/2, T, H) normal, abnormal
        A_att, A_aug = self.memory_a(a_x)  # abnormal video -> abnormal memory
        N_Aatt, N_Aaug = self.memory_n(a_x)  # abnormal video -> normal memory
        A_Natt, A_Naug = self.memory_a(n_x)  # normal video -> abnormal memory
        N_att, N_aug = self.memory_n(n_x)  # normal video -> normal memory

        k = time_topk(T)
        a_idx = torch.topk(A_att, k, dim=-1)[1]  # (B/2, k)
        n_idx = torch.topk(N_att, k, dim=-1)[1]
        p_idx = torch.topk(N_Aatt, k, dim=-1)[1]
        negative = _gather_mean(a_x, a_idx)  # (B/2, H)
        anchor = _gather_mean(n_x, n_idx)
        positive = _gather_mean(a_x, p_idx)
        triplet = F.triplet_margin_loss(_l2n(anchor), _l2n(positive), _l2n(negative), margin=1.0)

        n_mu = self.encoder_mu(N_aug)  # (B/2, T, H)
        n_logvar = self.encoder_var(N_aug)
        if sample:
            std = torch.exp(n_logvar).sqrt()
            eps = torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
            n_z = n_mu + eps * std
        else:
            n_z = n_mu
        a_mu = self.encoder_mu(A_aug)
        # QUIRK (official latent_loss): the KL sums over dim 1, the time axis, then averages the rest
        kl = torch.mean(-0.5 * torch.sum(1 + n_logvar - n_mu**2 - n_logvar.exp(), dim=1))
        distance = F.relu(
            100 - _gather_mean(a_mu, a_idx).norm(p=2, dim=-1) + _gather_mean(n_z, n_idx).norm(p=2, dim=-1)
        ).mean()
        aug = torch.cat([n_z + self.encoder_mu(A_Naug), a_mu + self.encoder_mu(N_Aaug)], dim=0)  # (B, T, H)
        f = torch.cat([h, aug], dim=-1)  # (B, T, 2H)
        if late is not None:
            f = late(f)
        return URDMUOutput(self.head(f), A_att, N_att, A_Natt, N_Aatt, triplet, kl, distance)

    # ------------------------------------------------------------------------------------ checkpoints

    @classmethod
    def from_official_state_dict(
        cls, sd: Mapping[str, torch.Tensor], cfg: URDMUConfig | None = None, source: str = "official UR-DMU state dict"
    ) -> URDMU:
        """Build from an official UR-DMU state dict (``WSAD.state_dict()`` key names); ``source`` names it in errors."""
        sd = official_to_pivad(sd)
        model = cls(cfg if cfg is not None else _infer_config(sd, source))
        model.load_state_dict_checked(sd, source=source)
        return model

    def load_state_dict_checked(self, sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """``load_state_dict`` with a one-line :class:`CheckpointError` for missing/unexpected keys or shapes."""
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {_short(missing)}")
            if unexpected:
                parts.append(f"unexpected keys {_short(unexpected)}")
            raise CheckpointError(f"{source}: {'; '.join(parts)}")
        for k, v in own.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise CheckpointError(f"{source}: {k} has shape {list(sd[k].shape)}, the model expects {list(v.shape)}")
        self.load_state_dict(dict(sd))


def _gather_mean(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mean of the rows ``idx`` ``[B, k]`` of ``x`` ``[B, T, H]`` -> ``[B, H]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])).mean(1)


def _l2n(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` as the official ``norm`` (no epsilon)."""
    return x / torch.norm(x, p=2, dim=-1, keepdim=True)


def _short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


# official key -> pivad key (regular expressions, applied in order)
_OFFICIAL_KEYS = [
    (r"^embedding\.conv_1\.0\.", "embed."),
    (r"^cls_head\.mlp\.0\.", "head.fc1."),
    (r"^cls_head\.mlp\.2\.", "head.fc2."),
    (r"^Amemory\.memory_block$", "memory_a.memory"),
    (r"^Nmemory\.memory_block$", "memory_n.memory"),
    (r"^selfatt\.layers\.(\d+)\.0\.norm\.", r"layers.\1.norm1."),
    (r"^selfatt\.layers\.(\d+)\.0\.fn\.to_qkv\.", r"layers.\1.attn.to_qkv."),
    (r"^selfatt\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"layers.\1.attn.to_out."),
    (r"^selfatt\.layers\.(\d+)\.1\.norm\.", r"layers.\1.norm2."),
    (r"^selfatt\.layers\.(\d+)\.1\.fn\.net\.0\.", r"layers.\1.ff.fc1."),
    (r"^selfatt\.layers\.(\d+)\.1\.fn\.net\.3\.", r"layers.\1.ff.fc2."),
    (r"^encoder_mu\.0\.", "encoder_mu."),
    (r"^encoder_var\.0\.", "encoder_var."),
]


def official_to_pivad(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official UR-DMU keys to this module's; keys that match no rule are kept (and then rejected)."""
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel
    out = {}
    for key, value in sd.items():
        new = key
        for pattern, repl in _OFFICIAL_KEYS:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                break
        out[new] = value
    return out


def _infer_config(sd: Mapping[str, torch.Tensor], source: str) -> URDMUConfig:
    """Widths from a (renamed) official state dict. The head count cannot be read from the weights: the
    official code always uses ``cfg.heads`` (4) heads, so ``dim_head`` is the q width over 4."""
    cfg = URDMUConfig()
    try:
        w = sd["embed.weight"]
        cfg.hidden_dim, cfg.input_dim = int(w.shape[0]), int(w.shape[1])
        cfg.a_nums = int(sd["memory_a.memory"].shape[0])
        cfg.n_nums = int(sd["memory_n.memory"].shape[0])
        cfg.depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
        cfg.head_dim = int(sd["head.fc1.weight"].shape[0])
        cfg.dim_head = int(sd["layers.0.attn.to_qkv.weight"].shape[0]) // (4 * cfg.heads)
        cfg.mlp_dim = int(sd["layers.0.ff.fc1.weight"].shape[0])
    except (KeyError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{source}: missing or malformed key {exc}") from None
    return cfg
