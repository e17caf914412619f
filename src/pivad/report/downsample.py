"""Fewer points for drawing a long curve, keeping its peaks (metrics are never computed from these)."""

from __future__ import annotations

import numpy as np


def peak_downsample(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, peaks)``: ``values`` cut into at most ``max_points`` equal buckets, each drawn at its
    first index with its maximum (an anomaly curve's spikes survive). Short curves come back whole."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return np.arange(n), values.copy()
    size = -(-n // max_points)  # ceil: every bucket but the last holds `size` values
    starts = np.arange(0, n, size)
    return starts, np.maximum.reduceat(values, starts)


def on_grid(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``y`` linearly interpolated at ``grid`` along a curve whose ``x`` never decreases (ROC, PR)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    return np.interp(grid, x[order], np.asarray(y, dtype=np.float64)[order])
