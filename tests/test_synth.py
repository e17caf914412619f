"""The synthetic dataset: layout, shapes, labels, ground truth, determinism, caching, atomicity, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pivad.data import synth
from pivad.data.synth import add_synth_arguments, run_synth, synthesize, write_synthetic_dataset
from pivad.errors import ConfigError, DataError

SMALL = {"feature_dim": 32}  # the tiny preset with narrow RGB, for tests that write several datasets


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "tiny", seed=3, preset="tiny")


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def _videos(list_path: Path) -> list[tuple[str, list[str]]]:
    """Consecutive ``<video>__<c>.npy`` lines grouped into (video, [paths])."""
    out: list[tuple[str, list[str]]] = []
    for line in _lines(list_path):
        name = Path(line).name.rsplit("__", 1)[0]
        if out and out[-1][0] == name:
            out[-1][1].append(line)
        else:
            out.append((name, [line]))
    return out


def _digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_layout_shapes_and_modalities(tiny: Path) -> None:
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["generator"] == "pivad.data.synth" and meta["preset"] == "tiny" and meta["seed"] == 3
    assert meta["feature_dim"] == 1024 and meta["num_crops"] == 2
    mods = {m["name"]: m["dim"] for m in meta["modalities"]}
    assert list(mods) == ["pose", "depth", "panoptic", "flow", "text"]
    assert len(meta["classes"]) >= 4
    for split in ("train", "test"):
        for name, paths in _videos(tiny / "lists" / f"{split}.list"):
            assert len(paths) == 2 and [p.endswith(f"__{c}.npy") for c, p in enumerate(paths)] == [True, True]
            crops = [np.load(tiny / p) for p in paths]
            t = crops[0].shape[0]
            assert 16 <= t <= 40
            for p, x in zip(paths, crops):
                assert not Path(p).is_absolute() and p.startswith("rgb/")
                assert x.dtype == np.float32 and x.shape == (t, 1024)
                assert np.isfinite(x).all() and x.min() >= 0.0
            assert 0.0 < np.abs(crops[0] - crops[1]).mean() < 0.5 * crops[0].mean()  # crops: same content, perturbed
            for mod, dim in mods.items():
                m = np.load(tiny / "modalities" / mod / f"{name}.npy")
                assert m.dtype == np.float32 and m.shape == (t, dim) and np.isfinite(m).all()


def test_lists_labels_and_order(tiny: Path) -> None:
    train = _videos(tiny / "lists" / "train.list")
    test = _videos(tiny / "lists" / "test.list")
    assert len(train) == 10 and len(test) == 6
    splits = ((train, 5, "Training_Normal_Videos_Anomaly"), (test, 3, "Testing_Normal_Videos_Anomaly"))
    for videos, n_abn, folder in splits:
        labels = [0 if "Normal" in name else 1 for name, _ in videos]  # the ucf rule
        assert labels == [1] * n_abn + [0] * (len(videos) - n_abn)  # abnormal first
        for (name, paths), label in zip(videos, labels):
            assert name.endswith("_x264")
            cls_folder = Path(paths[0]).parent.name
            assert cls_folder == folder if not label else name.startswith(cls_folder)
    names = [n for n, _ in train + test]
    assert len(set(names)) == len(names)  # modality files are keyed by video name only


def test_read_list_agrees(tiny: Path) -> None:
    lists = pytest.importorskip("pivad.data.lists")
    if not hasattr(lists, "read_list"):
        pytest.skip("pivad.data.lists.read_list not written yet")
    items = lists.read_list(tiny / "lists" / "train.list", root=tiny)
    assert [it.name for it in items] == [n for n, _ in _videos(tiny / "lists" / "train.list")]
    assert [it.label for it in items] == [1] * 5 + [0] * 5
    assert all(len(it.files) == 2 and all(Path(f).exists() for f in it.files) for it in items)


def test_annotations_match_gt(tiny: Path) -> None:
    videos = _videos(tiny / "lists" / "test.list")
    ann = {}
    for line in _lines(tiny / "annotations.txt"):
        path, n_frames, cls, *bounds = line.split()
        ann[Path(path).stem] = (int(n_frames), cls, [int(b) for b in bounds], Path(path).parent.name)
    assert list(ann) == [n for n, _ in videos]
    parts = []
    for name, paths in videos:
        t = np.load(tiny / paths[0], mmap_mode="r").shape[0]
        n_frames, cls, bounds, folder = ann[name]
        assert n_frames == 16 * t and folder == Path(paths[0]).parent.name
        assert len(bounds) == 4
        events = [(s, e) for s, e in zip(bounds[::2], bounds[1::2]) if s != -1]
        g = np.zeros(16 * t, dtype=np.uint8)
        if "Normal" in name:
            assert cls == "Normal" and events == []
        else:
            assert name.startswith(cls) and 1 <= len(events) <= 2
            for s, e in events:
                assert 0 <= s <= e < n_frames
                g[s : e + 1] = 1
            assert 0 < g.mean() < 0.5  # events cover a minority of the video
            if len(events) == 2:
                assert events[0][1] < events[1][0]
        parts.append(g)
    gt = np.load(tiny / "gt.npy")
    assert gt.dtype == np.uint8 and np.array_equal(gt, np.concatenate(parts))


def test_gt_through_the_annotation_parser(tiny: Path) -> None:
    ann_mod = pytest.importorskip("pivad.data.annotations")
    gt_mod = pytest.importorskip("pivad.data.ground_truth")
    if not (hasattr(ann_mod, "parse_annotations") and hasattr(gt_mod, "build_frame_gt")):
        pytest.skip("annotation parser / ground truth builder not written yet")
    ann = ann_mod.parse_annotations(tiny / "annotations.txt", fmt="ucf")
    videos = [(n, np.load(tiny / p[0], mmap_mode="r").shape[0]) for n, p in _videos(tiny / "lists" / "test.list")]
    assert np.array_equal(gt_mod.build_frame_gt(videos, ann), np.load(tiny / "gt.npy"))


def test_train_abnormal_videos_have_events_in_the_plan() -> None:
    plans = synth.dataset_plan(synth.make_spec("tiny"), seed=3)
    for p in plans:
        assert (1 <= len(p.events) <= 2) if p.label else p.events == []
        assert all(0 <= s <= e < 16 * p.n_snippets for s, e in p.events)


def test_features_vary_smoothly_in_time(tiny: Path) -> None:
    name, paths = _videos(tiny / "lists" / "train.list")[-1]
    x = np.load(tiny / paths[0]).astype(np.float64)
    step = np.linalg.norm(np.diff(x, axis=0), axis=1).mean()
    far = np.linalg.norm(x[: len(x) // 2] - x[len(x) - len(x) // 2 :][::-1], axis=1).mean()
    assert step < far


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", seed=5, preset="tiny", **SMALL)
    b = write_synthetic_dataset(tmp_path / "b", seed=5, preset="tiny", **SMALL)
    c = write_synthetic_dataset(tmp_path / "c", seed=6, preset="tiny", **SMALL)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert len(da) == 16 * 2 + 16 * 5 + 5 and da == db
    assert sum(da[k] != dc.get(k) for k in da) > len(da) // 2


def test_reuse_force_and_foreign_folders(tmp_path: Path, capsys) -> None:
    out = tmp_path / "d"
    assert synthesize(out, seed=1, preset="tiny", **SMALL) == (out, True)
    stamp = (out / "meta.json").stat().st_mtime_ns
    assert synthesize(out, seed=1, preset="tiny", **SMALL) == (out, False)  # cached
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    assert synthesize(out, seed=1, preset="tiny", force=True, **SMALL) == (out, True)  # rewritten
    assert (out / "meta.json").stat().st_mtime_ns != stamp
    assert synthesize(out, seed=2, preset="tiny", **SMALL) == (out, True)  # a stale cache is replaced
    assert json.loads((out / "meta.json").read_text())["seed"] == 2
    assert "other settings" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing left beside it
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(DataError, match="not a finished synthetic dataset"):
            synthesize(foreign, preset="tiny", force=force, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert synthesize(tmp_path / "empty", preset="tiny", **SMALL)[1]


def test_interrupted_write_leaves_nothing_that_looks_finished(tmp_path: Path, monkeypatch) -> None:
    real = synth.generate_video
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "generate_video", failing)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(tmp_path / "x", preset="tiny", **SMALL)
    assert not (tmp_path / "x" / "meta.json").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too
    monkeypatch.setattr(synth, "generate_video", real)
    assert (write_synthetic_dataset(tmp_path / "x", preset="tiny", **SMALL) / "meta.json").exists()


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown synthetic preset 'huge'"):
        synth.make_spec("huge")
    with pytest.raises(ConfigError, match="no_such_knob"):
        synth.make_spec("tiny", no_such_knob=1)
    with pytest.raises(ConfigError, match="t_min"):
        synth.make_spec("tiny", t_min=2)


def test_run_synth_and_cli(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_synth_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "s"), "--preset", "tiny", "--seed", "4"])
    assert run_synth(args) == 0
    assert "written" in capsys.readouterr().out
    assert run_synth(args) == 0
    assert "reused" in capsys.readouterr().out
    try:
        import pivad.commands.data  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("pivad.commands.data (the `pivad data` verb) not written yet")
    from pivad.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--preset", "tiny", "--seed", "4"]) == 0
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["data", "synth", "--out", str(tmp_path / "mine"), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pivad: error: ") and "no readable meta.json" in err and len(err.strip().splitlines()) == 1


def test_stale_cache_with_user_files_is_refused_and_kept(tmp_path: Path) -> None:
    out = write_synthetic_dataset(tmp_path / "d", seed=1, preset="tiny", **SMALL)
    before = _digest(out)
    (out / "MY_NOTES.txt").write_text("mine")
    (out / "my_runs").mkdir()
    (out / "my_runs" / "important.txt").write_text("mine too")
    for force in (False, True):  # other settings (a stale cache) and --force alike
        with pytest.raises(DataError, match=r"holds MY_NOTES.txt, which the generator did not write"):
            synthesize(out, seed=5, preset="tiny", force=force, **SMALL)
    assert (out / "MY_NOTES.txt").read_text() == "mine"
    (out / "MY_NOTES.txt").unlink()
    with pytest.raises(DataError, match=r"holds my_runs, "):
        synthesize(out, seed=5, preset="tiny", **SMALL)
    (out / "my_runs" / "important.txt").unlink()
    (out / "my_runs").rmdir()
    extra = sorted((out / "rgb").iterdir())[0] / "extra.npy"  # a look-alike name in the generator's folders
    extra.write_bytes(b"x")
    with pytest.raises(DataError, match=r"extra.npy, which"):
        synthesize(out, seed=5, preset="tiny", **SMALL)
    extra.unlink()
    assert _digest(out) == before
    assert synthesize(out, seed=5, preset="tiny", **SMALL) == (out, True)  # only its own files: replaced


def test_synth_cli_refuses_user_files_in_one_line(tmp_path: Path, capsys) -> None:
    from pivad.cli import main

    out = write_synthetic_dataset(tmp_path / "d", seed=1, preset="tiny", **SMALL)
    (out / "MY_NOTES.txt").write_text("mine")
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pivad: error: {out}: holds MY_NOTES.txt") and len(err.strip().splitlines()) == 1
    assert (out / "MY_NOTES.txt").read_text() == "mine"
