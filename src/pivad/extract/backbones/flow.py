"""Optical flow: OpenCV's DIS (Kroeger et al., 2016; dependency-light default) or RAFT (Teed & Deng,
2020; the paper's choice) via torchvision when torchvision is installed, both encoded per snippet by
one fixed descriptor.

Frame pairs: ``pairs`` consecutive pairs ``(i, i+1)`` inside the 16-frame snippet, their first frames
spread evenly over 0..14 (default 15 pairs: all of them). Frames are converted to grey (DIS) and
resized so that the longer side is ``size`` pixels (default 320, UCF-Crime's native width), so flow
is in pixels per frame at that scale whatever the video's resolution.

Descriptor (width ``grid * grid * bins``, default 4 x 4 x 8 = 128): the frame is split into a
``grid x grid`` array of cells; in each cell, a histogram of flow direction over ``bins`` equal sectors
of [0, 2*pi) (0 = +x, counter-clockwise in image coordinates, i.e. y pointing down), each pixel
voting its flow magnitude, divided by the cell's pixel count (so a bin holds the mean magnitude of
that direction in that cell). Cells are ordered row-major, bins within a cell. The descriptor is
averaged over the snippet's pairs. Identical frames (the padded end of a video) give zeros.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pivad.errors import PivadError
from pivad.extract.backbones.base import SNIPPET, Backbone, resolve_device, sample_frame_indices
from pivad.extract.backbones.weights import describe_weights, seeded

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


@functools.lru_cache(maxsize=16)
def _cell_index(h: int, w: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major grid cell of every pixel ``[h*w]`` and the pixel count of every cell ``[grid*grid]``."""
    cy = (np.arange(h) * grid) // h  # (h,)
    cx = (np.arange(w) * grid) // w  # (w,)
    cell = (cy[:, None] * grid + cx[None, :]).ravel()  # (h*w,)
    return cell, np.bincount(cell, minlength=grid * grid).astype(np.float64)


def flow_descriptor(flow: np.ndarray, grid: int = 4, bins: int = 8) -> np.ndarray:
    """``float [h, w, 2]`` flow (dx, dy) -> ``float32 [grid * grid * bins]`` (see the module docstring)."""
    h, w = flow.shape[:2]
    dx = flow[..., 0].ravel()
    dy = flow[..., 1].ravel()
    mag = np.hypot(dx, dy)
    ang = np.arctan2(dy, dx)  # (-pi, pi]
    ang = np.where(ang < 0, ang + 2 * np.pi, ang)
    b = np.minimum((ang * (bins / (2 * np.pi))).astype(np.int64), bins - 1)
    cell, pixels = _cell_index(h, w, grid)
    hist = np.bincount(cell * bins + b, weights=mag, minlength=grid * grid * bins)
    return (hist.reshape(grid * grid, bins) / pixels[:, None]).ravel().astype(np.float32)


