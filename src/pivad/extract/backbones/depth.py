"""Depth: Depth Anything V2 (Yang et al., 2024) through ``transformers``' DepthAnythingForDepthEstimation.

Feature: a hidden state of the DINOv2 encoder that the DPT depth head reads (default the last block,
after the encoder's final LayerNorm, as the head sees it), averaged over the patch tokens (the CLS
token left out), then averaged over the snippet's sampled frames. Width = the encoder's hidden size
(384 Small, 768 Base, 1024 Large).

Preprocessing follows the model's DPT processor: keep the aspect ratio, scale as little as possible
towards 518 x 518, round both sides to a multiple of the patch size (14), bicubic, ImageNet mean/std.
"""

from __future__ import annotations

from typing import Any

import torch

from pivad.errors import PivadError
from pivad.extract.backbones import preprocess as pp
from pivad.extract.backbones.base import TorchImageBackbone
from pivad.extract.backbones.weights import describe_weights, is_tiny, load_pretrained, read_preprocessor_config, seeded, size_of

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"


def tiny_model() -> Any:
    """A tiny random DepthAnything (4-block DINOv2, width 32, patch 14) for tests."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=56, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, apply_layernorm=True,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone, fusion_hidden_size=16, neck_hidden_sizes=[8, 16, 32, 32],
        head_hidden_size=8, reassemble_hidden_size=32, patch_size=14,
    )
    with seeded():
        return DepthAnythingForDepthEstimation(cfg)


class DepthAnythingFeatures(TorchImageBackbone):
    modality = "depth"

    def __init__(
        self, model: Any, *, weights: dict[str, Any] | None = None, device: str = "cpu", frames: int = 2,
        layer: int = -1, size: int = 518, mean=pp.IMAGENET_MEAN, std=pp.IMAGENET_STD, micro_batch: int = 16,
    ):
        encoder = model.backbone  # the DINOv2 encoder; the DPT neck and head are not needed
        super().__init__(encoder, device, frames, micro_batch)
        cfg = encoder.config
        self.n_layers = cfg.num_hidden_layers
        self.layer = self.n_layers + 1 + layer if layer < 0 else layer
        if not 1 <= self.layer <= self.n_layers:
            raise PivadError(f"depth layer must be in 1..{self.n_layers} (or negative from the end), got {layer}")
        self.patch = cfg.patch_size
        self.skip_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self.apply_layernorm = bool(getattr(cfg, "apply_layernorm", True))
        self.dim = cfg.hidden_size
        self.size, self.mean, self.std = int(size), tuple(mean), tuple(std)
        self.weights = weights or {}

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        x = pp.to_float(frames)  # (M, 3, H, W)
        x = pp.resize(x, pp.dpt_size(x.shape[-2], x.shape[-1], self.size, self.patch), "bicubic")
        return pp.normalize(x, self.mean, self.std)  # (M, 3, h, w)

    def frame_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixels, output_hidden_states=True)
        h = out.hidden_states[self.layer]  # (M, 1 + tokens, C)
        if self.apply_layernorm:
            h = self.model.layernorm(h)
        return h[:, self.skip_tokens :].mean(dim=1)  # (M, C)

    def describe(self) -> dict[str, Any]:
        return {
            "backbone": "Depth Anything V2 (transformers DepthAnythingForDepthEstimation), DINOv2 encoder",
            "weights": self.weights,
            "layer": f"encoder hidden state {self.layer} of {self.n_layers}, after the encoder's final LayerNorm",
            "pooling": "mean over patch tokens (CLS excluded), then mean over the sampled frames",
            "preprocessing": {
                "resize": f"DPT keep-aspect rule towards {self.size}x{self.size}, sides multiple of {self.patch}, bicubic antialiased",
                "mean": list(self.mean), "std": list(self.std),
            },
            "frames_per_snippet": len(self.frame_indices),
            "frame_indices": list(self.frame_indices),
            "dim": self.dim,
        }


def build(spec: str = DEFAULT_MODEL, *, device: str = "cpu", frames: int = 2, layer: int | None = None,
          micro_batch: int = 16) -> DepthAnythingFeatures:
    """Depth features from a model spec (``tiny-random``, a local directory, or a hub name)."""
    if is_tiny(spec):
        return DepthAnythingFeatures(tiny_model(), weights=describe_weights(spec), device=device, frames=frames,
                                     layer=-1 if layer is None else layer, size=56, micro_batch=micro_batch)
    from transformers import DepthAnythingForDepthEstimation

    model = load_pretrained(DepthAnythingForDepthEstimation, spec, "Depth Anything")
    proc = read_preprocessor_config(spec)
    size = size_of(proc, "size", default=518)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return DepthAnythingFeatures(
        model, weights=describe_weights(spec, model), device=device, frames=frames,
        layer=-1 if layer is None else layer, size=int(size),
        mean=proc.get("image_mean", pp.IMAGENET_MEAN), std=proc.get("image_std", pp.IMAGENET_STD), micro_batch=micro_batch,
    )
