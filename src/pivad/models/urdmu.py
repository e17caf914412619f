"""UR-DMU: Dual Memory Units with Uncertainty Regulation (Zhou et al., AAAI 2023), π-VAD's teacher and student.

Computes what the official code (henrryzh1/UR-DMU, commit 40cfdf5) computes, in train and test
mode, including its quirks that change the numbers (each marked ``QUIRK``):

- the fixed distance attention is column-normalised (see :mod:`pivad.models.distance_kernel`);
- the KL term sums over the *time* axis and averages over the latent axis;
- top-k sizes are ``T // 16 + 1`` over time and ``slots // 16 + 1`` over memory slots;
- memory slots are drawn twice at init (so ``torch.manual_seed(s)`` gives the official initial weights).

What differs (same outputs up to float rounding, less work; docs/urdmu.md has the algebra): no CUDA
calls; the distance kernel is shared by all heads and applied as a band for long videos (``O(T)``
memory); the softmax branch uses ``F.scaled_dot_product_attention``; the distance branch's output
projection is folded into its input projection; both memories are read in one product and their
read-outs folded through ``encoder_mu``/``encoder_var``; the Conv1d is one product over time windows.
Dropout and the reparameterisation noise switch off cleanly (``dropout=0``, ``sample=False``).

Axes: B batch (videos x crops in eval), b videos, n crops, T snippets, D input width, H hidden width,
S memory slots.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pivad.config import URDMUConfig
from pivad.errors import CheckpointError
from pivad.models.backbone import Hook, flatten_crops, load_state_dict_checked
from pivad.models.checkpointing import run_block
from pivad.models.distance_kernel import apply_distance_kernel


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


def dropout(x: torch.Tensor, p: float, active: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with the keep mask drawn as ``rand >= p`` (about 3x faster on
    CPU than the Bernoulli sampler; the same distribution, a different random stream)."""
    if not active or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand_like(x) >= p
    return x * (keep * (1.0 / (1.0 - p))).to(x.dtype)


class FoldCache:
    """Weights derived from parameters (folded products, re-laid-out splits), rebuilt when one changes.

    Kept between calls only when no gradient can reach the parameters (grad mode off, or parameters
    frozen); otherwise built on each call so autograd flows through the fold to the parameters.
    """

    def __init__(self) -> None:
        self._store: dict[str, tuple[tuple, object]] = {}

    def get(self, key: str, params: tuple[torch.Tensor, ...], build: Callable[[], object]) -> object:
        # folds are built in the weights' dtype, autocast off (a bf16 forward casts them where they are used)
        no_autocast = autocast_off(params[0].device)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            with no_autocast:
                return build()
        stamp = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        hit = self._store.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with torch.inference_mode(False), torch.no_grad(), no_autocast:  # plain tensors, usable outside inference mode
            value = build()
        self._store[key] = (stamp, value)
        return value


