"""Exact resume: a run stopped (and checkpointed) mid-phase and resumed ends with the same weights."""

from __future__ import annotations

import pytest
import torch

from pivad.config import load_config
from pivad.engine.checkpoint import load_checkpoint
from pivad.engine.trainer import train

TINY = {
    "model": {"hidden_dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 16, "a_nums": 4, "n_nums": 4,
              "head_dim": 8},
    "inductor": {"latent_dim": 8, "cmi_depth": 1, "cmi_heads": 2},
    "train": {"teacher_steps": 4, "warmup_steps": 2, "steps": 4, "eval_every": 2, "log_every": 1, "seed": 3,
              "threads": 1},
    "data": {"num_segments": 16, "batch_normal": 2, "batch_abnormal": 2, "val_fraction": 0.2, "num_crops": 2},
}


def tiny_config(tiny_dataset, **sections):
    import json

    from pivad.config import merge_dict

    meta = json.loads((tiny_dataset / "meta.json").read_text())
    data = {"root": str(tiny_dataset), "train_list": str(tiny_dataset / "lists/train.list"),
            "test_list": str(tiny_dataset / "lists/test.list"), "annotation": str(tiny_dataset / "annotations.txt"),
            "modality_root": str(tiny_dataset / "modalities"), "modalities": meta["modalities"]}
    values = merge_dict(merge_dict(TINY, {"data": data}), sections)
    return load_config(None, values)


def _weights(path):
    return load_checkpoint(path)["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_dataset):
    run_dir = tmp_path_factory.mktemp("full")
    result = train(tiny_config(tiny_dataset), run_dir, progress=False)
    assert not result.interrupted and result.global_step == 10
    return run_dir


@pytest.mark.parametrize("stop_at", [3, 7])  # inside the teacher phase; inside π-VAD step 2
def test_resume_reaches_the_same_weights(tmp_path, tiny_dataset, full_run, stop_at):
    cfg = tiny_config(tiny_dataset)

    part = train(cfg, tmp_path / "part", stop_after=stop_at, progress=False)
    assert part.interrupted and part.global_step == stop_at
    ck = load_checkpoint(tmp_path / "part" / "last.pt")
    assert ck["global_step"] == stop_at and ck["phase"] == ("teacher" if stop_at <= 4 else "second")
    done = train(cfg, tmp_path / "part", resume=True, progress=False)
    assert not done.interrupted and done.global_step == 10

    for name in ("last.pt", "best.pt", "teacher.pt"):
        _assert_same(_weights(full_run / name), _weights(tmp_path / "part" / name))
    steps = [r["global_step"] for r in
             map(__import__("json").loads, (tmp_path / "part" / "log.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) == 10  # replayed steps not logged twice


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_dataset):
    from pivad.errors import CheckpointError

    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(tiny_dataset), tmp_path / "empty", resume=True, progress=False)


def test_sigterm_checkpoints_and_resume_matches(tmp_path, tiny_dataset):
    """A real signal: `pivad train` in a subprocess gets SIGTERM mid-run, checkpoints, exits 130;
    `--resume` then ends with the weights of an uninterrupted run."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from pivad.config import save_config

    cfg = tiny_config(tiny_dataset, train={"teacher_steps": 40, "warmup_steps": 2, "steps": 4, "eval_every": 20})
    save_config(cfg, tmp_path / "cfg.yaml")
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pivad.cli", "train", "-c", str(tmp_path / "cfg.yaml"),
                             "--run-dir", str(run_dir), "--no-eval", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run_dir / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and any(json.loads(line)["global_step"] >= 2 for line in log.read_text().splitlines()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = load_checkpoint(run_dir / "last.pt")["global_step"]
    assert 2 <= stopped < 46 and "pivad train --resume" in err

    train(cfg, run_dir, resume=True, progress=False)
    train(cfg, tmp_path / "straight", progress=False)
    _assert_same(_weights(tmp_path / "straight" / "last.pt"), _weights(run_dir / "last.pt"))