def working_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) with the longer side ``size``, rounded to whole pixels."""
    scale = size / max(h, w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


class _FlowBackbone(Backbone):
    """Shared pair sampling and descriptor; subclasses compute ``flows(prev, next) -> [B, h, w, 2]``."""

    modality = "flow"

    def __init__(self, pairs: int = 15, grid: int = 4, bins: int = 8, size: int = 320):
        starts = sample_frame_indices(pairs, SNIPPET - 1)
        self.frame_indices = tuple(sorted({i for s in starts for i in (s, s + 1)}))
        pos = {f: j for j, f in enumerate(self.frame_indices)}
        self.pair_pos = [(pos[s], pos[s + 1]) for s in starts]  # positions in the sampled frames
        self.pairs, self.grid, self.bins, self.size = pairs, grid, bins, size
        self.dim = grid * grid * bins

    def flows(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """``uint8 [B, H, W, 3]`` x 2 -> ``float [B, h, w, 2]`` at the working size."""
        raise NotImplementedError

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        n = frames.shape[0]
        a = np.concatenate([frames[:, i] for i, _ in self.pair_pos])  # (pairs*N, H, W, 3), pair-major
        b = np.concatenate([frames[:, j] for _, j in self.pair_pos])
        desc = self.descriptors(a, b)  # (pairs*N, d)
        return desc.reshape(len(self.pair_pos), n, self.dim).mean(axis=0)  # (N, d)

    def descriptors(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """``uint8 [B, H, W, 3]`` x 2 -> ``float32 [B, dim]``."""
        return np.stack([flow_descriptor(f, self.grid, self.bins) for f in self.flows(prev, nxt)])

    def _describe(self, backbone: str, weights: dict[str, Any], layer: str) -> dict[str, Any]:
        return {
            "backbone": backbone,
            "weights": weights,
            "layer": layer,
            "pooling": (
                f"{self.grid}x{self.grid} grid x {self.bins} direction bins, magnitude-weighted, divided by cell "
                "pixel count; mean over the snippet's frame pairs"
            ),
            "preprocessing": {"resize": f"longer side {self.size} px", "pairs": [list(p) for p in self.pair_starts()]},
            "frames_per_snippet": len(self.frame_indices),
            "frame_indices": list(self.frame_indices),
            "dim": self.dim,
        }

    def pair_starts(self) -> list[tuple[int, int]]:
        return [(self.frame_indices[i], self.frame_indices[j]) for i, j in self.pair_pos]


class DISFlow(_FlowBackbone):
    """OpenCV DIS optical flow on grey frames (CPU)."""

    def __init__(self, pairs: int = 15, grid: int = 4, bins: int = 8, size: int = 320, preset: str = "medium",
                 threads: int | None = None):
        super().__init__(pairs, grid, bins, size)
        self.threads = max(1, threads or min(8, os.cpu_count() or 1))  # frame pairs computed in parallel
        if preset not in DIS_PRESETS:
            raise PivadError(f"DIS preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}")
        self.preset = preset

    def pair_flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Two ``uint8 [H, W, 3]`` frames -> ``float32 [h, w, 2]`` flow at the working size."""
        import cv2

        hw = working_size(prev.shape[0], prev.shape[1], self.size)

        def grey(img: np.ndarray) -> np.ndarray:
            g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            if g.shape != hw:
                interp = cv2.INTER_AREA if hw[0] < g.shape[0] else cv2.INTER_LINEAR
                g = cv2.resize(g, (hw[1], hw[0]), interpolation=interp)
            return g

        return cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset]).calc(grey(prev), grey(nxt), None)

    def flows(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        with ThreadPoolExecutor(self.threads) as pool:
            return np.stack(list(pool.map(self.pair_flow, prev, nxt)))

    def descriptors(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        # pairs are independent: a thread pool (OpenCV and numpy release the GIL); results do not
        # depend on the number of threads
        def one(p: np.ndarray, q: np.ndarray) -> np.ndarray:
            return flow_descriptor(self.pair_flow(p, q), self.grid, self.bins)

        with ThreadPoolExecutor(self.threads) as pool:
            return np.stack(list(pool.map(one, prev, nxt)))

    def describe(self) -> dict[str, Any]:
        import cv2

        return self._describe(f"OpenCV DIS optical flow (preset {self.preset}, OpenCV {cv2.__version__})",
                              {"source": "none (classical method)"}, "dense flow field")


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


class RAFTFlow(_FlowBackbone):
    """RAFT from torchvision (``raft_small`` / ``raft_large``); only when torchvision is importable."""

    def __init__(self, model: Any, *, weights: dict[str, Any], arch: str, device: str = "cpu", pairs: int = 15,
                 grid: int = 4, bins: int = 8, size: int = 320, micro_batch: int = 16):
        super().__init__(pairs, grid, bins, size)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.arch, self.weights, self.micro_batch = arch, weights, micro_batch

    def flows(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        import torch

        from pivad.extract.backbones import preprocess as pp

        h, w = working_size(prev.shape[1], prev.shape[2], self.size)
        h, w = max(8, 8 * round(h / 8)), max(8, 8 * round(w / 8))  # RAFT needs multiples of 8
        out = []
        with torch.inference_mode():
            for s in range(0, len(prev), self.micro_batch):
                ab = [pp.resize(pp.to_float(torch.from_numpy(np.ascontiguousarray(x[s : s + self.micro_batch])).to(self.device)),
                                (h, w), "bilinear") * 2 - 1 for x in (prev, nxt)]  # (B, 3, h, w) in [-1, 1]
                out.append(self.model(ab[0], ab[1])[-1].permute(0, 2, 3, 1).float().cpu().numpy())  # (B, h, w, 2)
        return np.concatenate(out)

    def describe(self) -> dict[str, Any]:
        return self._describe(f"RAFT ({self.arch}, torchvision)", self.weights, "final flow prediction (last refinement)")


def build(spec: str = "dis", *, device: str = "cpu", frames: int = 15, layer: Any = None, micro_batch: int = 16,
          grid: int = 4, bins: int = 8, size: int = 320, threads: int | None = None) -> _FlowBackbone:
    """``dis`` / ``dis:<preset>``; ``raft_small`` / ``raft_large`` (torchvision weights) or
    ``raft_small:PATH`` (a local state dict); ``tiny-random`` = untrained raft_small (tests).
    ``frames`` is the number of consecutive frame pairs per snippet (1..15)."""
    if layer is not None:
        raise PivadError("flow: --flow-layer is not configurable")
    name, _, arg = spec.partition(":")
    if name == "dis":
        return DISFlow(frames, grid, bins, size, preset=arg or "medium", threads=threads)
    if name in ("raft_small", "raft_large", "tiny-random"):
        if not torchvision_available():
            raise PivadError(f"flow model {spec!r} needs torchvision, which is not installed (use --flow-model dis)")
        from torchvision.models import optical_flow as of

        arch = "raft_small" if name == "tiny-random" else name
        with seeded():
            if name == "tiny-random":
                model, weights = of.raft_small(weights=None), describe_weights("tiny-random")
            elif arg:
                from pivad.safe_load import first_line, load_weights

                model = getattr(of, arch)(weights=None)
                state = load_weights(arg, f"{arch} checkpoint")
                try:
                    model.load_state_dict(state)
                except (RuntimeError, TypeError, AttributeError) as exc:
                    raise PivadError(f"{arg}: not a torchvision {arch} state dict ({first_line(exc)})") from None
                weights = describe_weights(arg)
            else:
                model = getattr(of, arch)(weights="DEFAULT")
                weights = {"source": "torchvision", "name": f"{arch} DEFAULT"}
        return RAFTFlow(model, weights=weights, arch=arch, device=device, pairs=frames, grid=grid, bins=bins,
                        size=size, micro_batch=micro_batch)
    raise PivadError(f"unknown flow model {spec!r} (dis, dis:<preset>, raft_small, raft_large, raft_small:PATH)")
