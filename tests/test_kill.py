"""SIGKILL at a seeded random moment, then the same command again: the outputs must equal an
uninterrupted run's (extract rgb skips finished videos and redoes the killed one; train resumes from
last.pt exactly). A kill leaves no half-written output under a final name."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pivad.config import save_config
from test_resume import tiny_config

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "data" / "videos" / "carphone_40.mp4"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def _pivad(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pivad.cli", *args], env=_env(), capture_output=True, text=True,
                          timeout=300)


def _kill_when(args: list[str], ready: Path, delay: float) -> None:
    """Start ``pivad args``, wait until ``ready`` exists (the work has begun), then ``delay`` s, then SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-m", "pivad.cli", *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)


def _digests(root: Path, pattern: str = "*") -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob(pattern)) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
def test_extract_rgb_killed_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    pytest.importorskip("av")
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        shutil.copy(CLIP, videos / f"clip{i}.mp4")
    common = ["extract", "rgb", str(videos), "--crops", "1", "--weights", "random:0", "--crop-size", "112",
              "--batch", "2", "--no-progress"]
    # the reference in a subprocess like the killed run: one thread both (I3D's float sums depend on it)
    ref = _pivad(*common, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out"
    _kill_when([*common, "--out", str(out)], out, random.Random(10).uniform(0.0, 1.5))
    for p in out.rglob("*.npy") if out.exists() else []:  # what a kill left under a final name is whole
        assert p.stat().st_size == (tmp_path / "ref" / p.name).stat().st_size
    again = _pivad(*common, "--out", str(out))
    assert again.returncode == 0, again.stderr
    ours = {k: v for k, v in _digests(out).items() if k != "rgb.list"}
    assert ours == {k: v for k, v in _digests(tmp_path / "ref").items() if k != "rgb.list"}
    assert (out / "rgb.list").read_text().replace(str(out), "X") == \
        (tmp_path / "ref" / "rgb.list").read_text().replace(str(tmp_path / "ref"), "X")


@pytest.mark.slow
def test_train_killed_then_resumed_equals_uninterrupted(tiny_dataset: Path, tmp_path: Path) -> None:
    import torch

    from pivad.engine.checkpoint import load_checkpoint

    def config(out: Path) -> Path:
        cfg = tiny_config(tiny_dataset, train={"teacher_steps": 6, "warmup_steps": 2, "steps": 6, "eval_every": 2,
                                               "out_dir": str(out)})
        path = tmp_path / f"{out.name}.yaml"
        save_config(cfg, path)
        return path

    from pivad.cli import main

    assert main(["train", "-c", str(config(tmp_path / "ref")), "--no-progress", "--no-eval"]) == 0
    run = tmp_path / "killed" / "pivad" / "demo" / "v0"
    _kill_when(["train", "-c", str(config(tmp_path / "killed")), "--no-progress", "--no-eval"], run / "last.pt",
               random.Random(11).uniform(0.0, 0.5))  # after the first checkpoint: mid-run
    if (run / "last.pt").is_file():
        again = _pivad("train", "--resume", str(run), "--no-progress", "--no-eval")
    else:  # killed before the first checkpoint: nothing to resume, the run starts again in its folder
        again = _pivad("train", "-c", str(config(tmp_path / "killed")), "--run-dir", str(run), "--no-progress",
                       "--no-eval")
    assert again.returncode == 0, again.stderr
    assert "resuming from global step" in again.stderr or "run directory" in again.stderr
    a, b = load_checkpoint(tmp_path / "ref" / "pivad" / "demo" / "v0" / "last.pt"), load_checkpoint(run / "last.pt")
    assert a["global_step"] == b["global_step"] == 14
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
