"""``pivad data gt|synth|check`` driven in-process through ``pivad.cli.main``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main


def _write_dataset(root: Path, lengths: dict[str, list[int]], per_video: bool = False) -> Path:
    """Tiny per-crop (or per-video) feature files [T, 4] and a list; returns the list path."""
    lines = []
    for name, crop_T in lengths.items():
        folder = "Testing_Normal_Videos_Anomaly" if "Normal" in name else re.match(r"[A-Za-z]+", name).group(0)
        if per_video:
            rel = f"feats/{name}.npy"
            (root / "feats").mkdir(parents=True, exist_ok=True)
            np.save(root / rel, np.zeros((crop_T[0], len(crop_T), 4), np.float32))  # (T, C, D)
            lines.append(rel)
            continue
        for c, T in enumerate(crop_T):
            rel = f"feats/{folder}/{name}__{c}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, np.zeros((T, 4), np.float32))
            lines.append(rel)
    (root / "test.list").write_text("\n".join(lines) + "\n")
    return root / "test.list"


UCF_ANN = (
    "Abuse/Abuse001_x264.mp4 40 Abuse 3 5 30 40\n"  # T=2: frames 3..5 and 30..31 (clipped from 40)
    "Arrest/Arrest002_x264.mp4 48 Arrest 16 31 -1 -1\n"  # T=3: frames 16..31
    "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4 16 Normal -1 -1 -1 -1\n"
)


@pytest.fixture
def ucf_like(tmp_path):
    lst = _write_dataset(
        tmp_path, {"Abuse001_x264": [2, 2], "Arrest002_x264": [3, 3], "Normal_Videos_003_x264": [1, 1]}
    )
    (tmp_path / "ann.txt").write_text(UCF_ANN)
    return tmp_path, lst


def test_gt_hand_computed(ucf_like, capsys):
    root, lst = ucf_like
    out = root / "out" / "gt.npy"
    rc = main(["data", "gt", "--list", str(lst), "--annotation", str(root / "ann.txt"), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    expected = np.zeros(16 * (2 + 3 + 1), np.uint8)
    expected[[3, 4, 5, 30, 31]] = 1
    expected[32 + 16 : 32 + 32] = 1
    gt = np.load(out)
    assert gt.dtype == np.uint8 and np.array_equal(gt, expected)
    assert "rule: 16 frames per snippet from feature lengths; frames s..e inclusive are abnormal" in captured.out
    assert "videos: 3 (2 abnormal, 1 normal); frames: 96; abnormal frames: 21 (21.88%)" in captured.out
    assert "events past the feature length: 1 (Abuse001_x264: event 30-40 clipped to frame 31)" in captured.out
    assert captured.err == ""
    assert not list(out.parent.glob(".*tmp*"))  # nothing left of the atomic write


def test_gt_xd_per_video(tmp_path, capsys):
    names = {"A.Film.2001__#00-01_label_B1-0-0": [3, 3, 3], "B.Film.2002__#00-02_label_A": [2, 2, 2]}
    lst = _write_dataset(tmp_path, names, per_video=True)
    (tmp_path / "xd.txt").write_text("A.Film.2001__#00-01_label_B1-0-0 10 12 20 21")  # no final newline
    out = tmp_path / "gt.npy"
    args = ["data", "gt", "--list", str(lst), "--annotation", str(tmp_path / "xd.txt"), "--format", "xd"]
    assert main([*args, "--layout", "per_video", "--out", str(out)]) == 0
    gt = np.load(out)
    assert gt.shape == (16 * 5,) and np.flatnonzero(gt).tolist() == [10, 11, 12, 20, 21]
    assert "videos: 2 (1 abnormal, 1 normal); frames: 80; abnormal frames: 5" in capsys.readouterr().out


def _gt_args(root: Path, lst: Path, ann: str = "ann.txt") -> list[str]:
    return ["data", "gt", "--list", str(lst), "--annotation", str(root / ann), "--out", str(root / "gt.npy")]


def test_gt_bad_inputs(ucf_like, capsys):
    root, lst = ucf_like
    # annotation file absent
    assert main(_gt_args(root, lst, "absent.txt")) == 2
    assert capsys.readouterr().err.strip() == f"pivad: error: {root / 'absent.txt'}: annotation file not found"
    # an abnormal video of the list has no annotation
    (root / "ann.txt").write_text(UCF_ANN.splitlines()[0] + "\n")
    assert main(_gt_args(root, lst)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"pivad: error: {root / 'ann.txt'}: 1 abnormal video(s) of the list have no annotation "
        "(e.g. Arrest002_x264); check --format and the video names"
    )
    # a malformed annotation line
    (root / "ann.txt").write_text(UCF_ANN + "Bad/Bad1.mp4 10 Bad 3\n")
    assert main(_gt_args(root, lst)) == 2
    assert "ann.txt:4: expected start/end pairs" in capsys.readouterr().err
    assert not (root / "gt.npy").exists()


def test_gt_crops_of_different_length(ucf_like, capsys):
    root, lst = ucf_like
    np.save(root / "feats/Arrest/Arrest002_x264__1.npy", np.zeros((4, 4), np.float32))
    assert main(_gt_args(root, lst)) == 2
    err = capsys.readouterr().err
    assert "crops of one video differ in snippet count (Arrest002_x264__0.npy: 3, Arrest002_x264__1.npy: 4)" in err


def test_gt_warns_on_extra_annotation(ucf_like, capsys):
    root, lst = ucf_like
    (root / "ann.txt").write_text(UCF_ANN + "Abuse/Abuse099_x264.mp4 64 Abuse 1 2 -1 -1\n")
    assert main(_gt_args(root, lst)) == 0
    err = capsys.readouterr().err
    assert err.startswith("pivad: warning: ") and "1 annotated video(s) are not in the list (e.g. Abuse099_x264)" in err


def test_data_without_subverb(capsys):
    assert main(["data"]) == 2
    assert "needs a sub-verb: gt, synth, index or check" in capsys.readouterr().err


def test_synth_then_gt_agree(tmp_path, capsys):
    pytest.importorskip("pivad.data.synth")
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny"]) == 0
    assert (out / "meta.json").is_file()
    capsys.readouterr()
    # pivad data gt rebuilds the synthetic ground truth from the written features and annotation
    args = ["data", "gt", "--list", str(out / "lists/test.list"), "--root", str(out)]
    assert main([*args, "--annotation", str(out / "annotations.txt"), "--out", str(tmp_path / "gt.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "gt.npy"), np.load(out / "gt.npy"))
    # bad input: --out is a file
    (tmp_path / "file").write_text("x")
    assert main(["data", "synth", "--out", str(tmp_path / "file"), "--preset", "tiny"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    synth = pytest.importorskip("pivad.data.synth")
    pytest.importorskip("pivad.data.datasets")
    return synth.write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", preset="tiny", feature_dim=16)


def _check_config(ds: Path, tmp_path: Path) -> Path:
    import json

    meta = json.loads((ds / "meta.json").read_text())
    mods = "\n".join(f"    - {{name: {m['name']}, dim: {m['dim']}}}" for m in meta["modalities"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data:\n  name: tiny\n  root: {ds}\n  train_list: {ds}/lists/train.list\n  test_list: {ds}/lists/test.list\n"
        f"  annotation: {ds}/annotations.txt\n  feature_dim: 16\n  num_crops: {meta['num_crops']}\n"
        f"  modality_root: {ds}/modalities\n  modalities:\n{mods}\n"
    )
    return cfg


def test_check_summary(synth_dir, tmp_path, capsys):
    import json

    meta = json.loads((synth_dir / "meta.json").read_text())
    cfg = _check_config(synth_dir, tmp_path)
    assert main(["data", "check", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    test = meta["sizes"]["test"]
    n_test = test["normal"] + test["abnormal"]
    row = next(line for line in out.splitlines() if line.startswith("test "))
    expected = [n_test, test["normal"], test["abnormal"], n_test * meta["num_crops"]]
    assert row.split()[1:5] == [str(n) for n in expected]
    assert "modalities present: pose, depth, panoptic, flow, text" in out
    # the ground truth rebuilt from the annotation has the synthetic generator's own totals
    assert f"{meta['test_frames']:,} frames, {meta['test_abnormal_frames']:,} abnormal" in out


def test_check_bad_inputs(synth_dir, tmp_path, capsys):
    cfg = _check_config(synth_dir, tmp_path)
    assert main(["data", "check", "-c", str(cfg), "--data.num_crops", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pivad: error: ") and "crop file(s), data.num_crops is 3" in err
    np.save(tmp_path / "short.npy", np.zeros(10, np.uint8))
    assert main(["data", "check", "-c", str(cfg), "--data.gt", str(tmp_path / "short.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"pivad: error: {tmp_path / 'short.npy'}: 10 frames, the test features need ")
    assert main(["data", "check", "-c", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["UCF", "XD"])
def test_gt_on_the_real_test_list(shared_dir, tmp_path, data_dir, capsys, dataset):
    """The real UR-DMU test list against the real annotation, with stand-in feature files.

    Each crop file is a [T, 1] array (only T is read): T = n_frames // 16 for UCF (frame counts from the
    annotation; 7 events end in the dropped last partial snippet and are clipped), for XD (which states
    no frame count) 100 snippets or up to the snippet of the last annotated frame. The list's ids must
    match the annotation's, video for video.
    """
    from pivad.data.annotations import parse_annotations, video_id

    fmt = dataset.lower()
    ann_path = data_dir / "annotations" / f"{dataset}_Annotation.txt"
    ann = parse_annotations(ann_path, fmt)

    def xd_length(line: str) -> int:
        events = ann[video_id(line)].events if video_id(line) in ann else []
        return max([100] + [e // 16 + 1 for _, e in events])

    lines = [ln.strip() for ln in (shared_dir / "data/urdmu/list" / f"{dataset}_Test.list").read_text().splitlines()]
    stand_ins: dict[int, Path] = {}  # one file per T, hard-linked under each crop's name (fast)
    for line in filter(None, lines):
        T = ann[video_id(line)].n_frames // 16 if fmt == "ucf" else xd_length(line)
        if T not in stand_ins:
            stand_ins[T] = tmp_path / "stand_ins" / f"{T}.npy"
            stand_ins[T].parent.mkdir(exist_ok=True)
            np.save(stand_ins[T], np.zeros((T, 1), np.float32))
        os.link(stand_ins[T], tmp_path / line.replace("\\", "/").rsplit("/", 1)[-1])
    out = tmp_path / "gt.npy"
    lst = shared_dir / "data/urdmu/list" / f"{dataset}_Test.list"
    args = ["data", "gt", "--list", str(lst), "--root", str(tmp_path)]
    assert main([*args, "--annotation", str(ann_path), "--format", fmt, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # every abnormal video annotated, every annotation used
    gt = np.load(out)
    if fmt == "ucf":
        assert gt.size == 1_109_824 and int(gt.sum()) == 84_309
        assert "videos: 290 (140 abnormal, 150 normal)" in captured.out
    else:
        assert gt.size == 16 * sum(xd_length(ln) for ln in filter(None, lines)) // 5  # 5 crops per video
        assert "videos: 800 (500 abnormal, 300 normal)" in captured.out
