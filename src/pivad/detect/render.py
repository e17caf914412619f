"""Pictures of a detection: the score curve (PNG) and the video with its score drawn on (MP4).

Both are written atomically (a temporary file beside the target, then one rename).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from pivad.detect.intervals import Interval
from pivad.errors import PivadError
from pivad.io import atomic_path

ABOVE_RGB = (230, 40, 40)  # colour of the frame border and bar while the score is above the threshold
BELOW_RGB = (40, 200, 80)


def plot_scores(
    path: str | Path,
    frame_scores: np.ndarray,
    fps: float,
    threshold: float,
    intervals: Sequence[Interval],
    title: str = "",
) -> Path:
    """Frame score over time, the threshold as a dashed line, detected intervals shaded."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n = len(frame_scores)
    t = np.arange(n + 1) / fps  # (n+1,) frame edges in seconds
    fig, ax = plt.subplots(figsize=(9, 2.8))
    ax.stairs(frame_scores, t, color="tab:blue", linewidth=1.2, label="score")
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    for k, iv in enumerate(intervals):
        ax.axvspan(iv.start / fps, (iv.end + 1) / fps, color="tab:red", alpha=0.18, linewidth=0,
                   label="detected" if k == 0 else None)  # fmt: skip
    ax.set_xlim(0, max(t[-1], 1e-6))
    ax.set_ylim(0, 1.02 if float(np.max(frame_scores, initial=0)) <= 1 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("anomaly score")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def draw_overlay(frame: np.ndarray, score: float, threshold: float, time_s: float) -> np.ndarray:
    """A copy of ``frame`` (RGB uint8 [H,W,3]) with the score as text and a bar, red border when above."""
    import cv2

    out = np.ascontiguousarray(frame).copy()
    h, w = out.shape[:2]
    above = score >= threshold
    colour = ABOVE_RGB if above else BELOW_RGB
    bar_h = max(6, h // 40)
    cv2.rectangle(out, (0, h - bar_h), (w - 1, h - 1), (0, 0, 0), -1)
    cv2.rectangle(out, (0, h - bar_h), (int(round(np.clip(score, 0, 1) * (w - 1))), h - 1), colour, -1)
    tx = int(round(np.clip(threshold, 0, 1) * (w - 1)))
    cv2.line(out, (tx, h - bar_h), (tx, h - 1), (255, 255, 255), 1)
    scale = max(0.3, w / 700)
    text = f"{time_s:.2f}s score {score:.3f}" + (" ANOMALY" if above else "")
    org = (4, 4 + int(round(22 * scale)))
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    if above:
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), ABOVE_RGB, max(2, w // 160))
    return out


def write_overlay_video(
    path: str | Path,
    video: str | Path,
    frame_scores: np.ndarray,
    fps: float,
    threshold: float,
) -> Path:
    """Re-decode ``video`` and write it as H.264 MP4 (MPEG-4 Part 2 if libx264 is missing) with the scores drawn on."""
    from pivad.video.decode import iter_frames
    from pivad.video.encode import frame_rate, write_frames

    rate = frame_rate(fps)
    frames = (draw_overlay(frame, float(score), threshold, i / float(rate))
              for i, (frame, score) in enumerate(zip(iter_frames(video), frame_scores)))
    return write_frames(path, frames, fps, _add_stream, empty=f"{video}: no frames to draw")


def _add_stream(container, rate: Fraction, width: int, height: int):
    for codec, options in (("libx264", {"crf": "20", "preset": "veryfast"}), ("mpeg4", {"qscale": "3"})):
        try:
            stream = container.add_stream(codec, rate=rate)
        except Exception:  # noqa: BLE001 - codec not built into this FFmpeg
            continue
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = options
        return stream
    raise PivadError("no MP4 video encoder (libx264 or mpeg4) in this PyAV build")
