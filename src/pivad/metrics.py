"""Evaluation metrics of weakly-supervised video anomaly detection (pure numpy / scikit-learn).

Conventions (the field's, see docs/metrics.md):

- Scores: snippet scores are averaged over crops, then repeated 16 times to frames
  (:func:`snippets_to_frames`); videos are concatenated in list order, like the ground truth.
- AUC: ROC-AUC over all test frames.
- AP: by default the field's form, ``auc(recall, precision)`` -- the trapezoidal area under the
  precision-recall curve (``form="trapezoid"``); the step-wise average precision of
  ``sklearn.metrics.average_precision_score`` is ``form="step"``. They differ (the step form never
  interpolates between operating points), so a number is reported with its form.
- AUC_A / AP_A: the same over the frames of the abnormal test videos only.
- Class-wise AUC: per anomaly class, the frames of that class's videos together with the frames of
  all normal videos (``with_normal=False``: that class's videos alone).
- Video-level AUC: a video's score is the max of its frame scores; its label the video label.

A metric that is undefined on its input (one class only: no abnormal frame, or no normal frame)
is NaN with a reason -- a :class:`MetricUndefinedWarning` from the single-metric functions, the
``notes`` entry of :func:`evaluate_scores` -- never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

AP_FORMS = ("trapezoid", "step")


class MetricUndefinedWarning(UserWarning):
    """A metric came out NaN because its input does not define it (e.g. one class only)."""


@dataclass
class VideoScores:
    """One test video's frame scores and frame ground truth (equal lengths)."""

    name: str
    label: int  # 1 abnormal, 0 normal
    cls: str  # class name; "Normal" for normal videos
    frame_scores: np.ndarray  # (F,) float
    frame_gt: np.ndarray  # (F,) 0/1


