"""Models by name: ``build_model("urdmu" | "pel4vad" | "rtfm" | "pivad", cfg)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pivad.config import BACKBONES  # model.backbone values (pivad.models.backbone)
from pivad.errors import ConfigError
from pivad.models.pel4vad import PEL4VAD
from pivad.models.pivad import PIVAD
from pivad.models.rtfm import RTFMBackbone
from pivad.models.urdmu import URDMU

KINDS = BACKBONES + ("pivad",)


def backbone_builder(cfg, kind: str | None = None) -> Callable[[], nn.Module]:
    """A function that builds a fresh backbone of ``model.backbone`` (or ``kind``) from ``cfg``."""
    kind = kind or getattr(cfg.model, "backbone", "urdmu")
    if kind == "urdmu":
        return lambda: URDMU(cfg.model)
    if kind == "pel4vad":
        from pivad.data.prompts import load_prompts  # the prompt table is read once, shared by every build

        prompts = load_prompts(cfg.pel4vad.prompts)
        return lambda: PEL4VAD(cfg.model, cfg.pel4vad, prompts)
    if kind == "rtfm":
        return lambda: RTFMBackbone.from_config(cfg.rtfm, cfg.model.input_dim)
    raise ConfigError(f"model.backbone: unknown backbone {kind!r} (known: {', '.join(BACKBONES)})")


def build_model(kind: str, cfg) -> nn.Module:
    """A backbone (``urdmu``, ``pel4vad``, ``rtfm``: ``cfg.model`` and its own section) or π-VAD on ``model.backbone``
    (``cfg.model``, ``cfg.inductor``, ``cfg.loss``, ``cfg.data.modalities``)."""
    if kind in BACKBONES:
        return backbone_builder(cfg, kind)()
    if kind == "pivad":
        return PIVAD(cfg.model, cfg.inductor, cfg.loss, cfg.data.modalities, backbone=backbone_builder(cfg))
    raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
