"""Video decoding, streamed: frames one at a time and 16-frame snippets, with bounded memory.

PyAV (FFmpeg) is the decoder; OpenCV is used only when PyAV is not installed (both give the same
frames for the clips we checked: see docs/video.md). Frames come out as RGB ``uint8 [H,W,3]`` in
decode order, every frame (no seeking, no frame-rate resampling). Any file that cannot be opened or
decoded raises :class:`~pivad.errors.VideoError` with a one-line message naming it.

Snippets are 16 consecutive non-overlapping frames; the last one is padded by repeating the last
decoded frame, so a video of ``n`` frames gives ``ceil(n/16)`` snippets (the field's convention).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pivad.errors import VideoError

SNIPPET = 16


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns from a container without decoding it."""

    path: Path
    fps: float  # average frame rate of the video stream
    n_frames: int  # frame count from the container header, else counted from the demuxed packets
    width: int
    height: int

    @property
    def n_snippets(self) -> int:
        """``ceil(n_frames / 16)``: snippets :func:`iter_snippets` yields (if the header count is right)."""
        return math.ceil(self.n_frames / SNIPPET)


def _backend() -> str:
    try:
        import av  # noqa: F401

        return "av"
    except ImportError:
        pass
    try:
        import cv2  # noqa: F401

        return "cv2"
    except ImportError:
        raise VideoError("no video decoder installed: pip install 'pivad[video]' (PyAV)") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")


def error_reason(exc: BaseException) -> str:
    """A decoder exception as a short one-line reason for a user-facing error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def frames_short(path: object, decoded: int, header: int) -> str | None:
    """A one-line problem when ``decoded`` frames fall well short of the header's ``header`` (a file cut
    short or damaged; decoders stop quietly at its end), else None. A few frames' difference (edit
    lists, headers that count a trailing frame) is normal: short means more than 2 frames and 2%."""
    if header <= 0 or header - decoded <= max(2, header // 50):
        return None
    return f"{path}: decoded {decoded} of the {header} frames its header announces (file truncated or damaged?)"


def decode_rgb(container, stream, name: object) -> Iterator[np.ndarray]:
    """RGB frames ``uint8 (H, W, 3)`` of a PyAV video ``stream``; a decoder failure becomes a
    one-line VideoError naming ``name``. The caller owns (and closes) the container."""
    decoded = container.decode(stream)
    while True:
        try:
            frame = next(decoded)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            raise VideoError(f"{name}: decoding failed ({error_reason(exc)})") from None
        yield frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8


def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - FFmpeg raises many error types for bad input
        raise VideoError(f"{path}: cannot open as a video ({error_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size of a video, from its header (packets counted if the header lacks it)."""
    path = Path(path)
    _check_file(path)
    if _backend() == "cv2":
        return _probe_cv2(path)
    container = _open_av(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        n_frames = int(stream.frames or 0)
        if n_frames <= 0:  # e.g. mkv/webm headers carry no count: count packets (no decoding)
            try:
                n_frames = sum(1 for packet in container.demux(stream) if packet.size)
            except Exception as exc:  # noqa: BLE001
                raise VideoError(f"{path}: cannot read the video stream ({error_reason(exc)})") from None
    finally:
        container.close()
    if width <= 0 or height <= 0:
        raise VideoError(f"{path}: video stream has no frame size")
    return VideoInfo(path=path, fps=fps, n_frames=n_frames, width=width, height=height)


def timing_note(path: str | Path, fps: float) -> str | None:
    """One line when the frames of ``path`` are not evenly spaced at ``fps`` (variable frame rate): times
    computed as ``frame / fps`` are then off by more than a frame. None for an even rate, or where the
    timestamps cannot be read (OpenCV backend, no pts). Reads packet timestamps only (no decoding)."""
    if fps <= 0 or _backend() != "av":
        return None
    container = _open_av(Path(path))
    try:
        stream = container.streams.video[0]
        base = float(stream.time_base or 0)
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)  # presentation order
    except Exception:  # noqa: BLE001 - a damaged file is reported by the decoder, not here
        return None
    finally:
        container.close()
    if len(pts) < 3 or base <= 0:
        return None
    t = (np.asarray(pts, dtype=np.float64) - pts[0]) * base  # (n,) seconds from the first frame
    drift = float(np.abs(t - np.arange(len(t)) / fps).max())
    if drift <= 1.0 / fps:
        return None
    gaps = np.diff(t) * 1000
    return (f"{path}: variable frame rate (frames {gaps.min():.0f}-{gaps.max():.0f} ms apart): times use the "
            f"average {fps:.3g} fps and are off by up to {drift:.2f} s")


