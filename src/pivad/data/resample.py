"""Snippet resampling: training videos to N snippets, modality rows onto RGB snippets.

Training rule (UR-DMU's ``dataset_loader``, RTFM's ``process_feat`` with N=32): bin edges
``r = linspace(0, T, N+1)`` cast to int (floor); output row i is the mean of input rows
``r[i]:r[i+1]``, or row ``r[i]`` when that bin is empty (T < N: short videos repeat rows).
The mean is summed row by row in float32 and divided by the bin size, the order NumPy's
``mean(axis=0)`` uses, so results equal the official loader's bit for bit. Test videos are never
resampled.

Alignment rule (``data.t_align: resample``): a modality with ``Tm`` rows is mapped onto ``T`` RGB
snippets by nearest index: RGB snippet i takes modality row ``floor((i + 1/2) * Tm / T)``, the row
whose time span holds the centre of snippet i (exact integer arithmetic; identity when Tm == T).
"""

from __future__ import annotations

import numpy as np


def segment_bounds(length: int, n: int) -> np.ndarray:
    """Bin edges ``[n+1]`` (int64) splitting ``length`` snippets into ``n`` segments."""
    if length < 1 or n < 1:
        raise ValueError(f"segment_bounds: need length >= 1 and n >= 1, got {length}, {n}")
    return np.linspace(0, length, n + 1).astype(np.int64)


def resample_snippets(feat: np.ndarray, n: int) -> np.ndarray:
    """``[T, D]`` -> ``[n, D]`` float32 by the training rule (module docstring), exact."""
    feat = np.asarray(feat, dtype=np.float32)
    if feat.ndim != 2:
        raise ValueError(f"resample_snippets: expected [T,D], got shape {list(feat.shape)}")
    bounds = segment_bounds(feat.shape[0], n)
    start, count = bounds[:-1], np.diff(bounds)  # (n,), (n,)
    out = np.empty((n, feat.shape[1]), dtype=np.float32)  # (n, D)
    empty = count == 0
    out[empty] = feat[start[empty]]
    # Bins hold floor(T/n) or ceil(T/n) rows: sum each group of equal-size bins row by row.
    for size in np.unique(count[~empty]):
        rows = np.nonzero(count == size)[0]
        first = start[rows]
        total = feat[first]  # (bins, D), a copy
        for offset in range(1, int(size)):
            total += feat[first + offset]
        out[rows] = total / np.float32(size)
    return out


def nearest_index(source_len: int, target_len: int) -> np.ndarray:
    """Row of a ``source_len`` sequence nearest to each of ``target_len`` evenly spaced positions."""
    if source_len < 1 or target_len < 1:
        raise ValueError(f"nearest_index: need lengths >= 1, got {source_len}, {target_len}")
    i = np.arange(target_len, dtype=np.int64)
    return (2 * i + 1) * source_len // (2 * target_len)


def align_rows(feat: np.ndarray, length: int) -> np.ndarray:
    """``[Tm, d]`` -> ``[length, d]`` by :func:`nearest_index` (returned unchanged when Tm == length)."""
    if feat.shape[0] == length:
        return feat
    return feat[nearest_index(feat.shape[0], length)]
