"""The lazy feature store: mapped sets give the in-memory sets' batches and runs exactly; the float16 cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli_data import _check_config, synth_dir  # noqa: F401 (a fixture)
from test_datasets import MODS, D, N, write_dataset

from pivad.config import Config, DataConfig
from pivad.data.datasets import BalancedLoader, TestSet, TrainSet, build_datasets
from pivad.data.feature_cache import FeatureCache
from pivad.data.lists import read_list
from pivad.data.mapped_sets import MappedTestSet, MappedTrainSet
from pivad.data.modality_stats import modality_stats
from pivad.data.modality_store import ModalityStore
from pivad.errors import ConfigError, DataError


def _both(tmp_path, layout="per_crop", **kw):
    items = read_list(tmp_path / "train.list", layout=layout)
    store = ModalityStore(tmp_path / "mods", MODS)
    common = dict(num_segments=N, dim=D, layout=layout, modality_store=store, progress=False)
    return items, store, common


def _assert_batches_equal(a: BalancedLoader, b: BalancedLoader, steps: int) -> None:
    for _ in range(steps):
        x, y = next(a), next(b)
        assert torch.equal(x.rgb, y.rgb) and torch.equal(x.labels, y.labels)
        assert x.modalities.keys() == y.modalities.keys()
        assert all(torch.equal(x.modalities[k], y.modalities[k]) for k in x.modalities)


@pytest.mark.parametrize("scan", [True, False])
def test_mapped_batches_equal_memory_batches(tmp_path, scan):
    write_dataset(tmp_path, n_normal=5, n_abnormal=4)
    items, _, common = _both(tmp_path)
    sets = {}
    for name, cls, extra in (("memory", TrainSet, {}), ("mmap", MappedTrainSet, {"scan": scan})):
        sets[name] = [cls([i for i in items if i.label == lab], **common, **extra) for lab in (0, 1)]
    mem, mapped = sets["memory"], sets["mmap"]
    assert len(mem[0]) == len(mapped[0]) and torch.equal(mem[1].video_index, mapped[1].video_index)
    for e in (0, 3, len(mem[0]) - 1):  # single entries too
        (r1, l1, m1), (r2, l2, m2) = mem[0][e], mapped[0][e]
        assert torch.equal(r1, r2) and float(l1) == float(l2) and torch.equal(m1["pose"], m2["pose"])
    # 12 steps of 4 + 3 crops: several epochs of both streams, so entries repeat and reshuffle
    _assert_batches_equal(BalancedLoader(*mem, 4, 3, seed=7), BalancedLoader(*mapped, 4, 3, seed=7), 12)
    for name in ("pose", "text"):
        (m1, s1), (m2, s2) = modality_stats(mem, name, chunk=2), modality_stats(mapped, name, chunk=3)
        assert np.array_equal(m1, m2) or np.allclose(m1, m2, rtol=1e-6)
        rows = torch.cat([t.modalities[name].reshape(-1, t.modalities[name].shape[-1]) for t in mem]).double()
        np.testing.assert_allclose(m1, rows.mean(0).float().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(s1, rows.std(0).float().numpy(), rtol=1e-5, atol=1e-7)


def test_mapped_reads_every_float_npy_like_memory(tmp_path):
    arrays = write_dataset(tmp_path, n_normal=2, n_abnormal=2)
    items, _, common = _both(tmp_path)
    kinds = [np.float16, np.float64, np.dtype(">f4"), "fortran"]
    for item, kind in zip(items, kinds):  # re-save some crops in other dtypes, byte orders and orders
        for c, f in enumerate(item.files[:2]):
            a = arrays[item.name][c]
            np.save(f, np.asfortranarray(a) if kind == "fortran" else a.astype(kind))
    mem = TrainSet(items, **common)
    mapped = MappedTrainSet(items, **common)
    idx = torch.arange(len(mem))
    assert all(torch.equal(x, y) for x, y in zip(mem.gather(idx)[:2], mapped.gather(idx)[:2]))
    test_mem, test_map = TestSet(items, dim=D, progress=False), MappedTestSet(items, dim=D, progress=False)
    assert np.array_equal(test_mem.lengths, test_map.lengths) and test_map.n_crops == test_mem.n_crops
    for a, b in zip(test_mem, test_map):
        assert a.name == b.name and torch.equal(a.rgb, b.rgb)


def test_mapped_per_video_layout_and_test_modalities(tmp_path):
    feat = np.random.default_rng(0).random((7, 2, D), dtype=np.float32)  # (T, C, D)
    np.save(tmp_path / "Abuse1.npy", feat)
    np.save(tmp_path / "Normal1.npy", feat[:5, 0].astype(np.float64))  # [T, D]: one crop
    for m in MODS:
        (tmp_path / "mods" / m.name).mkdir(parents=True)
        for name, t in (("Abuse1", 7), ("Normal1", 5)):
            np.save(tmp_path / "mods" / m.name / f"{name}.npy", np.random.default_rng(t).random((t, m.dim)))
    (tmp_path / "v.list").write_text("Abuse1.npy\nNormal1.npy\n")
    items = read_list(tmp_path / "v.list", layout="per_video")
    store = ModalityStore(tmp_path / "mods", MODS)
    common = dict(num_segments=4, dim=D, layout="per_video", modality_store=store, progress=False)
    mem, mapped = TrainSet(items, **common), MappedTrainSet(items, **common)
    assert len(mapped) == 3 and mapped.crop_index.tolist() == [0, 1, 0]
    got, want = mapped.gather(torch.tensor([2, 1, 0])), mem.gather(torch.tensor([2, 1, 0]))
    assert torch.equal(got[0], want[0]) and all(torch.equal(got[2][k], want[2][k]) for k in want[2])
    one = [items[0]]
    a = TestSet(one, dim=D, layout="per_video", modality_store=store, progress=False)[0]
    b = MappedTestSet(one, dim=D, layout="per_video", modality_store=store, progress=False)[-1]
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.modalities["text"], b.modalities["text"])
    with pytest.raises(IndexError):
        MappedTestSet(one, dim=D, layout="per_video", progress=False)[1]


@pytest.mark.parametrize("scan", [True, False])
def test_bad_files_are_one_line_errors_under_mmap(tmp_path, scan):
    write_dataset(tmp_path)
    items, store, common = _both(tmp_path)
    bad = items[2].files[1]
    raw = bad.read_bytes()
    bad.write_bytes(raw[:-7])  # truncated
    for make in (lambda: MappedTrainSet(items, **common, scan=scan),
                 lambda: MappedTestSet(items, dim=D, progress=False, scan=scan)):
        with pytest.raises(DataError, match=f"^{bad}: cannot read as .npy \\(file is truncated") as info:
            make()
        assert "\n" not in str(info.value)
    bad.write_bytes(raw)
    mapped = MappedTrainSet(items, **common, scan=scan)
    bad.write_bytes(raw[:-7])  # damaged after the set was built: the batch that reads it says so
    entry = next(e for e in range(len(mapped)) if int(mapped.video_index[e]) == 2 and int(mapped.crop_index[e]) == 1)
    with pytest.raises(DataError, match=f"^{bad}: cannot read as .npy"):
        mapped.gather(torch.tensor([0, entry]))
    bad.write_bytes(raw)
    np.save(bad, np.full((np.load(items[2].files[0]).shape[0], D), np.nan, np.float32))
    if scan:  # a full scan finds what the in-memory load finds, with its message
        with pytest.raises(DataError) as mem_err:
            TrainSet(items, **common)
        with pytest.raises(DataError) as map_err:
            MappedTrainSet(items, **common)
        assert str(mem_err.value) == str(map_err.value) and "contains" in str(map_err.value)
    np.save(store.path("pose", items[1].name), np.zeros((99, 2), np.float32))
    with pytest.raises(DataError, match="modality pose has T=99"):
        MappedTrainSet(items[:2], **common, scan=scan)


def _cfg(tmp_path, **data) -> Config:
    d = DataConfig(name="t", train_list=str(tmp_path / "train.list"), test_list=str(tmp_path / "train.list"),
                   modality_root=str(tmp_path / "mods"), modalities=list(MODS), feature_dim=D, num_segments=N,
                   num_crops=3, batch_normal=4, batch_abnormal=3, val_fraction=0.25)
    for k, v in data.items():
        setattr(d, k, v)
    return Config(data=d)


def test_build_datasets_mmap_equals_memory(tmp_path):
    write_dataset(tmp_path, n_normal=6, n_abnormal=5)
    mem, mapped = build_datasets(_cfg(tmp_path), progress=False), build_datasets(_cfg(tmp_path, storage="mmap"),
                                                                                 progress=False)
    assert isinstance(mapped.train_normal, MappedTrainSet) and isinstance(mapped.test, MappedTestSet)
    _assert_batches_equal(BalancedLoader(mem.train_normal, mem.train_abnormal, 4, 3, seed=1),
                          BalancedLoader(mapped.train_normal, mapped.train_abnormal, 4, 3, seed=1), 6)
    for a, b in ((mem.val, mapped.val), (mem.test, mapped.test)):
        assert [v.name for v in a] == [v.name for v in b]
        assert all(torch.equal(x.rgb, y.rgb) and torch.equal(x.modalities["pose"], y.modalities["pose"])
                   for x, y in zip(a, b))
    with pytest.raises(ConfigError, match="data.storage: unknown storage 'disk'"):
        build_datasets(_cfg(tmp_path, storage="disk"), progress=False)
    with pytest.raises(ConfigError, match="data.cache_dtype: unknown dtype 'int8'"):
        build_datasets(_cfg(tmp_path, cache_dtype="int8"), progress=False)


def test_float16_cache_written_once_reused_and_refreshed(tmp_path, capsys):
    arrays = write_dataset(tmp_path, n_normal=3, n_abnormal=2)
    cfg = _cfg(tmp_path, storage="mmap", cache_dtype="float16")
    first = build_datasets(cfg, progress=False)
    cache = tmp_path / "feats" / ".pivad_cache" / "float16"
    n_files = len(arrays) * 3
    assert "writing" in capsys.readouterr().err and len(list(cache.glob("*.npy"))) == n_files
    assert (tmp_path / "mods" / "pose" / ".pivad_cache" / "float16" / "manifest.json").is_file()
    name = next(iter(arrays))
    copy = np.load(cache / f"{name}__0.npy")
    assert copy.dtype == np.float16 and np.array_equal(copy, arrays[name][0].astype(np.float16))
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    second = build_datasets(cfg, progress=False)  # reused: nothing written
    assert "writing" not in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == stamps
    _assert_batches_equal(BalancedLoader(first.train_normal, first.train_abnormal, 4, 3, seed=2),
                          BalancedLoader(second.train_normal, second.train_abnormal, 4, 3, seed=2), 3)
    # float16 batches are the float32 ones up to float16 rounding (before the resampling means)
    mem = build_datasets(_cfg(tmp_path), progress=False)
    x = next(BalancedLoader(mem.train_normal, mem.train_abnormal, 4, 3, seed=2))
    y = next(BalancedLoader(second.train_normal, second.train_abnormal, 4, 3, seed=2))
    assert not torch.equal(x.rgb, y.rgb) and torch.allclose(x.rgb, y.rgb, rtol=2**-10, atol=0)
    # a changed source is copied again; a damaged copy is replaced
    src = tmp_path / "feats" / f"{name}__1.npy"
    np.save(src, arrays[name][1] * 2)
    (cache / f"{name}__2.npy").write_bytes(b"\x93NUMPY damaged")
    build_datasets(cfg, progress=False)
    assert "writing 2 float16 copies" in capsys.readouterr().err
    assert np.array_equal(np.load(cache / f"{name}__1.npy"), (arrays[name][1] * 2).astype(np.float16))
    assert np.load(cache / f"{name}__2.npy").shape == arrays[name][2].shape


def test_float16_cache_bad_inputs_and_cache_dir(tmp_path):
    arrays = write_dataset(tmp_path, n_normal=2, n_abnormal=2)
    elsewhere = tmp_path / "cache"
    cfg = _cfg(tmp_path, cache_dtype="float16", cache_dir=str(elsewhere))
    bundle = build_datasets(cfg, progress=False)  # memory storage reads the copies too
    assert not (tmp_path / "feats" / ".pivad_cache").exists()
    manifests = sorted(elsewhere.glob("*/float16/manifest.json"))
    assert len(manifests) == 1 + len(MODS)  # the RGB folder and one per modality
    assert bundle.train_normal.rgb.dtype == torch.float32
    manifests[0].write_text("{not json")
    with pytest.raises(DataError, match=f"^{manifests[0]}: damaged feature cache manifest .*delete"):
        build_datasets(cfg, progress=False)
    manifests[0].unlink()
    name = next(iter(arrays))
    big = arrays[name][0].copy()
    big[1, 2] = 1e6
    np.save(tmp_path / "feats" / f"{name}__0.npy", big)
    with pytest.raises(DataError, match=r"__0.npy: values up to 1e\+06 exceed the float16 range"):
        build_datasets(cfg, progress=False)
    big[1, 2] = np.nan
    np.save(tmp_path / "feats" / f"{name}__0.npy", big)
    with pytest.raises(DataError, match="__0.npy: contains 1 NaN value"):
        build_datasets(cfg, progress=False)


def test_interrupted_cache_build_resumes(tmp_path, capsys):
    arrays = write_dataset(tmp_path, n_normal=3, n_abnormal=2, modalities=False)
    cfg = _cfg(tmp_path, cache_dtype="float16", modality_root="")
    last = list(arrays)[-1]  # list order: the copies before its files are written before it fails
    good = np.load(tmp_path / "feats" / f"{last}__1.npy")
    np.save(tmp_path / "feats" / f"{last}__1.npy", np.full_like(good, np.inf))
    with pytest.raises(DataError, match=f"{last}__1.npy: contains"):
        build_datasets(cfg, progress=False)
    manifest = json.loads((tmp_path / "feats" / ".pivad_cache" / "float16" / "manifest.json").read_text())
    assert len(manifest["files"]) >= 3 * (len(arrays) - 1)  # kept although the build failed
    np.save(tmp_path / "feats" / f"{last}__1.npy", good)
    capsys.readouterr()
    build_datasets(cfg, progress=False)
    written = int(capsys.readouterr().err.split("writing ")[1].split()[0])
    assert 1 <= written <= 3


def test_feature_cache_folder_rules(tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    assert FeatureCache().folder(src) == src / ".pivad_cache" / "float16"
    other = FeatureCache(cache_dir=tmp_path / "c").folder(src)
    assert other.parent.parent == tmp_path / "c" and other.name == "float16" and len(other.parent.name) == 16
    with pytest.raises(ValueError):
        FeatureCache("none")


def test_short_training_run_is_identical_under_mmap(tmp_path, tiny_dataset, one_thread):
    from test_resume import tiny_config

    from pivad.engine.trainer import train

    runs = {}
    for storage in ("memory", "mmap"):
        cfg = tiny_config(tiny_dataset, data={"storage": storage}, inductor={"pmg_standardize": True},
                          train={"teacher_steps": 3, "warmup_steps": 1, "steps": 2, "eval_every": 2})
        runs[storage] = train(cfg, tmp_path / storage, progress=False)
    a, b = runs["memory"].model.state_dict(), runs["mmap"].model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs["memory"].best == runs["mmap"].best
    logs = [[_untimed(line) for line in (tmp_path / s / "log.jsonl").read_text().splitlines()] for s in runs]
    assert logs[0] == logs[1] and len(logs[0]) >= 6


def _untimed(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if "time" not in k and "sec" not in k}


def test_data_check_cli_under_mmap_and_cache(synth_dir, tmp_path, capsys):
    from pivad.cli import main

    cfg = _check_config(synth_dir, tmp_path)
    assert main(["data", "check", "-c", str(cfg)]) == 0
    memory = capsys.readouterr().out
    for extra in (["--data.storage", "mmap"],
                  ["--data.storage", "mmap", "--data.cache_dtype", "float16", "--data.cache_dir", str(tmp_path / "c")]):
        assert main(["data", "check", "-c", str(cfg), *extra]) == 0
        assert capsys.readouterr().out == memory
    assert main(["data", "check", "-c", str(cfg), "--data.storage", "disk"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "pivad: error: config key 'data.storage': expected one of memory, mmap, got 'disk'"


def test_mapped_batches_do_not_depend_on_the_thread_count(tmp_path):
    write_dataset(tmp_path, n_normal=5, n_abnormal=4)
    items, _, common = _both(tmp_path)
    mapped = MappedTrainSet(items, **common)
    index = torch.tensor([5, 0, 17, 5, 26, 2, 11])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mapped.gather(index)
        torch.set_num_threads(3)
        three = mapped.gather(index)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], three[0]) and all(torch.equal(one[2][k], three[2][k]) for k in one[2])
    want = TrainSet(items, **common).gather(index)
    assert torch.equal(one[0], want[0]) and all(torch.equal(one[2][k], want[2][k]) for k in want[2])
