"""The video a report page shows: the source itself when a browser plays it, else an H.264 MP4 beside the page.

Browsers (Chromium, Firefox, Safari) play H.264 in MP4 and VP8/VP9/AV1 in WebM; anything else
(AVI, MPEG-4 Part 2, MJPEG, ...) is re-encoded once to ``<stem>.browser.mp4`` with libx264 (yuv420p),
or to VP9 WebM when the PyAV build has no libx264. Debian's Chromium plays H.264 (tested).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path


PLAYABLE = {".mp4": {"h264", "av1"}, ".m4v": {"h264"}, ".webm": {"vp8", "vp9", "av1"}}
PLAYABLE_PIXELS = {"yuv420p", "yuvj420p"}


def plays_in_browser(path: str | Path) -> bool:
    """True when the file's container (by suffix) and first video stream are ones browsers decode."""
    import av

    path = Path(path)
    codecs = PLAYABLE.get(path.suffix.lower())
    if not codecs:
        return False
    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return ctx.name in codecs and (ctx.pix_fmt or "") in PLAYABLE_PIXELS
    except Exception:  # noqa: BLE001 - anything PyAV cannot read is not playable either
        return False


def _encoder(container, rate: Fraction, width: int, height: int):
    """An H.264 stream, else VP9 (the suffix of the container decides which one fits)."""
    codec = "libx264" if container.name.endswith(".mp4") else "libvpx-vp9"
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width - width % 2, height - height % 2
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "23", "preset": "veryfast"} if codec == "libx264" else {"crf": "32", "b": "0",
                                                                                       "deadline": "realtime"}
    return stream


def _suffix() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
        return ".mp4"
    except Exception:  # noqa: BLE001 - this FFmpeg build has no libx264
        return ".webm"


def transcode_for_browser(video: str | Path, out_dir: str | Path, stem: str, fps: float) -> Path:
    """Re-encode ``video`` as ``out_dir/<stem>.browser.mp4`` (H.264; ``.webm``, VP9, without libx264)."""
    from pivad.video.decode import iter_frames
    from pivad.video.encode import write_frames

    path = Path(out_dir) / f"{stem}.browser{_suffix()}"
    return write_frames(path, iter_frames(video), fps, _encoder, empty=f"{video}: no frames to re-encode for the page")


def page_video(video: str | Path, out_dir: str | Path, stem: str, fps: float) -> tuple[Path, str]:
    """The file the page plays and how it was chosen (``source`` or ``re-encoded``)."""
    if plays_in_browser(video):
        return Path(video), "source"
    return transcode_for_browser(video, out_dir, stem, fps), "re-encoded"
