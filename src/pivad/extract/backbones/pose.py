"""Pose: ViTPose (Xu et al., 2022) through ``transformers``' VitPoseForPoseEstimation (top-down, COCO 17 keypoints).

Person boxes: without a person detector the whole frame is one box (the documented fallback: the box
is grown to the model's 3:4 input aspect and padded by 1.25, as ViTPose's processor does for any box).
A detector can be plugged in as a callable ``boxes(frames) -> list of [P_i, 4] tensors`` (pixels,
x0 y0 x1 y1); a frame with no person then gets the zero vector.

Per person, with F the backbone's last feature map ``[C, h, w]`` (what the heatmap head reads) and
``H_k`` the 17 keypoint heatmaps:
- keypoint-attended feature: ``a_k = relu(H_k)`` average-pooled to ``h x w`` and normalised to sum 1;
  ``f_k = sum_xy a_k(xy) F(xy)``; the person feature is the confidence-weighted mean of the ``f_k``
  (weights ``max(0, max H_k)``);
- keypoint geometry: each heatmap's arg-max mapped back to frame coordinates, divided by the frame
  width/height (x, y in [0, 1] inside the frame), and its peak value (confidence).
Person vector = ``[person feature (C), x_1, y_1, ..., x_17, y_17, conf_1..conf_17]``, width C + 51
(819 for ViT-B). Frame vector = mean over its people (zeros without people); snippet = mean over the
sampled frames.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from pivad.extract.backbones import preprocess as pp
from pivad.extract.backbones.base import TorchImageBackbone
from pivad.extract.backbones.weights import describe_weights, is_tiny, load_pretrained, read_preprocessor_config, seeded

DEFAULT_MODEL = "usyd-community/vitpose-base-simple"
N_KEYPOINTS = 17

BoxFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def whole_frame_boxes(frames: torch.Tensor) -> list[torch.Tensor]:
    """One box per frame covering the whole frame. frames: ``[M, 3, H, W]``."""
    h, w = frames.shape[-2:]
    box = torch.tensor([[0.0, 0.0, float(w), float(h)]], device=frames.device)
    return [box] * frames.shape[0]


def tiny_model() -> Any:
    """A tiny random ViTPose (2-block ViT, width 32, 64 x 48 input, 17 heatmaps) for tests."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    backbone = VitPoseBackboneConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=[64, 48], patch_size=[16, 16], out_indices=[2],
    )
    with seeded():
        return VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=N_KEYPOINTS))


