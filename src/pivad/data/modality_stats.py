"""Per-dimension mean and std of each modality over the training videos' resampled snippets.

Computed in float64 over chunks of videos (Chan et al.'s pairwise update of count, mean and squared
deviations), so memory stays at one chunk and an in-memory and a mapped set give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class _RowSource(Protocol):
    items: list

    def modality_rows(self, name: str, start: int, stop: int) -> np.ndarray: ...


def modality_stats(sets: Sequence[_RowSource], name: str, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(mean ``[d]``, unbiased std ``[d]``) float32 of modality ``name`` over every video of ``sets``."""
    count, mean, m2 = 0, None, None
    for dataset in sets:
        for start in range(0, len(dataset.items), chunk):
            rows = dataset.modality_rows(name, start, min(start + chunk, len(dataset.items)))
            x = rows.reshape(-1, rows.shape[-1]).astype(np.float64)  # (n·N, d)
            n_b, mean_b = x.shape[0], x.mean(0)
            m2_b = ((x - mean_b) ** 2).sum(0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            delta, total = mean_b - mean, count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta**2 * (count * n_b / total)
            count = total
    if mean is None or count < 2:
        raise ValueError(f"modality_stats: modality {name} needs at least two snippets, got {count}")
    return mean.astype(np.float32), np.sqrt(m2 / (count - 1)).astype(np.float32)
