"""The field's I3D preprocessing: resize each frame, take 10, 5, 2 or 1 crops, scale to [-1,1].

What the widely used extractor behind the published UCF-Crime/XD-Violence I3D features does
(frames resized with PIL to exactly 340x256 (w x h) using its antialiasing Lanczos filter, values
``x*2/255 - 1``, 224x224 crops) and what :func:`crop_boxes` reproduces:

* 10 crops, in this order: 0 top-left, 1 top-right, 2 centre, 3 bottom-left, 4 bottom-right, then 5..9
  the same five boxes taken from the horizontally flipped frame. Because the frame is flipped before
  cropping, crop 5 is the mirror image of crop 1 (not of crop 0), 6 of 0, 7 of 2, 8 of 4, 9 of 3.
* 5 crops: crops 0..4 above (no flips).
* 2 crops: the centre crop and the centre box of the flipped frame (crops 2 and 7 above; the second is
  the mirror image of the first when ``w - 224`` is even, as for 340). Not a published set's scheme,
  but the same test-time augmentation as 10 crops at a fifth of the cost; models trained on 2 crops
  (the demo's synthetic data) are scored with the features they expect.
* 1 crop: the centre crop (crop 2 above), top-left corner at ``((h-224)//2, (w-224)//2)`` = (16, 58) for 256x340.

Axis legend: N snippets, K crops, T frames, H height, W width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

CROP = 224
CROP_COUNTS = (1, 2, 5, 10)  # the crop schemes crop_boxes knows (module docstring)
FIELD_SIZE = (340, 256)  # (width, height) of the field's resize
INTERPOLATIONS = ("lanczos", "bilinear")


@dataclass(frozen=True)
class Resize:
    """``size=(w,h)`` resizes to exactly that size; ``short=n`` scales the shorter side to n (aspect kept,
    rounded) as Kinetics-style pipelines and the i3d golden do. ``interp``: ``lanczos`` = PIL's
    antialiasing Lanczos (the field's extractor), ``bilinear`` = OpenCV INTER_LINEAR (no antialiasing)."""

    size: tuple[int, int] | None = FIELD_SIZE
    short: int | None = None
    interp: str = "lanczos"

    def __post_init__(self) -> None:
        if (self.size is None) == (self.short is None):
            raise ValueError("give exactly one of size or short")
        if self.interp not in INTERPOLATIONS:
            raise ValueError(f"interp must be one of {INTERPOLATIONS}")

    @classmethod
    def parse(cls, text: str, interp: str = "lanczos") -> "Resize":
        """``"340x256"`` (w x h) or ``"short:256"``."""
        text = text.strip().lower()
        try:
            if text.startswith("short:"):
                return cls(size=None, short=int(text[len("short:"):]), interp=interp)
            w, h = text.split("x")
            return cls(size=(int(w), int(h)), interp=interp)
        except ValueError:
            raise ValueError(f"bad resize {text!r}: expected WxH (e.g. 340x256) or short:N") from None

    def target(self, width: int, height: int) -> tuple[int, int]:
        """Output ``(w, h)`` for an input frame of ``width x height``."""
        if self.size is not None:
            return self.size
        scale = self.short / min(width, height)
        return int(round(width * scale)), int(round(height * scale))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``uint8 [H,W,3] -> uint8 [h,w,3]``."""
        height, width = frame.shape[:2]
        w, h = self.target(width, height)
        if (w, h) == (width, height):
            return frame
        if self.interp == "bilinear":
            import cv2

            return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        from PIL import Image

        return np.asarray(Image.fromarray(frame).resize((w, h), Image.LANCZOS))


    def centre_crop(self, size: int = CROP) -> Callable[[np.ndarray], np.ndarray]:
        """``uint8 [H,W,3] -> uint8 [size,size,3]``: the centre crop of the resized frame, the pixels that
        ``self(frame)`` then :func:`take_crops` with one crop give. With Lanczos only the crop is computed,
        bit for bit as PIL would (:mod:`pivad.video.lanczos`)."""

        def transform(frame: np.ndarray) -> np.ndarray:
            height, width = frame.shape[:2]
            w, h = self.target(width, height)
            if w < size or h < size:
                raise ValueError(f"a {size}x{size} crop does not fit in the {w}x{h} resized frame")
            y, x = (h - size) // 2, (w - size) // 2  # crop_boxes' centre
            if self.interp == "lanczos" and (w, h) != (width, height):
                from pivad.video.lanczos import lanczos_box

                return lanczos_box((width, height), (w, h), (x, y, x + size, y + size))(frame)
            return np.ascontiguousarray(self(frame)[y : y + size, x : x + size])

        return transform


def frame_transform(resize: Resize | None, crops: int, crop_size: int = CROP,
                    prefetch: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """What each decoded frame becomes before I3D, and on how many threads. One crop: only the centre crop
    is resized (:meth:`Resize.centre_crop`), else the whole frame; on a pool of torch's threads between
    I3D calls (inline decoding, the default) or in the decode thread with ``prefetch > 0``."""
    import torch

    pool = 1 if prefetch > 0 else torch.get_num_threads()
    if resize is None:
        return (lambda frame: frame), 1
    return (resize.centre_crop(crop_size) if crops == 1 else resize), pool


def check_crops(crops: int) -> int:
    """``crops`` if :func:`crop_boxes` knows that scheme, else PivadError (one line)."""
    from pivad.errors import PivadError

    if crops not in CROP_COUNTS:
        raise PivadError(f"--crops {crops}: must be one of {', '.join(map(str, CROP_COUNTS))}")
    return crops


def check_crop(resize: Resize, crop_size: int) -> None:
    """PivadError unless a ``crop_size`` square fits in every frame ``resize`` produces."""
    from pivad.errors import PivadError

    side = min(resize.size) if resize.size is not None else resize.short
    if crop_size < 1:
        raise PivadError(f"--crop-size {crop_size}: must be >= 1")
    if crop_size > side:
        made = f"{resize.size[0]}x{resize.size[1]}" if resize.size is not None else f"short side {resize.short}"
        raise PivadError(f"--crop-size {crop_size}: larger than the resized frames ({made}); "
                         f"use a crop of at most {side} or a larger --resize")


def crop_boxes(height: int, width: int, n_crops: int, size: int = CROP) -> list[tuple[int, int, bool]]:
    """``(y0, x0, flipped)`` of each crop, in the field's order (see the module docstring)."""
    if n_crops not in CROP_COUNTS:
        raise ValueError(f"n_crops must be one of {CROP_COUNTS}")
    if height < size or width < size:
        raise ValueError(f"frame {width}x{height} is smaller than the {size}x{size} crop")
    centre = ((height - size) // 2, (width - size) // 2)
    if n_crops == 1:
        return [(*centre, False)]
    if n_crops == 2:
        return [(*centre, False), (*centre, True)]
    five = [(0, 0), (0, width - size), centre, (height - size, 0), (height - size, width - size)]
    boxes = [(y, x, False) for y, x in five]
    if n_crops == 10:
        boxes += [(y, x, True) for y, x in five]
    return boxes


def take_crops(snippets: np.ndarray, n_crops: int, size: int = CROP) -> np.ndarray:
    """``uint8 [N,T,H,W,3] -> uint8 [N,K,T,size,size,3]``; flipped crops come from the mirrored frame."""
    height, width = snippets.shape[2:4]
    out = []
    for y, x, flipped in crop_boxes(height, width, n_crops, size):
        source = snippets[:, :, :, ::-1] if flipped else snippets  # (N, T, H, W, 3) mirrored along W
        out.append(source[:, :, y : y + size, x : x + size])
    return np.ascontiguousarray(np.stack(out, axis=1))  # (N, K, T, size, size, 3)


def to_model_input(clips: np.ndarray, device=None, dtype=None, channels_last: bool = False):
    """``uint8 [..., T, H, W, 3] -> float32 torch [prod(...), 3, T, H, W]`` in [-1, 1] (``x/127.5 - 1``).

    With ``device``, the uint8 values are moved first (4x less to copy) and scaled there. ``dtype``
    (e.g. ``torch.bfloat16``): the scaled values cast to it (scaling itself is done in float32).
    ``channels_last``: the result is ``channels_last_3d``, the frames' own layout (no transposing copy;
    what I3D's oneDNN path wants), else contiguous."""
    import torch

    flat = clips.reshape(-1, *clips.shape[-4:])  # (M, T, H, W, 3)
    x = torch.from_numpy(np.ascontiguousarray(flat))
    if device is not None:
        x = x.to(device)
    x = x.float().div_(127.5).sub_(1.0)  # (M, T, H, W, 3) float32
    x = (x if dtype is None else x.to(dtype)).permute(0, 4, 1, 2, 3)  # (M, 3, T, H, W), channels_last_3d strides
    return x.contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
