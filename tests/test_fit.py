"""``pivad fit``: videos to a trained π-VAD, its report, and ``detect`` with it; a run killed during
extraction and during training and resumed ends with the same model and metrics as an uninterrupted
one. Random I3D weights and tiny crops keep it fast (the chain with real weights: test_fit_real.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pivad.cli import main

pytest.importorskip("av")
pytest.importorskip("cv2")
from test_data_index import error_line, make_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--crops", "1", "--weights", "random:0", "--resize", "64x48", "--crop-size", "32", "--flow-size", "64",
        "--no-progress", "--train.teacher_steps", "20", "--train.warmup_steps", "10", "--train.steps", "20",
        "--train.eval_every", "5", "--train.threads", "1"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fitvideos")
    folder = make_folder(root / "videos", normal=4, fight=4, frames=40)
    ann = root / "ann.csv"
    ann.write_text("video,start,end\nf0,0.5,1.0\nf1,0,0.5\nf2,1,2\nf3,0,1\n")
    return folder, ann


def _fit_args(videos: tuple[Path, Path], out: Path) -> list[str]:
    return ["fit", str(videos[0]), "--annotations", str(videos[1]), "--out", str(out), *FAST]


@pytest.fixture(scope="module")
def fitted(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "run"
    assert main(_fit_args(videos, out)) == 0
    return out


def test_fit_writes_every_artefact_and_detect_uses_the_model(fitted, videos, tmp_path, capsys) -> None:
    record = json.loads((fitted / "fit.json").read_text())
    assert list(record["stages"]) == ["index", "rgb", "modalities", "train", "evaluate"]
    for rel in ("data/pivad.yaml", "data/lists/train.list", "data/annotations.txt", "data/gt.npy",
                "data/modalities/flow/f0.npy", "data/rgb/normal/n0__0.npy", "data/rgb/Fighting/f0__0.npy",
                "config.yaml", "train/teacher.pt", "train/best.pt", "train/last.pt", "train/metrics.json",
                "train/report.html"):
        assert (fitted / rel).is_file(), rel
    from pivad.config import load_config

    cfg = load_config(fitted / "config.yaml")
    assert cfg.train.model == "pivad" and [m.name for m in cfg.data.modalities] == ["flow"]
    metrics = json.loads((fitted / "train" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"urdmu", "best", "last"}
    # the dataset it wrote is one the rest of pivad reads
    assert main(["data", "check", "-c", str(fitted / "config.yaml")]) == 0
    capsys.readouterr()
    clip = next((videos[0] / "normal").iterdir())
    out = tmp_path / "detect"
    assert main(["detect", str(clip), "--ckpt", str(fitted / "train" / "best.pt"), "--out", str(out), "--crops", "1",
                 "--i3d-weights", "random:0", "--resize", "64x48", "--crop-size", "32", "--no-progress",
                 "--html"]) == 0
    assert (out / f"{clip.stem}.html").is_file() and (out / f"{clip.stem}.json").is_file()


def test_resume_after_done_redoes_nothing(fitted, videos, capsys) -> None:
    before = (fitted / "train" / "best.pt").stat().st_mtime_ns
    assert main([*_fit_args(videos, fitted), "--resume"]) == 0
    assert "already done" in capsys.readouterr().err
    assert (fitted / "train" / "best.pt").stat().st_mtime_ns == before


def test_fit_refuses_a_used_folder_and_changed_arguments(fitted, videos, capsys) -> None:
    assert main(_fit_args(videos, fitted)) == 2
    assert "--resume" in error_line(capsys)
    args = _fit_args(videos, fitted)
    args[args.index("--train.steps") + 1] = "30"
    assert main([*args, "--resume"]) == 2
    line = error_line(capsys)
    assert str(fitted / "fit.json") in line and "overrides" in line


def test_fit_config_mistakes_fail_before_any_work(videos, tmp_path, capsys) -> None:
    assert main([*_fit_args(videos, tmp_path / "a"), "--train.stepz", "5"]) == 2
    assert "train.stepz" in error_line(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: many\n")
    assert main([*_fit_args(videos, tmp_path / "a"), "-c", str(bad)]) == 2
    line = error_line(capsys)
    assert str(bad) in line and "train.steps" in line
    assert not (tmp_path / "a").exists()


def test_fit_config_file_lays_over_the_derived_config_and_an_interrupt_resumes(videos, tmp_path, capsys) -> None:
    from pivad.config import load_config

    sections = tmp_path / "mine.yaml"
    sections.write_text("model:\n  hidden_dim: 32\n  head_dim: 16\n")
    args = [*_fit_args(videos, tmp_path / "run"), "-c", str(sections), "--modalities", "none",
            "--train.teacher_steps", "8", "--train.eval_every", "4"]
    assert main([*args, "--stop-after", "3"]) == 130  # what SIGINT/SIGTERM do: checkpoint, say how to go on
    assert "--resume" in capsys.readouterr().err
    assert "train" not in json.loads((tmp_path / "run" / "fit.json").read_text())["stages"]
    assert main([*args, "--stop-after", "3"]) == 2  # the folder holds a run now
    assert main([*args, "--resume"]) == 0
    cfg = load_config(tmp_path / "run" / "config.yaml")
    assert (cfg.model.hidden_dim, cfg.model.head_dim, cfg.train.model, cfg.train.teacher_steps) == (32, 16, "urdmu", 8)
    assert (tmp_path / "run" / "train" / "best.pt").is_file()


def test_fit_bad_modality_and_missing_neural_weights(videos, tmp_path, capsys) -> None:
    assert main([*_fit_args(videos, tmp_path / "a"), "--modalities", "smell"]) == 2
    assert "--modalities: unknown smell" in error_line(capsys)
    missing = tmp_path / "no_such_depth_model"
    args = [*_fit_args(videos, tmp_path / "b"), "--modalities", "depth", "--model", f"depth={missing}"]
    assert main(args) == 2
    assert str(missing) in error_line(capsys)
    assert not (tmp_path / "b" / "fit.json").exists()  # nothing started: the same command can be run again


# ------------------------------------------------------------------------------------ kill + resume


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def _kill_when(args: list[str], ready, timeout: float = 240) -> None:
    """Start ``pivad args``; SIGKILL it as soon as ``ready()`` holds (it must still be running then)."""
    proc = subprocess.Popen([sys.executable, "-m", "pivad.cli", *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)


def _state(path: Path) -> dict[str, torch.Tensor]:
    from pivad.engine.checkpoint import load_checkpoint

    return load_checkpoint(path)["model"]


def _numbers(metrics: Path) -> dict:
    models = json.loads(metrics.read_text())["models"]
    return {k: {m: v for m, v in entry.items() if m != "checkpoint"} for k, entry in models.items()}


@pytest.mark.slow
def test_killed_during_extraction_and_training_then_resumed_equals_uninterrupted(fitted, videos, tmp_path) -> None:
    out = tmp_path / "run"
    args = _fit_args(videos, out)
    rgb = out / "data" / "rgb"
    # 1. killed during I3D extraction: some videos' features written, not all
    _kill_when(args, lambda: len(list(rgb.rglob("*__0.npy"))) >= 3)
    done = len(list(rgb.rglob("*__0.npy")))
    assert 3 <= done < 8
    # 2. resumed, killed again during training (after its first checkpoint, before the end)
    last = out / "train" / "last.pt"
    _kill_when([*args, "--resume"], lambda: last.is_file())
    assert "train" not in json.loads((out / "fit.json").read_text())["stages"]
    # 3. resumed to the end
    assert main([*args, "--resume"]) == 0
    for name in ("teacher.pt", "best.pt", "last.pt"):
        a, b = _state(fitted / "train" / name), _state(out / "train" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _numbers(out / "train" / "metrics.json") == _numbers(fitted / "train" / "metrics.json")
    page = (out / "train" / "report.html").read_text().replace(str(out), "RUN")
    assert page == (fitted / "train" / "report.html").read_text().replace(str(fitted), "RUN")
    for rel in ("data/rgb/Fighting/f1__0.npy", "data/modalities/flow/n2.npy", "data/gt.npy"):
        assert (out / rel).read_bytes() == (fitted / rel).read_bytes(), rel
