"""Crop counts (issue 21): the demo's models are trained on 2 crops, and detect (and extract rgb) now
compute 2 crops (the centre and its mirror), by default from the checkpoint; the advice detect gives on
a crop mismatch is always a count it accepts."""

from __future__ import annotations

import json

import numpy as np
import torch

from pivad.cli import main
from pivad.config import to_dict
from pivad.engine.checkpoint import save_checkpoint
from pivad.engine.provenance import feature_warnings
from pivad.models import build_model
from pivad.video.crops import crop_boxes, take_crops
from test_detect import CLIP, FAST, tiny_config


def _checkpoint(path, crops: int):
    cfg = tiny_config(crops)
    torch.manual_seed(0)
    payload = {"kind": "urdmu", "config": to_dict(cfg), "model": build_model("urdmu", cfg).state_dict(),
               "features": {"source": "i3d", "num_crops": crops, "feature_dim": 1024}}
    save_checkpoint(path, payload)
    return path


def test_two_crops_are_the_centre_and_its_mirror():
    assert crop_boxes(256, 340, 2) == [(16, 58, False), (16, 58, True)]
    frames = np.random.default_rng(0).integers(0, 256, (1, 16, 256, 340, 3), dtype=np.uint8)  # (N, T, H, W, 3)
    crops = take_crops(frames, 2)  # (N, 2, T, 224, 224, 3)
    assert np.array_equal(crops[:, 1], crops[:, 0, :, :, ::-1])
    ten = take_crops(frames, 10)
    assert np.array_equal(crops[:, 0], ten[:, 2]) and np.array_equal(crops[:, 1], ten[:, 7])


def test_detect_takes_the_checkpoints_two_crops_without_a_warning(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "two.pt", 2)
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "a"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "crop" not in err, err
    info = json.loads((tmp_path / "a" / "carphone_40.json").read_text())
    assert info["features"]["crops"] == 2
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "b"), "--crops", "1", *FAST]) == 0
    err = capsys.readouterr().err
    assert "--crops 2 to match" in err  # advice detect accepts:
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "c"), "--crops", "2", *FAST]) == 0


def test_advice_for_a_count_no_scheme_gives_is_not_a_flag():
    (note,) = feature_warnings({"source": "i3d", "num_crops": 3}, crops=10, where="m.pt")
    assert "--crops" not in note and "no crop scheme gives 3" in note


def test_extract_rgb_two_crops(tmp_path):
    out = tmp_path / "f"
    assert main(["extract", "rgb", str(CLIP), "--out", str(out), "--crops", "2", "--weights", "random:0",
                 "--crop-size", "32", "--resize", "96x72", "--no-progress"]) == 0  # fmt: skip
    a, b = (np.load(out / f"carphone_40__{c}.npy") for c in range(2))
    assert a.shape == b.shape == (3, 1024) and not np.array_equal(a, b)
