"""Pillow's antialiasing Lanczos resize, bit for bit, computed only for a box of the output.

The field's features resize every frame with PIL's Lanczos to 340x256 before cropping 224x224 boxes.
For the centre crop alone, resizing the whole frame spends 40 % of the work on pixels that are cut
away, and PIL's own ``box=`` argument moves the sampling positions by a rounding error (±1 grey level
in places), so it is not the same. :class:`LanczosBox` computes the output pixels of one box the way
Pillow computes them (Resample.c: coefficients per output pixel, normalised and turned into
fixed-point integers with 22 fractional bits; one pass rounded and clipped to 8 bits, then the other)
as two sparse products in float64, where every sum of the integer products is exact. Which pass comes
first is Pillow's choice (older Pillow: always horizontal; Pillow 13 picks by cost), so each box is
checked once against the installed Pillow on a random frame, in both orders, and falls back to
Pillow itself if neither order matches. The result equals ``Image.resize(size, Image.LANCZOS)``
cropped to the box (tested on real frames and random sizes, up- and downscaling); on 768x576 frames
the centre crop takes 1.5-1.8 ms on 2 threads against PIL's 3.0 ms for the whole frame
(docs/detect.md).

Axis legend: H, W input height and width; h, w output box height and width.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
SUPPORT = 3.0  # Lanczos-3


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -SUPPORT <= x < SUPPORT else 0.0


@lru_cache(maxsize=64)
def pillow_coefficients(in_size: int, out_size: int) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """Per output pixel ``(first input pixel, taps)`` and its integer coefficients ``[out_size, ksize]``,
    in the order and double precision of Pillow's ``precompute_coeffs`` and ``normalize_coeffs_8bpc``
    (``math.sin`` is the C library's ``sin``, as Pillow's)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    bounds, kk = [], np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        taps = min(int(center + support + 0.5), in_size) - xmin
        weights = [_lanczos((x + xmin - center + 0.5) * (1.0 / filterscale)) for x in range(taps)]
        total = 0.0
        for w in weights:
            total += w
        for x, w in enumerate(weights):
            w = w / total if total != 0.0 else w
            kk[xx, x] = int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS))
        bounds.append((xmin, taps))
    return tuple(bounds), kk


def _sparse(bounds, kk: np.ndarray, width: int, shift: int) -> torch.Tensor:
    """The coefficients as a CSR matrix ``[len(bounds), width]`` over input pixels ``shift...``."""
    crow, col, val = [0], [], []
    for j, (first, taps) in enumerate(bounds):
        col.extend(range(first - shift, first - shift + taps))
        val.extend(float(v) for v in kk[j, :taps])
        crow.append(len(col))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": what is used here is tested bit for bit
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(col),
                                       torch.tensor(val, dtype=torch.float64), (len(bounds), width))  # fmt: skip


def _round_clip(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8``: ``floor((acc + 2^21) / 2^22)`` clipped to [0, 255] (exact in float64)."""
    return acc.add_(2.0 ** (PRECISION_BITS - 1)).mul_(2.0**-PRECISION_BITS).floor_().clamp_(0, 255)


class LanczosBox:
    """``uint8 [H,W,3] -> uint8 [y1-y0, x1-x0, 3]``: the box ``(x0, y0, x1, y1)`` of PIL's Lanczos resize
    of a ``in_size = (W, H)`` frame to ``out_size = (w, h)``."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], box: tuple[int, int, int, int]):
        (width, height), (w, h) = in_size, out_size
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"box {box} is not inside the {w}x{h} output")
        cols, kh = pillow_coefficients(width, w)
        rows, kv = pillow_coefficients(height, h)
        cols, rows = cols[x0:x1], rows[y0:y1]
        self.c0, self.c1 = cols[0][0], max(a + b for a, b in cols)  # input columns the box reads
        self.r0, self.r1 = rows[0][0], max(a + b for a, b in rows)  # input rows the box reads
        self.horizontal = _sparse(cols, kh[x0:x1], self.c1 - self.c0, self.c0)  # (w', W')
        self.vertical = _sparse(rows, kv[y0:y1], self.r1 - self.r0, self.r0)  # (h', H')
        self.in_size, self.out_size, self.box, self.w, self.h = (width, height), (w, h), box, x1 - x0, y1 - y0
        self.order = self._pillows_order()  # "hv", "vh", or None: Pillow itself

    def _horizontal_first(self, x: torch.Tensor) -> torch.Tensor:
        """``x [H',W',3] uint8 -> [h',w',3]`` float64: rows resampled first, then columns."""
        x = x.transpose(0, 1).contiguous()  # (W', H', 3)
        cols, rows = x.shape[:2]
        t = _round_clip(torch.sparse.mm(self.horizontal, x.view(cols, rows * 3).to(torch.float64)))  # (w', H'*3)
        t = t.view(self.w, rows, 3).transpose(0, 1).reshape(rows, self.w * 3)  # (H', w'*3)
        return _round_clip(torch.sparse.mm(self.vertical, t)).view(self.h, self.w, 3)

    def _vertical_first(self, x: torch.Tensor) -> torch.Tensor:
        """``x [H',W',3] uint8 -> [h',w',3]`` float64: columns resampled first, then rows."""
        rows, cols = x.shape[:2]
        t = _round_clip(torch.sparse.mm(self.vertical, x.reshape(rows, cols * 3).to(torch.float64)))  # (h', W'*3)
        t = t.view(self.h, cols, 3).transpose(0, 1).reshape(cols, self.h * 3)  # (W', h'*3)
        out = _round_clip(torch.sparse.mm(self.horizontal, t))  # (w', h'*3)
        return out.view(self.w, self.h, 3).transpose(0, 1)

    def _pillow(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        x0, y0, x1, y1 = self.box
        return np.ascontiguousarray(np.asarray(Image.fromarray(frame).resize(self.out_size, Image.LANCZOS))[y0:y1, x0:x1])

    def _pillows_order(self) -> str | None:
        """The pass order that reproduces the installed Pillow on a random frame (None: neither does)."""
        frame = np.random.default_rng(0).integers(0, 256, (self.in_size[1], self.in_size[0], 3), dtype=np.uint8)
        expected = self._pillow(frame)
        x = torch.from_numpy(frame)[self.r0 : self.r1, self.c0 : self.c1]
        for order, run in (("hv", self._horizontal_first), ("vh", self._vertical_first)):
            if np.array_equal(run(x).to(torch.uint8).numpy(), expected):
                return order
        return None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim != 3 or frame.shape[2] != 3 or (frame.shape[1], frame.shape[0]) != self.in_size:
            raise ValueError(f"expected a {self.in_size[0]}x{self.in_size[1]} RGB frame, got shape {frame.shape}")
        if self.order is None:
            return self._pillow(frame)
        x = torch.from_numpy(frame)[self.r0 : self.r1, self.c0 : self.c1]  # (H', W', 3)
        out = self._horizontal_first(x) if self.order == "hv" else self._vertical_first(x)
        return np.ascontiguousarray(out.to(torch.uint8).numpy())


@lru_cache(maxsize=8)
def lanczos_box(in_size: tuple[int, int], out_size: tuple[int, int], box: tuple[int, int, int, int]) -> LanczosBox:
    """A :class:`LanczosBox`, built once per frame size, output size and box."""
    return LanczosBox(in_size, out_size, box)
