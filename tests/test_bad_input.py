"""Bad input a new user gives (issue 10): each is one line, exit 2, no traceback, nothing lost, and
refused before the work starts (no run folder, no moved ``latest``, no training step)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main
from pivad.config import save_config
from test_resume import TINY, tiny_config

CLIP = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"


@pytest.fixture
def setup(tiny_dataset, tmp_path):
    """The tiny config (session dataset, a few steps) with its results under tmp_path."""
    results = tmp_path / "results"
    cfg = tiny_config(tiny_dataset, train={"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2,
                                           "out_dir": str(results)})
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    return path, results


def _one_line(capsys, *parts: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pivad: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err
    return err


def test_failed_train_makes_no_run_and_keeps_latest(setup, capsys):
    path, results = setup
    parent = results / "urdmu" / "demo"
    assert main(["train", "-c", str(path), "--no-progress", "--no-eval", "--train.model", "urdmu"]) == 0
    assert os.readlink(parent / "latest") == "v0"
    capsys.readouterr()
    missing = path.parent / "missing.pt"
    assert main(["train", "-c", str(path), "--train.teacher_ckpt", str(missing), "--no-progress"]) == 2
    _one_line(capsys, f"{missing}: no such checkpoint file")
    assert not (results / "pivad").exists()  # no empty vN
    assert sorted(p.name for p in parent.iterdir()) == ["latest", "v0"] and os.readlink(parent / "latest") == "v0"


def test_train_without_config_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--no-progress"]) == 2
    _one_line(capsys, "give -c CONFIG")
    assert list(tmp_path.iterdir()) == []  # nothing trained into ./results


def test_malformed_annotation_fails_before_training(setup, tmp_path, capsys):
    path, results = setup
    bad = tmp_path / "ann.txt"
    bad.write_text("Abuse/Abuse001_x264.mp4 not-a-number Abuse 1 2\n")
    assert main(["train", "-c", str(path), "--data.annotation", str(bad), "--no-progress"]) == 2
    _one_line(capsys, str(bad))
    assert not results.exists()


@pytest.mark.parametrize("key,value,message", [
    ("data.train_list", "nowhere.list", "nowhere.list"),
    ("data.feature_dim", "64", "expected shape [T,64]"),
    ("data.modality_root", "no_modalities", "modality folder not found"),
    ("data.gt", "SHORT_GT", "frames, the test features need"),
])
def test_inputs_checked_before_the_run_folder(setup, tmp_path, capsys, key, value, message):
    path, results = setup
    if value == "SHORT_GT":
        value = str(tmp_path / "short_gt.npy")
        np.save(value, np.zeros(32, dtype=np.uint8))
    assert main(["train", "-c", str(path), f"--{key}", value, "--no-progress"]) == 2
    _one_line(capsys, message)
    assert not results.exists()


def test_non_binary_gt_refused_in_check_and_evaluate(setup, tiny_dataset, tmp_path, capsys):
    path, results = setup
    gt = np.load(tiny_dataset / "gt.npy").astype(np.float32)
    gt[:5] = 0.5
    np.save(tmp_path / "gt.npy", gt)
    assert main(["data", "check", "-c", str(path), "--data.gt", str(tmp_path / "gt.npy")]) == 2
    err = capsys.readouterr().err  # after the loading progress bars
    assert f"pivad: error: {tmp_path / 'gt.npy'}: ground truth must be 0 or 1 per frame; frame 0 is 0.5" in err
    assert main(["train", "-c", str(path), "--no-progress", "--no-eval", "--train.model", "urdmu"]) == 0
    capsys.readouterr()
    run = results / "urdmu" / "demo" / "latest"
    assert main(["evaluate", "--run", str(run), "--data.gt", str(tmp_path / "gt.npy"), "--no-plots",
                 "--no-progress"]) == 2
    _one_line(capsys, "ground truth must be 0 or 1")


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "taken"
    f.write_text("the user's")
    return f


def test_output_that_is_a_file_is_refused_before_work(setup, tmp_path, capsys):
    path, results = setup
    taken = _file(tmp_path)
    assert main(["train", "-c", str(path), "--train.out_dir", str(taken), "--no-progress"]) == 2
    _one_line(capsys, str(taken), "existing file")
    assert main(["train", "-c", str(path), "--train.out_dir", str(taken / "sub"), "--no-progress"]) == 2
    _one_line(capsys, "which is a file")
    assert main(["demo", "--out", str(taken), "--no-progress"]) == 2
    _one_line(capsys, str(taken))
    assert main(["extract", "rgb", str(CLIP), "--out", str(taken), "--weights", "random:0", "--no-progress"]) == 2
    _one_line(capsys, str(taken))
    assert main(["detect", str(CLIP), "--ckpt", str(taken), "--out", str(taken), "--no-progress"]) == 2
    _one_line(capsys, str(taken), "existing file")  # the output is checked before the model is even read
    assert taken.read_text() == "the user's"


def test_evaluate_checks_its_output_before_scoring(setup, tmp_path, capsys, monkeypatch):
    path, results = setup
    assert main(["train", "-c", str(path), "--no-progress", "--no-eval", "--train.model", "urdmu"]) == 0
    capsys.readouterr()
    import pivad.engine.report as report

    def boom(*a, **k):
        raise AssertionError("scored before the output was checked")

    monkeypatch.setattr(report, "evaluate_checkpoints", boom)
    run = results / "urdmu" / "demo" / "latest"
    taken = _file(tmp_path)
    assert main(["evaluate", "--run", str(run), "--out", str(taken), "--no-progress"]) == 2
    _one_line(capsys, str(taken))


def test_unwritable_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the refusal the OS gives is simulated at its source."""
    import tempfile

    real = tempfile.mkstemp

    def denied(*args, **kwargs):
        if str(kwargs.get("dir", "")).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert main(["extract", "rgb", str(CLIP), "--out", str(tmp_path / "ro" / "feats"), "--weights", "random:0",
                 "--no-progress"]) == 2
    _one_line(capsys, "cannot write output here (no permission to write there)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_unwritable_output_folder_for_real(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["extract", "rgb", str(CLIP), "--out", str(ro / "f"), "--weights", "random:0"]) == 2
        _one_line(capsys, "cannot write output here")
    finally:
        ro.chmod(0o755)


def test_demo_runs_every_offered_preset_with_its_default_config(tmp_path, capsys):
    """The repo's demo config (batches of 16) on the tiny preset; steps and widths cut for speed."""
    overrides = [f"--{section}.{k}={v}" for section in ("model", "inductor") for k, v in TINY[section].items()]
    overrides = [tok for o in overrides for tok in o.split("=", 1)]
    overrides += ["--train.teacher_steps", "2", "--train.warmup_steps", "1", "--train.steps", "2",
                  "--train.eval_every", "2", "--train.threads", "1", "--data.num_segments", "16"]
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path), "--no-progress", *overrides]) == 0
    captured = capsys.readouterr()
    assert "| π-VAD (last) |" in captured.out and "data.batch_normal 16 -> 8" in captured.err