class Attention(nn.Module):
    """Softmax self-attention beside the fixed distance branch; per head the two outputs are concatenated
    and projected by ``to_out``.

    Computed as ``softmax(q kᵀ/√d) v W_aᵀ + A2 (x W_foldᵀ) + b``: ``to_out``'s weight is split into its
    softmax-branch and distance-branch columns, and the latter is folded into ``t``'s projection
    (``W_fold = W_out,t · W_t``), which is exact because ``A2`` mixes time and the projections mix channels.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 4 * inner, bias=False)  # q, k, v, t
        self.to_out = nn.Linear(2 * inner, dim)  # input per head: [softmax branch, distance branch]
        self.distance_impl = "auto"  # auto | dense | banded (dense exports with a dynamic T)
        self._folds = FoldCache()

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            h, d = self.heads, self.dim_head
            inner = h * d
            w_qkvt = self.to_qkv.weight  # (4 inner, dim): q, k, v, t
            w_out = self.to_out.weight.view(-1, h, 2, d)  # (dim, h, 2, d): per head [softmax, distance] columns
            w_att = w_out[:, :, 0].reshape(-1, inner)  # (dim, inner)
            w_fold = w_out[:, :, 1].reshape(-1, inner) @ w_qkvt[3 * inner :]  # (dim, dim)
            return torch.cat([w_qkvt[: 3 * inner], w_fold]), w_att  # (3 inner + dim, dim), (dim, inner)

        return self._folds.get("attn", (self.to_qkv.weight, self.to_out.weight), build)

    def forward(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        B, T, _ = x.shape
        h, d = self.heads, self.dim_head
        inner = h * d
        w_in, w_att = self._weights()
        # split (not slicing): its backward is one concatenation instead of a zero-filled buffer per slice
        q, k, v, t = F.linear(x, w_in).split([inner, inner, inner, w_in.shape[0] - 3 * inner], dim=-1)
        q, k, v = (u.view(B, T, h, d).transpose(1, 2) for u in (q, k, v))  # (B, h, T, d)
        att = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d); scale d^-0.5 as the official
        att = att.transpose(1, 2).reshape(B, T, inner)  # (B, T, inner)
        out = F.linear(att, w_att, self.to_out.bias)  # (B, T, dim)
        out += apply_distance_kernel(t, self.distance_impl)  # A2 (x W_foldᵀ), shared by all heads
        return dropout(out, self.dropout, drop)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        x = dropout(F.gelu(self.fc1(x)), self.dropout, drop)
        return dropout(self.fc2(x), self.dropout, drop)


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
    """``S`` learnable slots ``[S, H]``. A read is ``att = sigmoid(x Mᵀ/√H)`` ``[B, T, S]``, scored by the
    mean of its top ``S // 16 + 1`` slots, with read-out ``att M`` ``[B, T, H]`` (see :class:`URDMU`)."""

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.slots, self.dim = slots, dim
        self.memory = nn.Parameter(torch.empty(slots, dim))
        bound = 1.0 / math.sqrt(dim)
        self.memory.data.uniform_(-bound, bound)
        # QUIRK (official memory.py): the slots are drawn twice; kept so seeded inits match the official
        self.memory.data.uniform_(-bound, bound)

    def score(self, att: torch.Tensor) -> torch.Tensor:
        """``[B, T, S]`` -> ``[B, T]``; QUIRK: k = S // 16 + 1 (4 for 60 slots)."""
        return topk_mean(att, self.slots // 16 + 1)


class ClassifierHead(nn.Module):
    """Linear(2H, 128)-ReLU-Linear(128, 1)-Sigmoid."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.fc1(x))

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        """From the first layer's pre-activation ``[B, T, 128]`` to scores ``[B, T]``."""
        return torch.sigmoid(self.fc2(F.relu(z))).squeeze(-1)


class URDMU(nn.Module):
    """UR-DMU. Eval: ``model(x)`` with x ``[b, n, T, D]`` or ``[B, T, D]`` -> crop-mean scores ``[b, T]``.
    Train: x ``[B, T, D]`` (normal half first) -> :class:`URDMUOutput`.

    ``early(F)`` / ``late(F)`` optionally replace the embedding output ``[B, T, H]`` (before the
    transformer) and the classifier-head input ``[B, T, 2H]``. ``model.to(torch.bfloat16)`` runs
    inference in bfloat16 (inputs are cast to the weights' dtype; scores come back in the input's dtype).

    The two memories are read together: ``att = sigmoid(x [M_a; M_n]ᵀ/√H)`` ``[B, T, S_a + S_n]``,
    abnormal slots first. Read-outs only ever enter ``encoder_mu`` / ``encoder_var`` (linear), so
    ``mu(att M) = att (M W_muᵀ) + b_mu`` is computed with the folded ``[S, H]`` product: a
    ``K = S`` product instead of a ``512 x 512`` one per snippet; without a late hook the classifier's
    first layer is folded in as well.
    """

    name = "urdmu"  # the backbone interface (pivad.models.backbone)
    placements = {"early": ("early",), "late": ("late",), "both": ("early", "late")}
    exact_prefix = ("early",)  # hook_features equals the train forward's feature there (π-VAD's step-1 shortcut)

    def __init__(self, cfg: URDMUConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or URDMUConfig()
        self.cfg = cfg
        H = cfg.hidden_dim
        self.input_dim = cfg.input_dim
        self.hook_points = {"early": H, "late": 2 * H}  # embedding output, classifier-head input
        # construction order mirrors the official WSAD so a seeded init gives the official weights
        self.embed = nn.Conv1d(cfg.input_dim, H, kernel_size=3, padding=1)
        self.head = ClassifierHead(2 * H, cfg.head_dim)
        self.memory_a = MemoryUnit(cfg.a_nums, H)
        self.memory_n = MemoryUnit(cfg.n_nums, H)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.depth))
        self.encoder_mu = nn.Linear(H, H)
        self.encoder_var = nn.Linear(H, H)  # log-variance
        self.sample = True  # draw the reparameterisation noise in train mode (False: z = mu)
        self.checkpoint_blocks = False  # recompute each transformer layer in backward (pivad.models.checkpointing)
        self._folds = FoldCache()

    # ------------------------------------------------------------------------------- folded weights

    def set_clean(self) -> "URDMU":
        """Train without dropout and without the reparameterisation noise (``z = mu``); returns self."""
        self.sample = False
        for module in self.modules():
            if isinstance(module, (Attention, FeedForward)):
                module.dropout = 0.0
        return self

    def _embed_weight(self) -> torch.Tensor:
        """Conv1d weight ``[H, D, 3]`` laid out as ``[H, 3D]`` (snippets t-1, t, t+1, each D wide)."""
        w = self.embed.weight
        return self._folds.get("embed", (w,), lambda: w.permute(0, 2, 1).reshape(w.shape[0], -1))

    def _read_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory keys ``[S, H]`` (scaled by 1/√H) and read-outs through encoder_mu ``[H, S]``, abnormal first."""
        a, n, w_mu = self.memory_a.memory, self.memory_n.memory, self.encoder_mu.weight

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            m = torch.cat([a, n])  # (S, H)
            return m / math.sqrt(m.shape[1]), w_mu @ m.t()

        return self._folds.get("read", (a, n, w_mu), build)

    def _head_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eval head layer 1 on ``cat(h, att W_readᵀ + 2 b_mu)`` as ``h W_hᵀ + att W_attᵀ + b``."""
        H = self.cfg.hidden_dim
        w1, b1, b_mu = self.head.fc1.weight, self.head.fc1.bias, self.encoder_mu.bias
        read = self._read_weights()[1]

        def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            w_aug = w1[:, H:]  # (hd, H)
            # eval read-out is mu(A_aug) + mu(N_aug): encoder_mu's bias enters twice
            return w1[:, :H], w_aug @ read, b1 + 2 * (w_aug @ b_mu)

        params = (w1, b1, b_mu, self.memory_a.memory, self.memory_n.memory, self.encoder_mu.weight)
        return self._folds.get("head", params, build)

    # ------------------------------------------------------------------------------------------ trunk

    def embed_features(self, x: torch.Tensor) -> torch.Tensor:
        """Temporal Conv1d(k=3, pad=1) + ReLU: ``[B, T, D]`` -> ``[B, T, H]``, as one product over windows."""
        xp = F.pad(x, (0, 0, 1, 1))  # (B, T+2, D) zero snippet either end
        windows = torch.cat([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], dim=-1)  # (B, T, 3D): snippets t-1, t, t+1
        return F.relu(F.linear(windows, self._embed_weight(), self.embed.bias))  # (B, T, H)

    def transformer(self, x: torch.Tensor, drop: bool) -> torch.Tensor:
        for layer in self.layers:
            x = run_block(layer, x, drop, enabled=self.checkpoint_blocks)  # (B, T, H)
        return x  # (B, T, H)

    def _trunk(self, x: torch.Tensor, early: Hook | None, drop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed_features(x)  # (B, T, H)
        if early is not None:
            e = early(e)
        return e, self.transformer(e, drop)

    def _memory_att(self, h: torch.Tensor) -> torch.Tensor:
        """Both memories read at once: ``[B, T, H]`` -> ``[B, T, S_a + S_n]``."""
        return torch.sigmoid(F.linear(h, self._read_weights()[0]))

    def _eval_late(self, h: torch.Tensor) -> torch.Tensor:
        """Test-mode head input ``cat(h, mu(A_aug) + mu(N_aug))`` ``[B, T, 2H]``."""
        read = self._read_weights()[1]
        return torch.cat([h, F.linear(self._memory_att(h), read, 2 * self.encoder_mu.bias)], dim=-1)

    # ---------------------------------------------------------------------------------------- forward

    def forward(
        self,
        x: torch.Tensor,
        early: Hook | None = None,
        late: Hook | None = None,
        *,
        hooks: Mapping[str, Hook] | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | URDMUOutput:
        """``hooks={"early"|"late": fn}`` is the backbone interface's form of ``early``/``late``;
        ``sample`` overrides :attr:`sample`; ``generator`` draws the train-mode noise."""
        if hooks:
            early, late = hooks.get("early", early), hooks.get("late", late)
        if self.training:
            return self._forward_train(x, early, late, self.sample if sample is None else sample, generator)
        return self._forward_eval(x, early, late)

    def _forward_eval(self, x: torch.Tensor, early: Hook | None, late: Hook | None) -> torch.Tensor:
        x, b, n = flatten_crops(x, "URDMU")
        in_dtype = x.dtype
        _, h = self._trunk(x.to(self.embed.weight.dtype), early, drop=False)
        if late is None:
            w_h, w_att, b1 = self._head_weights()
            z = F.linear(h, w_h, b1) + F.linear(self._memory_att(h), w_att)  # (B, T, hd) = fc1(late)
            scores = self.head.tail(z)
        else:
            scores = self.head(late(self._eval_late(h)))
        return scores.view(b, n, -1).mean(1).to(in_dtype)  # (b, T) crop mean

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Early ``[B, T, H]`` and late ``[B, T, 2H]`` features as in eval mode (no dropout, no hooks)."""
        e, h = self._trunk(x.to(self.embed.weight.dtype), None, drop=False)
        return {"early": e, "late": self._eval_late(h)}

    def hook_features(self, x: torch.Tensor, points) -> dict[str, torch.Tensor]:
        """Features at ``points`` (``early``, ``late``) as in eval mode, no hooks; the embedding alone when
        only ``early`` is asked for."""
        points = list(points)
        feats = {"early": self.embed_features(x.to(self.embed.weight.dtype))} if points == ["early"] else self.features(x)
        return {p: feats[p] for p in points}

    def _forward_train(
        self, x: torch.Tensor, early: Hook | None, late: Hook | None, sample: bool, generator: torch.Generator | None
    ) -> URDMUOutput:
        if x.dim() != 3 or x.shape[0] % 2:
            raise ValueError(f"URDMU train mode expects [B,T,D] with B even (normal half first), got {list(x.shape)}")
        B, T, _ = x.shape
        half, Sa = B // 2, self.cfg.a_nums
        _, h = self._trunk(x, early, drop=self.training)
        # splits rather than slices throughout: their backward is one concatenation, not zero-filled buffers
        n_x, a_x = h.split(half)  # (B/2, T, H) normal, abnormal
        att = self._memory_att(h)  # (B, T, S): abnormal memory slots first
        att_n, att_a = att.split(half)  # (B/2, T, S)
        att_na, att_nn = att_n.split(Sa, dim=-1)  # normal video read from the abnormal / normal memory
        att_aa, att_an = att_a.split(Sa, dim=-1)  # abnormal video read from the abnormal / normal memory
        A_att = self.memory_a.score(att_aa)  # abnormal video -> abnormal memory
        N_Aatt = self.memory_n.score(att_an)  # abnormal video -> normal memory
        A_Natt = self.memory_a.score(att_na)  # normal video -> abnormal memory
        N_att = self.memory_n.score(att_nn)  # normal video -> normal memory

        k = time_topk(T)
        a_idx = torch.topk(A_att, k, dim=-1)[1]  # (B/2, k)
        n_idx = torch.topk(N_att, k, dim=-1)[1]
        p_idx = torch.topk(N_Aatt, k, dim=-1)[1]
        negative = _gather_mean(a_x, a_idx)  # (B/2, H)
        anchor = _gather_mean(n_x, n_idx)
        positive = _gather_mean(a_x, p_idx)
        with fp32_losses(x):
            triplet = F.triplet_margin_loss(_l2n(anchor.float()), _l2n(positive.float()), _l2n(negative.float()),
                                            margin=1.0)

        read_mu = self._read_weights()[1]  # (H, S): mu(att M) = att read_muᵀ + b_mu
        read_mu_a, read_mu_n = read_mu.split(Sa, dim=1)
        b_mu = self.encoder_mu.bias
        read_var = self.encoder_var.weight @ self.memory_n.memory.t()  # (H, S_n): only the normal read needs var
        n_mu = F.linear(att_nn, read_mu_n, b_mu)  # (B/2, T, H) encoder_mu(N_aug)
        n_logvar = F.linear(att_nn, read_var, self.encoder_var.bias)  # encoder_var(N_aug)
        if sample:
            std = torch.exp(n_logvar).sqrt()
            eps = torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
            n_z = n_mu + eps * std
        else:
            n_z = n_mu
        # QUIRK (official latent_loss): the KL sums over dim 1, the time axis, then averages the rest
        # top-k mean of encoder_mu(A_aug) = encoder_mu of the top-k mean read (affine)
        a_mu_topk = F.linear(_gather_mean(att_aa, a_idx), read_mu_a, b_mu)  # (B/2, H)
        with fp32_losses(x):
            mu, logvar = n_mu.float(), n_logvar.float()
            kl = torch.mean(-0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1))
            n_top = _gather_mean(n_z, n_idx).float()  # (B/2, H)
            distance = F.relu(100 - a_mu_topk.float().norm(p=2, dim=-1) + n_top.norm(p=2, dim=-1)).mean()
        aug = torch.cat(
            [
                n_z + F.linear(att_na, read_mu_a, b_mu),  # z + encoder_mu(A_Naug)
                F.linear(att_a, read_mu, 2 * b_mu),  # encoder_mu(A_aug) + encoder_mu(N_Aaug)
            ]
        )  # (B, T, H)
        if late is None:
            w_h, w_aug = self.head.fc1.weight.split(self.cfg.hidden_dim, dim=1)
            scores = self.head.tail(F.linear(h, w_h, self.head.fc1.bias) + F.linear(aug, w_aug))
        else:
            scores = self.head(late(torch.cat([h, aug], dim=-1)))
        return URDMUOutput(scores, A_att, N_att, A_Natt, N_Aatt, triplet, kl, distance)

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
        load_state_dict_checked(self, sd, source)


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A region with autocast off (nothing to switch off on devices without autocast, e.g. ``meta``)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def fp32_losses(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off: loss terms computed inside a ``train.precision: bf16`` forward stay in float32
    (their inputs are cast with ``.float()``, a no-op in a float32 run)."""
    return autocast_off(x.device)


def _gather_mean(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mean of the rows ``idx`` ``[B, k]`` of ``x`` ``[B, T, H]`` -> ``[B, H]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])).mean(1)