class VitPoseFeatures(TorchImageBackbone):
    modality = "pose"

    def __init__(
        self, model: Any, *, weights: dict[str, Any] | None = None, device: str = "cpu", frames: int = 2,
        detector: BoxFn | None = None, detector_name: str = "", padding: float = 1.25,
        mean=pp.IMAGENET_MEAN, std=pp.IMAGENET_STD, micro_batch: int = 32,
    ):
        super().__init__(model, device, frames, micro_batch)
        bcfg = model.config.backbone_config
        self.input_hw = (int(bcfg.image_size[0]), int(bcfg.image_size[1]))
        self.grid_hw = (self.input_hw[0] // bcfg.patch_size[0], self.input_hw[1] // bcfg.patch_size[1])
        self.n_keypoints = int(model.config.num_labels)
        self.channels = int(bcfg.hidden_size)
        self.dim = self.channels + 3 * self.n_keypoints
        self.detector = detector or whole_frame_boxes
        self.detector_name = detector_name if detector else "none (whole frame as one box)"
        self.padding, self.mean, self.std = float(padding), tuple(mean), tuple(std)
        self.weights = weights or {}

    def preprocess(self, frames: torch.Tensor) -> dict[str, Any]:
        x = pp.to_float(frames)  # (M, 3, H, W)
        boxes = list(self.detector(x))
        counts = torch.tensor([len(b) for b in boxes], device=x.device)
        owner = torch.repeat_interleave(torch.arange(len(boxes), device=x.device), counts)  # (P,)
        inputs: dict[str, Any] = {"n_frames": x.shape[0], "frame_hw": x.shape[-2:], "owner": owner}
        if len(owner):
            crops, centre, size = pp.crop_boxes(x, torch.cat(boxes).to(x.device), owner, self.input_hw, self.padding)
            inputs.update(pixels=pp.normalize(crops, self.mean, self.std), centre=centre, size=size)
        return inputs

    def person_vectors(self, pixels: torch.Tensor, centre: torch.Tensor, size: torch.Tensor,
                       frame_hw: Sequence[int]) -> torch.Tensor:
        """Person crops ``[P, 3, h, w]`` -> person vectors ``[P, C + 3K]``."""
        P = pixels.shape[0]
        gh, gw = self.grid_hw
        fmap = self.model.backbone(pixels).feature_maps[-1]  # (P, gh*gw, C)
        fmap = fmap.permute(0, 2, 1).reshape(P, -1, gh, gw).contiguous()  # (P, C, gh, gw)
        heat = self.model.head(fmap)  # (P, K, Hh, Wh)
        hh, hw = heat.shape[-2:]
        attn = F.adaptive_avg_pool2d(heat.clamp(min=0), (gh, gw)).flatten(2)  # (P, K, gh*gw)
        attn = attn / attn.sum(-1, keepdim=True).clamp(min=1e-6)
        kfeat = torch.einsum("pkn,pcn->pkc", attn, fmap.flatten(2))  # (P, K, C)
        peak, idx = heat.flatten(2).max(dim=-1)  # (P, K)
        w = peak.clamp(min=0)
        person = (w.unsqueeze(-1) * kfeat).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-6)  # (P, C)
        u = ((idx % hw).to(pixels.dtype) + 0.5) / hw  # (P, K) position across the crop, 0..1
        v = ((idx // hw).to(pixels.dtype) + 0.5) / hh
        H, W = frame_hw
        x = (centre[:, :1] + (u - 0.5) * size[:, :1]) / W  # (P, K)
        y = (centre[:, 1:] + (v - 0.5) * size[:, 1:]) / H
        coords = torch.stack([x, y], dim=-1).flatten(1)  # (P, 2K)
        return torch.cat([person, coords, peak], dim=1)  # (P, C + 3K)

    def frame_features(self, inputs: dict[str, Any]) -> torch.Tensor:
        owner = inputs["owner"]
        out = torch.zeros(inputs["n_frames"], self.dim, device=self.device)
        if len(owner):
            people = self.person_vectors(inputs["pixels"], inputs["centre"], inputs["size"], inputs["frame_hw"])
            out.index_add_(0, owner, people.float())
            counts = torch.bincount(owner, minlength=inputs["n_frames"]).clamp(min=1)
            out /= counts.unsqueeze(1)
        return out  # (M, C + 3K)

    def describe(self) -> dict[str, Any]:
        return {
            "backbone": "ViTPose (transformers VitPoseForPoseEstimation), top-down, COCO keypoints",
            "weights": self.weights,
            "person_boxes": self.detector_name,
            "layer": "backbone output feature map (the heatmap head's input) and the keypoint heatmaps",
            "pooling": (
                f"per person [heatmap-attended feature ({self.channels}), keypoint x,y in frame fractions "
                f"({2 * self.n_keypoints}), peak confidences ({self.n_keypoints})]; mean over people "
                "(zeros if none); mean over the sampled frames"
            ),
            "preprocessing": {
                "resize": f"box grown to {self.input_hw[1]}:{self.input_hw[0]} aspect, padding {self.padding}, "
                          f"bilinear crop to {self.input_hw[0]}x{self.input_hw[1]}",
                "mean": list(self.mean), "std": list(self.std),
            },
            "frames_per_snippet": len(self.frame_indices),
            "frame_indices": list(self.frame_indices),
            "dim": self.dim,
        }


def build(spec: str = DEFAULT_MODEL, *, device: str = "cpu", frames: int = 2, layer: Any = None,
          micro_batch: int = 32, detector: BoxFn | None = None, detector_name: str = "") -> VitPoseFeatures:
    """Pose features from a model spec (``tiny-random``, a local directory, or a hub name).
    ``layer`` is not configurable for pose (the head's input is used); it is accepted and must be None."""
    if layer is not None:
        from pivad.errors import PivadError

        raise PivadError("pose: --pose-layer is not configurable (features come from the heatmap head's input)")
    if is_tiny(spec):
        return VitPoseFeatures(tiny_model(), weights=describe_weights(spec), device=device, frames=frames,
                               detector=detector, detector_name=detector_name, micro_batch=micro_batch)
    from transformers import VitPoseForPoseEstimation

    model = load_pretrained(VitPoseForPoseEstimation, spec, "ViTPose")
    proc = read_preprocessor_config(spec)
    return VitPoseFeatures(
        model, weights=describe_weights(spec, model), device=device, frames=frames, detector=detector,
        detector_name=detector_name, mean=proc.get("image_mean", pp.IMAGENET_MEAN),
        std=proc.get("image_std", pp.IMAGENET_STD), micro_batch=micro_batch,
    )
