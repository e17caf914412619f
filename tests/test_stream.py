"""Streaming detection: window/lag semantics against offline scoring, a file that grows while read, the CLI."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.detect.pipeline import EncoderOptions, TorchScorer, detect_video
from pivad.detect.stream import GrowingFile, StreamScorer, open_source, run_stream, stream_features
from pivad.errors import PivadError, VideoError
from pivad.video.crops import Resize
from pivad.video.decode import iter_frames
from test_detect import CLIP, FAST, fast_encoder, make_checkpoint


class PixelEncoder:
    """Stand-in for I3D in the window/lag tests (the real I3D path is tested below and in test_detect):
    a fixed random projection of each snippet's per-frame colour means, ``[N,16,H,W,3] -> [N,1,1024]``."""

    def __init__(self):
        self.options = EncoderOptions(crops=1, resize=Resize((48, 36)), crop_size=32)
        self.proj = np.random.default_rng(0).standard_normal((16 * 3, 1024)).astype(np.float32)

    def __call__(self, snippets: np.ndarray) -> np.ndarray:
        means = snippets.reshape(len(snippets), 16, -1, 3).mean(2) / 255.0  # (N, 16, 3)
        return (means.reshape(len(snippets), -1).astype(np.float32) @ self.proj)[:, None]  # (N, 1, 1024)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    scorer = TorchScorer.from_checkpoint(ckpt)
    encoder = PixelEncoder()
    offline = detect_video(CLIP, encoder, scorer)  # 3 snippets
    return ckpt, scorer, encoder, offline


