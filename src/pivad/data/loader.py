"""Balanced training batches: normal crops first, then abnormal crops, from two independent streams.

Like UR-DMU's two ``DataLoader(shuffle=True, drop_last=True)``: each stream walks a fresh random
permutation of its set in chunks of its batch size, drops the incomplete last chunk, and starts a new
permutation (a new epoch) when one is used up; the two streams' epochs are independent. Permutation
``e`` of stream ``s`` is drawn from ``numpy.random.default_rng([seed, s, e])``, so a run is
deterministic by seed and ``state_dict()`` (epoch and position per stream) resumes it exactly.
Batches come from each set's ``gather``: ``index_select`` from an in-memory :class:`TrainSet` (no disk
I/O per step), or the mapped files of a :class:`~pivad.data.mapped_sets.MappedTrainSet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pivad.errors import DataError

if TYPE_CHECKING:
    from pivad.data.feature_sets import TrainSet
    from pivad.data.mapped_sets import MappedTrainSet


@dataclass
class Batch:
    """One training step: ``rgb`` ``[Bn+Ba, N, D]`` (normal first), ``labels`` ``[B]`` float (0/1),
    ``modalities`` ``{name: [B, N, d]}`` (empty without a modality store)."""

    rgb: torch.Tensor
    labels: torch.Tensor
    modalities: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            self.rgb.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.modalities.items()},
        )


class _Stream:
    """Indices of one set, shuffled per epoch, in chunks of ``batch`` with the last partial chunk dropped."""

    def __init__(self, size: int, batch: int, seed: int, stream: int):
        self.size, self.batch, self.seed, self.stream = size, batch, seed, stream
        self.epoch, self.position = 0, 0
        self._perm: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.batch

    def _permutation(self) -> np.ndarray:
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.stream, self.epoch]).permutation(self.size)
        return self._perm

    def next(self) -> torch.Tensor:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        start = self.position * self.batch
        chunk = self._permutation()[start : start + self.batch]
        self.position += 1
        return torch.from_numpy(chunk.astype(np.int64))

    def state(self) -> dict[str, int]:
        return {"size": self.size, "batch": self.batch, "epoch": self.epoch, "position": self.position}

    def restore(self, state: dict[str, int], name: str) -> None:
        if state["size"] != self.size or state["batch"] != self.batch:
            raise ValueError(
                f"BalancedLoader state: the {name} stream was saved with {state['size']} crops in batches of "
                f"{state['batch']}, this loader has {self.size} in batches of {self.batch}"
            )
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None


class BalancedLoader:
    """Infinite iterator of :class:`Batch`: ``batch_normal`` normal + ``batch_abnormal`` abnormal crops."""

    def __init__(
        self,
        normal: TrainSet | MappedTrainSet,
        abnormal: TrainSet | MappedTrainSet,
        batch_normal: int = 64,
        batch_abnormal: int = 64,
        seed: int = 0,
    ):
        if seed < 0:
            raise ValueError(f"BalancedLoader: seed must be >= 0, got {seed}")
        for what, dataset, batch in (("normal", normal, batch_normal), ("abnormal", abnormal, batch_abnormal)):
            if batch < 1:
                raise ValueError(f"BalancedLoader: batch_{what} must be >= 1, got {batch}")
            if len(dataset) < batch:
                raise DataError(f"{what} training set has {len(dataset)} crop entries, fewer than one batch "
                                f"(data.batch_{what} = {batch})")
        if len(normal) and float(normal.labels.max()) != 0.0 or len(abnormal) and float(abnormal.labels.min()) != 1.0:
            raise ValueError("BalancedLoader: the normal set must hold only label 0 and the abnormal set only label 1")
        if set(normal.modality_names) != set(abnormal.modality_names):
            raise ValueError("BalancedLoader: the normal and abnormal sets carry different modalities")
        self.normal, self.abnormal, self.seed = normal, abnormal, seed
        self._streams = (_Stream(len(normal), batch_normal, seed, 0), _Stream(len(abnormal), batch_abnormal, seed, 1))
        self.step = 0

    def __iter__(self) -> BalancedLoader:
        return self

    def __next__(self) -> Batch:
        parts_rgb, parts_labels, parts_mods = [], [], {name: [] for name in self.normal.modality_names}
        for dataset, stream in zip((self.normal, self.abnormal), self._streams):
            rgb, labels, mods = dataset.gather(stream.next())  # (b, N, D), (b,), {name: (b, N, d)}
            parts_rgb.append(rgb)
            parts_labels.append(labels)
            for name, feats in mods.items():
                parts_mods[name].append(feats)
        self.step += 1
        return Batch(
            rgb=torch.cat(parts_rgb),  # (Bn+Ba, N, D)
            labels=torch.cat(parts_labels),  # (Bn+Ba,)
            modalities={name: torch.cat(parts) for name, parts in parts_mods.items()},  # (Bn+Ba, N, d)
        )

    def state_dict(self) -> dict[str, Any]:
        """Where both streams stand; :meth:`load_state_dict` continues with exactly the next batch."""
        return {"seed": self.seed, "step": self.step,
                "normal": self._streams[0].state(), "abnormal": self._streams[1].state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"BalancedLoader state: saved with seed {state['seed']}, this loader has seed {self.seed}")
        self._streams[0].restore(state["normal"], "normal")
        self._streams[1].restore(state["abnormal"], "abnormal")
        self.step = int(state["step"])