def test_crop_larger_than_frames_and_bad_threshold(tmp_path, capsys):
    assert main(["extract", "rgb", str(CLIP), "--out", str(tmp_path / "f"), "--weights", "random:0",
                 "--crop-size", "300", "--no-progress"]) == 2
    _one_line(capsys, "--crop-size 300: larger than the resized frames (340x256)")
    assert main(["detect", str(CLIP), "--ckpt", "x.pt", "--out", str(tmp_path / "d"), "--crop-size", "300"]) == 2
    _one_line(capsys, "--crop-size 300")
    assert main(["detect", str(CLIP), "--ckpt", "x.pt", "--out", str(tmp_path / "d"), "--threshold", "1.5"]) == 2
    _one_line(capsys, "--threshold 1.5")
    assert not (tmp_path / "f").exists() and not (tmp_path / "d").exists()


def test_config_duplicate_keys_and_negative_crops(tmp_path, capsys):
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    assert main(["data", "check", "-c", str(dup)]) == 2
    _one_line(capsys, f"{dup}: not valid YAML (duplicate key 'lr' (line 3))")
    neg = tmp_path / "neg.yaml"
    neg.write_text("data:\n  num_crops: -3\n")
    assert main(["train", "-c", str(neg)]) == 2
    _one_line(capsys, "data.num_crops': must be >= 0")