def _model_scores(scorer, feats: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return scorer.model(torch.from_numpy(np.ascontiguousarray(feats))[None]).numpy()[0]


def _stream(scorer, encoder, window: int, lag: int, frames=None):
    streamer = StreamScorer(encoder, scorer, threshold=0.5, fps=30.0, window=window, lag=lag)
    emitted = []
    for frame in frames if frames is not None else iter_frames(CLIP):
        emitted += streamer.push(frame)
    emitted += streamer.finish()
    return streamer, emitted


def test_stream_matches_offline_semantics(setup):
    _, scorer, encoder, offline = setup
    feats = offline.features  # (1, 3, 1024) the same frames, resized and encoded as in the stream
    streamer, emitted = _stream(scorer, encoder, window=8, lag=0)
    assert [s.snippet for s in emitted] == [0, 1, 2] and [s.emitted_after for s in emitted] == [1, 2, 3]
    # video shorter than the window: the final window scores are the offline scores
    assert np.abs(streamer.final_scores - offline.snippet_scores).max() < 1e-6
    # lag 0: snippet s is scored with snippets 0..s only (the model is not causal, so this differs from offline)
    for s in emitted:
        assert s.score == pytest.approx(float(_model_scores(scorer, feats[:, : s.snippet + 1])[s.snippet]), abs=1e-6)
    assert emitted[-1].score == pytest.approx(float(offline.snippet_scores[-1]), abs=1e-6)
    assert emitted[0].time_s == 0 and emitted[1].time_s == pytest.approx(16 / 30)
    # the feature-level replay (used to measure streamed vs offline on long videos) gives the same scores
    replayed, final = stream_features(feats, scorer, window=8, lag=0)
    np.testing.assert_array_equal(replayed, [s.score for s in emitted])
    # the final window is one more model call on the same features; its kernels may round differently (1 ulp on
    # AVX2 CPUs), so the same 1e-6 as the offline comparison above
    np.testing.assert_allclose(final, streamer.final_scores, rtol=0, atol=1e-6)
    # lag 1: snippet s is emitted once s+1 completes and sees it
    _, lagged = _stream(scorer, encoder, window=8, lag=1)
    assert [s.emitted_after for s in lagged] == [2, 3, 3]
    expected = [_model_scores(scorer, feats[:, :2])[0], *offline.snippet_scores[1:]]
    np.testing.assert_allclose([s.score for s in lagged], expected, rtol=0, atol=1e-6)


def test_window_drops_old_snippets(setup):
    _, scorer, encoder, offline = setup
    feats = offline.features
    _, emitted = _stream(scorer, encoder, window=2, lag=0)
    # snippet 2 is scored from snippets 1..2 only
    assert emitted[2].score == pytest.approx(float(_model_scores(scorer, feats[:, 1:3])[1]), abs=1e-6)
    with pytest.raises(PivadError, match="--lag 2"):
        StreamScorer(encoder, scorer, 0.5, 30.0, window=2, lag=2)


def _write_growing_mjpeg(path: Path, frames: list[np.ndarray], pause: float) -> None:
    import cv2

    with open(path, "ab") as fh:
        for frame in frames:
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            fh.write(jpg.tobytes())
            fh.flush()
            time.sleep(pause)


def test_growing_file_is_read_while_written(setup, tmp_path):
    """A writer thread appends JPEG frames to an MJPEG file while the stream reads it; the stream sees
    every frame, waits for growth, and stops idle_timeout after the writer does (timeouts generous for a loaded machine)."""
    _, scorer, _, _ = setup
    encoder = fast_encoder()  # the real I3D here
    frames = list(iter_frames(CLIP))[:24]  # 1 full snippet + 8 frames
    path = tmp_path / "live.mjpeg"
    _write_growing_mjpeg(path, frames[:2], 0)  # the recorder has started
    writer = threading.Thread(target=_write_growing_mjpeg, args=(path, frames[2:], 0.03))
    writer.start()
    try:
        source = open_source(str(path), idle_timeout=2.0, poll=0.01)
        streamer = StreamScorer(encoder, scorer, threshold=0.5, fps=source.fps, window=8)
        started = time.monotonic()
        emitted = run_stream(source, streamer, lambda s: None)
        elapsed = time.monotonic() - started
    finally:
        writer.join()
    assert streamer.n_frames == 24 and [s.snippet for s in emitted] == [0, 1]
    assert elapsed >= 2.0  # it waited for the idle timeout after the last frame
    # the same file read offline afterwards gives the same scores (final window == offline for T < W)
    offline = detect_video(path, encoder, scorer)
    assert offline.n_frames == 24
    np.testing.assert_allclose(streamer.final_scores, offline.snippet_scores, rtol=0, atol=1e-6)


def test_growing_file_reader_waits_then_ends(tmp_path):
    path = tmp_path / "g.bin"
    path.write_bytes(b"ab")
    reader = GrowingFile(path, idle_timeout=1.5, poll=0.01)
    assert reader.read(10) == b"ab"
    threading.Timer(0.1, lambda: open(path, "ab").write(b"cd")).start()
    assert reader.read(10) == b"cd"  # arrived while waiting
    started = time.monotonic()
    assert reader.read(10) == b""  # no growth for idle_timeout: end of stream
    assert time.monotonic() - started >= 1.5
    reader.close()


def test_stream_cli_prints_one_line_per_snippet_and_appends_csv(setup, tmp_path, capsys):
    ckpt = setup[0]
    csv_path = tmp_path / "scores.csv"
    argv = ["detect", "--stream", str(CLIP), "--ckpt", str(ckpt), "--idle-timeout", "0.1", "--csv", str(csv_path),
            *FAST]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "snippet,time_s,score,anomalous" and len(lines) == 4
    assert [int(line.split(",")[0]) for line in lines[1:]] == [0, 1, 2]
    assert all(0 < float(line.split(",")[2]) < 1 for line in lines[1:])
    assert csv_path.read_text().splitlines() == lines
    with pytest.raises(VideoError, match="no such file"):
        open_source(str(tmp_path / "missing.ts"))
    assert main(["detect", "--stream", str(tmp_path / "missing.ts"), "--ckpt", str(ckpt), *FAST]) == 2
    assert "missing.ts: no such file" in capsys.readouterr().err


def test_url_source_reads_over_http():
    """An http:// source goes through PyAV/FFmpeg's network input (a local server here)."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no request log on stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(CLIP.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/{CLIP.name}")
        frames = list(source.frames)
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) == 40 and source.fps == pytest.approx(30000 / 1001)
    np.testing.assert_array_equal(frames[7], list(iter_frames(CLIP))[7])
