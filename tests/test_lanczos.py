"""pivad.video.lanczos: a box of PIL's Lanczos resize, bit for bit, and the centre-crop transform on it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pivad.video.crops import Resize, take_crops
from pivad.video.decode import iter_frames
from pivad.video.lanczos import LanczosBox, lanczos_box


def _pil(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize(size, Image.LANCZOS))


@pytest.mark.parametrize("seed", range(12))
def test_any_box_of_any_resize_equals_pil(seed):
    """Random frame and output sizes (up- and downscaling, odd, one axis unchanged), random boxes; noise,
    flat areas and hard edges (where rounding and clipping to 0/255 show)."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(5, 420, 2))
    w, h = (int(v) for v in rng.integers(4, 360, 2))
    if seed == 0:
        w = width  # horizontal size kept: PIL skips that pass; the coefficients are then the identity
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame[: height // 3] = 255 * (rng.random((height // 3, width, 1)) > 0.5)  # saturated edges
    x0, x1 = sorted(int(v) for v in rng.choice(w + 1, 2, replace=False))
    y0, y1 = sorted(int(v) for v in rng.choice(h + 1, 2, replace=False))
    out = LanczosBox((width, height), (w, h), (x0, y0, x1, y1))(frame)
    np.testing.assert_array_equal(out, _pil(frame, (w, h))[y0:y1, x0:x1])


def test_real_frames_equal_pil(data_dir, shared_dir):
    """The field's 340x256 from a 176x144 clip (upscaling) and from vtest.avi's 768x576 (downscaling)."""
    for video, frames in ((data_dir / "videos" / "carphone_40.mp4", 40), (shared_dir / "data" / "videos" / "vtest.avi", 48)):
        for i, frame in zip(range(frames), iter_frames(video)):
            height, width = frame.shape[:2]
            full = _pil(frame, (340, 256))
            np.testing.assert_array_equal(lanczos_box((width, height), (340, 256), (0, 0, 340, 256))(frame), full)
            np.testing.assert_array_equal(lanczos_box((width, height), (340, 256), (58, 16, 282, 240))(frame),
                                          full[16:240, 58:282])  # fmt: skip


@pytest.mark.parametrize("resize", [Resize(), Resize.parse("short:256"), Resize(interp="bilinear"),
                                    Resize.parse("176x144")])  # fmt: skip
def test_centre_crop_is_the_single_crop_of_the_resized_frame(resize, data_dir):
    frames = np.stack([f for _, f in zip(range(16), iter_frames(data_dir / "videos" / "carphone_40.mp4"))])
    size = 112 if resize.size == (176, 144) else 224
    crop = resize.centre_crop(size)
    expected = take_crops(np.stack([resize(f) for f in frames])[None], 1, size)[0, 0]  # (16, size, size, 3)
    np.testing.assert_array_equal(np.stack([crop(f) for f in frames]), expected)


def test_bad_boxes_and_frames_are_refused():
    with pytest.raises(ValueError, match="not inside"):
        LanczosBox((100, 80), (50, 40), (0, 0, 51, 40))
    box = LanczosBox((100, 80), (50, 40), (0, 0, 50, 40))
    with pytest.raises(ValueError, match="expected a 100x80 RGB frame"):
        box(np.zeros((80, 101, 3), np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        Resize().centre_crop(300)(np.zeros((80, 100, 3), np.uint8))


def test_pass_order_follows_the_installed_pillow_else_pillow_itself(monkeypatch):
    """Pillow 13 resamples columns first where that is cheaper; each box checks both orders against the
    installed Pillow once, and a box neither order reproduces is handed to Pillow."""
    frame = np.random.default_rng(3).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    for out_size in ((110, 50), (50, 110)):
        box = LanczosBox((100, 100), out_size, (3, 4) + out_size)
        assert box.order in ("hv", "vh")
        np.testing.assert_array_equal(box(frame), _pil(frame, out_size)[4:, 3:])
    monkeypatch.setattr(LanczosBox, "_pillows_order", lambda self: None)
    box = LanczosBox((100, 100), (60, 40), (0, 0, 60, 40))
    assert box.order is None
    np.testing.assert_array_equal(box(frame), _pil(frame, (60, 40)))
