"""Memory-mapped feature sets (``data.storage: mmap``): the in-memory sets' entries, read when used.

:class:`MappedTrainSet` keeps per-entry bookkeeping (video, crop, label) and each video's T, nothing
else. A batch maps the crop files it needs, resamples each crop (and its video's modality rows) to N
with the function :class:`~pivad.data.feature_sets.TrainSet` uses, and drops the maps: batches equal
the in-memory ones bit for bit, and resident memory is about one batch whatever the dataset's size
(the files stay in the page cache, which the kernel may reclaim). :class:`MappedTestSet` reads one
whole video per ``__getitem__``.

Checks: with ``scan`` (the default) every file is read once at construction and validated exactly as
the in-memory sets do (same one-line errors, nothing kept); ``scan=False`` checks headers, file sizes
and T's only, for files that were validated when a feature cache was written (``feature_cache``).
Any float ``.npy`` maps: float32 rows are used in place, other dtypes (float16/64, other byte order)
are converted per crop, giving the values the in-memory load gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pivad.data.feature_sets import (TestVideo, _check_layout, _crops_in, _progress, _run, _t_mismatch,
                                     _video_crops, test_shapes)
from pivad.data.features import map_features
from pivad.data.lists import VideoItem
from pivad.data.modality_store import ModalityStore
from pivad.data.resample import resample_snippets
from pivad.errors import ConfigError, DataError


def _each(fn, args) -> list:
    """``[fn(a) for a in args]`` on ``torch.get_num_threads()`` threads (in order; first failure raised)."""
    threads = min(torch.get_num_threads(), len(args))
    if threads <= 1:
        return [fn(a) for a in args]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, args))


class _Mapped:
    """What both mapped sets share: the items, the layout, the modality store and per-video T's."""

    def __init__(self, items: Sequence[VideoItem], dim: int, layout: str, store: ModalityStore | None) -> None:
        _check_layout(layout)
        self.items, self.dim, self.layout, self.store = list(items), dim, layout, store

    @property
    def modality_names(self) -> list[str]:
        return self.store.names if self.store is not None else []

    def _crop(self, v: int, c: int) -> np.ndarray:
        """Crop ``c`` of video ``v`` as a map ``[T, D]`` in the file's dtype."""
        item = self.items[v]
        if self.layout == "per_video":
            array = map_features(item.files[0], self.dim, crops=True)  # (T, C, D) or (T, D)
            return array if array.ndim == 2 else array[:, c]
        return map_features(item.files[c], self.dim)

    def _probe(self, v: int, scan: bool) -> tuple[int, int]:
        """(T, crops) of video ``v``, validated (``scan``: every value; else headers and sizes)."""
        item = self.items[v]
        if scan:
            length = count = 0
            for crop in _video_crops(item, self.layout, self.dim):
                length, count = crop.shape[0], count + 1
            if self.store is not None:
                self.store.load(item.name, length)
            return length, count
        if self.layout == "per_video":
            shape = map_features(item.files[0], self.dim, crops=True).shape
            length, count = shape[0], _crops_in(shape)
        else:
            length, count = map_features(item.files[0], self.dim).shape[0], len(item.files)
            for file in item.files[1:]:
                t = map_features(file, self.dim).shape[0]
                if t != length:
                    raise DataError(_t_mismatch(file, t, item, length))
        if self.store is not None:
            self.store.load(item.name, length, mmap=True)  # headers, sizes and the T rule
        return length, count

    def _probe_all(self, scan: bool, threads: int, desc: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.zeros(len(self.items), dtype=np.int64)  # (V,)
        crops = np.zeros(len(self.items), dtype=np.int64)  # (V,)

        def job(v: int) -> int:
            lengths[v], crops[v] = self._probe(v, scan)
            return len(self.items[v].files)

        with _progress(sum(len(item.files) for item in self.items), desc, progress) as bar:
            _run(job, len(self.items), threads, bar)
        return lengths, crops


class MappedTrainSet(_Mapped):
    """:class:`~pivad.data.feature_sets.TrainSet`'s entries and batches, read from mapped files per batch.

    ``labels`` ``[E]`` and ``video_index`` ``[E]`` as in the in-memory set; ``crop_index`` ``[E]`` is
    the entry's crop within its video and ``lengths`` ``[V]`` each video's T.
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
        desc: str = "train features (mapped)",
        threads: int = 0,
        scan: bool = True,
    ):
        super().__init__(items, dim, layout, modality_store)
        if num_segments < 1:
            raise ConfigError(f"data.num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.lengths, crops = self._probe_all(scan, threads, desc, progress)  # (V,), (V,)
        self.video_index = torch.from_numpy(np.repeat(np.arange(len(self.items)), crops))  # (E,)
        first = np.concatenate([[0], np.cumsum(crops)[:-1]]).astype(np.int64)  # (V,)
        self.crop_index = torch.from_numpy(np.arange(int(crops.sum())) - np.repeat(first, crops))  # (E,)
        self.labels = torch.tensor([float(self.items[v].label) for v in self.video_index.tolist()],
                                   dtype=torch.float32)  # (E,)

    def __len__(self) -> int:
        return self.video_index.shape[0]

    def _rgb(self, entry: int) -> np.ndarray:
        v, c = int(self.video_index[entry]), int(self.crop_index[entry])
        return resample_snippets(self._crop(v, c), self.num_segments)  # (N, D)

    def _modalities(self, v: int) -> dict[str, np.ndarray]:
        """Every modality of video ``v`` resampled to N with its RGB bins, ``{name: [N, d]}``."""
        if self.store is None:
            return {}
        feats = self.store.load(self.items[v].name, int(self.lengths[v]), mmap=True)
        return {name: resample_snippets(feat, self.num_segments) for name, feat in feats.items()}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(rgb ``[N, D]``, label, {modality: ``[N, d]``}) of one crop entry."""
        index = range(len(self))[index]
        mods = self._modalities(int(self.video_index[index]))
        return (torch.from_numpy(self._rgb(index)), self.labels[index],
                {k: torch.from_numpy(v) for k, v in mods.items()})

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(rgb ``[b, N, D]``, labels ``[b]``, {modality: ``[b, N, d]``}) of the entries ``index`` ``[b]``.

        Crops and videos are read on ``torch.get_num_threads()`` threads (``train.threads``; NumPy
        releases the GIL while copying and summing), each into its own row: the result does not depend
        on the thread count, and the first failure in batch order is the one raised.
        """
        entries = index.tolist()
        rgb = np.empty((len(entries), self.num_segments, self.dim), dtype=np.float32)  # (b, N, D)

        def fill(i: int) -> None:
            rgb[i] = self._rgb(entries[i])

        _each(fill, range(len(entries)))
        mods: dict[str, np.ndarray] = {}
        if self.store is not None:
            videos = self.video_index.index_select(0, index).tolist()  # (b,)
            unique = list(dict.fromkeys(videos))  # each video read once
            per_video = dict(zip(unique, _each(self._modalities, unique)))
            mods = {name: np.stack([per_video[v][name] for v in videos]) for name in self.store.names}  # (b, N, d)
        return (torch.from_numpy(rgb), self.labels.index_select(0, index),
                {k: torch.from_numpy(v) for k, v in mods.items()})

    def modality_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Resampled rows ``[stop - start, N, d]`` of modality ``name`` for videos ``start:stop``."""
        return np.stack([self._modalities(v)[name] for v in range(start, stop)])


class MappedTestSet(_Mapped):
    """:class:`~pivad.data.feature_sets.TestSet`'s videos, each read from its mapped files when indexed."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        items: Sequence[VideoItem],
        *,
        dim: int = 1024,
        layout: str = "per_crop",
        modality_store: ModalityStore | None = None,
        progress: bool = True,
        desc: str = "test features (mapped)",
        threads: int = 0,
        scan: bool = True,
    ):
        super().__init__(items, dim, layout, modality_store)
        self.lengths, self.n_crops = test_shapes(self.items, layout, dim)  # (V,), headers only
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)  # (V,)
        self._probe_all(scan, threads, desc, progress)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> TestVideo:
        index = range(len(self))[index]
        item, t = self.items[index], int(self.lengths[index])
        if self.layout == "per_video":
            array = np.array(map_features(item.files[0], self.dim, crops=True), dtype=np.float32)  # (T, C, D)
            rgb = array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(1, 0, 2))  # (C, T, D)
        else:
            rgb = np.stack([np.asarray(self._crop(index, c), dtype=np.float32) for c in range(self.n_crops)])
        mods = self.store.load(item.name, t, mmap=True) if self.store is not None else {}
        return TestVideo(name=item.name, label=item.label, cls=item.cls, rgb=torch.from_numpy(rgb),
                         modalities={k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in mods.items()})

    def __iter__(self):
        return (self[i] for i in range(len(self)))
