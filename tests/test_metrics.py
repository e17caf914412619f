"""Metrics: hand-computed tiny cases, agreement with scikit-learn, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pivad.metrics import (
    MetricUndefinedWarning,
    VideoScores,
    classwise_auc,
    evaluate_scores,
    frame_ap,
    frame_auc,
    snippets_to_frames,
    video_auc,
)

# Four frames, scores sorted: 0.8 (abn), 0.4 (norm), 0.35 (abn), 0.1 (norm).
SCORES = np.array([0.1, 0.4, 0.35, 0.8])
GT = np.array([0, 0, 1, 1])


def test_auc_hand_computed():
    # positive/negative pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4; lost: 0.35<0.4 -> 3/4
    assert frame_auc(SCORES, GT) == pytest.approx(0.75, abs=1e-12)
    assert frame_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5, abs=1e-12)  # a tie counts one half
    assert frame_auc([0.9, 0.1], [0, 1]) == pytest.approx(0.0, abs=1e-12)


def test_ap_forms_hand_computed_and_different():
    # operating points (recall, precision): (0.5, 1) at 0.8, (0.5, 1/2) at 0.4, (1, 2/3) at 0.35, (1, 1/2) at 0.1
    # step: sum of (R_n - R_{n-1}) * P_n = 0.5*1 + 0.5*(2/3) = 5/6
    assert frame_ap(SCORES, GT, form="step") == pytest.approx(5 / 6, abs=1e-12)
    # trapezoid over the PR curve from (0, 1): 0.5*(1+1)/2 + 0.5*(1/2+2/3)/2 = 1/2 + 7/24 = 19/24
    assert frame_ap(SCORES, GT) == pytest.approx(19 / 24, abs=1e-12)
    assert frame_ap(SCORES, GT, form="trapezoid") != pytest.approx(frame_ap(SCORES, GT, form="step"), abs=1e-3)
    with pytest.raises(ValueError, match="unknown AP form 'area'"):
        frame_ap(SCORES, GT, form="area")


def test_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    gt = (rng.random(5000) < 0.2).astype(np.uint8)
    scores = np.round(rng.random(5000) * 0.7 + 0.3 * gt, 3)  # rounded: many ties
    assert abs(frame_auc(scores, gt) - roc_auc_score(gt, scores)) < 1e-9
    assert abs(frame_ap(scores, gt, form="step") - average_precision_score(gt, scores)) < 1e-9


def test_degenerate_inputs_are_nan_with_reason():
    with pytest.warns(MetricUndefinedWarning, match="AUC is undefined: no abnormal frame among 3"):
        assert math.isnan(frame_auc([0.1, 0.2, 0.3], [0, 0, 0]))
    with pytest.warns(MetricUndefinedWarning, match=r"AP \(trapezoid\) is undefined: no normal frame among 2"):
        assert math.isnan(frame_ap([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        frame_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN/Inf"):
        frame_auc([0.1, np.nan], [0, 1])


def test_snippets_to_frames():
    crops = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])  # (C=2, T=3)
    frames = snippets_to_frames(crops, snippet=2)
    assert frames.tolist() == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert snippets_to_frames(np.array([0.1, 0.9])).tolist() == [0.1] * 16 + [0.9] * 16
    with pytest.raises(ValueError, match=r"\[T\] or \[C,T\]"):
        snippets_to_frames(np.zeros((1, 2, 3)))


def _videos():
    # two abnormal classes and two normal videos, 4 frames each
    return [
        VideoScores("a1", 1, "Fight", np.array([0.1, 0.9, 0.8, 0.2]), np.array([0, 1, 1, 0])),
        VideoScores("b1", 1, "Fire", np.array([0.3, 0.3, 0.6, 0.7]), np.array([0, 0, 0, 1])),
        VideoScores("n1", 0, "Normal", np.array([0.2, 0.1, 0.4, 0.1]), np.zeros(4, int)),
        VideoScores("n2", 0, "Normal", np.array([0.05, 0.5, 0.1, 0.1]), np.zeros(4, int)),
    ]


def test_evaluate_scores_matches_parts():
    vids = _videos()
    out = evaluate_scores(vids)
    s = np.concatenate([v.frame_scores for v in vids])
    g = np.concatenate([v.frame_gt for v in vids])
    assert out["auc"] == pytest.approx(roc_auc_score(g, s), abs=1e-12)
    assert out["auc_a"] == pytest.approx(roc_auc_score(g[:8], s[:8]), abs=1e-12)
    assert out["ap"] == pytest.approx(frame_ap(s, g), abs=1e-12)
    assert out["ap_a"] == pytest.approx(frame_ap(s[:8], g[:8]), abs=1e-12)
    # video level: max scores a1 .9, b1 .7 (abnormal) vs n1 .4, n2 .5 -> every pair won
    assert out["video_auc"] == 1.0
    # Fight: a1 + normals. Positives .9 .8 vs negatives .1 .2 and normals -> all won -> 1.0
    # Fire: b1 + normals. Positive .7 vs negatives .3 .3 .6 .2 .1 .4 .1 .05 .5 .1 .1 -> all won -> 1.0
    assert out["classwise"] == {"Fight": 1.0, "Fire": 1.0}
    assert list(out["classwise"]) == ["Fight", "Fire"]
    assert (out["n_videos"], out["n_abnormal_videos"], out["n_frames"], out["n_abnormal_frames"]) == (4, 2, 16, 3)
    assert out["notes"] == {} and out["ap_form"] == "trapezoid"
    assert evaluate_scores(vids, ap_form="step")["ap"] == pytest.approx(average_precision_score(g, s), abs=1e-12)


def test_classwise_with_and_without_normal():
    vids = _videos()
    vids[1].frame_scores = np.array([0.3, 0.3, 0.6, 0.45])  # Fire's positive now .45
    # with normals: .45 beats .3 .3 .2 .1 .4 .1 .05 .1 .1 (9 of 11 negatives), loses to .6 and .5 -> 9/11
    assert classwise_auc(vids)["Fire"] == pytest.approx(9 / 11, abs=1e-12)
    # alone: .45 vs .3 .3 .6 -> 2/3
    assert classwise_auc(vids, with_normal=False)["Fire"] == pytest.approx(2 / 3, abs=1e-12)


def test_video_auc_hand_computed():
    vids = _videos()
    vids[2].frame_scores = np.array([0.95, 0.1, 0.1, 0.1])  # n1 max .95 beats both abnormal videos
    value, reason = video_auc(vids)
    assert reason is None and value == pytest.approx(0.5, abs=1e-12)  # won 2 of 4 pairs


def test_evaluate_scores_degenerate_notes():
    normal_only = [v for v in _videos() if not v.label]
    out = evaluate_scores(normal_only)
    assert all(math.isnan(out[k]) for k in ("auc", "auc_a", "ap", "ap_a", "video_auc"))
    assert out["notes"] == {
        "auc": "no abnormal frame among 8",
        "auc_a": "no abnormal video",
        "ap": "no abnormal frame among 8",
        "ap_a": "no abnormal video",
        "video_auc": "no abnormal video among 2",
    }
    assert out["classwise"] == {}
    # a class whose videos have no abnormal frame (and no normal videos to compare with)
    vids = [VideoScores("x", 1, "Odd", np.array([0.2, 0.3]), np.array([0, 0]))]
    notes: dict[str, str] = {}
    assert math.isnan(classwise_auc(vids, notes=notes)["Odd"]) and notes == {"Odd": "no abnormal frame among 2"}
    with pytest.raises(ValueError, match="video x: 2 frame scores but 3 ground-truth frames"):
        evaluate_scores([VideoScores("x", 1, "Odd", np.zeros(2), np.zeros(3))])
