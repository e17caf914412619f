"""Anomalous intervals from per-frame scores.

Rule (in this order):

1. a frame is *above* when ``score >= threshold``;
2. runs of above frames separated by at most ``merge_gap`` frames below the threshold are joined
   (the gap frames then belong to the interval; ``merge_gap=0`` joins nothing);
3. intervals shorter than ``min_frames`` frames are dropped (``min_frames=1`` keeps all).

An interval is ``[start, end]`` inclusive, in decoded-frame indices; its time span is
``start / fps`` to ``(end + 1) / fps`` (the end of its last frame).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    start: int  # first frame (inclusive)
    end: int  # last frame (inclusive)
    peak_score: float  # highest frame score inside
    peak_frame: int  # first frame holding the peak

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def to_dict(self, fps: float) -> dict:
        out = asdict(self)
        out["start_time"] = round(self.start / fps, 6)
        out["end_time"] = round((self.end + 1) / fps, 6)
        return out


def above_threshold(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``bool [n]``: ``score >= threshold``."""
    return np.asarray(scores) >= threshold


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` of each run of True in a 1-D boolean array."""
    f = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(f[1:] != f[:-1])  # run starts and (exclusive) ends, alternating
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]


def find_intervals(scores: np.ndarray, threshold: float, min_frames: int = 1, merge_gap: int = 0) -> list[Interval]:
    """Anomalous intervals of a per-frame score array (rule in the module docstring)."""
    if min_frames < 1:
        raise ValueError("min_frames must be >= 1")
    if merge_gap < 0:
        raise ValueError("merge_gap must be >= 0")
    scores = np.asarray(scores, dtype=np.float64)
    merged: list[list[int]] = []
    for start, end in runs(above_threshold(scores, threshold)):
        if merged and start - merged[-1][1] - 1 <= merge_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    out = []
    for start, end in merged:
        if end - start + 1 < min_frames:
            continue
        peak = start + int(np.argmax(scores[start : end + 1]))
        out.append(Interval(start, end, float(scores[peak]), peak))
    return out
