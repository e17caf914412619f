"""The Poly-modal Inductor (PI), π-VAD (CVPR 2025) Section 4.1: PMG followed by CMI.

A PI takes the student's feature F* ``[B,T,D]`` at one point and returns F_M* ``[B,T,D]``, which replaces
F* as the input of the next student block. ``source="pseudo"`` (the paper's model) feeds PMG's
pseudo-modalities into CMI, so inference needs RGB only. ``source="real"`` feeds given modality
features into CMI instead and builds no PMG (paper Table 3 row 4, Table 5's middle column).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pivad.models.cmi import CMI
from pivad.models.pmg import PMG

SOURCES = ("pseudo", "real")


@dataclass
class PIOutput:
    out: torch.Tensor  # F_M* (B, T, D)
    pseudo: dict[str, torch.Tensor]  # ê_j (B, T, d_j); empty with source="real"
    aligned: dict[str, torch.Tensor]  # z_j (B, T, D)


class PI(nn.Module):
    """PMG + CMI at one point of the student."""

    def __init__(
        self,
        dim: int,
        modalities: dict[str, int],
        latent_dim: int = 256,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        source: str = "pseudo",
    ):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"inductor.modality_source must be one of {SOURCES}, got {source!r}")
        self.source = source
        self.pmg = PMG(dim, latent_dim, modalities) if source == "pseudo" else None
        self.cmi = CMI(dim, modalities, depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)

    def inputs(self, f: torch.Tensor, real: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """What CMI consumes: PMG's ê_j, or the given real features."""
        if self.pmg is not None:
            return self.pmg(f)
        if real is None:
            raise ValueError("modality_source 'real' needs the modality features at every forward")
        return real

    def forward(self, f: torch.Tensor, real: dict[str, torch.Tensor] | None = None) -> PIOutput:
        mods = self.inputs(f, real)
        out, aligned = self.cmi(f, mods)
        return PIOutput(out=out, pseudo=mods if self.pmg is not None else {}, aligned=aligned)
