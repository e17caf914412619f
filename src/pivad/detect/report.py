"""The files ``pivad detect`` writes for one video: per-frame CSV, summary JSON, score PNG (all atomic).

``<out>/<video>.frames.csv``: one row per decoded frame::

    frame,time_s,snippet,score,anomalous
    0,0.000000,0,0.412345,0

``<out>/<video>.json``: video info, threshold (and where it came from), the interval rule, the
intervals (start/end frame and time, peak score), the model and feature settings, stage timings.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from pivad.detect.intervals import Interval, above_threshold
from pivad.detect.pipeline import Detection
from pivad.io import atomic_write_json, atomic_write_text, json_safe
from pivad.video.decode import SNIPPET


def frames_csv(frame_scores: np.ndarray, fps: float, threshold: float) -> str:
    """The CSV text (header + one row per frame)."""
    n = len(frame_scores)
    flags = above_threshold(frame_scores, threshold)
    buf = io.StringIO()
    buf.write("frame,time_s,snippet,score,anomalous\n")
    for f in range(n):
        buf.write(f"{f},{f / fps:.6f},{f // SNIPPET},{float(frame_scores[f]):.6f},{int(flags[f])}\n")
    return buf.getvalue()


def summary(
    det: Detection,
    threshold: float,
    threshold_source: str,
    intervals: list[Interval],
    rule: dict[str, int],
    model: dict[str, Any],
    features: dict[str, Any],
) -> dict[str, Any]:
    fps = det.fps
    scores = det.frame_scores
    return {
        "video": {
            "path": str(det.info.path),
            "fps": det.info.fps,
            "n_frames": det.n_frames,  # decoded
            "n_frames_header": det.info.n_frames,
            "width": det.info.width,
            "height": det.info.height,
            "n_snippets": int(len(det.snippet_scores)),
            "duration_s": round(det.n_frames / fps, 6),
        },
        "threshold": threshold,
        "threshold_source": threshold_source,
        "interval_rule": {"above": "score >= threshold", **rule},
        "intervals": [iv.to_dict(fps) for iv in intervals],
        "anomalous_frames": int(above_threshold(scores, threshold).sum()),
        "score": {"max": float(scores.max()), "mean": float(scores.mean()), "min": float(scores.min())},
        "snippet_scores": [float(s) for s in det.snippet_scores],
        "model": json_safe(model),  # a metric the checkpoint records as undefined (NaN) is written null
        "features": features,
        "warnings": list(det.warnings),
        "timings_s": {k: round(v, 4) for k, v in det.timings.items()},
    }


def write_detection(out_dir: str | Path, stem: str, det: Detection, payload: dict[str, Any], threshold: float,
                    intervals: list[Interval]) -> dict[str, Path]:  # fmt: skip
    """Write the CSV, JSON and PNG of one video; returns their paths."""
    from pivad.detect.render import plot_scores

    out_dir = Path(out_dir)
    paths = {"csv": out_dir / f"{stem}.frames.csv", "json": out_dir / f"{stem}.json",
             "png": out_dir / f"{stem}.scores.png"}
    atomic_write_text(paths["csv"], frames_csv(det.frame_scores, det.fps, threshold))
    atomic_write_json(paths["json"], payload)
    plot_scores(paths["png"], det.frame_scores, det.fps, threshold, intervals, title=det.info.path.name)
    return paths
