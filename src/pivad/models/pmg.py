"""Pseudo Modality Generation (PMG), π-VAD (CVPR 2025) Section 4.2, eq. 1.

One encoder shared by all modalities maps the student's feature F* to a low-dimensional latent; per
modality j a Linear layer makes a modality-specific view of that latent and a Conv1d decoder turns it
into the pseudo-modality embedding ê_j:

    h   = ReLU(Conv1d_{k=3}(F*))            # (B, T, L)   shared encoder
    ê_j = Conv1d_{k=3}(ReLU(W_j h + b_j))   # (B, T, d_j) per-modality view + decoder

The paper names no activation between the per-modality Linear and the decoder; without one the two
would collapse into a single linear map, so a ReLU sits there (a ``pivad`` choice). The decoder output
is linear: the targets e_j are unbounded backbone embeddings.

Axis letters: B batch (crops), T snippets, D input width, L latent width, d_j modality width.
"""

from __future__ import annotations

import torch
from torch import nn


def check_modality_names(names: list[str]) -> None:
    """Modality names become module keys: non-empty, unique, no dots."""
    if not names:
        raise ValueError("at least one modality is needed")
    if len(set(names)) != len(names):
        raise ValueError(f"modality names must be unique, got {names}")
    for name in names:
        if not name or "." in name or not name.isidentifier():
            raise ValueError(f"modality name {name!r} must be an identifier (letters, digits, underscores)")


class TemporalConv(nn.Module):
    """Conv1d over the snippet axis of ``[B,T,C]`` features (kernel 3, zero padding 1: T is kept)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C) -> (B, T, C')


class ModalityDecoder(nn.Module):
    """One modality's branch: Linear(L→L) + ReLU, then Conv1d(L→d_j, k=3)."""

    def __init__(self, latent_dim: int, out_dim: int):
        super().__init__()
        self.view = nn.Linear(latent_dim, latent_dim)
        self.act = nn.ReLU()
        self.decoder = TemporalConv(latent_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.act(self.view(h)))  # (B, T, L) -> (B, T, d_j)


class PMG(nn.Module):
    """F* ``[B,T,D]`` -> pseudo modalities ``{name: [B,T,d_j]}``."""

    def __init__(self, in_dim: int, latent_dim: int, modalities: dict[str, int]):
        super().__init__()
        check_modality_names(list(modalities))
        self.encoder = TemporalConv(in_dim, latent_dim)
        self.act = nn.ReLU()
        self.decoders = nn.ModuleDict({name: ModalityDecoder(latent_dim, dim) for name, dim in modalities.items()})

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.act(self.encoder(f))  # (B, T, L)
        return {name: decoder(h) for name, decoder in self.decoders.items()}  # name -> (B, T, d_j)
