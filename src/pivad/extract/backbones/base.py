"""The modality backbone interface: 16-frame RGB snippets in, one vector per snippet out.

Every backbone (pose, depth, panoptic, flow, text) is a :class:`Backbone`. The extraction pipeline
decodes a video once, stacks its snippets into batches ``uint8 [N, 16, H, W, 3]`` and hands the same
batch to every requested backbone; each backbone looks only at the frames it samples
(:attr:`Backbone.frame_indices`) and returns ``float32 [N, dim]``.

Axis letters used in shape comments: N snippets, S sampled frames per snippet, M = N*S images,
H/W frame height/width, C channels, P people (pose), d output width.
"""

from __future__ import annotations

import abc
import contextlib
import sys
from typing import Any

import numpy as np
import torch

from pivad.errors import PivadError

SNIPPET = 16  # frames per snippet, the RGB (I3D) rule

_warned_cuda = False
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes


def sample_frame_indices(n: int, length: int = SNIPPET) -> tuple[int, ...]:
    """``n`` evenly spaced positions in ``range(length)``: the centres of ``n`` equal parts.

    For a 16-frame snippet: n=1 -> (8,), n=2 -> (4, 12), n=4 -> (2, 6, 10, 14), n=16 -> (0, ..., 15).
    """
    if not 1 <= n <= length:
        raise PivadError(f"frames per snippet must be in 1..{length}, got {n}")
    return tuple((2 * i + 1) * length // (2 * n) for i in range(n))


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """``cpu``/``cuda[:k]``; ``cuda`` without a GPU falls back to CPU with one message on stderr."""
    global _warned_cuda
    name = str(requested or "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        if not _warned_cuda:
            print(f"pivad: --device {name} requested but CUDA is not available; running on CPU", file=sys.stderr)
            _warned_cuda = True
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise PivadError(f"unknown device {name!r}: {exc}") from None


class Backbone(abc.ABC):
    """One modality's feature extractor.

    Subclasses set :attr:`modality`, :attr:`dim` and :attr:`frame_indices` and implement
    :meth:`encode_frames` and :meth:`describe`.
    """

    modality: str = ""
    dim: int = 0
    frame_indices: tuple[int, ...] = (SNIPPET // 2,)

    def encode(self, snippets: np.ndarray) -> np.ndarray:
        """Snippets ``uint8 [N, 16, H, W, 3]`` (or one ``[16, H, W, 3]``) -> ``float32 [N, dim]`` (or ``[dim]``)."""
        snippets = np.asarray(snippets)
        single = snippets.ndim == 4
        if single:
            snippets = snippets[None]
        if snippets.ndim != 5 or snippets.shape[1] != SNIPPET or snippets.shape[-1] != 3 or snippets.dtype != np.uint8:
            raise ValueError(f"expected uint8 snippets [N,{SNIPPET},H,W,3], got {snippets.dtype} {list(snippets.shape)}")
        frames = snippets[:, list(self.frame_indices)]  # (N, S, H, W, 3)
        out = np.ascontiguousarray(self.encode_frames(frames), dtype=np.float32)  # (N, d)
        if out.shape != (snippets.shape[0], self.dim):
            raise RuntimeError(f"{type(self).__name__} returned {list(out.shape)}, expected [{snippets.shape[0]},{self.dim}]")
        return out[0] if single else out

    @abc.abstractmethod
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """The sampled frames ``uint8 [N, S, H, W, 3]`` (S = len(frame_indices)) -> ``[N, dim]``."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records: backbone, weights, layer, pooling, preprocessing, frames, dim."""


class TorchImageBackbone(Backbone):
    """A per-frame image model: preprocess each sampled frame, one vector per frame, mean over frames.

    Subclasses implement :meth:`preprocess` (``uint8 [M,H,W,3]`` tensor on the device -> model input)
    and :meth:`frame_features` (model input -> ``[M, d]``). Frames go through the model in chunks of
    ``micro_batch`` images, so a batch of many snippets does not need all its activations at once.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None, frames: int, micro_batch: int = 32):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.frame_indices = sample_frame_indices(frames)
        self.micro_batch = max(1, int(micro_batch))
        self.precision = "fp32"

    def set_precision(self, precision: str) -> None:
        """``fp32`` (default), or ``bf16``/``fp16`` autocast (faster on GPUs; features change slightly)."""
        if precision not in PRECISIONS:
            raise PivadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise PivadError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        self.precision = precision

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    @abc.abstractmethod
    def preprocess(self, frames: torch.Tensor) -> Any:
        """``uint8 [M, H, W, 3]`` on the device -> the model's input."""

    @abc.abstractmethod
    def frame_features(self, inputs: Any) -> torch.Tensor:
        """Model input -> ``float [M, dim]``."""

    def pool_frames(self, feats: torch.Tensor) -> torch.Tensor:
        """``[N, S, d]`` -> ``[N, d]``: the mean over the snippet's sampled frames."""
        return feats.mean(dim=1)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        n, s = frames.shape[:2]
        flat = torch.from_numpy(np.ascontiguousarray(frames.reshape(n * s, *frames.shape[2:])))  # (M, H, W, 3)
        chunks = []
        for start in range(0, n * s, self.micro_batch):
            part = flat[start : start + self.micro_batch].to(self.device)
            with self._autocast():
                chunks.append(self.frame_features(self.preprocess(part)).float())  # (m, d)
        feats = torch.cat(chunks).reshape(n, s, -1)  # (N, S, d)
        return self.pool_frames(feats).cpu().numpy()  # (N, d)
