"""Image preprocessing on the model's device: resize rules of the models' own processors, in torch.

Frames arrive as ``uint8 [M, H, W, 3]`` tensors; the helpers return ``float32 [M, 3, h, w]``.
Resizing uses ``torch.nn.functional.interpolate(..., antialias=True)`` (PIL-like filters), so a batch
of frames is processed on the GPU in one call instead of one PIL image at a time. The size rules
follow the Hugging Face processors of each model (tests compare them with the ``*ImageProcessorPil``
classes); mean/std come from the weights' ``preprocessor_config.json`` where one exists.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """``uint8 [M, H, W, 3]`` -> ``float32 [M, 3, H, W]`` in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """``[M, 3, H, W]`` -> ``[M, 3, h, w]``, antialiased, clamped to [0, 1] like an 8-bit image."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """Size with the shorter side ``short`` and the aspect kept (CLIP's ``shortest_edge`` rule)."""
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``[.., H, W]`` to ``size`` around the centre (top/left offsets rounded as in the HF processors)."""
    h, w = x.shape[-2:]
    top = int(round((h - size[0]) / 2.0))
    left = int(round((w - size[1]) / 2.0))
    return x[..., top : top + size[0], left : left + size[1]]


def dpt_size(h: int, w: int, target: int, multiple: int) -> tuple[int, int]:
    """The DPT processor's ``keep_aspect_ratio`` rule: scale as little as possible towards
    ``target`` x ``target``, then round each side to a multiple of ``multiple``."""
    sh, sw = target / h, target / w
    if abs(1 - sw) < abs(1 - sh):
        sh = sw
    else:
        sw = sh

    def fit(v: float) -> int:
        y = round(v / multiple) * multiple
        return y if y >= multiple else math.ceil(v / multiple) * multiple

    return fit(sh * h), fit(sw * w)


def longest_side_size(h: int, w: int, longest: int) -> tuple[int, int]:
    """SAM's rule: the longer side becomes ``longest``, sizes rounded to the nearest integer."""
    scale = longest / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def pad_bottom_right(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``[M, 3, h, w]`` to ``size`` at the bottom and right (SAM pads after normalising)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, size[1] - w, 0, size[0] - h))


def crop_boxes(
    frames: torch.Tensor, boxes: torch.Tensor, frame_of_box: torch.Tensor, out_hw: tuple[int, int], padding: float = 1.25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-down person crops, the ViTPose way: each box ``(x0, y0, x1, y1)`` (pixels) is grown to the
    crop's aspect ratio, scaled by ``padding``, and resampled (bilinear, zeros outside the frame)
    to ``out_hw``.

    frames: ``float [M, 3, H, W]``; boxes: ``[P, 4]``; frame_of_box: ``long [P]`` (which frame).
    Returns crops ``[P, 3, h, w]``, the crop windows' centres ``[P, 2]`` and sizes ``[P, 2]`` (x, y, in pixels).
    """
    out_h, out_w = out_hw
    H, W = frames.shape[-2:]
    boxes = boxes.to(frames.dtype)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (P, 2) x, y
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    aspect = out_w / out_h
    wider = bw > aspect * bh
    bh = torch.where(wider, bw / aspect, bh)
    bw = torch.where(wider, bw, bh * aspect)
    size = torch.stack([bw, bh], dim=1) * padding  # (P, 2)
    # output pixel centres (normalised -1..1 over the crop) -> frame coordinates (normalised -1..1)
    theta = torch.zeros(len(boxes), 2, 3, dtype=frames.dtype, device=frames.device)
    theta[:, 0, 0] = size[:, 0] / W
    theta[:, 1, 1] = size[:, 1] / H
    theta[:, 0, 2] = 2 * centre[:, 0] / W - 1
    theta[:, 1, 2] = 2 * centre[:, 1] / H - 1
    grid = F.affine_grid(theta, [len(boxes), 3, out_h, out_w], align_corners=False)  # (P, h, w, 2)
    crops = F.grid_sample(frames[frame_of_box], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return crops, centre, size
