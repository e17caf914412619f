"""Frame ground truth: hand-computed vectors, the real UCF/XD annotations, list/annotation checks."""

from __future__ import annotations

import numpy as np
import pytest

from pivad.data.annotations import Annotation, parse_annotations
from pivad.data.ground_truth import GTSummary, build_frame_gt, check_coverage, video_frame_gt
from pivad.errors import DataError


@pytest.fixture(scope="module")
def ucf(data_dir):
    return parse_annotations(data_dir / "annotations" / "UCF_Annotation.txt", "ucf")


def test_hand_computed_vector():
    ann = {"a": Annotation([(3, 5), (30, 40)]), "b": Annotation([(40, 47)])}
    gt = video_frame_gt("a", 2, ann)  # 32 frames: 3,4,5 and 30,31 (40 clipped to 31)
    expected = np.zeros(32, np.uint8)
    expected[[3, 4, 5, 30, 31]] = 1
    assert gt.dtype == np.uint8 and np.array_equal(gt, expected)
    # b starts after its last frame (T=2 -> frames 0..31), within one snippet: dropped; unannotated c: all normal
    summary = GTSummary()
    flat = build_frame_gt([("a", 2), ("b", 2), ("c", 1)], ann, summary=summary)
    assert flat.shape == (80,) and np.array_equal(flat[:32], expected) and not flat[32:].any()
    assert (summary.videos, summary.frames, summary.abnormal_frames, summary.annotated_videos) == (3, 80, 5, 1)
    assert summary.clipped_events == [
        "a: event 30-40 clipped to frame 31",
        "b: event 40-47 starts after the last frame (31), dropped",
    ]


def test_snippet_length_and_inclusive_ends():
    ann = {"v": Annotation([(0, 0), (7, 8)])}
    gt = video_frame_gt("v", 3, ann, snippet=4)  # 12 frames
    assert gt.tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    with pytest.raises(DataError, match="snippet count must be positive"):
        video_frame_gt("v", 0, ann)


@pytest.mark.parametrize(
    "name, abnormal_frames",
    [
        ("Arson022_x264", 4000 - 3500 + 1),  # n=8640, T=540: no clipping
        ("RoadAccidents021_x264", 90 - 30 + 1),  # n=155, T=9 (144 frames)
        ("Arson011_x264", (420 - 150 + 1) + (1263 - 680 + 1)),  # n=1266 -> 1264 frames; 680..1267 clipped
        ("Explosion033_x264", (1350 - 970 + 1) + (3151 - 1550 + 1)),  # n=3154 -> 3152 frames
        ("Shooting046_x264", (4230 - 4005 + 1) + (5087 - 4760 + 1)),  # n=5088 -> T=318
        ("Normal_Videos_872_x264", 0),
    ],
)
def test_real_ucf_videos_by_hand(ucf, name, abnormal_frames):
    T = ucf[name].n_frames // 16
    gt = video_frame_gt(name, T, ucf)
    assert gt.size == 16 * T and int(gt.sum()) == abnormal_frames


def test_real_ucf_whole_set(ucf):
    videos = [(name, a.n_frames // 16) for name, a in ucf.items()]
    summary = GTSummary()
    gt = build_frame_gt(videos, ucf, summary=summary)
    assert gt.size == 1_109_824  # reference.md: sum(n // 16 * 16) over UCF_Annotation.txt
    # second path: per-event interval arithmetic (UCF events of a video do not overlap)
    expected = sum(
        max(0, min(e, 16 * (a.n_frames // 16) - 1) - s + 1) for a in ucf.values() for s, e in a.events
    )
    assert int(gt.sum()) == summary.abnormal_frames == expected
    assert summary.annotated_videos == 140
    # the two-event videos have two runs of ones
    offsets = np.cumsum([0] + [16 * T for _, T in videos])
    i = [n for n, _ in videos].index("Burglary037_x264")
    runs = np.flatnonzero(np.diff(np.r_[0, gt[offsets[i] : offsets[i + 1]], 0]))
    assert runs.tolist() == [240, 391, 540, 1801]  # frames 240..390 and 540..1800


def test_real_xd_union_of_events(data_dir):
    xd = parse_annotations(data_dir / "annotations" / "XD_Annotation.txt", "xd")
    # XD states no frame count: give each video one snippet past its last annotated frame
    videos = [(name, max(e for _, e in a.events) // 16 + 2) for name, a in xd.items()]
    gt = build_frame_gt(videos, xd)
    assert gt.size == 16 * sum(T for _, T in videos)
    expected = sum(len(set().union(*(range(s, e + 1) for s, e in a.events))) for a in xd.values())
    assert int(gt.sum()) == expected


def test_coverage_errors_and_warnings():
    ann = {
        "A1": Annotation([(0, 5)]),
        "A2": Annotation([]),
        "N1": Annotation([(3, 4)]),
        "Extra": Annotation([(1, 2)]),
        "Assault_2": Annotation([(1, 2)]),
    }
    warnings = check_coverage(
        [("A1", 1), ("A2", 1), ("N1", 0), ("N2", 0), ("Assault_2_i3d", 1)], ann, annotation_path="ann.txt"
    )
    assert warnings == [
        "abnormal video A2 has no event in ann.txt: its frames are all normal",
        "video N1 is labelled normal but ann.txt gives it abnormal frames",
        "ann.txt: 1 annotated video(s) are not in the list (e.g. Extra); they are ignored",
    ]
    with pytest.raises(DataError) as err:
        check_coverage([("A1", 1), ("B1", 1), ("B2", 1), ("B3", 1), ("B4", 1)], ann, annotation_path="ann.txt")
    assert str(err.value) == (
        "ann.txt: 4 abnormal video(s) of the list have no annotation (e.g. B1, B2, B3 and 1 more); "
        "check --format and the video names"
    )


def test_feature_tag_fallback():
    ann = {"Assault_2": Annotation([(0, 15)])}
    assert video_frame_gt("Assault_2_i3d", 2, ann).sum() == 16
    assert video_frame_gt("Assault_2_x", 2, ann).sum() == 0
