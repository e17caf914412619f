"""Writing RGB frames to a video file (PyAV), atomically: used by the overlay MP4 and the report page's copy."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from pivad.errors import PivadError
from pivad.io import atomic_path


def frame_rate(fps: float) -> Fraction:
    """The container's frame rate for ``fps`` (30 when the source does not say)."""
    return Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)


def write_frames(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                 add_stream: Callable, *, empty: str) -> Path:
    """Encode RGB frames ``[H, W, 3]`` uint8 into ``path`` (written under a temporary name, then renamed).

    ``add_stream(container, rate, width, height)`` adds the video stream once the first frame's size is
    known; frames are cropped to the stream's size (even, for yuv420p). ``empty``: the error when no
    frame comes.
    """
    import av

    path = Path(path)
    rate = frame_rate(fps)
    with atomic_path(path, suffix=path.suffix) as tmp:
        container = av.open(str(tmp), mode="w")
        try:
            stream = None
            for frame in frames:
                if stream is None:
                    stream = add_stream(container, rate, frame.shape[1], frame.shape[0])
                img = frame[: stream.height, : stream.width]
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise PivadError(empty)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return path
