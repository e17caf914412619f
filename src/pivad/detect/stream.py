"""Streaming detection: frames from a growing file, a camera or a URL, scored snippet by snippet.

Sources (:func:`open_source`):

* a **file that may still be growing** (a recorder writing it): read through :class:`GrowingFile`, which
  waits for new bytes instead of reporting the end, until ``idle_timeout`` seconds pass without growth.
  Use a container that can be read while written: MPEG-TS, Matroska/WebM, MJPEG, fragmented MP4
  (a plain MP4 keeps its index at the end: it is readable only once finished);
* a **camera index** (``0``), through OpenCV's ``VideoCapture``;
* an **RTSP/HTTP(S) URL**, through PyAV (FFmpeg), the decoder files use.

Scoring (:class:`StreamScorer`): frames are resized as offline, grouped into 16-frame snippets; each
completed snippet goes through I3D, its ``[C,1024]`` features join a window of the last ``W`` snippets
(older ones are dropped), and the whole window is re-scored. With ``lag = L`` the score emitted when
snippet ``s`` completes is snippet ``s - L``'s, read from the window, so it has seen ``L`` snippets of
future. At the end of the stream the last partial snippet is padded as offline (repeat the last frame)
and every snippet not yet emitted is emitted from the final window.

How this differs from offline scoring: offline, the model sees the whole video (its temporal conv looks
one snippet ahead, its attention spans every snippet). In a stream the score of snippet ``s`` sees
snippets ``max(0, s+L-W+1) .. s+L`` only. So (a) for ``L = 0`` scores differ from offline ones (the
model is not causal); they are exactly the offline scores of the truncated feature sequence, which is
what the tests check; (b) the *final window* scores (:attr:`StreamScorer.final_scores`) of a stream
shorter than ``W`` snippets equal the offline scores (the same computation: 0 difference on
vtest.avi, docs/detect.md; the tests check <= 1e-6).

Bounds: memory holds one snippet of resized frames plus ``W x C x 1024`` float32 features
(W=200, C=10: 8 MB); the score of snippet ``s`` is known ``L`` snippets after it completes plus one I3D
pass over ``C`` clips and one model pass over ``W`` snippets.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np

from pivad.detect.pipeline import SnippetEncoder, StageTimer, checked_scores
from pivad.errors import DiskError, PivadError, VideoError
from pivad.io import disk_problem
from pivad.video.crops import frame_transform
from pivad.video.decode import SNIPPET, decode_rgb, error_reason


DEFAULT_WINDOW = 200  # snippets, used when the model's config does not say (data.num_segments)
MJPEG_SUFFIXES = (".mjpeg", ".mjpg")


class GrowingFile:
    """A read-only file object for a file another process is still writing.

    ``read(n)`` returns the bytes already there (up to ``n``); when there are none it polls every
    ``poll`` seconds and returns ``b""`` (end of stream) only after ``idle_timeout`` seconds without
    growth. Seeking works within what has been written.
    """

    def __init__(self, path: str | Path, idle_timeout: float = 5.0, poll: float = 0.05):
        self.path = Path(path)
        self.idle_timeout, self.poll = float(idle_timeout), float(poll)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise VideoError(f"{self.path}: cannot open ({exc.strerror})") from None
        self.waited = 0.0  # seconds spent waiting for growth, in total

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if data:
            return data
        deadline = time.monotonic() + self.idle_timeout
        while time.monotonic() < deadline:
            start = time.monotonic()
            time.sleep(self.poll)
            self.waited += time.monotonic() - start
            data = self._fh.read(n)
            if data:
                return data
        return b""

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()


@dataclass
class Source:
    """An opened frame source: RGB ``uint8 [H,W,3]`` frames and the frame rate (0 if unknown)."""

    name: str
    frames: Iterator[np.ndarray]
    fps: float


def open_source(source: str, idle_timeout: float = 5.0, poll: float = 0.05) -> Source:
    """A camera index (``"0"``), a URL (``rtsp://``, ``http(s)://``...) or a (growing) file path."""
    if source.isdigit():
        return _open_camera(int(source))
    if "://" in source:
        return _open_av(source, source, {"rtsp_transport": "tcp"} if source.startswith("rtsp") else None, None)
    path = Path(source)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    fmt = "mjpeg" if path.suffix.lower() in MJPEG_SUFFIXES else None
    return _open_av(str(path), GrowingFile(path, idle_timeout, poll), None, fmt)


def _open_av(name: str, target, options: dict | None, fmt: str | None) -> Source:
    import av

    try:
        container = av.open(target, mode="r", format=fmt, options=options or {})
    except Exception as exc:  # noqa: BLE001 - FFmpeg raises many error types
        if hasattr(target, "close"):
            target.close()
        raise VideoError(f"{name}: cannot open as a video ({error_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0

    def frames() -> Iterator[np.ndarray]:
        try:
            yield from decode_rgb(container, stream, name)  # (H, W, 3)
        finally:
            container.close()
            if hasattr(target, "close"):
                target.close()

    return Source(name, frames(), fps)


def _open_camera(index: int) -> Source:
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise VideoError(f"camera {index}: cannot open")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return Source(f"camera {index}", frames(), fps)


# -------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class StreamScore:
    snippet: int  # snippet index from the start of the stream
    time_s: float  # time of its first frame
    score: float
    anomalous: bool  # score >= threshold
    emitted_after: int  # snippets complete when it was emitted (snippet + 1 + lag, fewer at the end)


class SnippetWindow:
    """The window/lag logic on snippet features: push ``[C,1024]`` per completed snippet, get scores."""

    def __init__(self, scorer: Callable[[np.ndarray], np.ndarray], threshold: float, fps: float,
                 window: int = DEFAULT_WINDOW, lag: int = 0, name: str = "the stream"):  # fmt: skip
        if window < 1:
            raise PivadError(f"--window {window}: must be >= 1")
        if not 0 <= lag < window:
            raise PivadError(f"--lag {lag}: must be in 0..window-1 ({window - 1})")
        self.scorer, self.threshold, self.name = scorer, float(threshold), name
        self.model = getattr(scorer, "source", "") or "the model"  # its file, for errors
        self.fps = fps if fps > 0 else 30.0
        self.window, self.lag = window, lag
        self.timer = StageTimer()
        self._feats: deque[np.ndarray] = deque(maxlen=window)  # each (C, 1024)
        self.n_snippets = 0  # completed snippets
        self.n_emitted = 0
        self.final_scores: np.ndarray | None = None  # window scores at the end of the stream
        self._last_scores: np.ndarray | None = None

    def push(self, feats: np.ndarray) -> list[StreamScore]:
        """Add one snippet's features ``[C,1024]``; returns the scores that became available (0 or 1)."""
        self._feats.append(np.asarray(feats, dtype=np.float32))
        self.n_snippets += 1
        with self.timer.stage("model"):
            window = np.stack(self._feats, axis=1)  # (C, W', 1024)
            where = f"{self.name}, the window ending at snippet {self.n_snippets - 1}"
            self._last_scores = checked_scores(self.scorer(window), window.shape[1], self.model, where)  # (W',)
        target = self.n_snippets - 1 - self.lag
        return self._emit_upto(target) if target >= 0 else []

    def finish(self) -> list[StreamScore]:
        """End of stream: emit every snippet not emitted yet, from the last window."""
        if self.n_snippets == 0:
            return []
        self.final_scores = self._last_scores
        return self._emit_upto(self.n_snippets - 1)

    def _emit_upto(self, last: int) -> list[StreamScore]:
        out = []
        first_in_window = self.n_snippets - len(self._feats)
        for s in range(self.n_emitted, last + 1):
            score = float(self._last_scores[s - first_in_window])
            out.append(StreamScore(s, s * SNIPPET / self.fps, score, score >= self.threshold, self.n_snippets))
        self.n_emitted = last + 1
        return out


def stream_features(feats: np.ndarray, scorer: Callable[[np.ndarray], np.ndarray], window: int, lag: int = 0,
                    threshold: float = 0.5, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Replay a whole video's features ``[C,T,1024]`` through :class:`SnippetWindow`:
    ``(emitted scores [T], final window scores [min(T, window)])``."""
    win = SnippetWindow(scorer, threshold, fps, window, lag)
    emitted = [s for t in range(feats.shape[1]) for s in win.push(feats[:, t])] + win.finish()
    return np.array([s.score for s in emitted], dtype=np.float32), win.final_scores


class StreamScorer:
    """Push frames, get snippet scores (see the module docstring for the window and lag semantics)."""

    def __init__(
        self,
        encoder: SnippetEncoder,
        scorer: Callable[[np.ndarray], np.ndarray],
        threshold: float,
        fps: float,
        window: int = DEFAULT_WINDOW,
        lag: int = 0,
        name: str = "the stream",
    ):
        self.encoder = encoder
        self.window = SnippetWindow(scorer, threshold, fps, window, lag, name)
        self.timer = self.window.timer  # decode, i3d and model seconds
        self.fps = self.window.fps
        self._frames: np.ndarray | None = None  # (16, h, w, 3) resized frames of the open snippet
        opt = encoder.options
        self._transform = frame_transform(opt.resize, opt.crops, opt.crop_size)[0]  # as offline
        self._filled = 0
        self.n_frames = 0

    @property
    def final_scores(self) -> np.ndarray | None:
        return self.window.final_scores

    def push(self, frame: np.ndarray) -> list[StreamScore]:
        """Add one RGB frame; returns the scores that became available (zero or one)."""
        with self.timer.stage("decode"):
            frame = self._transform(frame)
        if self._frames is None:
            self._frames = np.empty((SNIPPET, *frame.shape), dtype=np.uint8)
        elif frame.shape != self._frames.shape[1:]:
            raise VideoError(f"frame size changes mid-stream ({self._frames.shape[1:3]} -> {frame.shape[:2]})")
        self._frames[self._filled] = frame
        self._filled += 1
        self.n_frames += 1
        return self._complete_snippet() if self._filled == SNIPPET else []

    def finish(self) -> list[StreamScore]:
        """End of stream: pad and score the open snippet, emit everything not emitted yet."""
        out = []
        if self._filled:
            self._frames[self._filled :] = self._frames[self._filled - 1]  # repeat the last frame
            out = self._complete_snippet()
        return out + self.window.finish()

    def _complete_snippet(self) -> list[StreamScore]:
        with self.timer.stage("i3d"):
            feats = self.encoder(self._frames[None])[0]  # (C, 1024)
        self._filled = 0
        return self.window.push(feats)


def run_stream(
    source: Source,
    scorer: StreamScorer,
    emit: Callable[[StreamScore], None],
    max_frames: int | None = None,
) -> list[StreamScore]:
    """Feed every frame of ``source`` to ``scorer``, calling ``emit`` for each score as it appears."""
    scores: list[StreamScore] = []
    frames = scorer.timer.timed_iter("decode", source.frames)
    for i, frame in enumerate(frames):
        if max_frames is not None and i >= max_frames:
            break
        for s in scorer.push(frame):
            emit(s)
            scores.append(s)
    frames.close()
    close = getattr(source.frames, "close", None)
    if close is not None:
        close()  # releases the decoder (and the camera) now, not at garbage collection
    for s in scorer.finish():
        emit(s)
        scores.append(s)
    return scores


STREAM_HEADER = "snippet,time_s,score,anomalous"


def format_line(s: StreamScore) -> str:
    return f"{s.snippet},{s.time_s:.3f},{s.score:.6f},{int(s.anomalous)}"


class CsvAppender:
    """Appends one line per score and flushes it, so a reader (or a crash) sees whole lines only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        if new:
            self._write(STREAM_HEADER)

    def __call__(self, s: StreamScore) -> None:
        self._write(format_line(s))

    def _write(self, line: str) -> None:
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk: one line naming the file (pivad.io.DISK_PROBLEMS)
            if (problem := disk_problem(exc)) is None:
                raise
            raise DiskError(f"{self.path}: {problem}") from None

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:  # a full disk: what could not be flushed was reported by _write
            if disk_problem(exc) is None:
                raise
