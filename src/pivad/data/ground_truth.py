"""Frame-level ground truth of a test list, built from the actual feature lengths.

The rule (the field's, made explicit): a video whose feature file has ``T`` snippets covers
``snippet * T`` frames (16 per snippet); frames ``s..e`` of each annotated event are abnormal, both
ends inclusive; events are clipped to those ``snippet * T`` frames (an event that starts past the end
is dropped), but only by up to one snippet: the field's extractors drop a video's last partial
snippet, and UCF_Annotation.txt has 7 events that end in those frames (Fighting003: 16 past the
features' end). An event that ends further out belongs to another video or frame rate: a DataError
naming the annotation line, the video and the event. Videos are concatenated in list order. Using
the feature lengths -- not the frame counts of the annotation -- keeps the ground truth the same
length as the scores: the published ``gt-ucf.npy`` has 1,109,680 frames while ``sum(n // 16 * 16)``
over UCF_Annotation.txt is 1,109,824.

Videos are matched to annotations by id (:func:`pivad.data.annotations.video_id`); when an id is not
annotated as is, a trailing feature-extractor tag (``_i3d``, ``_swin``, ``_rgb``) is dropped and the
lookup retried (MSAD lists name files ``Assault_2_i3d.npy``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pivad.data.annotations import Annotation
from pivad.errors import DataError

GT_RULE = (
    "{snippet} frames per snippet from feature lengths; frames s..e inclusive are abnormal; "
    "events clipped to {snippet}*T frames (at most {snippet} past); videos in list order"
)

_FEATURE_TAG = re.compile(r"_(i3d|swin|rgb)$", re.IGNORECASE)


def find_annotation(name: str, annotations: Mapping[str, Annotation]) -> tuple[str, Annotation] | None:
    """``(key, annotation)`` of a video id, or None when the video is not annotated."""
    if name in annotations:
        return name, annotations[name]
    stripped = _FEATURE_TAG.sub("", name)
    if stripped != name and stripped in annotations:
        return stripped, annotations[stripped]
    return None


@dataclass
class GTSummary:
    """Totals of one ground-truth build, for the log line and for checks."""

    videos: int = 0
    frames: int = 0
    abnormal_frames: int = 0
    annotated_videos: int = 0  # list videos with at least one event
    clipped_events: list[str] = field(default_factory=list)  # "name: s-e clipped to 16T" / "dropped"


def video_frame_gt(
    name: str, T: int, annotations: Mapping[str, Annotation], snippet: int = 16, *, _notes: list[str] | None = None
) -> np.ndarray:
    """0/1 frame vector ``uint8 [snippet*T]`` of one video; all zero when it is not annotated."""
    if T <= 0:
        raise DataError(f"{name}: snippet count must be positive, got {T}")
    n = snippet * T
    gt = np.zeros(n, dtype=np.uint8)
    hit = find_annotation(name, annotations)
    if hit is None:
        return gt
    for s, e in hit[1].events:
        if e >= n + snippet:
            where = hit[1].where or "annotation"
            raise DataError(f"{where}: video {name}: event {s}-{e} ends past the video's end (its features cover "
                            f"{n} frames: frames 0-{n - 1}, {T} snippets of {snippet}; at most one snippet past "
                            "is clipped); is the annotation for this video and frame rate?")
        if s >= n:
            if _notes is not None:
                _notes.append(f"{name}: event {s}-{e} starts after the last frame ({n - 1}), dropped")
            continue
        if e >= n and _notes is not None:
            _notes.append(f"{name}: event {s}-{e} clipped to frame {n - 1}")
        gt[s : min(e, n - 1) + 1] = 1
    return gt


def build_frame_gt(
    videos: Sequence[tuple[str, int]],
    annotations: Mapping[str, Annotation],
    snippet: int = 16,
    *,
    summary: GTSummary | None = None,
) -> np.ndarray:
    """Flat 0/1 frame vector ``uint8 [sum(snippet*T_i)]`` over ``(name, T_i)`` in the given order.

    Pass a :class:`GTSummary` to have it filled with totals and clipping notes.
    """
    notes: list[str] = []
    parts = [video_frame_gt(name, int(T), annotations, snippet, _notes=notes) for name, T in videos]
    gt = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    if summary is not None:
        summary.videos = len(parts)
        summary.frames = int(gt.size)
        summary.abnormal_frames = int(gt.sum(dtype=np.int64))
        summary.annotated_videos = sum(int(p.any()) for p in parts)
        summary.clipped_events = notes
    return gt


def check_coverage(
    labelled: Sequence[tuple[str, int]], annotations: Mapping[str, Annotation], *, annotation_path: str = "annotation"
) -> list[str]:
    """Compare a list's ``(name, label)`` pairs with the annotation; returns warnings, raises on errors.

    Error (``DataError``): an abnormal video (label 1) with no annotation entry -- its ground truth
    would silently be all normal. Warnings: an abnormal video whose entry has no event; a normal
    video whose entry has events (the annotation wins); annotated videos missing from the list
    (evaluating a subset of the test set is legitimate, so this is not an error).
    """
    warnings: list[str] = []
    missing: list[str] = []
    used: set[str] = set()
    for name, label in labelled:
        hit = find_annotation(name, annotations)
        if hit is not None:
            used.add(hit[0])
        if label:
            if hit is None:
                missing.append(name)
            elif not hit[1].events:
                warnings.append(f"abnormal video {name} has no event in {annotation_path}: its frames are all normal")
        elif hit is not None and hit[1].events:
            warnings.append(f"video {name} is labelled normal but {annotation_path} gives it abnormal frames")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(
            f"{annotation_path}: {len(missing)} abnormal video(s) of the list have no annotation "
            f"(e.g. {', '.join(missing[:3])}{more}); check --format and the video names"
        )
    extra = [k for k in annotations if k not in used]
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        warnings.append(
            f"{annotation_path}: {len(extra)} annotated video(s) are not in the list "
            f"(e.g. {', '.join(extra[:3])}{more}); they are ignored"
        )
    return warnings


def read_gt_vector(path: str | Path) -> np.ndarray:
    """A precomputed flat frame ground truth (``gt.npy``, memory-mapped): 1-D and binary (0/1 only),
    else :class:`DataError` naming the file. Metrics of a non-binary one would all be ``nan``."""
    import warnings

    from pivad.io import not_regular

    why = not_regular(path)  # /dev/zero read as "pickled data", a FIFO would block
    if why:
        raise DataError(f"{path}: {why}")
    try:
        with warnings.catch_warnings():  # numpy's note on Python-2 headers: the checks below decide
            warnings.simplefilter("ignore")
            flat = np.load(path, mmap_mode="r")  # allow_pickle stays False: no object arrays, no code
    except Exception as exc:  # noqa: BLE001 - a damaged header raises SyntaxError/TokenError/EOFError too
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(f"{path}: cannot read ground truth ({reason})") from None
    if flat.ndim != 1 or flat.dtype.kind not in "biuf":
        raise DataError(f"{path}: ground truth must be a 1-D numeric vector of 0/1 per frame, "
                        f"got shape {list(flat.shape)} dtype {flat.dtype}")
    bad = np.flatnonzero((flat != 0) & (flat != 1))
    if bad.size:
        raise DataError(f"{path}: ground truth must be 0 or 1 per frame; frame {int(bad[0])} is "
                        f"{flat[bad[0]].item()!r} ({bad.size:,} such frames)")
    return flat
