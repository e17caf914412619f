"""pivad detect (offline): intervals by hand, per-frame rows, the CLI end to end on a real clip, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.config import Config, InductorConfig, ModalityConfig, URDMUConfig, to_dict
from pivad.detect.intervals import Interval, find_intervals, runs
from pivad.detect.pipeline import EncoderOptions, SnippetEncoder, TorchScorer, detect_video, frame_scores
from pivad.engine.checkpoint import save_checkpoint
from pivad.models import build_model
from pivad.video.crops import Resize

CLIP = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"  # 40 frames: 2 full snippets + 8 frames
FAST = ["--i3d-weights", "random:0", "--crop-size", "32", "--resize", "96x72", "--no-progress"]


def tiny_config(crops: int = 1) -> Config:
    cfg = Config()
    cfg.model = URDMUConfig(hidden_dim=16, depth=1, heads=2, dim_head=8, mlp_dim=16, a_nums=6, n_nums=6, head_dim=8)
    cfg.inductor = InductorConfig(latent_dim=8, cmi_depth=1, cmi_heads=2)
    cfg.data.modalities = [ModalityConfig("pose", 4), ModalityConfig("depth", 4)]
    cfg.data.num_crops = crops
    return cfg


def make_checkpoint(path: Path, kind: str = "pivad", threshold: float | None = 0.45, seed: int = 0) -> Path:
    """A randomly initialised tiny UR-DMU/π-VAD saved the way training saves it."""
    cfg = tiny_config()
    torch.manual_seed(seed)
    model = build_model(kind, cfg)
    payload = {"kind": kind, "config": to_dict(cfg), "model": model.state_dict(), "step": 3, "phase": "second"}
    if threshold is not None:
        payload["threshold"] = threshold
    save_checkpoint(path, payload)
    return path


def fast_encoder(crops: int = 1) -> SnippetEncoder:
    return SnippetEncoder(EncoderOptions(crops=crops, weights="random:0", resize=Resize((96, 72)), crop_size=32))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


# ------------------------------------------------------------------------------------------- intervals


def test_runs_and_intervals_by_hand():
    s = np.array([0.1, 0.6, 0.7, 0.2, 0.9, 0.5, 0.1, 0.1, 0.8])
    assert runs(s >= 0.5) == [(1, 2), (4, 5), (8, 8)]
    assert find_intervals(s, 0.5) == [Interval(1, 2, 0.7, 2), Interval(4, 5, 0.9, 4), Interval(8, 8, 0.8, 8)]
    # a gap of 1 frame (index 3) is merged, the gap of 2 (6, 7) is not
    assert find_intervals(s, 0.5, merge_gap=1) == [Interval(1, 5, 0.9, 4), Interval(8, 8, 0.8, 8)]
    assert find_intervals(s, 0.5, merge_gap=2) == [Interval(1, 8, 0.9, 4)]
    assert find_intervals(s, 0.5, min_frames=2) == [Interval(1, 2, 0.7, 2), Interval(4, 5, 0.9, 4)]
    assert find_intervals(s, 0.95) == []
    assert find_intervals(np.full(4, 0.5), 0.5) == [Interval(0, 3, 0.5, 0)]  # >= is above
    assert Interval(16, 31, 0.9, 20).to_dict(fps=16.0) == {
        "start": 16, "end": 31, "peak_score": 0.9, "peak_frame": 20, "start_time": 1.0, "end_time": 2.0}  # fmt: skip


def test_frame_scores_repeat_each_snippet_for_decoded_frames_only():
    out = frame_scores(np.array([0.1, 0.2, 0.3], dtype=np.float32), 40)
    assert out.shape == (40,)
    np.testing.assert_array_equal(out, np.array([0.1] * 16 + [0.2] * 16 + [0.3] * 8, dtype=np.float32))
    with pytest.raises(ValueError):
        frame_scores(np.zeros(2), 40)


# ------------------------------------------------------------------------------------------- pipeline


def test_pipeline_scores_equal_the_model_on_extracted_features(ckpt):
    """Two paths agree: detect_video == I3D features of the same frames scored by the model directly."""
    from pivad.engine.checkpoint import load_inference_model
    from pivad.video.decode import iter_snippets

    encoder = fast_encoder()
    det = detect_video(CLIP, encoder, TorchScorer.from_checkpoint(ckpt))
    assert det.n_frames == 40 and det.features.shape == (1, 3, 1024) and det.snippet_scores.shape == (3,)
    snippets = np.stack([s for _, s in iter_snippets(CLIP, 16, transform=Resize((96, 72)))])  # (3, 16, 72, 96, 3)
    feats = encoder(snippets)  # (3, 1, 1024)
    np.testing.assert_allclose(det.features, feats.transpose(1, 0, 2), rtol=0, atol=1e-5)
    model, _, _ = load_inference_model(ckpt)
    with torch.no_grad():
        ref = model(torch.from_numpy(det.features)[None]).numpy()[0]  # (3,)
    np.testing.assert_allclose(det.snippet_scores, ref, rtol=0, atol=1e-6)
    # --max-frames 20: two snippets, the second padded with frame 19 as a 20-frame video would be
    short = detect_video(CLIP, encoder, TorchScorer.from_checkpoint(ckpt), max_frames=20)
    assert short.n_frames == 20 and short.features.shape[1] == 2
    padded = snippets[:2].copy()
    padded[1, 4:] = padded[1, 3]
    np.testing.assert_allclose(short.features, encoder(padded).transpose(1, 0, 2), rtol=0, atol=1e-5)


def test_detect_cli_precision_bf16(ckpt, tmp_path):
    """``--precision bf16`` runs I3D in bfloat16: scores close to fp32, recorded in the JSON."""
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--precision", precision,
                     *FAST]) == 0  # fmt: skip
        runs[precision] = json.loads((out / "carphone_40.json").read_text())
    assert runs["bf16"]["features"]["precision"] == "bf16" and runs["fp32"]["features"]["precision"] == "fp32"
    np.testing.assert_allclose(runs["bf16"]["snippet_scores"], runs["fp32"]["snippet_scores"], atol=0.05)


def test_detect_and_extract_keep_freed_memory(ckpt, tmp_path, monkeypatch):
    """Both I3D commands set glibc's malloc to reuse freed memory (docs/detect.md); glibc takes it here."""
    import platform

    import pivad.engine.malloc as malloc

    if platform.libc_ver()[0] == "glibc":
        assert malloc.keep_freed_memory() is True
    calls = []
    monkeypatch.setattr(malloc, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "d"), *FAST]) == 0
    assert main(["extract", "rgb", str(CLIP), "--out", str(tmp_path / "e"), "--crops", "1",
                 "--weights", "random:0", "--crop-size", "112", "--no-progress"]) == 0  # fmt: skip
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------------ CLI


