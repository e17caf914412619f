"""Models by name: ``build_model("urdmu" | "pivad", cfg)``."""

from __future__ import annotations

from torch import nn

from pivad.models.pivad import PIVAD
from pivad.models.urdmu import URDMU

KINDS = ("urdmu", "pivad")


def build_model(kind: str, cfg) -> nn.Module:
    """UR-DMU (``cfg.model``) or π-VAD (``cfg.model``, ``cfg.inductor``, ``cfg.loss``, ``cfg.data.modalities``)."""
    if kind == "urdmu":
        return URDMU(cfg.model)
    if kind == "pivad":
        return PIVAD(cfg.model, cfg.inductor, cfg.loss, cfg.data.modalities)
    raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
