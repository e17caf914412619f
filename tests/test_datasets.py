"""Train/test sets, the balanced loader (determinism, drop_last, exact resume), splits, build_datasets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from pivad.config import Config, DataConfig, ModalityConfig
from pivad.data.datasets import (
    BalancedLoader,
    TestSet,
    TrainSet,
    build_datasets,
    class_names,
    split_train_val,
)
from pivad.data.lists import VideoItem, read_list
from pivad.data.modality_store import ModalityStore
from pivad.data.resample import resample_snippets
from pivad.errors import ConfigError, DataError

D, N, C = 8, 6, 3
MODS = [ModalityConfig("pose", 2), ModalityConfig("text", 3)]


def _video_name(label: int, i: int) -> str:
    return f"Normal_Videos{i:03d}_x264" if label == 0 else f"Abuse{i:03d}_x264"


def write_dataset(root: Path, n_normal=4, n_abnormal=3, crops=C, modalities=True, seed=0) -> dict:
    """Per-crop features ``<root>/feats/<video>__<c>.npy`` and a list; lengths vary, some below N."""
    rng = np.random.default_rng(seed)
    lines, arrays = [], {}
    for label, count in ((1, n_abnormal), (0, n_normal)):  # abnormal first, as the field's lists
        for i in range(count):
            name = _video_name(label, i)
            t = int(rng.integers(2, 15))
            arrays[name] = rng.random((crops, t, D), dtype=np.float32) + label  # (C, T, D)
            for c in range(crops):
                path = root / "feats" / f"{name}__{c}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, arrays[name][c])
                lines.append(f"feats/{name}__{c}.npy")
            if modalities:
                for m in MODS:
                    (root / "mods" / m.name).mkdir(parents=True, exist_ok=True)
                    np.save(root / "mods" / m.name / f"{name}.npy", rng.random((t, m.dim), dtype=np.float32))
    (root / "train.list").write_text("\n".join(lines))
    return arrays


def test_train_set_resamples_every_crop_and_modality_with_the_same_bins(tmp_path):
    arrays = write_dataset(tmp_path)
    items = read_list(tmp_path / "train.list")
    store = ModalityStore(tmp_path / "mods", MODS)
    ts = TrainSet(items, num_segments=N, dim=D, modality_store=store, progress=False)
    assert ts.rgb.shape == (len(items) * C, N, D) and ts.rgb.is_contiguous() and len(ts) == len(items) * C
    assert ts.labels.tolist() == [float(i.label) for i in items for _ in range(C)]
    for e in (0, 4, len(ts) - 1):
        item = items[int(ts.video_index[e])]
        rgb, label, mods = ts[e]
        np.testing.assert_array_equal(rgb.numpy(), resample_snippets(arrays[item.name][e % C], N))
        pose = np.load(tmp_path / "mods" / "pose" / f"{item.name}.npy")
        np.testing.assert_array_equal(mods["pose"].numpy(), resample_snippets(pose, N))
        assert mods["text"].shape == (N, 3) and float(label) == item.label


def test_test_set_stacks_crops_without_resampling(tmp_path):
    arrays = write_dataset(tmp_path)
    items = read_list(tmp_path / "train.list")
    test = TestSet(items, dim=D, modality_store=ModalityStore(tmp_path / "mods", MODS), progress=False)
    assert len(test) == len(items) and test.rgb.shape == (C, sum(a.shape[1] for a in arrays.values()), D)
    for i, video in enumerate(test):
        assert (video.name, video.label, video.cls) == (items[i].name, items[i].label, items[i].cls)
        np.testing.assert_array_equal(video.rgb.numpy(), arrays[video.name])  # (C, T, D)
        assert video.modalities["text"].shape == (arrays[video.name].shape[1], 3)
    assert test[-1].name == items[-1].name
    with pytest.raises(IndexError):
        test[len(test)]


def test_per_video_layout(tmp_path):
    feat = np.random.default_rng(0).random((7, 2, D), dtype=np.float32)  # (T, C, D)
    np.save(tmp_path / "Abuse1.npy", feat)
    np.save(tmp_path / "Normal1.npy", feat[:, 0])  # [T, D]: one crop
    (tmp_path / "v.list").write_text("Abuse1.npy\n")
    items = read_list(tmp_path / "v.list", layout="per_video")
    video = TestSet(items, dim=D, layout="per_video", progress=False)[0]
    np.testing.assert_array_equal(video.rgb.numpy(), feat.transpose(1, 0, 2))
    ts = TrainSet(items, num_segments=4, dim=D, layout="per_video", progress=False)
    assert len(ts) == 2
    np.testing.assert_array_equal(ts.rgb[1].numpy(), resample_snippets(feat[:, 1], 4))
    (tmp_path / "w.list").write_text("Abuse1.npy\nNormal1.npy\n")
    with pytest.raises(DataError, match=r"Normal1.npy: video Normal1 has 1 crop\(s\), the videos before it have 2"):
        TestSet(read_list(tmp_path / "w.list", layout="per_video"), dim=D, layout="per_video", progress=False)


def test_thread_count_changes_nothing_and_errors_follow_list_order(tmp_path):
    write_dataset(tmp_path, n_normal=5, n_abnormal=4)
    items = read_list(tmp_path / "train.list")
    store = ModalityStore(tmp_path / "mods", MODS)
    one = TrainSet(items, num_segments=N, dim=D, modality_store=store, progress=False, threads=1)
    three = TrainSet(items, num_segments=N, dim=D, modality_store=store, progress=False, threads=3)
    assert torch.equal(one.rgb, three.rgb) and torch.equal(one.modalities["text"], three.modalities["text"])
    assert torch.equal(TestSet(items, dim=D, progress=False, threads=1).rgb,
                       TestSet(items, dim=D, progress=False, threads=3).rgb)
    for video in (items[6], items[2]):  # the later one is broken first; the earlier one must be reported
        np.save(video.files[1], np.full(np.load(video.files[0]).shape, np.nan, np.float32))
    with pytest.raises(DataError, match=f"{items[2].files[1].name}: contains"):
        TrainSet(items, num_segments=N, dim=D, progress=False, threads=3)


def test_crops_of_different_length_are_an_error(tmp_path):
    write_dataset(tmp_path, modalities=False)
    bad = tmp_path / "feats" / "Abuse001_x264__2.npy"
    np.save(bad, np.zeros((40, D), np.float32))
    items = read_list(tmp_path / "train.list")
    for make in (lambda: TestSet(items, dim=D, progress=False),
                 lambda: TrainSet(items, num_segments=N, dim=D, progress=False)):
        with pytest.raises(DataError) as info:
            make()
        msg = str(info.value)
        assert msg.startswith(str(bad)) and "T=40" in msg and "Abuse001_x264__0.npy" in msg and "\n" not in msg


def test_modality_length_mismatch_and_missing_file(tmp_path):
    write_dataset(tmp_path)
    items = read_list(tmp_path / "train.list")
    np.save(tmp_path / "mods" / "pose" / f"{items[1].name}.npy", np.zeros((99, 2), np.float32))
    store = ModalityStore(tmp_path / "mods", MODS)
    with pytest.raises(DataError, match=r"pose/Abuse001_x264.npy: modality pose has T=99 snippets but the RGB"):
        TrainSet(items, num_segments=N, dim=D, modality_store=store, progress=False)
    (tmp_path / "mods" / "text" / f"{items[0].name}.npy").unlink()
    with pytest.raises(DataError, match=r"text/Abuse000_x264.npy: modality file not found"):
        TestSet(items, dim=D, modality_store=store, progress=False)


# ---------------------------------------------------------------------------------------- loader


def _sets(tmp_path, **kw):
    write_dataset(tmp_path, **kw)
    items = read_list(tmp_path / "train.list")
    store = ModalityStore(tmp_path / "mods", MODS) if kw.get("modalities", True) else None
    make = lambda lab: TrainSet([i for i in items if i.label == lab], num_segments=N, dim=D,  # noqa: E731
                                modality_store=store, progress=False)
    return make(0), make(1)


def test_batches_normal_first_with_labels_and_modalities(tmp_path):
    normal, abnormal = _sets(tmp_path, n_normal=4, n_abnormal=3)  # 12 and 9 crop entries
    batch = next(BalancedLoader(normal, abnormal, 5, 4, seed=0))
    assert batch.rgb.shape == (9, N, D) and batch.labels.tolist() == [0.0] * 5 + [1.0] * 4
    assert set(batch.modalities) == {"pose", "text"} and batch.modalities["pose"].shape == (9, N, 2)
    # Each row is really the crop entry its stream drew (normal features < 1 <= abnormal features).
    assert float(batch.rgb[:5].max()) < 1.0 <= float(batch.rgb[5:].min())
    assert batch.to("cpu").rgb.shape == batch.rgb.shape


def test_streams_drop_last_and_reshuffle_each_epoch(tmp_path):
    normal, abnormal = _sets(tmp_path, n_normal=4, n_abnormal=3, modalities=False)  # 12 and 9 entries
    loader = BalancedLoader(normal, abnormal, 5, 4, seed=3)
    rows = {tuple(r) for r in normal.rgb[:, 0, :2].tolist()}
    assert len(rows) == 12  # rows identify entries
    index = {tuple(r): i for i, r in enumerate(normal.rgb[:, 0, :2].tolist())}
    drawn = [[index[tuple(r)] for r in next(loader).rgb[:5, 0, :2].tolist()] for _ in range(6)]
    for epoch in (drawn[0:2], drawn[2:4], drawn[4:6]):  # 12 // 5 = 2 batches per epoch, 2 entries dropped
        flat = list(itertools.chain(*epoch))
        assert len(set(flat)) == 10
    assert drawn[0:2] != drawn[2:4]


def test_deterministic_by_seed_and_exact_resume(tmp_path):
    normal, abnormal = _sets(tmp_path)
    run = lambda loader, k: [next(loader) for _ in range(k)]  # noqa: E731
    a = run(BalancedLoader(normal, abnormal, 2, 2, seed=7), 9)
    b = run(BalancedLoader(normal, abnormal, 2, 2, seed=7), 9)
    c = run(BalancedLoader(normal, abnormal, 2, 2, seed=8), 9)
    assert all(torch.equal(x.rgb, y.rgb) for x, y in zip(a, b))
    assert not all(torch.equal(x.rgb, y.rgb) for x, y in zip(a, c))
    first = BalancedLoader(normal, abnormal, 2, 2, seed=7)
    run(first, 5)
    state = first.state_dict()
    resumed = BalancedLoader(normal, abnormal, 2, 2, seed=7)
    resumed.load_state_dict(state)
    assert resumed.step == 5
    for x, y in zip(a[5:], run(resumed, 4)):
        assert torch.equal(x.rgb, y.rgb) and torch.equal(x.modalities["text"], y.modalities["text"])
    with pytest.raises(ValueError, match="seed 7"):
        BalancedLoader(normal, abnormal, 2, 2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="batches of 2, this loader has 12 in batches of 3"):
        BalancedLoader(normal, abnormal, 3, 2, seed=7).load_state_dict(state)


def test_loader_rejects_impossible_batches(tmp_path):
    normal, abnormal = _sets(tmp_path, modalities=False)
    with pytest.raises(DataError, match="abnormal training set has 9 crop entries, fewer than one batch"):
        BalancedLoader(normal, abnormal, 2, 64)
    with pytest.raises(ValueError, match="only label 0"):
        BalancedLoader(abnormal, normal, 2, 2)


# ----------------------------------------------------------------------------------- split, bundle


def _items(n_normal, n_abnormal):
    return ([VideoItem(f"n{i}", [Path(f"n{i}__{c}.npy") for c in range(3)], 0) for i in range(n_normal)]
            + [VideoItem(f"a{i}", [Path(f"a{i}__0.npy")], 1, "Abuse") for i in range(n_abnormal)])


def test_split_is_stratified_deterministic_and_video_level():
    items = _items(20, 10)
    fit, held = split_train_val(items, 0.2, seed=1)
    assert sorted(i.label for i in held) == [0] * 4 + [1] * 2
    assert {i.name for i in fit} | {i.name for i in held} == {i.name for i in items}
    assert not {i.name for i in fit} & {i.name for i in held}
    assert [i.name for i in fit] == [i.name for i in items if i in fit]  # list order kept
    assert split_train_val(items, 0.2, seed=1) == (fit, held)
    assert split_train_val(items, 0.2, seed=2)[1] != held
    assert split_train_val(items, 0.0, seed=1) == (items, [])
    assert [i.label for i in split_train_val(_items(2, 1), 0.01, seed=0)[1]] == [0]  # >= 1, never all
    assert split_train_val(_items(1, 1), 0.9, seed=0)[1] == []
    with pytest.raises(ConfigError, match="val_fraction"):
        split_train_val(items, 1.0, seed=0)
    assert class_names(items) == ["Abuse"]


def _config(tmp_path, **data) -> Config:
    base = dict(root=str(tmp_path), train_list=str(tmp_path / "train.list"), test_list=str(tmp_path / "train.list"),
                num_crops=C, feature_dim=D, num_segments=N, modality_root=str(tmp_path / "mods"),
                modalities=MODS, val_fraction=0.25)
    base.update(data)
    return Config(data=DataConfig(**base))


def test_build_datasets_end_to_end(tmp_path):
    arrays = write_dataset(tmp_path, n_normal=4, n_abnormal=4)
    bundle = build_datasets(_config(tmp_path), progress=False)
    assert bundle.modalities_present == ["pose", "text"] and bundle.classes == ["Abuse"]
    assert len(bundle.val) == 2 and sorted(v.label for v in bundle.val) == [0, 1]
    assert len(bundle.train_normal) == 3 * C and len(bundle.train_abnormal) == 3 * C
    val_names = {v.name for v in bundle.val}
    train_names = {bundle.train_normal.items[i].name for i in range(3)} | {i.name for i in bundle.train_abnormal.items}
    assert not val_names & train_names and len(val_names | train_names) == 8
    assert len(bundle.test) == 8 and set(bundle.test[0].modalities) == {"pose", "text"}
    np.testing.assert_array_equal(bundle.test[0].rgb.numpy(), arrays[bundle.test[0].name])
    only_test = build_datasets(_config(tmp_path, modality_root=""), train=False, progress=False)
    assert only_test.train_normal is None and only_test.test.modalities == {} and only_test.modalities_present == []


def test_build_datasets_test_modalities_all_or_none(tmp_path):
    write_dataset(tmp_path, n_normal=2, n_abnormal=2)
    (tmp_path / "test.list").write_text("\n".join(f"other/Abuse9__{c}.npy" for c in range(C)))
    other = tmp_path / "other"
    other.mkdir()
    for c in range(C):
        np.save(other / f"Abuse9__{c}.npy", np.ones((5, D), np.float32))
    bundle = build_datasets(_config(tmp_path, test_list=str(tmp_path / "test.list"), val_fraction=0.0),
                            progress=False)
    assert bundle.val is None and bundle.test.modalities == {}  # no test video has modalities: none loaded
    (tmp_path / "test.list").write_text((tmp_path / "test.list").read_text() + "\n"
                                        + "\n".join(f"feats/Abuse000_x264__{c}.npy" for c in range(C)))
    with pytest.raises(DataError, match=r"mods/pose/Abuse9.npy: modality file not found \(2 missing"):
        build_datasets(_config(tmp_path, test_list=str(tmp_path / "test.list")), train=False, progress=False)


def test_build_datasets_bad_configs(tmp_path):
    write_dataset(tmp_path, n_normal=2, n_abnormal=2, modalities=False)
    with pytest.raises(DataError, match=r"train.list: video Abuse000_x264 has 3 crop file\(s\), data.num_crops is 10"):
        build_datasets(_config(tmp_path, num_crops=10, modality_root=""), progress=False)
    with pytest.raises(ConfigError, match="data.test_list is not set"):
        build_datasets(_config(tmp_path, test_list="", modality_root=""), train=False, progress=False)
    with pytest.raises(DataError, match=r"train.list: no normal videos under label_rule regex:\^never"):
        build_datasets(_config(tmp_path, label_rule="regex:^never", modality_root=""), progress=False)
    with pytest.raises(DataError, match=r"mods/pose: modality folder not found"):
        build_datasets(_config(tmp_path), progress=False)
    empty = tmp_path / "empty.list"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"empty.list: the list has no entries"):
        build_datasets(_config(tmp_path, train_list=str(empty), modality_root=""), progress=False)


def test_real_list_excerpt_with_synthetic_features(data_dir, tmp_path):
    """The shipped UCF test list, resolved under a root holding its dataset/<Class>/ folders."""
    path = data_dir / "lists" / "UCF_Test.excerpt.list"
    for line in path.read_text().splitlines():
        target = tmp_path / line
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, np.full((6 if "Normal" in line else 4, 16), 0.5, np.float32))
    test = TestSet(read_list(path, root=tmp_path), dim=16, progress=False)
    assert [(v.name, v.label, tuple(v.rgb.shape)) for v in test] == [
        ("Abuse028_x264", 1, (10, 4, 16)),
        ("Abuse030_x264", 1, (10, 4, 16)),
        ("Normal_Videos_943_x264", 0, (10, 6, 16)),
        ("Normal_Videos_944_x264", 0, (10, 6, 16)),
    ]