def test_extract_of_a_missing_video_leaves_no_empty_list(tmp_path, capsys):
    out = tmp_path / "feats"
    code = main(["extract", "rgb", str(tmp_path / "nonexist.mp4"), "--out", str(out), "--weights", "random:0",
                 "--no-progress"])
    assert code in (1, 2)
    assert not (out / "rgb.list").exists()
    capsys.readouterr()


def test_evaluate_says_model_overrides_do_not_apply(setup, tmp_path, capsys):
    path, results = setup
    assert main(["train", "-c", str(path), "--no-progress", "--no-eval", "--train.model", "urdmu"]) == 0
    capsys.readouterr()
    best = results / "urdmu" / "demo" / "v0" / "best.pt"
    assert main(["evaluate", "--ckpt", str(best), "-c", str(path), "--model.hidden_dim", "64", "--no-plots",
                 "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "pivad: warning: --model.hidden_dim ignored" in err
    assert main(["evaluate", "--ckpt", str(best), "-c", str(path), "--eval.ap_form", "step", "--no-plots",
                 "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    assert "ignored" not in capsys.readouterr().err


def test_data_check_names_unknown_classes(setup, tiny_dataset, tmp_path, capsys):
    path, _ = setup
    assert main(["data", "check", "-c", str(path)]) == 0
    assert "is not one of" not in capsys.readouterr().err  # the synthetic classes are UCF-Crime's
    assert main(["data", "check", "-c", str(path), "--data.classes", "[Explosion, Fighting, RoadAccidents, Shoplifting]"]) == 0
    err = capsys.readouterr().err
    assert "pivad: warning: " in err and "class 'Robbery' (video Robbery" in err and "is not one of data.classes" in err


def test_no_progress_prints_one_line_per_evaluation_and_resume_says_where(setup, capsys):
    path, results = setup
    assert main(["train", "-c", str(path), "--no-progress", "--no-eval", "--stop-after", "3"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "(global " in ln]
    assert lines == [ln for ln in lines if ln.startswith(("teacher step", "second step"))]
    assert [ln.split(":")[0] for ln in lines] == ["teacher step 2 (global 2)"]  # warm-up (step 3) selects nothing
    assert "selection " in lines[0]
    run = results / "pivad" / "demo" / "latest"
    assert main(["train", "--resume", str(run), "--no-progress", "--no-eval"]) == 0
    err = capsys.readouterr().err
    assert "resuming from global step 3 (first phase, step 1)" in err
    assert [ln.split(":")[0] for ln in err.splitlines() if "(global " in ln] == ["second step 2 (global 5)"]


def test_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    from pivad.engine.runs import finish_run, new_run_dir

    good = new_run_dir(tmp_path, "pivad", "demo")
    (good / "last.pt").write_bytes(b"x")
    failed = new_run_dir(tmp_path, "pivad", "demo", link=False)
    (failed / "config.yaml").write_text("data: {}\n")
    (failed / "tb").mkdir()
    (failed / "tb" / "events").write_bytes(b"")
    finish_run(failed, created=True)
    assert not failed.exists() and os.readlink(tmp_path / "pivad" / "demo" / "latest") == "v0"
    kept = new_run_dir(tmp_path, "pivad", "demo", link=False)
    (kept / "notes.txt").write_text("the user's")  # not what a run writes: kept
    finish_run(kept, created=True)
    assert (kept / "notes.txt").exists() and os.readlink(tmp_path / "pivad" / "demo" / "latest") == "v0"
    (kept / "best.pt").write_bytes(b"x")
    finish_run(kept, created=True)
    assert os.readlink(tmp_path / "pivad" / "demo" / "latest") == kept.name
