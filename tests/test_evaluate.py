"""Evaluation: one-pass scoring, ground truth, metrics.json + plots, inference loading, the evaluate verb."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.engine.checkpoint import load_inference_model, load_model
from pivad.engine.evaluate import GroundTruth, VideoResult, score_video, topk_video_score, video_level_auc
from pivad.engine.report import evaluate_run
from test_resume import tiny_config


def test_chunked_crops_equal_one_pass():
    from pivad.config import URDMUConfig
    from pivad.models import URDMU

    torch.manual_seed(0)
    model = URDMU(URDMUConfig(input_dim=32, hidden_dim=16, depth=1, heads=2, dim_head=8, mlp_dim=16, a_nums=4,
                              n_nums=4, head_dim=8)).eval()
    rgb = torch.rand(5, 21, 32)  # (C, T, D)
    whole = score_video(model, rgb, batch_crops=5)
    chunked = score_video(model, rgb, batch_crops=2)  # chunks of 2, 2, 1 crops, weighted back
    per_crop = np.mean([score_video(model, rgb[c], batch_crops=1) for c in range(5)], axis=0)
    assert whole.shape == (21,)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    np.testing.assert_allclose(per_crop, whole, atol=1e-6)


def test_video_level_selection_score_by_hand():
    hi = np.array([0.1] * 15 + [0.9])  # T=16: k = 2, top-2 mean = 0.5
    assert topk_video_score(hi) == pytest.approx(0.5)
    vids = [VideoResult("a", 1, "X", hi), VideoResult("b", 0, "Normal", np.full(16, 0.3)),
            VideoResult("c", 0, "Normal", np.full(16, 0.6))]
    assert video_level_auc(vids) == pytest.approx(0.5)  # the abnormal video beats one of two normals
    assert video_level_auc(vids[1:]) is None  # one class only


def test_ground_truth_from_vector_equals_annotation(tiny_dataset):
    from pivad.data.datasets import build_datasets

    cfg = tiny_config(tiny_dataset)
    test = build_datasets(cfg, train=False, progress=False).test
    vids = [VideoResult(v.name, v.label, v.cls, np.zeros(v.rgb.shape[1])) for v in test]
    GroundTruth(cfg.data.annotation, "ucf").attach(vids)
    ann = np.concatenate([v.frame_gt for v in vids])
    GroundTruth(gt_path=str(tiny_dataset / "gt.npy")).attach(vids)
    assert np.array_equal(np.concatenate([v.frame_gt for v in vids]), ann) and ann.sum() > 0


def test_evaluate_run_writes_metrics_scores_and_plots(run_dir):
    report = evaluate_run(run_dir, progress=False, print_table=False)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["models"]) == {"urdmu", "best", "last"}
    assert saved["selection_label"] == "test-selected" and "optimistic" in saved["note"]
    best = saved["models"]["best"]
    assert best["kind"] == "pivad" and best["label"] == "test-selected"
    assert 0 <= best["auc"] <= 1 and 0 <= best["ap"] <= 1 and best["classwise"]
    for key in ("scores", "modalities", "classwise", "training"):
        path = run_dir / "plots" / f"{key}.png"
        assert report["plots"][key] == str(path) and path.stat().st_size > 1000
    scores = np.load(run_dir / "scores" / "best.npz")
    assert len(scores["__names__"]) == best["n_videos"]


def test_load_inference_model_student_view(run_dir):
    full, cfg, meta = load_model(run_dir / "best.pt")
    infer, _, meta2 = load_inference_model(run_dir / "best.pt")
    assert meta2["kind"] == "pivad" and not any(k.startswith("teacher.") for k in infer.state_dict())
    x = torch.rand(2, 3, 20, cfg.data.feature_dim)  # (b, n, T, D)
    with torch.inference_mode():
        assert torch.equal(infer(x), full(x)) and infer(x).shape == (2, 20)


def test_official_state_dict_loads_for_inference(shared_dir, tmp_path):
    golden = torch.load(shared_dir / "golden/public/urdmu.pt", weights_only=True)
    torch.save(golden["state_dict"], tmp_path / "official.pth")
    model, _, meta = load_inference_model(tmp_path / "official.pth")
    assert meta["source"] == "official" and meta["kind"] == "urdmu"
    with torch.inference_mode():
        np.testing.assert_allclose(model(golden["eval_input"]).numpy(), golden["eval_scores"].numpy(), atol=1e-5)


def test_evaluate_verb(run_dir, tmp_path, capsys):
    assert main(["evaluate", "--run", str(run_dir), "--no-progress", "--no-plots", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "π-VAD (test-selected)" in out and "UR-DMU (teacher, test-selected)" in out
    assert (tmp_path / "e" / "metrics.json").is_file()
    assert main(["evaluate", "--ckpt", str(run_dir / "teacher.pt"), "--no-progress", "--no-plots",
                 "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["models"]["model"]["kind"] == "urdmu"
    assert main(["evaluate", "--run", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run directory" in capsys.readouterr().err
