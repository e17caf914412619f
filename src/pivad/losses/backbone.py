"""Each backbone's own training loss, found by the type of its train output."""

from __future__ import annotations

import torch

from pivad.losses.mil import mil_loss
from pivad.losses.pel4vad import pel4vad_loss
from pivad.losses.rtfm import rtfm_loss
from pivad.models.pel4vad import PEL4VADOutput
from pivad.models.rtfm import RTFMOutput
from pivad.models.urdmu import URDMUOutput


def backbone_loss(out, labels: torch.Tensor, cfg=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, parts)`` of a backbone's train output; ``cfg`` (the run's Config) gives its loss settings."""
    if isinstance(out, URDMUOutput):
        return mil_loss(out, labels)
    if isinstance(out, PEL4VADOutput):
        return pel4vad_loss(out, labels, lamda=cfg.pel4vad.lamda if cfg is not None else 1.0)
    if isinstance(out, RTFMOutput):  # normal half first; each crop row a one-crop video (docs/rtfm.md)
        return rtfm_loss(out, labels, cfg.rtfm if cfg is not None else None)
    raise TypeError(f"backbone_loss: no loss for a {type(out).__name__} (register it in pivad.losses.backbone)")
