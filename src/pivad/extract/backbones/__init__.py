"""Modality backbones: one module per modality, each with ``build(spec, device=, frames=, layer=, ...)``.

| modality | module | default model | default frames per snippet |
|---|---|---|---|
| pose | pose.py | ViTPose-B simple (usyd-community/vitpose-base-simple) | 2 |
| depth | depth.py | Depth Anything V2 Small | 2 |
| panoptic | panoptic.py | SAM ViT-B image encoder | 1 |
| flow | flow.py | OpenCV DIS (``raft_small``/``raft_large`` with torchvision) | 15 pairs |
| text | text.py | CLIP ViT-B/16 (or a ViFi-CLIP checkpoint file) | 4 |
"""

from __future__ import annotations

import importlib
from typing import Any

from pivad.errors import PivadError
from pivad.extract.backbones.base import SNIPPET, Backbone, TorchImageBackbone, resolve_device, sample_frame_indices

MODALITIES = ("pose", "depth", "panoptic", "flow", "text")

DEFAULT_MODELS = {
    "pose": "usyd-community/vitpose-base-simple",
    "depth": "depth-anything/Depth-Anything-V2-Small-hf",
    "panoptic": "facebook/sam-vit-base",
    "flow": "dis",
    "text": "openai/clip-vit-base-patch16",
}
DEFAULT_FRAMES = {"pose": 2, "depth": 2, "panoptic": 1, "flow": 15, "text": 4}


def build_backbone(modality: str, spec: str | None = None, *, device: str = "cpu", frames: int | None = None,
                   layer: Any = None, precision: str = "fp32", **options: Any) -> Backbone:
    """The backbone of ``modality`` from a model spec (default :data:`DEFAULT_MODELS`).
    ``precision`` (fp32, bf16, fp16) applies to the neural image backbones; flow ignores it."""
    if modality not in MODALITIES:
        raise PivadError(f"unknown modality {modality!r} (known: {', '.join(MODALITIES)})")
    module = importlib.import_module(f"pivad.extract.backbones.{modality}")
    backbone = module.build(spec or DEFAULT_MODELS[modality], device=device,
                            frames=DEFAULT_FRAMES[modality] if frames is None else frames, layer=layer, **options)
    if isinstance(backbone, TorchImageBackbone):
        backbone.set_precision(precision)
    return backbone


__all__ = ["MODALITIES", "DEFAULT_MODELS", "DEFAULT_FRAMES", "SNIPPET", "Backbone", "build_backbone",
           "resolve_device", "sample_frame_indices"]
