"""``pivad extract modalities`` end to end on a real clip, with tiny random backbones (no weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main
from pivad.errors import DataError
from pivad.extract import modalities as mod
from pivad.extract.backbones import MODALITIES, build_backbone

TINY = ["--pose-model", "tiny-random", "--depth-model", "tiny-random", "--panoptic-model", "tiny-random",
        "--text-model", "tiny-random", "--flow-size", "176", "--no-progress"]


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> Path:
    path = data_dir / "videos" / "carphone_40.mp4"  # 40 real frames, 176x144: T = 3 (the last snippet padded)
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def extract(*args: str) -> int:
    return main(["extract", "modalities", *args, *TINY])


def test_all_modalities_one_decode_pass_T_matches_rgb(clip, tmp_path, monkeypatch, capsys):
    from pivad.video import decode

    decodes = []
    real_iter = decode.iter_snippets
    monkeypatch.setattr(decode, "iter_snippets", lambda *a, **k: decodes.append(a[0]) or real_iter(*a, **k))
    out = tmp_path / "store"
    assert extract(str(clip), "--out", str(out), "--snippet-batch", "2") == 0
    assert "{name: flow, dim: 128}" in capsys.readouterr().err  # the config lines to use the store
    assert decodes == [clip]  # one decode pass feeds all five backbones
    monkeypatch.undo()

    T = sum(len(s) for _, s in decode.iter_snippets(clip, 16, batch=4))
    assert T == decode.probe(clip).n_snippets == 3  # the RGB extractor's snippet count
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["modalities"]) == list(MODALITIES)
    assert manifest["modalities"]["depth"]["precision"] == "fp32"
    assert manifest["modalities"]["flow"]["decode_max_side"] is None
    for m in MODALITIES:
        arr = np.load(out / m / "carphone_40.npy")
        entry = manifest["modalities"][m]
        assert arr.shape == (T, entry["dim"]) and arr.dtype == np.float32 and np.isfinite(arr).all()
        for key in ("backbone", "weights", "layer", "pooling", "preprocessing", "frames_per_snippet",
                    "pivad_version", "created", "updated", "snippet"):
            assert key in entry, (m, key)
    # the same numbers as the backbones applied directly to the decoded snippets
    snippets = np.concatenate([s for _, s in decode.iter_snippets(clip, 16, batch=8)])
    depth = build_backbone("depth", "tiny-random").encode(snippets)
    np.testing.assert_allclose(np.load(out / "depth" / "carphone_40.npy"), depth, rtol=1e-5, atol=1e-6)


def test_dis_flow_on_a_real_clip(clip):
    from pivad.video.decode import iter_snippets

    snippets = np.concatenate([s for _, s in iter_snippets(clip, 16, batch=8)])  # (3, 16, 144, 176, 3)
    bb = build_backbone("flow", "dis", size=176)
    flow = bb.encode(snippets)
    assert flow.shape == (3, 128)
    # frame pairs run in a thread pool; the result does not depend on its size
    np.testing.assert_array_equal(build_backbone("flow", "dis", size=176, threads=1).encode(snippets), flow)
    assert (flow[:2].sum(axis=1) > 0.05).all()  # the handheld camera moves: real motion in full snippets
    # the last snippet holds 8 real frames then 8 copies of the last: pairs 7..14 see no motion
    real_pairs = build_backbone("flow", "dis", frames=15, size=176)
    per_pair = [real_pairs.flows(snippets[2:, i], snippets[2:, i + 1]) for i in range(15)]
    assert all(np.abs(f).max() == 0 for f in per_pair[7:])
    from pivad.extract.backbones.flow import flow_descriptor

    expected = np.mean([flow_descriptor(f[0]) for f in per_pair], axis=0)
    np.testing.assert_allclose(flow[2], expected, rtol=1e-5, atol=1e-7)


def test_prefetch_keeps_order_and_raises_where_the_item_would():
    from pivad.errors import VideoError

    assert list(mod.prefetch(iter(range(7)), depth=2)) == list(range(7))

    def broken():
        yield 1
        raise VideoError("x.mp4: corrupt packet")

    got = []
    with pytest.raises(VideoError, match="corrupt packet"):
        for item in mod.prefetch(broken()):
            got.append(item)
    assert got == [1]
    # a consumer that stops early does not leave the producer blocked
    import threading

    it = mod.prefetch(iter(range(100)), depth=1)
    assert next(it) == 0
    it.close()
    assert not any(t.name == "pivad-decode" for t in threading.enumerate())


def test_resume_after_an_interrupted_run(clip, tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        shutil.copy(clip, videos / f"{name}.mp4")
    out = tmp_path / "store"
    real = mod.ModalityExtractor.extract
    calls = []

    def interrupted(self, path, modalities=None, report=None):
        calls.append(Path(path).stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, path, modalities, report)

    monkeypatch.setattr(mod.ModalityExtractor, "extract", interrupted)
    assert extract(str(videos), "--out", str(out), "--modalities", "depth") == 130
    monkeypatch.undo()
    assert (out / "depth" / "a.npy").is_file() and not (out / "depth" / "b.npy").exists()
    assert not list((out / "depth").glob(".*tmp*"))  # no half-written file left behind
    stamp = (out / "depth" / "a.npy").stat().st_mtime_ns

    # rerun, adding a modality: a gets only flow, b gets both; a's depth file is not rewritten
    assert extract(str(videos), "--out", str(out), "--modalities", "depth,flow") == 0
    assert (out / "depth" / "a.npy").stat().st_mtime_ns == stamp
    for name in ("a", "b"):
        for m in ("depth", "flow"):
            assert np.load(out / m / f"{name}.npy").shape[0] == 3
    np.testing.assert_array_equal(np.load(out / "depth" / "a.npy"), np.load(out / "depth" / "b.npy"))


def test_corrupt_video_is_reported_and_skipped(clip, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(clip, videos / "good.mp4")
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (videos / "videos.txt").write_text("# relative to this list\ngood.mp4\nbroken.mp4\n")
    out = tmp_path / "store"
    assert extract("--list", str(videos / "videos.txt"), "--out", str(out), "--modalities", "flow") == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "1 failed" in err and "1 done" in err
    assert (out / "flow" / "good.npy").is_file() and not (out / "flow" / "broken.npy").exists()


def test_manifest_refuses_to_mix_settings_unless_forced(clip, tmp_path, capsys):
    out = tmp_path / "store"
    assert extract(str(clip), "--out", str(out), "--modalities", "depth") == 0
    before = np.load(out / "depth" / "carphone_40.npy")
    capsys.readouterr()
    assert extract(str(clip), "--out", str(out), "--modalities", "depth", "--depth-frames", "1") == 2
    err = capsys.readouterr().err
    assert "manifest.json: 'depth' features there were made with other settings (frame_indices" in err
    assert len(err.strip().splitlines()) == 1
    assert extract(str(clip), "--out", str(out), "--modalities", "depth", "--depth-frames", "1", "--force") == 0
    after = np.load(out / "depth" / "carphone_40.npy")
    assert after.shape == before.shape and not np.allclose(after, before)
    entry = json.loads((out / "manifest.json").read_text())["modalities"]["depth"]
    assert entry["frames_per_snippet"] == 1 and entry["replaced"][0]["frames_per_snippet"] == 2
    assert extract(str(clip), "--out", str(out), "--modalities", "depth", "--depth-frames", "1", "--max-side", "100") == 2
    assert "decode_max_side: null -> 100" in capsys.readouterr().err
    # features of unknown origin in the folder: refuse as well
    stray = tmp_path / "other"
    (stray / "flow").mkdir(parents=True)
    np.save(stray / "flow" / "x.npy", np.zeros((3, 128), np.float32))
    assert extract(str(clip), "--out", str(stray), "--modalities", "flow") == 2
    assert "does not describe" in capsys.readouterr().err


def test_T_mismatch_with_rgb_is_caught(clip, tmp_path, capsys):
    from pivad.data.modality_store import ModalityStore

    out = tmp_path / "store"
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    np.save(rgb / "carphone_40__0.npy", np.zeros((5, 1024), np.float32))  # features from another decoder
    assert extract(str(clip), "--out", str(out), "--modalities", "flow", "--rgb-root", str(rgb)) == 1
    assert "T=5" in capsys.readouterr().err and not (out / "flow" / "carphone_40.npy").exists()
    np.save(rgb / "carphone_40__0.npy", np.zeros((3, 1024), np.float32))
    assert extract(str(clip), "--out", str(out), "--modalities", "flow", "--rgb-root", str(rgb)) == 0
    store = ModalityStore(out, [("flow", 128)], t_align="strict")
    assert store.load("carphone_40", 3)["flow"].shape == (3, 128)
    with pytest.raises(DataError, match="carphone_40"):
        store.load("carphone_40", 4)  # the data layer refuses a modality whose T differs from RGB's


def test_bad_command_lines(tmp_path, capsys):
    assert main(["extract", "modalities", "x.mp4", "--out", str(tmp_path), "--modalities", "pose,audio"]) == 2
    assert "unknown audio" in capsys.readouterr().err
    assert main(["extract", "modalities", "--out", str(tmp_path)]) == 2
    assert "give video files/folders or --list FILE" in capsys.readouterr().err
    assert main(["extract", "modalities", "x.mp4", "--out", str(tmp_path), "--modalities", "depth",
                 "--depth-model", "tiny-random", "--depth-layer", "99"]) == 2
    assert "depth layer must be in 1..4" in capsys.readouterr().err
