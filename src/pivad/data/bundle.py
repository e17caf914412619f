"""Everything a run reads, built from the ``data`` section of a :class:`~pivad.config.Config`.

The training list is split at video level into training and validation videos
(:func:`split_train_val`, stratified by label, deterministic by ``train.seed``); the training videos
become two :class:`TrainSet` (normal, abnormal) for the :class:`BalancedLoader`, the validation videos
a :class:`TestSet` (whole videos, never resampled) for honest model selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pivad.config import Config
from pivad.data.feature_sets import TestSet, TrainSet
from pivad.data.lists import VideoItem, class_names, count_labels, read_list
from pivad.data.modality_store import ModalityStore
from pivad.errors import ConfigError, DataError


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

    train_normal: TrainSet | None
    train_abnormal: TrainSet | None
    val: TestSet | None
    test: TestSet | None
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


def build_datasets(
    cfg: Config, *, train: bool = True, test: bool = True, progress: bool = True
) -> DataBundle:
    """Read the lists of ``cfg.data`` and load the requested sets into memory.

    Modalities: without ``data.modality_root`` none are loaded. With it, every training (and
    validation) video must have every configured modality; the test set gets them when the store covers
    all test videos, none when it covers none of them, and a DataError naming a missing file otherwise.
    """
    d = cfg.data
    store = _store(cfg)
    train_normal = train_abnormal = val = test_set = None
    classes = list(d.classes)
    if train:
        items = _list(cfg, "train")
        n_normal, n_abnormal = count_labels(items)
        if not n_normal or not n_abnormal:
            which = "normal" if not n_normal else "abnormal"
            raise DataError(f"{d.train_list}: no {which} videos under label_rule {d.label_rule}")
        fit, held = split_train_val(items, d.val_fraction, cfg.train.seed)
        common = dict(num_segments=d.num_segments, dim=d.feature_dim, layout=d.layout, modality_store=store,
                      progress=progress)
        train_normal = TrainSet([i for i in fit if i.label == 0], desc="train features (normal)", **common)
        train_abnormal = TrainSet([i for i in fit if i.label == 1], desc="train features (abnormal)", **common)
        if held:
            val = TestSet(held, dim=d.feature_dim, layout=d.layout, modality_store=store, progress=progress,
                          desc="validation features")
    if test:
        items = _list(cfg, "test")
        test_store = store
        if store is not None:
            missing = store.missing(item.name for item in items)
            if len(missing) == len(items) * len(store.names):
                test_store = None
            elif missing:
                raise DataError(f"{missing[0]}: modality file not found ({len(missing)} missing for the test "
                                "videos; provide all of them or none)")
        test_set = TestSet(items, dim=d.feature_dim, layout=d.layout, modality_store=test_store,
                           progress=progress, desc="test features")
        classes = classes or class_names(items)
    return DataBundle(
        train_normal=train_normal,
        train_abnormal=train_abnormal,
        val=val,
        test=test_set,
        modalities_present=store.names if store is not None else [],
        classes=classes,
    )