def _l2n(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` as the official ``norm`` (no epsilon)."""
    return x / torch.norm(x, p=2, dim=-1, keepdim=True)


# official key prefix <-> pivad key prefix; "{n}" stands for a transformer layer index
_KEY_MAP = [
    ("embedding.conv_1.0.", "embed."),
    ("cls_head.mlp.0.", "head.fc1."),
    ("cls_head.mlp.2.", "head.fc2."),
    ("Amemory.memory_block", "memory_a.memory"),
    ("Nmemory.memory_block", "memory_n.memory"),
    ("selfatt.layers.{n}.0.norm.", "layers.{n}.norm1."),
    ("selfatt.layers.{n}.0.fn.to_qkv.", "layers.{n}.attn.to_qkv."),
    ("selfatt.layers.{n}.0.fn.to_out.0.", "layers.{n}.attn.to_out."),
    ("selfatt.layers.{n}.1.norm.", "layers.{n}.norm2."),
    ("selfatt.layers.{n}.1.fn.net.0.", "layers.{n}.ff.fc1."),
    ("selfatt.layers.{n}.1.fn.net.3.", "layers.{n}.ff.fc2."),
    ("encoder_mu.0.", "encoder_mu."),
    ("encoder_var.0.", "encoder_var."),
]


def _rename_table(src: int) -> list[tuple[str, str]]:
    """Regex rules from column ``src`` of :data:`_KEY_MAP` to the other column (prefixes; whole keys
    for the memory blocks, which have no trailing dot)."""
    rules = []
    for pair in _KEY_MAP:
        a, b = pair[src], pair[1 - src]
        pattern = "^" + re.escape(a).replace(r"\{n\}", r"(\d+)") + ("" if a.endswith(".") else "$")
        rules.append((pattern, b.replace("{n}", r"\1")))
    return rules


_OFFICIAL_TO_PIVAD = _rename_table(0)
_PIVAD_TO_OFFICIAL = _rename_table(1)


def official_to_pivad(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official UR-DMU keys to this module's; keys that match no rule are kept (and then rejected)."""
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel
    return {_rename(k, _OFFICIAL_TO_PIVAD): v for k, v in sd.items()}


def pivad_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This module's state dict under the official key names (loads into the official ``WSAD``)."""
    return {_rename(k, _PIVAD_TO_OFFICIAL): v for k, v in sd.items()}


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        new, hits = re.subn(pattern, repl, key)
        if hits:
            return new
    return key


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