def snippets_to_frames(scores: np.ndarray, snippet: int = 16) -> np.ndarray:
    """Snippet scores ``[C,T]`` (crops) or ``[T]`` -> frame scores ``[snippet*T]`` float64.

    Crops are averaged first, then each snippet score is repeated ``snippet`` times.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2:
        s = s.mean(axis=0)  # (C, T) -> (T,)
    elif s.ndim != 1:
        raise ValueError(f"snippet scores must be [T] or [C,T], got shape {list(np.shape(scores))}")
    return np.repeat(s, snippet)  # (snippet*T,)


# ----------------------------------------------------------------------------------- frame metrics


def _check_pair(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(gt).ravel()
    if s.shape != g.shape:
        raise ValueError(f"scores and ground truth differ in length: {s.size} vs {g.size}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN/Inf value(s)")
    if g.size and not np.isin(g, (0, 1)).all():
        raise ValueError("ground truth must be 0/1")
    return s, g.astype(np.int8)


def _undefined(g: np.ndarray) -> str | None:
    """Why a binary metric is undefined on labels ``g``, or None."""
    if g.size == 0:
        return "no frames"
    n_pos = int(g.sum())
    if n_pos == 0:
        return f"no abnormal frame among {g.size}"
    if n_pos == g.size:
        return f"no normal frame among {g.size}"
    return None


def _auc(s: np.ndarray, g: np.ndarray) -> tuple[float, str | None]:
    reason = _undefined(g)
    if reason:
        return math.nan, reason
    fpr, tpr, _ = roc_curve(g, s)
    return float(auc(fpr, tpr)), None


def _ap(s: np.ndarray, g: np.ndarray, form: str) -> tuple[float, str | None]:
    if form not in AP_FORMS:
        raise ValueError(f"unknown AP form {form!r} (expected one of: {', '.join(AP_FORMS)})")
    reason = _undefined(g)
    if reason:
        return math.nan, reason
    if form == "step":
        return float(average_precision_score(g, s)), None
    precision, recall, _ = precision_recall_curve(g, s)
    return float(auc(recall, precision)), None


def _warned(value: float, reason: str | None, what: str) -> float:
    if reason:
        warnings.warn(f"{what} is undefined: {reason}", MetricUndefinedWarning, stacklevel=3)
    return value


def frame_auc(scores: np.ndarray, gt: np.ndarray) -> float:
    """ROC-AUC of frame scores against 0/1 frame labels (NaN + warning when one class only)."""
    return _warned(*_auc(*_check_pair(scores, gt)), "AUC")


def frame_ap(scores: np.ndarray, gt: np.ndarray, form: str = "trapezoid") -> float:
    """Average precision: ``trapezoid`` = ``auc(recall, precision)`` (the field's), ``step`` = sklearn's."""
    s, g = _check_pair(scores, gt)
    return _warned(*_ap(s, g, form), f"AP ({form})")


# ----------------------------------------------------------------------------------- whole test set


def _concat(videos: Sequence[VideoScores]) -> tuple[np.ndarray, np.ndarray]:
    if not videos:
        return np.zeros(0), np.zeros(0, dtype=np.int8)
    return np.concatenate([v.frame_scores for v in videos]), np.concatenate([v.frame_gt for v in videos])


def _validate(videos: Sequence[VideoScores]) -> list[VideoScores]:
    out = []
    for v in videos:
        s = np.asarray(v.frame_scores, dtype=np.float64).ravel()
        g = np.asarray(v.frame_gt).ravel()
        if s.size != g.size:
            raise ValueError(f"video {v.name}: {s.size} frame scores but {g.size} ground-truth frames")
        out.append(VideoScores(v.name, int(v.label), str(v.cls), s, g))
    return out


def classwise_auc(
    videos: Sequence[VideoScores], *, with_normal: bool = True, notes: dict[str, str] | None = None
) -> dict[str, float]:
    """Frame AUC per anomaly class (classes of the abnormal videos, in order of first appearance).

    ``with_normal=True``: the class's videos plus every normal video (the common choice, used by the
    paper's class-wise figures); ``False``: the class's videos alone. Undefined classes are NaN, with
    the reason in ``notes[class]`` when ``notes`` is given.
    """
    vids = _validate(videos)
    normal = [v for v in vids if not v.label]
    classes = list(dict.fromkeys(v.cls for v in vids if v.label))
    out: dict[str, float] = {}
    for cls in classes:
        members = [v for v in vids if v.label and v.cls == cls] + (normal if with_normal else [])
        s, g = _check_pair(*_concat(members))
        out[cls], reason = _auc(s, g)
        if reason and notes is not None:
            notes[cls] = reason
    return out


def video_auc(videos: Sequence[VideoScores]) -> tuple[float, str | None]:
    """Video-level ROC-AUC: max frame score per video against the video label; ``(value, reason)``."""
    vids = _validate(videos)
    if any(v.frame_scores.size == 0 for v in vids):
        raise ValueError("a video has no frames")
    s = np.array([v.frame_scores.max() for v in vids], dtype=np.float64)
    g = np.array([v.label for v in vids], dtype=np.int8)
    value, reason = _auc(s, g)
    if reason:
        reason = reason.replace("frame", "video")
    return value, reason


def evaluate_scores(videos: Sequence[VideoScores], ap_form: str = "trapezoid") -> dict:
    """All test-set metrics of per-video frame scores.

    Returns ``{"auc", "auc_a", "ap", "ap_a", "video_auc", "classwise": {class: AUC vs normal videos},
    "ap_form", "n_videos", "n_abnormal_videos", "n_frames", "n_abnormal_frames", "notes": {metric: why NaN}}``.
    """
    if ap_form not in AP_FORMS:
        raise ValueError(f"unknown AP form {ap_form!r} (expected one of: {', '.join(AP_FORMS)})")
    vids = _validate(videos)
    notes: dict[str, str] = {}

    def record(key: str, result: tuple[float, str | None]) -> float:
        value, reason = result
        if reason:
            notes[key] = reason
        return value

    s, g = _check_pair(*_concat(vids))
    abnormal = [v for v in vids if v.label]
    s_a, g_a = _check_pair(*_concat(abnormal))
    class_notes: dict[str, str] = {}
    out = {
        "auc": record("auc", _auc(s, g)),
        "auc_a": record("auc_a", _auc(s_a, g_a) if abnormal else (math.nan, "no abnormal video")),
        "ap": record("ap", _ap(s, g, ap_form)),
        "ap_a": record("ap_a", _ap(s_a, g_a, ap_form) if abnormal else (math.nan, "no abnormal video")),
        "video_auc": record("video_auc", video_auc(vids) if vids else (math.nan, "no videos")),
        "classwise": classwise_auc(vids, notes=class_notes),
        "ap_form": ap_form,
        "n_videos": len(vids),
        "n_abnormal_videos": len(abnormal),
        "n_frames": int(g.size),
        "n_abnormal_frames": int(g.sum()),
    }
    notes.update({f"classwise/{k}": v for k, v in class_notes.items()})
    out["notes"] = notes
    return out