def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_detect_cli_writes_csv_json_png_and_mp4(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    # threshold between the snippet scores so that some frames are above: pick it from a first run
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), *FAST]) == 0
    first = json.loads((out / "carphone_40.json").read_text())
    assert first["threshold"] == 0.45 and first["threshold_source"].startswith("checkpoint")
    scores = np.array(first["snippet_scores"])
    low, mid = np.sort(scores)[:2]
    assert mid - low > 1e-5
    threshold = float((low + mid) / 2)  # the two highest-scored snippets are above
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--threshold", str(threshold),
                 "--mp4", *FAST]) == 0  # fmt: skip
    rows = _read_csv(out / "carphone_40.frames.csv")
    assert len(rows) == 40 and list(rows[0]) == ["frame", "time_s", "snippet", "score", "anomalous"]
    assert [int(r["snippet"]) for r in rows] == [f // 16 for f in range(40)]
    assert float(rows[17]["time_s"]) == pytest.approx(17 * 1001 / 30000, abs=1e-6)
    flags = np.array([int(r["anomalous"]) for r in rows])
    expected = np.repeat(scores >= threshold, 16)[:40]
    assert (flags == expected).all() and 0 < flags.sum() < 40
    info = json.loads((out / "carphone_40.json").read_text())
    assert info["threshold_source"] == "--threshold" and info["video"]["n_frames"] == 40
    by_hand = find_intervals(np.repeat(scores, 16)[:40], threshold)
    assert info["intervals"] == [iv.to_dict(30000 / 1001) for iv in by_hand]
    assert info["model"]["kind"] == "pivad" and info["features"]["crops"] == 1
    assert (out / "carphone_40.scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import av

    with av.open(str(out / "carphone_40.overlay.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 40
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert "interval(s)" in capsys.readouterr().out


def test_detect_cli_bad_input_is_one_line_exit_2(ckpt, tmp_path, capsys):
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video\n")
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"garbage")
    out = ["--out", str(tmp_path)]
    cases = [
        (["detect", str(tmp_path / "missing.mp4"), "--ckpt", str(ckpt), *out], "missing.mp4: no such file"),
        (["detect", str(junk), "--ckpt", str(ckpt), *out], "notes.mp4: cannot open as a video"),
        (["detect", str(CLIP), "--ckpt", str(bad_ckpt), *out], "bad.pt: not a readable checkpoint"),
        (["detect", str(CLIP), "--ckpt", str(tmp_path / "nope.pt"), *out], "nope.pt: no such checkpoint"),
        (["detect", str(CLIP), *out], "--ckpt CKPT or --onnx"),
        (["detect", "--ckpt", str(ckpt)], "either a VIDEO file or --stream"),
        (["detect", str(CLIP), "--ckpt", str(ckpt), "--precision", "half", *out], "--precision half: must be one of"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("pivad: error: ") and message in err and "\n" not in err, err
    assert not list(tmp_path.glob("*.json"))


def test_default_threshold_from_checkpoint_else_config(tmp_path):
    from pivad.detect.pipeline import default_threshold

    stored = TorchScorer.from_checkpoint(make_checkpoint(tmp_path / "a.pt", threshold=0.3))
    assert default_threshold(stored)[0] == 0.3
    absent = TorchScorer.from_checkpoint(make_checkpoint(tmp_path / "b.pt", threshold=None))
    assert default_threshold(absent)[0] == tiny_config().eval.threshold == 0.5
