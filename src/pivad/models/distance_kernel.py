"""UR-DMU's fixed temporal-distance attention ``A2 @ t``, without a ``T x T`` tensor for long videos.

UR-DMU's "global and local" attention has, beside the softmax branch, a fixed branch
``A2 @ t`` with ``A2[i, j] = K[i, j] / s[j]``, ``K[i, j] = exp(-|i - j| / e)`` and ``s[j] = Σ_k K[j, k]``.
The official code divides by ``A2.sum(-1)`` broadcast over the *last* axis, so every column ``j`` is
divided by the sum of row ``j`` (rows of ``A2`` do not sum to 1; edge rows sum to about 0.805). This
module keeps that quirk, because it changes the numbers of published checkpoints.

Because ``K`` is symmetric, ``A2 @ t = K @ (t / s)``: scale each snippet by ``1 / s[j]`` and convolve
with ``exp(-|d| / e)`` over time. The kernel falls by ``e^{-1/e} ≈ 0.692`` per snippet, so weights
beyond a distance of 64 sum to ``< 2e-10`` of the total and a band of half-width ``>= 64`` is exact to
float32 precision. :func:`apply_distance_kernel` uses the dense matrix for short videos (cheapest there)
and a block-banded product for long ones: memory ``O(T)``, work ``O(T)``.

Axes: B batch (videos x crops), T snippets, C channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLOCK = 64  # block length of the banded product; every output sees >= BLOCK snippets on each side
DENSE_MAX_T = 4 * BLOCK  # up to this T the dense T x T product costs about as much as the band


def _official_e() -> float:
    """``torch.exp(torch.tensor(1.))`` as the official code computes it (float32 e)."""
    return float(torch.exp(torch.tensor(1.0, dtype=torch.float32)))


def distance_kernel(T: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The official column-normalised kernel ``A2`` ``[T, T]`` (built in float32 as the official, then cast)."""
    pos = torch.arange(1, T + 1, device=device, dtype=torch.float32)  # (T,) exact integers, as linspace(1, T, T)
    dist = (pos[None, :] - pos[:, None]).abs()  # (T, T) |i - j|
    k = torch.exp(-dist / _official_e())  # (T, T)
    # QUIRK (official translayer.py): `attn2 / attn2.sum(-1)` broadcasts the row sums over the last axis,
    # i.e. column j is divided by the sum of row j. Kept for parity with published checkpoints.
    return (k / k.sum(-1)).to(dtype)


def column_scale(T: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``1 / s[j]`` ``[T]``, ``s[j] = Σ_k exp(-|j - k| / e)`` in closed form (float64, then cast)."""
    r = math.exp(-1.0 / _official_e())
    j = torch.arange(T, dtype=torch.float64)  # (T,) on the CPU: float64 is not on every device
    # Σ_{d=0..j} r^d + Σ_{d=1..T-1-j} r^d, as two geometric series
    s = (1.0 - r ** (j + 1)) / (1.0 - r) + (r - r ** (T - j)) / (1.0 - r)
    return (1.0 / s).to(device=device, dtype=dtype)


def band_blocks(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[3, BLOCK, BLOCK]``: the kernel between an output block and its previous, own and next input block."""
    e = _official_e()
    a = torch.arange(BLOCK, dtype=torch.float64)
    offsets = torch.tensor([-BLOCK, 0, BLOCK], dtype=torch.float64)
    # input position (within the 3-block window) minus output position
    d = (a[None, None, :] + offsets[:, None, None]) - a[None, :, None]  # (3, BLOCK, BLOCK)
    return torch.exp(-d.abs() / e).to(device=device, dtype=dtype)


class DistanceKernelCache:
    """Per-(T, device, dtype) cache of the dense kernel and of the band blocks / column scales."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._store: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, build) -> torch.Tensor:
        hit = self._store.pop(key, None)
        if hit is None:
            # plain tensors: an entry first built under inference_mode must stay usable in training
            with torch.inference_mode(False), torch.no_grad():
                hit = build()
        self._store[key] = hit  # most recent last
        while len(self._store) > self.max_entries:
            self._store.pop(next(iter(self._store)))
        return hit


_CACHE = DistanceKernelCache()


def apply_distance_kernel(t: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """``A2 @ t`` for ``t`` ``[B, T, C]`` (the kernel is the same for every head and channel).

    ``impl``: ``"dense"`` (the cached ``T x T`` matrix), ``"banded"`` (``O(T)`` memory) or ``"auto"``
    (dense for ``T <= DENSE_MAX_T``). Under tracing / export the dense kernel is built from ``arange(T)``.
    """
    B, T, C = t.shape
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        # export / compile: no Python-side cache or branch on T, so a dynamic T axis stays dynamic
        return torch.matmul(distance_kernel(T, t.device, t.dtype), t)
    if impl == "dense" or (impl == "auto" and T <= DENSE_MAX_T):
        a2 = _CACHE.get(("dense", T, t.device, t.dtype), lambda: distance_kernel(T, t.device, t.dtype))
        return torch.matmul(a2, t)  # (T, T) @ (B, T, C) -> (B, T, C)
    if impl not in ("auto", "banded"):
        raise ValueError(f"distance kernel impl must be auto|dense|banded, got {impl!r}")
    scale = _CACHE.get(("scale", T, t.device, t.dtype), lambda: column_scale(T, t.device, t.dtype))
    blocks = _CACHE.get(("band", t.device, t.dtype), lambda: band_blocks(t.device, t.dtype))
    nb = -(-T // BLOCK)  # output blocks
    u = t * scale[:, None]  # (B, T, C) t[j] / s[j]
    u = F.pad(u, (0, 0, BLOCK, (nb + 1) * BLOCK - T))  # (B, (nb + 2) * BLOCK, C) zero block either side
    u = u.view(B, nb + 2, BLOCK, C)
    out = torch.matmul(blocks[0], u[:, :-2])  # (B, nb, BLOCK, C) from the previous block
    out += torch.matmul(blocks[1], u[:, 1:-1])
    out += torch.matmul(blocks[2], u[:, 2:])
    return out.view(B, nb * BLOCK, C)[:, :T]
