"""Pose: ViTPose (Xu et al., 2022) through ``transformers``' VitPoseForPoseEstimation (top-down, COCO 17 keypoints).

Person boxes: without a person detector the whole frame is one box (the documented fallback: the box
is grown to the model's 3:4 input aspect and padded by 1.25, as ViTPose's processor does for any box).
With ``detector=`` an RT-DETR model spec (``transformers`` RTDetrForObjectDetection, e.g.
``PekingU/rtdetr_r50vd_coco_o365``) the people it finds are used (score above a threshold, at most
``max_people`` per frame); any callable ``boxes(frames) -> list of [P_i, 4] tensors`` (pixels,
x0 y0 x1 y1) works too. A frame with no person gets the zero vector.

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

import json
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from pivad.extract.backbones import preprocess as pp
from pivad.extract.backbones.base import TorchImageBackbone
from pivad.extract.backbones.weights import describe_weights, is_tiny, load_pretrained, read_preprocessor_config, seeded

DEFAULT_MODEL = "usyd-community/vitpose-base-simple"
DEFAULT_DETECTOR = "PekingU/rtdetr_r50vd_coco_o365"
N_KEYPOINTS = 17

BoxFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def whole_frame_boxes(frames: torch.Tensor) -> list[torch.Tensor]:
    """One box per frame covering the whole frame. frames: ``[M, 3, H, W]``."""
    h, w = frames.shape[-2:]
    box = torch.tensor([[0.0, 0.0, float(w), float(h)]], device=frames.device)
    return [box] * frames.shape[0]


def tiny_detector() -> Any:
    """A tiny random RT-DETR (labels person/car/dog) for tests."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic",
                                  out_features=["stage2", "stage3", "stage4"])
    labels = {0: "person", 1: "car", 2: "dog"}
    cfg = RTDetrConfig(
        backbone_config=backbone, d_model=16, encoder_hidden_dim=16, encoder_in_channels=[16, 16, 32],
        feat_strides=[8, 16, 32], encoder_ffn_dim=32, encoder_attention_heads=2, decoder_ffn_dim=32,
        decoder_attention_heads=2, decoder_layers=1, encoder_layers=1, num_queries=10, decoder_in_channels=[16, 16, 16],
        num_feature_levels=3, decoder_n_points=2, num_labels=3, id2label=labels,
        label2id={v: k for k, v in labels.items()}, anchor_image_size=None,
    )
    with seeded():
        return RTDetrForObjectDetection(cfg)


class RTDetrPersons:
    """Person boxes from an RT-DETR detector: frames resized to ``size`` (bilinear, no normalisation,
    as RT-DETR's processor), class scores by sigmoid, boxes with a person score above ``threshold``,
    the ``max_people`` best per frame, clipped to the frame."""

    def __init__(self, model: Any, *, weights: dict[str, Any], device: str = "cpu", threshold: float = 0.5,
                 max_people: int = 10, size: tuple[int, int] = (640, 640)):
        from pivad.errors import PivadError

        from pivad.extract.backbones.base import resolve_device

        names = {int(k): str(v).lower() for k, v in model.config.id2label.items()}
        person = [k for k, v in names.items() if v == "person"]
        if not person:
            raise PivadError("pose detector: the model has no 'person' class")
        self.person, self.weights = person[0], weights
        self.model = model.to(resolve_device(device)).eval()
        self.threshold, self.max_people, self.size = float(threshold), int(max_people), tuple(size)

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        H, W = frames.shape[-2:]
        out = self.model(pixel_values=pp.resize(frames, self.size, "bilinear"))
        score = out.logits.float().sigmoid()[..., self.person]  # (M, Q)
        cx, cy, w, h = out.pred_boxes.float().unbind(-1)  # (M, Q) each, fractions of the frame
        scale = torch.tensor([W, H, W, H], dtype=score.dtype, device=score.device)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).clamp(0, 1) * scale  # (M, Q, 4)
        boxes = []
        for s, b in zip(score, xyxy):
            keep = torch.nonzero(s > self.threshold).flatten()
            keep = keep[s[keep].argsort(descending=True)[: self.max_people]]
            boxes.append(b[keep])
        return boxes

    def describe(self) -> str:
        return (f"RT-DETR person detector ({json.dumps(self.weights, sort_keys=True)}), score > {self.threshold}, "
                f"at most {self.max_people} per frame, input {self.size[0]}x{self.size[1]}")


def build_detector(spec: str, *, device: str = "cpu", threshold: float = 0.5, max_people: int = 10) -> RTDetrPersons:
    if is_tiny(spec):
        return RTDetrPersons(tiny_detector(), weights=describe_weights(spec), device=device, threshold=threshold,
                             max_people=max_people, size=(64, 64))
    from transformers import RTDetrForObjectDetection

    model = load_pretrained(RTDetrForObjectDetection, spec, "RT-DETR")
    return RTDetrPersons(model, weights=describe_weights(spec, model), device=device, threshold=threshold,
                         max_people=max_people)


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
        self.dataset_index = 0  # ViTPose+ expert: 0 = COCO
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
        extra = {}
        if getattr(self.model.config.backbone_config, "num_experts", 1) > 1:  # ViTPose+ (mixture of experts)
            extra["dataset_index"] = torch.full((P,), self.dataset_index, dtype=torch.long, device=pixels.device)
        fmap = self.model.backbone(pixels, **extra).feature_maps[-1]  # (P, gh*gw, C)
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
          micro_batch: int = 32, detector: BoxFn | str | None = None, detector_name: str = "",
          threshold: float = 0.5, max_people: int = 10) -> VitPoseFeatures:
    """Pose features from a model spec (``tiny-random``, a local directory, or a hub name).
    ``detector``: None (whole frame), an RT-DETR model spec, or a callable. ``layer`` is not
    configurable for pose (the heatmap head's input is used) and must be None."""
    if layer is not None:
        from pivad.errors import PivadError

        raise PivadError("pose: --pose-layer is not configurable (features come from the heatmap head's input)")
    if isinstance(detector, str):
        found = build_detector(detector, device=device, threshold=threshold, max_people=max_people)
        detector, detector_name = found, found.describe()
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
