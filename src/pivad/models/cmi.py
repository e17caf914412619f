"""Cross Modal Induction (CMI), π-VAD (CVPR 2025) Section 4.3, eqs. 2–4.

Each (pseudo-)modality embedding ê_j is projected to the student's width D (z_j, the embedding that
L_align aligns with F*); the aligned embeddings are concatenated along features, projected to D and
passed through a stack of pre-norm transformer blocks, with F* added to the stream before every block:

    z_j   = W_j ê_j + b_j                              # (B, T, D)   per-modality projection
    h_0   = W_f [z_1; …; z_M] + b_f                    # (B, T, D)   fusion
    h_k   = Block_k(h_{k-1} + F*),  k = 1..K           # F* added before each block
    F_M*  = h_K                                        # (B, T, D)   replaces F* in the student

``residual="between"`` adds F* only between blocks (k = 2..K, the paper's wording taken literally: with
K = 1 F* then reaches F_M* only through the pseudo-modalities).

No final LayerNorm: F_M* replaces a student feature of its own scale and is distilled towards the
teacher's feature at that point (eq. 4). The projections are on the inference path (they feed the
fusion), not heads used by the loss only.

Axis letters: B batch (crops), T snippets, D width, H heads, E width per head, M modalities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pivad.models.checkpointing import run_block
from pivad.models.pmg import check_modality_names


CMI_RESIDUALS = ("every", "between")


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention over snippets.

    Without attention dropout (eval, or ``dropout=0``) it is ``F.scaled_dot_product_attention``: the same
    result to float rounding, and no ``[B, H, T, T]`` probability tensor is made (kept for backward, or
    built whole for a long video in eval). With attention dropout active the explicit product is kept:
    SDPA would draw a different mask (other numbers) and on CPU has no fused kernel with dropout, so it
    would build the ``T x T`` tensor anyway; ``train.activation_checkpointing`` frees it there.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.heads)  # (B, H, T, E)
        if self.drop.training and self.drop.p > 0:
            attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)  # (B, H, T, T)
            out = torch.matmul(self.drop(attn), v)  # (B, H, T, E)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, T, E), no T x T kept
        return self.drop(self.proj(rearrange(out, "b h t e -> b t (h e)")))  # (B, T, D)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width ratio·D."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CMI(nn.Module):
    """F* ``[B,T,D]`` and modality embeddings ``{name: [B,T,d_j]}`` -> (F_M* ``[B,T,D]``, ``{name: z_j [B,T,D]}``)."""

    def __init__(
        self,
        dim: int,
        modalities: dict[str, int],
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        residual: str = "every",
    ):
        super().__init__()
        check_modality_names(list(modalities))
        if depth < 1:
            raise ValueError(f"CMI depth must be at least 1, got {depth}")
        if residual not in CMI_RESIDUALS:
            raise ValueError(f"inductor.cmi_residual must be one of {CMI_RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.names = list(modalities)
        self.proj = nn.ModuleDict({name: nn.Linear(d, dim) for name, d in modalities.items()})
        self.fuse = nn.Linear(len(modalities) * dim, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.checkpoint_blocks = False  # recompute the fusion and each block in backward (pivad.models.checkpointing)

    def align(self, modalities: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """z_j = W_j ê_j + b_j for every declared modality, in declaration order."""
        missing = [name for name in self.names if name not in modalities]
        if missing:
            raise ValueError(f"CMI: modality features missing for {missing}")
        return {name: self.proj[name](modalities[name]) for name in self.names}  # name -> (B, T, D)

    def forward(
        self, f: torch.Tensor, modalities: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        aligned = self.align(modalities)
        zs = [aligned[name] for name in self.names]
        h = run_block(self._fuse, *zs, enabled=self.checkpoint_blocks)  # (B, T, D); no M·D concat kept
        for k, block in enumerate(self.blocks):
            if k > 0 or self.residual == "every":
                h = run_block(_add_then, block, h, f, enabled=self.checkpoint_blocks)  # (B, T, D)
            else:
                h = run_block(block, h, enabled=self.checkpoint_blocks)
        return h, aligned

    def _fuse(self, *zs: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(zs, dim=-1))  # M x (B, T, D) -> (B, T, M·D) -> (B, T, D)

    @torch.no_grad()
    def modality_activations(self, f: torch.Tensor, modalities: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality activation curves in the first block, ``{name: [B,T]}`` (paper Figure 4, row 3).

        The first block's input h_0 + F* is a sum of one term per modality, c_j = W_f[:, j] z_j (the
        fusion is linear), plus F* and the bias. Its LayerNorm centres and scales every snippet by the
        same μ_t, σ_t, so it splits exactly into normalised per-modality terms
        ĉ_j = γ ⊙ (c_j − mean_D c_j) / σ_t. The activation of modality j at snippet t is the mean over
        channels of |ĉ_j(t)|: how strongly that modality drives the first block's normalised input.
        """
        aligned = self.align(modalities)
        norm = self.blocks[0].norm1
        x = self.fuse(torch.cat([aligned[name] for name in self.names], dim=-1))  # (B, T, D)
        if self.residual == "every":
            x = x + f
        sigma = torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + norm.eps)  # (B, T, 1)
        dim = f.shape[-1]
        out = {}
        for j, name in enumerate(self.names):
            c = F.linear(aligned[name], self.fuse.weight[:, j * dim : (j + 1) * dim])  # (B, T, D)
            c = (c - c.mean(dim=-1, keepdim=True)) / sigma * norm.weight
            out[name] = c.abs().mean(dim=-1)  # (B, T)
        return out


def _add_then(block: nn.Module, h: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``block(h + F*)``; checkpointed as one piece, so only ``h`` and the shared ``F*`` are kept."""
    return block(h + f)
