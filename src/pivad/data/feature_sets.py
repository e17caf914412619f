"""In-memory feature sets: training crops resampled to N snippets, and whole test videos.

Both load every file once, with full validation, into one contiguous float32 tensor; nothing is read
from disk afterwards. Axis letters: E crop entries, V videos, C crops, T snippets, N resampled
snippets, D feature width, d modality width.

Loading runs on ``threads`` threads (0: up to 8, one per core), one video per job writing its own
slots of the preallocated tensor, so the result does not depend on the thread count; when files are
bad, the error raised is the first in list order.

Memory: a training set takes ``E * N * D * 4`` bytes (UCF-Crime train, 16,100 crops at N=200,
D=1024: 13.2 GB); a test set ``C * sum(T) * D * 4`` bytes (UCF-Crime test: 2.8 GB).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pivad.data.features import feature_shape, load_features, load_video_features
from pivad.data.lists import LAYOUTS, VideoItem
from pivad.data.modality_store import ModalityStore
from pivad.data.resample import resample_snippets
from pivad.errors import ConfigError, DataError


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


def _video_crops(item: VideoItem, layout: str, dim: int) -> Iterator[np.ndarray]:
    """The crops of one video, each float32 ``[T, D]``, in crop order (crops must share T)."""
    if layout == "per_video":
        yield from load_video_features(item.files[0], dim)  # C x (T, D)
        return
    length = None
    for file in item.files:
        feat = load_features(file, dim)  # (T, D)
        if length is not None and feat.shape[0] != length:
            raise DataError(_t_mismatch(file, feat.shape[0], item, length))
        length = feat.shape[0]
        yield feat


def _run(job: Callable[[int], int], count: int, threads: int, bar: tqdm) -> None:
    """``job(i)`` for i < count on ``threads`` threads; the first failure in index order is raised."""
    threads = threads if threads > 0 else min(8, os.cpu_count() or 1)
    if threads == 1:
        for i in range(count):
            bar.update(job(i))
        return
    pool = ThreadPoolExecutor(threads)
    try:
        for done in pool.map(job, range(count)):
            bar.update(done)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _t_mismatch(file: Path, t: int, item: VideoItem, t0: int) -> str:
    return (f"{file}: T={t} but {item.files[0].name} (another crop of video {item.name}) has T={t0}; "
            "the crops of a video must have the same length")


class TrainSet:
    """Training crops of some videos, each resampled to ``num_segments`` snippets (never shuffled here).

    One entry per crop file (per crop of a ``per_video`` file). ``rgb`` is ``[E, N, D]``, ``labels``
    ``[E]`` float, ``video_index`` ``[E]`` (entry -> position in ``items``). Modality features are per
    video, ``modalities[name]`` ``[V, N, d]``, resampled with the same bins as the video's RGB.
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        *,
        num_segments: int = 200,
        dim: int = 1024,
        layout: str = "per_crop",
        modality_store: ModalityStore | None = None,
        progress: bool = True,
        desc: str = "train features",
        threads: int = 0,
    ):
        _check_layout(layout)
        if num_segments < 1:
            raise ConfigError(f"data.num_segments must be >= 1, got {num_segments}")
        self.items = list(items)
        self.num_segments = num_segments
        self.dim = dim
        if layout == "per_crop":
            crops_per_video = [len(item.files) for item in self.items]
        else:
            crops_per_video = [_crops_in(feature_shape(item.files[0], dim, crops=True)) for item in self.items]
        n_entries = sum(crops_per_video)
        self.rgb = torch.empty((n_entries, num_segments, dim), dtype=torch.float32)  # (E, N, D)
        self.labels = torch.empty(n_entries, dtype=torch.float32)  # (E,)
        self.video_index = torch.empty(n_entries, dtype=torch.long)  # (E,)
        dims = modality_store.dims if modality_store is not None else {}
        self.modalities = {
            name: torch.empty((len(self.items), num_segments, d), dtype=torch.float32)  # (V, N, d)
            for name, d in dims.items()
        }
        first_entry = np.concatenate([[0], np.cumsum(crops_per_video)[:-1]]).astype(np.int64)  # (V,)
        rgb = self.rgb.numpy()
        mods = {name: t.numpy() for name, t in self.modalities.items()}

        def load(v: int) -> int:
            item, entry, length = self.items[v], int(first_entry[v]), 0
            for entry, crop in enumerate(_video_crops(item, layout, dim), start=entry):
                rgb[entry] = resample_snippets(crop, num_segments)  # (N, D)
                length = crop.shape[0]
            if modality_store is not None:
                for name, feat in modality_store.load(item.name, length).items():
                    mods[name][v] = resample_snippets(feat, num_segments)  # (N, d), the RGB's bins
            return len(item.files)

        for v, (item, count) in enumerate(zip(self.items, crops_per_video)):
            start = int(first_entry[v])
            self.labels[start : start + count] = float(item.label)
            self.video_index[start : start + count] = v
        with _progress(sum(len(item.files) for item in self.items), desc, progress) as bar:
            _run(load, len(self.items), threads, bar)

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(rgb ``[N, D]``, label, {modality: ``[N, d]``}) of one crop entry."""
        video = int(self.video_index[index])
        return self.rgb[index], self.labels[index], {k: t[video] for k, t in self.modalities.items()}

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(rgb ``[b, N, D]``, labels ``[b]``, {modality: ``[b, N, d]``}) of the entries ``index`` ``[b]``."""
        videos = self.video_index.index_select(0, index)  # (b,)
        return (self.rgb.index_select(0, index), self.labels.index_select(0, index),
                {name: feats.index_select(0, videos) for name, feats in self.modalities.items()})

    def modality_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Resampled rows ``[stop - start, N, d]`` of modality ``name`` for videos ``start:stop``."""
        return self.modalities[name][start:stop].numpy()


def _crops_in(shape: tuple[int, ...]) -> int:
    return shape[1] if len(shape) == 3 else 1


def _video_shape(item: VideoItem, layout: str, dim: int) -> tuple[int, int]:
    """(T, crops) of a video from its file headers."""
    if layout == "per_video":
        shape = feature_shape(item.files[0], dim, crops=True)
        return shape[0], _crops_in(shape)
    t0 = feature_shape(item.files[0], dim)[0]
    for file in item.files[1:]:
        t = feature_shape(file, dim)[0]
        if t != t0:
            raise DataError(_t_mismatch(file, t, item, t0))
    return t0, len(item.files)


def test_shapes(items: Sequence[VideoItem], layout: str, dim: int) -> tuple[np.ndarray, int]:
    """(T of each video ``[V]``, crops per video) from the file headers; every video needs the same crops."""
    lengths, n_crops = [], None
    for item in items:
        t, c = _video_shape(item, layout, dim)
        if n_crops is not None and c != n_crops:
            raise DataError(f"{item.files[0]}: video {item.name} has {c} crop(s), the videos before it "
                            f"have {n_crops}; a test set needs the same number of crops for every video")
        n_crops = c
        lengths.append(t)
    return np.asarray(lengths, dtype=np.int64), n_crops or 0


test_shapes.__test__ = False  # not a pytest test


@dataclass
class TestVideo:
    """One test video: ``rgb`` ``[C, T, D]`` float32 (a view into the set's tensor), never resampled."""

    __test__ = False  # not a pytest test class

    name: str
    label: int
    cls: str
    rgb: torch.Tensor
    modalities: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [T, d]


class TestSet:
    """Whole videos for evaluation: every crop of every video in one ``[C, sum(T), D]`` tensor.

    ``lengths[i]`` is video i's T and ``offsets[i]`` where it starts on the snippet axis. All videos
    must have the same number of crops. Modalities (optional) are ``[sum(T), d]`` per name, aligned to
    each video's T by the store's rule.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        items: Sequence[VideoItem],
        *,
        dim: int = 1024,
        layout: str = "per_crop",
        modality_store: ModalityStore | None = None,
        progress: bool = True,
        desc: str = "test features",
        threads: int = 0,
    ):
        _check_layout(layout)
        self.items = list(items)
        self.dim = dim
        self.lengths, n_crops = test_shapes(self.items, layout, dim)  # (V,), headers only
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)  # (V,)
        total = int(self.lengths.sum())
        self.n_crops = n_crops
        self.rgb = torch.empty((self.n_crops, total, dim), dtype=torch.float32)  # (C, ΣT, D)
        dims = modality_store.dims if modality_store is not None else {}
        self.modalities = {name: torch.empty((total, d), dtype=torch.float32) for name, d in dims.items()}
        rgb = self.rgb.numpy()
        mods = {name: t.numpy() for name, t in self.modalities.items()}

        def load(v: int) -> int:
            item, start, length = self.items[v], int(self.offsets[v]), int(self.lengths[v])
            for c, crop in enumerate(_video_crops(item, layout, dim)):
                rgb[c, start : start + length] = crop  # (T, D)
            if modality_store is not None:
                for name, feat in modality_store.load(item.name, length).items():
                    mods[name][start : start + length] = feat  # (T, d)
            return len(item.files)

        with _progress(sum(len(item.files) for item in self.items), desc, progress) as bar:
            _run(load, len(self.items), threads, bar)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    def __getitem__(self, index: int) -> TestVideo:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        item, start, t = self.items[index], int(self.offsets[index]), int(self.lengths[index])
        return TestVideo(
            name=item.name,
            label=item.label,
            cls=item.cls,
            rgb=self.rgb[:, start : start + t],  # (C, T, D)
            modalities={k: v[start : start + t] for k, v in self.modalities.items()},  # (T, d)
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))
