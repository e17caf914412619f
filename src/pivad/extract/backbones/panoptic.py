"""Panoptic / segmentation: the image encoder of SAM (Kirillov et al., 2023) through ``transformers``' SamModel.

Feature (default ``layer="neck"``): the image embedding the mask decoder reads (the encoder's neck
output, 256 channels on a 64 x 64 grid for 1024-pixel inputs), averaged over the grid cells that cover
the image (the zero padding SAM adds below/right of the resized frame is left out), then averaged over
the snippet's sampled frames. ``layer=k`` takes the k-th ViT block's output instead (width 768 for
ViT-B), pooled the same way.

Preprocessing follows SAM's processor: longest side to 1024 (the encoder's fixed input size),
bilinear, ImageNet mean/std, zero padding to 1024 x 1024.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pivad.errors import PivadError
from pivad.extract.backbones import preprocess as pp
from pivad.extract.backbones.base import TorchImageBackbone
from pivad.extract.backbones.weights import describe_weights, is_tiny, load_pretrained, read_preprocessor_config, seeded

DEFAULT_MODEL = "facebook/sam-vit-base"


def tiny_model() -> Any:
    """A tiny random SAM (2-block ViT, width 32, 64-pixel input, 16-channel neck) for tests."""
    from transformers import SamConfig, SamModel, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16,
        output_channels=16, mlp_dim=64, window_size=2, global_attn_indexes=[1],
        initializer_range=0.02,  # SAM's default (1e-10) would make every tiny feature ~0
    )
    with seeded():
        return SamModel(SamConfig(vision_config=vision))


class SamEncoderFeatures(TorchImageBackbone):
    modality = "panoptic"

    def __init__(
        self, model: Any, *, weights: dict[str, Any] | None = None, device: str = "cpu", frames: int = 1,
        layer: int | str = "neck", mean=pp.IMAGENET_MEAN, std=pp.IMAGENET_STD, micro_batch: int = 8,
    ):
        encoder = model.vision_encoder  # prompt encoder and mask decoder are not needed
        super().__init__(encoder, device, frames, micro_batch)
        cfg = encoder.config
        self.n_layers = cfg.num_hidden_layers
        self.image_size, self.patch = int(cfg.image_size), int(cfg.patch_size)
        if layer in ("neck", None):
            self.layer: int | str = "neck"
            self.dim = cfg.output_channels
        else:
            k = int(layer)
            k = self.n_layers + 1 + k if k < 0 else k
            if not 1 <= k <= self.n_layers:
                raise PivadError(f"panoptic layer must be 'neck' or in 1..{self.n_layers}, got {layer}")
            self.layer, self.dim = k, cfg.hidden_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.weights = weights or {}

    def preprocess(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = pp.to_float(frames)  # (M, 3, H, W)
        h, w = pp.longest_side_size(x.shape[-2], x.shape[-1], self.image_size)
        x = pp.normalize(pp.resize(x, (h, w), "bilinear"), self.mean, self.std)
        x = pp.pad_bottom_right(x, (self.image_size, self.image_size))  # (M, 3, S, S)
        return x, (math.ceil(h / self.patch), math.ceil(w / self.patch))

    def frame_features(self, inputs: tuple[torch.Tensor, tuple[int, int]]) -> torch.Tensor:
        pixels, (gh, gw) = inputs
        if self.layer == "neck":
            emb = self.model(pixels).last_hidden_state  # (M, C, g, g)
            return emb[:, :, :gh, :gw].mean(dim=(2, 3))  # (M, C)
        hid = self.model(pixels, output_hidden_states=True).hidden_states[self.layer]  # (M, g, g, C)
        return hid[:, :gh, :gw].mean(dim=(1, 2))  # (M, C)

    def describe(self) -> dict[str, Any]:
        layer = "neck output (the image embedding the mask decoder reads)" if self.layer == "neck" else \
            f"ViT block {self.layer} of {self.n_layers} output"
        return {
            "backbone": "SAM image encoder (transformers SamModel.vision_encoder)",
            "weights": self.weights,
            "layer": layer,
            "pooling": "mean over the grid cells covering the image (padding excluded), then mean over the sampled frames",
            "preprocessing": {
                "resize": f"longest side {self.image_size}, bilinear antialiased, zero-padded to {self.image_size}x{self.image_size}",
                "mean": list(self.mean), "std": list(self.std),
            },
            "frames_per_snippet": len(self.frame_indices),
            "frame_indices": list(self.frame_indices),
            "dim": self.dim,
        }


def build(spec: str = DEFAULT_MODEL, *, device: str = "cpu", frames: int = 1, layer: int | str | None = None,
          micro_batch: int = 8) -> SamEncoderFeatures:
    """Panoptic features from a model spec (``tiny-random``, a local directory, or a hub name)."""
    layer = "neck" if layer is None else layer
    if is_tiny(spec):
        return SamEncoderFeatures(tiny_model(), weights=describe_weights(spec), device=device, frames=frames,
                                  layer=layer, micro_batch=micro_batch)
    from transformers import SamModel

    model = load_pretrained(SamModel, spec, "SAM")
    proc = read_preprocessor_config(spec)
    return SamEncoderFeatures(
        model, weights=describe_weights(spec, model), device=device, frames=frames, layer=layer,
        mean=proc.get("image_mean", pp.IMAGENET_MEAN), std=proc.get("image_std", pp.IMAGENET_STD), micro_batch=micro_batch,
    )
