"""Everything a run reads, built from the ``data`` section of a :class:`~pivad.config.Config`.

The training list is split at video level into training and validation videos
(:func:`split_train_val`, stratified by label, deterministic by ``train.seed``); the training videos
become two :class:`TrainSet` (normal, abnormal) for the :class:`BalancedLoader`, the validation videos
a :class:`TestSet` (whole videos, never resampled) for honest model selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pivad.config import Config
from pivad.data.feature_cache import FeatureCache, check_cache_dtype
from pivad.data.feature_sets import TestSet, TrainSet
from pivad.data.lists import VideoItem, class_names, count_labels, read_list
from pivad.data.mapped_sets import MappedTestSet, MappedTrainSet
from pivad.data.modality_store import ModalityStore
from pivad.errors import ConfigError, DataError

STORAGES = ("memory", "mmap")


def split_train_val(
    items: Sequence[VideoItem], fraction: float, seed: int
) -> tuple[list[VideoItem], list[VideoItem]]:
    """Hold out ``fraction`` of the videos of each label (at least one when ``fraction > 0`` and the
    label has two or more videos; never all of them). Whole videos move, so all crops of a video land
    on the same side. Both parts keep the list order."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {fraction}")
    if seed < 0:
        raise ValueError(f"split_train_val: seed must be >= 0, got {seed}")
    held = set()
    for label in (0, 1):
        members = [i for i, item in enumerate(items) if item.label == label]
        n_val = int(round(fraction * len(members)))
        if fraction > 0:
            n_val = max(n_val, 1)
        n_val = max(0, min(n_val, len(members) - 1))  # never hold out every video of a label
        chosen = np.random.default_rng([seed, label]).permutation(len(members))[:n_val]
        held.update(members[i] for i in chosen)
    return ([item for i, item in enumerate(items) if i not in held],
            [item for i, item in enumerate(items) if i in held])


@dataclass
class DataBundle:
    """Loaded data of a run; ``None`` for a part that was not requested or is empty (no validation)."""

    train_normal: TrainSet | MappedTrainSet | None
    train_abnormal: TrainSet | MappedTrainSet | None
    val: TestSet | MappedTestSet | None
    test: TestSet | MappedTestSet | None
    modalities_present: list[str] = field(default_factory=list)  # modalities loaded for training
    classes: list[str] = field(default_factory=list)  # anomaly classes (data.classes or the test names)


def _list(cfg: Config, which: str) -> list[VideoItem]:
    d = cfg.data
    path = getattr(d, f"{which}_list")
    if not path:
        raise ConfigError(f"data.{which}_list is not set")
    items = read_list(path, root=d.root, layout=d.layout, label_rule=d.label_rule)
    if d.layout == "per_crop" and d.num_crops > 0:
        for item in items:
            if len(item.files) != d.num_crops:
                raise DataError(f"{path}: video {item.name} has {len(item.files)} crop file(s), "
                                f"data.num_crops is {d.num_crops}")
    return items


def _store(cfg: Config) -> ModalityStore | None:
    d = cfg.data
    if not d.modality_root or not d.modalities:
        return None
    return ModalityStore(d.modality_root, d.modalities, d.t_align)


def _check_storage(cfg: Config) -> None:
    if cfg.data.storage not in STORAGES:
        raise ConfigError(f"data.storage: unknown storage {cfg.data.storage!r} (known: {', '.join(STORAGES)})")
    check_cache_dtype(cfg.data.cache_dtype)


def _cached(cfg: Config, parts: list[tuple[list[VideoItem], ModalityStore | None]],
            progress: bool) -> list[list[VideoItem]]:
    """With ``data.cache_dtype`` set: write the missing copies of every file of ``parts`` and point the
    items (and the modality store, through its ``resolve``) at them; the items as they are otherwise."""
    d = cfg.data
    if d.cache_dtype == "none":
        return [items for items, _ in parts]
    sources = []
    for items, store in parts:
        for item in items:
            sources += [(f, d.feature_dim, d.layout == "per_video") for f in item.files]
            if store is not None:
                paths = [(store.path(m, item.name), dim) for m, dim in store.dims.items()]
                sources += [(path, dim, False) for path, dim in paths if path.is_file()]  # else the store says so
    mapping = FeatureCache(d.cache_dtype, d.cache_dir, progress=progress).prepare(sources)
    for _, store in parts:
        if store is not None:
            store.resolve = lambda path: mapping.get(path, path)
    return [[replace(item, files=[mapping[f] for f in item.files]) for item in items] for items, _ in parts]


def build_datasets(
    cfg: Config, *, train: bool = True, test: bool = True, progress: bool = True
) -> DataBundle:
    """Read the lists of ``cfg.data`` and load the requested sets (``data.storage``: into memory, or
    memory-mapped and read per use; ``data.cache_dtype``: from float16 copies, written first).

    Modalities: without ``data.modality_root`` none are loaded. With it, every training (and
    validation) video must have every configured modality; the test set gets them when the store covers
    all test videos, none when it covers none of them, and a DataError naming a missing file otherwise.
    """
    d = cfg.data
    _check_storage(cfg)
    store = _store(cfg)
    train_normal = train_abnormal = val = test_set = None
    classes = list(d.classes)
    fit = held = test_items = []
    test_store = None
    if train:
        items = _list(cfg, "train")
        n_normal, n_abnormal = count_labels(items)
        if not n_normal or not n_abnormal:
            which = "normal" if not n_normal else "abnormal"
            raise DataError(f"{d.train_list}: no {which} videos under label_rule {d.label_rule}")
        fit, held = split_train_val(items, d.val_fraction, cfg.train.seed)
    if test:
        test_items = _list(cfg, "test")
        test_store = store
        if store is not None:
            missing = store.missing(item.name for item in test_items)
            if len(missing) == len(test_items) * len(store.names):
                test_store = None
            elif missing:
                raise DataError(f"{missing[0]}: modality file not found ({len(missing)} missing for the test "
                                "videos; provide all of them or none)")
        classes = classes or class_names(test_items)
    fit, held, test_items = _cached(cfg, [(fit, store), (held, store), (test_items, test_store)], progress)
    mapped = d.storage == "mmap"
    train_cls, test_cls = (MappedTrainSet, MappedTestSet) if mapped else (TrainSet, TestSet)
    extra = {"scan": d.cache_dtype == "none"} if mapped else {}  # copies were validated when written
    if train:
        common = dict(num_segments=d.num_segments, dim=d.feature_dim, layout=d.layout, modality_store=store,
                      progress=progress, **extra)
        train_normal = train_cls([i for i in fit if i.label == 0], desc="train features (normal)", **common)
        train_abnormal = train_cls([i for i in fit if i.label == 1], desc="train features (abnormal)", **common)
        if held:
            val = test_cls(held, dim=d.feature_dim, layout=d.layout, modality_store=store, progress=progress,
                           desc="validation features", **extra)
    if test:
        test_set = test_cls(test_items, dim=d.feature_dim, layout=d.layout, modality_store=test_store,
                            progress=progress, desc="test features", **extra)
    return DataBundle(
        train_normal=train_normal,
        train_abnormal=train_abnormal,
        val=val,
        test=test_set,
        modalities_present=store.names if store is not None else [],
        classes=classes,
    )
