"""More bad input of issue 21's kinds, found by trying every verb as a new user would: each is one line
``pivad: error: <file or flag>: <problem>``, exit 2, nothing written, and never a hang."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from pivad.cli import main

from test_bad_input import _one_line
from test_config_values import _pivad
from test_data_index import make_folder

CLIP = Path(__file__).parent / "data" / "videos" / "bikes_32.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("videos"), normal=2, fight=2)


@pytest.mark.parametrize("argv,flag", [
    (["data", "index", "VIDEOS", "--seed", "-5"], "--seed -5"),
    (["data", "index", "VIDEOS", "--seed", str(2**64)], f"--seed {2**64}"),
    (["data", "synth", "--preset", "tiny", "--seed", "-1"], "--seed -1"),
    (["demo", "--data-seed", "-1"], "--data-seed -1"),
])
def test_a_seed_out_of_range_is_one_line(videos, tmp_path, capsys, argv, flag):
    out = tmp_path / "out"
    argv = [str(videos) if a == "VIDEOS" else a for a in argv] + ["--out", str(out)]
    assert main(argv) == 2  # was: numpy's ValueError traceback
    _one_line(capsys, flag, "must be in 0..4294967295")
    assert not out.exists()


@pytest.mark.parametrize("flag,value,problem", [
    ("--seeds", "0-99999999999", "seeds go up to 4294967295"),  # was: a MemoryError building the list
    ("--seeds", "4294967296", "seeds go up to 4294967295"),  # was: refused only after the first dataset
    ("--data-seeds", "0-20000", "more than 10000 seeds"),
])
def test_study_seed_lists_are_bounded(tmp_path, capsys, flag, value, problem):
    out = tmp_path / "study"
    assert main(["study", "--preset", "tiny", "--out", str(out), flag, value]) == 2
    _one_line(capsys, f"{flag} '{value}'", problem)
    assert not out.exists()


def test_a_study_summary_with_undefined_intervals_is_valid_json(tmp_path):
    from pivad.engine.study import Variant
    from pivad.engine.study_report import build_summary, write_summary

    metrics = {"auc": 0.6, "auc_a": 0.5, "ap": 0.2, "ap_a": 0.3, "video_auc": 0.7}
    rows = [{"variant": "base", "data_seed": ds, "train_seed": 1, "teacher": metrics, "pivad": metrics,
             "pivad_last": metrics, "seconds": 1.0} for ds in (0, 1)]  # one pair per data seed: no interval
    summary = build_summary(rows, [Variant("base")], [0, 1], config="cfg.yaml", preset="tiny", train_seeds=[1])
    paths = write_summary(tmp_path, "study", summary)  # was: ValueError (NaN is not JSON), no summary written
    text = paths["json"].read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {paths['json']}"))
    assert "null" in text and paths["md"].is_file() and paths["html"].is_file()


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_user_text_files_that_are_not_regular_files_are_refused_unread(videos, tmp_path, kind):
    special = tmp_path / f"special.{kind}"
    if kind == "fifo":
        os.mkfifo(special)  # read, it would wait for a writer for ever (was: a hang)
    else:
        special.symlink_to("/dev/zero")  # read, it would fill the memory (was: a hang)
    why = {"fifo": "not a regular file: a FIFO", "devzero": "not a regular file: a character device"}[kind]
    out = str(tmp_path / "out")
    for argv in (["data", "index", str(videos), "--annotations", str(special), "--out", out],
                 ["data", "index", str(special), "--out", out],
                 ["data", "gt", "--list", str(special), "--annotation", str(special), "--out", out + ".npy"],
                 ["data", "gt", "--list", str(CLIP), "--annotation", str(special), "--out", out + ".npy"],
                 ["extract", "rgb", "--list", str(special), "--out", out]):
        done = _pivad(*argv, timeout=60)
        assert done.returncode == 2 and done.stderr.startswith(f"pivad: error: {special}: {why}"), (argv, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and not Path(out).exists()


def test_a_list_that_is_not_utf8_is_one_line(tmp_path, capsys):
    bad = tmp_path / "videos.txt"
    bad.write_bytes(b"caf\xe9.mp4\n")
    assert main(["extract", "rgb", "--list", str(bad), "--out", str(tmp_path / "out")]) == 2  # was: traceback
    _one_line(capsys, f"{bad}: video list is not UTF-8 text (byte 0xe9 at offset 3)")


def test_videos_in_the_folder_that_are_not_regular_files_are_refused_not_skipped(tmp_path, capsys):
    root = make_folder(tmp_path / "videos", normal=2, fight=2)
    for name, make, why in (("dangling.mp4", lambda p: p.symlink_to(tmp_path / "nowhere.mp4"), "video not found"),
                            ("fifo.mp4", os.mkfifo, "not a regular file: a FIFO"),
                            ("zero.mp4", lambda p: p.symlink_to("/dev/zero"), "a character device")):
        link = root / "normal" / name
        make(link)
        assert main(["data", "index", str(root), "--out", str(tmp_path / "out")]) == 2  # was: skipped, exit 0
        _one_line(capsys, name, why)
        link.unlink()
    assert not (tmp_path / "out").exists()


def test_a_video_listed_in_a_csv_that_is_a_folder_is_not_called_missing(tmp_path, capsys):
    (tmp_path / "clips").mkdir()
    csv = tmp_path / "videos.csv"
    csv.write_text("video,label\nclips,normal\n")
    assert main(["data", "index", str(csv), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys, f"{tmp_path / 'clips'}: is a folder, not a file (named in {csv}:2)")


def test_a_video_name_that_is_not_utf8_is_one_line(tmp_path, capsys):
    root = make_folder(tmp_path / "videos", normal=2, fight=2)
    src = next((root / "normal").iterdir())
    os.rename(src, os.path.join(os.fsencode(root / "normal"), b"caf\xe9.mp4"))
    assert main(["data", "index", str(root), "--out", str(tmp_path / "out")]) == 2  # was: UnicodeEncodeError
    _one_line(capsys, "the video's path is not UTF-8 text")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value,problem", [
    ("--window", "0", "--window 0: must be >= 1"),  # was: 0 read as 'not given', the default used
    ("--poll", "-1", "--poll -1: must be a finite number of seconds > 0"),  # was: time.sleep(-1) in the reader
    ("--poll", "nan", "--poll nan: must be"),
    ("--idle-timeout", "nan", "--idle-timeout nan: must be a finite number of seconds >= 0"),  # was: no wait
    ("--idle-timeout", "-1", "--idle-timeout -1: must be"),
])
def test_stream_flags_are_checked_before_the_model_loads(tmp_path, capsys, flag, value, problem):
    missing = tmp_path / "missing.pt"  # checked before the checkpoint is read
    assert main(["detect", "--stream", str(CLIP), "--ckpt", str(missing), flag, value]) == 2
    _one_line(capsys, problem)


@pytest.mark.parametrize("flag,value,problem", [
    ("--test-fraction", "nan", "--test-fraction nan: must be in (0, 1)"),  # was: NaN into fit.json, a traceback
    ("--seed", "-1", "--seed -1: must be in 0..4294967295"),  # was: refused only after fit.json was written
    ("--flow-size", "0", "--flow-size 0: must be >= 12"),  # was: every video failed in OpenCV after the I3D stage
])
def test_fit_flags_are_checked_before_its_folder_is_made(videos, tmp_path, capsys, flag, value, problem):
    out = tmp_path / "fit"
    assert main(["fit", str(videos), "--out", str(out), "--crops", "1", "--no-progress", flag, value]) == 2
    _one_line(capsys, problem)
    assert not out.exists()


def test_extract_modalities_refuses_a_flow_size_opencv_cannot_use(tmp_path, capsys):
    out = tmp_path / "mod"
    assert main(["extract", "modalities", str(CLIP), "--out", str(out), "--modalities", "flow", "--flow-size", "8"]) == 2
    _one_line(capsys, "--flow-size 8: must be >= 12")
    assert not out.exists()


def test_info_refuses_a_snippet_count_torch_cannot_hold(tmp_path, capsys):
    assert main(["info", "--snippets", str(10**11)]) == 2  # was: RuntimeError (storage size overflowed)
    _one_line(capsys, "--snippets", "in 1..4096")


@pytest.mark.parametrize("flag,value,problem", [
    ("--opset", "0", "--opset 0: not an opset this PyTorch exports"),  # was: RuntimeError traceback
    ("--tolerance", "nan", "--tolerance nan: must be a finite number >= 0"),  # was: every check passed, exit 0
    ("--i3d-tolerance", "-1", "--i3d-tolerance -1: must be"),
])
def test_export_flags(run_dir, tmp_path, capsys, flag, value, problem):
    out = tmp_path / "m.onnx"
    assert main(["export", "--ckpt", str(run_dir / "best.pt"), "--out", str(out), flag, value]) == 2
    _one_line(capsys, problem)
    assert not out.exists()


def test_a_ground_truth_linked_to_dev_zero_is_named_as_a_device(run_dir, tmp_path, capsys):
    link = tmp_path / "gt.npy"
    link.symlink_to("/dev/zero")
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(run_dir), "--data.gt", str(link), "--out", str(out),
                 "--no-plots", "--no-progress"]) == 2
    _one_line(capsys, f"{link}: not a regular file: a character device")  # was: "contains pickled (object) data"