def _probe_cv2(path: Path) -> VideoInfo:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: cannot open as a video")
        info = VideoInfo(
            path=path,
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            n_frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        cap.release()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: cannot open as a video")
    return info


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of the first video stream, in order, as RGB ``uint8 [H,W,3]``; one frame in memory at a time.

    Raises VideoError if the file cannot be opened, holds no frame, or fails to decode part-way.
    """
    path = Path(path)
    _check_file(path)
    frames = _iter_frames_cv2(path) if _backend() == "cv2" else _iter_frames_av(path)
    count = 0
    for frame in frames:
        count += 1
        yield frame
    if count == 0:
        raise VideoError(f"{path}: no decodable video frames")


def _iter_frames_av(path: Path) -> Iterator[np.ndarray]:
    container = _open_av(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame/slice threads inside FFmpeg; frames still come in order
        yield from decode_rgb(container, stream, path)
    finally:
        container.close()


def _iter_frames_cv2(path: Path) -> Iterator[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: cannot open as a video")
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8
    finally:
        cap.release()


def map_frames(frames: Iterator[np.ndarray], fn: Callable[[np.ndarray], np.ndarray],
               workers: int = 1) -> Iterator[np.ndarray]:
    """``fn(frame)`` of every frame, in order; with ``workers > 1`` on a thread pool, a few frames at a time
    (PIL and OpenCV release the GIL while they resize, so the frames' resizes share the cores)."""
    if workers <= 1:
        for frame in frames:
            yield fn(frame)
        return
    chunk: list[np.ndarray] = []
    with ThreadPoolExecutor(workers) as pool:
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == 4 * workers:
                yield from pool.map(fn, chunk)
                chunk = []
        if chunk:
            yield from pool.map(fn, chunk)


def iter_snippets(
    path: str | Path,
    snippet: int = SNIPPET,
    batch: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    workers: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """Non-overlapping snippets of ``snippet`` frames, streamed.

    Yields ``(index, frames [snippet,H,W,3])``; with ``batch=k``, ``(first_index, frames [n,snippet,H,W,3])``
    with ``n <= k`` (the last batch may be short). The last snippet is padded by repeating the last frame.
    ``transform`` (e.g. a resize) is applied to each frame as it is decoded, so buffers hold
    transformed frames only; ``workers > 1`` runs it on that many threads (:func:`map_frames`).
    Memory: one snippet (or one batch) of frames.
    """
    if snippet < 1:
        raise ValueError("snippet must be >= 1")
    group = 1 if batch is None else int(batch)
    if group < 1:
        raise ValueError("batch must be >= 1")
    buffer: np.ndarray | None = None  # (group*snippet, H, W, 3)
    filled = 0  # frames in buffer
    first = 0  # index of the first snippet in the buffer
    last: np.ndarray | None = None
    frames = iter_frames(path)
    if transform is not None:
        frames = map_frames(frames, transform, workers)
    for frame in frames:
        if buffer is None or filled == 0 and buffer.shape[1:] != frame.shape:
            buffer = np.empty((group * snippet, *frame.shape), dtype=frame.dtype)
        elif buffer.shape[1:] != frame.shape:
            raise VideoError(f"{Path(path)}: frame size changes mid-stream ({buffer.shape[1:3]} -> {frame.shape[:2]})")
        buffer[filled] = frame
        filled += 1
        last = frame
        if filled == buffer.shape[0]:
            yield from _emit(buffer, first, snippet, batch)
            first += group
            filled = 0
    if filled:
        n_snippets = math.ceil(filled / snippet)
        buffer[filled : n_snippets * snippet] = last  # repeat the last frame
        yield from _emit(buffer[: n_snippets * snippet], first, snippet, batch)


def _emit(frames: np.ndarray, first: int, snippet: int, batch: int | None) -> Iterator[tuple[int, np.ndarray]]:
    snippets = frames.reshape(-1, snippet, *frames.shape[1:])  # (n, snippet, H, W, 3)
    if batch is None:
        for offset, clip in enumerate(snippets):
            yield first + offset, clip.copy()
    else:
        yield first, snippets.copy()
