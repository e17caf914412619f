"""The Poly-modal Inductor (PI), π-VAD (CVPR 2025) Section 4.1: PMG followed by CMI.

A PI takes the student's feature F* ``[B,T,D]`` at one point and returns F_M* ``[B,T,D]``, which replaces
F* as the input of the next student block. ``source="pseudo"`` (the paper's model) feeds PMG's
pseudo-modalities into CMI, so inference needs RGB only. ``source="real"`` feeds given modality
features into CMI instead and builds no PMG (paper Table 3 row 4, Table 5's middle column).

``standardize=True`` holds per-dimension statistics of the real modality features (buffers, set from
the training set by :meth:`PI.set_modality_stats`): PMG is trained to produce standardised modalities,
(e_j − μ_j) / σ_j, and real modalities fed to CMI are standardised the same way. The backbones'
embeddings come at very different scales (a softmax panoptic map is ≈ 0.01 per entry), and eq. 1's
plain mean squared error otherwise weighs each modality by its raw variance.

``detach_pseudo=True`` stops the gradient of everything downstream (L_align through the projections,
L_distill and L_MIL through the fusion) at the pseudo-modalities, so PMG learns from L_PMG alone; its
encoder still passes L_PMG's gradient into F*.

``pmg_input="rgb"`` (a ``pivad`` deviation, docs/inductor.md) makes PMG read the student's RGB input
``[B,T,D_rgb]`` instead of F*: the paper's PMG reads F*, but a narrow learnt F* can drop the weak anomaly
direction of RGB that the modalities would make visible (docs/study.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pivad.models.checkpointing import run_block
from pivad.models.cmi import CMI
from pivad.models.pmg import PMG

SOURCES = ("pseudo", "real")
PMG_INPUTS = ("feature", "rgb")


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
        residual: str = "every",
        standardize: bool = False,
        detach_pseudo: bool = False,
        pmg_input: str = "feature",
        rgb_dim: int | None = None,
    ):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"inductor.modality_source must be one of {SOURCES}, got {source!r}")
        if pmg_input not in PMG_INPUTS:
            raise ValueError(f"inductor.pmg_input must be one of {PMG_INPUTS}, got {pmg_input!r}")
        if pmg_input == "rgb" and rgb_dim is None:
            raise ValueError("pmg_input 'rgb' needs rgb_dim (the student's input width)")
        self.source = source
        self.pmg_input = pmg_input
        pmg_dim = rgb_dim if pmg_input == "rgb" else dim
        self.pmg = PMG(pmg_dim, latent_dim, modalities) if source == "pseudo" else None
        self.cmi = CMI(dim, modalities, depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout,
                       residual=residual)
        self.standardize = standardize
        self.detach_pseudo = detach_pseudo
        self.checkpoint_blocks = False  # recompute PMG in backward (pivad.models.checkpointing)
        if standardize:
            for name, d in modalities.items():
                self.register_buffer(f"mean_{name}", torch.zeros(d))
                self.register_buffer(f"std_{name}", torch.ones(d))

    @torch.no_grad()
    def set_modality_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per-dimension mean and std ``[d_j]`` of each real modality (only with ``standardize``)."""
        if not self.standardize:
            raise ValueError("set_modality_stats: this PI was built without standardize")
        for name in self.cmi.names:
            mean, std = stats[name]
            getattr(self, f"mean_{name}").copy_(mean)
            getattr(self, f"std_{name}").copy_(std.clamp_min(1e-6))

    def normalise(self, real: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Real modality features in the space PMG predicts: standardised, or as given."""
        if not self.standardize:
            return real
        return {name: (m - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}") for name, m in real.items()}

    def pmg_source(self, f: torch.Tensor, rgb: torch.Tensor | None) -> torch.Tensor:
        """What PMG reads: F* ``[B,T,D]``, or with ``pmg_input="rgb"`` the student's RGB input ``[B,T,D_rgb]``."""
        if self.pmg_input != "rgb":
            return f
        if rgb is None:
            raise ValueError("pmg_input 'rgb': the PI needs the student's RGB input")
        return rgb.to(f.dtype)

    def inputs(self, f: torch.Tensor, real: dict[str, torch.Tensor] | None,
               rgb: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What CMI consumes: PMG's ê_j (from F* or from the RGB input ``rgb`` [B,T,D_rgb]), or the real features."""
        if self.pmg is not None:
            return self.pmg(self.pmg_source(f, rgb))
        if real is None:
            raise ValueError("modality_source 'real' needs the modality features at every forward")
        return self.normalise(real)

    def forward(self, f: torch.Tensor, real: dict[str, torch.Tensor] | None = None,
                rgb: torch.Tensor | None = None) -> PIOutput:
        if self.pmg is not None:  # PMG recomputed in backward with checkpointing: only its input is kept
            mods = run_block(self.pmg, self.pmg_source(f, rgb), enabled=self.checkpoint_blocks)  # name -> (B, T, d_j)
        else:
            mods = self.inputs(f, real)
        cmi_in = {k: v.detach() for k, v in mods.items()} if self.detach_pseudo and self.pmg is not None else mods
        out, aligned = self.cmi(f, cmi_in)
        return PIOutput(out=out, pseudo=mods if self.pmg is not None else {}, aligned=aligned)
