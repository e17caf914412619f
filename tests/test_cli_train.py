"""``pivad train`` driven in-process: run folders and the latest link, resume, one-line errors."""

from __future__ import annotations

import os

import pytest

from pivad.cli import main
from pivad.config import save_config
from pivad.data.synth import write_synthetic_dataset
from pivad.engine.checkpoint import load_checkpoint
from test_resume import tiny_config


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data_dir = write_synthetic_dataset(root / "data", preset="tiny")
    cfg = tiny_config(data_dir, train={"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2,
                                       "out_dir": str(root / "results")})
    path = root / "tiny.yaml"
    save_config(cfg, path)
    return path, root / "results"


def test_train_makes_versioned_runs_and_resumes(config_file, capsys):
    path, results = config_file
    assert main(["train", "-c", str(path), "--no-progress", "--no-eval", "--train.model", "urdmu"]) == 0
    assert main(["train", "-c", str(path), "--no-progress", "--stop-after", "3"]) == 0
    parent = results / "pivad" / "demo"
    assert (results / "urdmu" / "demo" / "v0" / "best.pt").is_file()
    assert sorted(p.name for p in parent.iterdir()) == ["latest", "v0"]
    assert os.readlink(parent / "latest") == "v0"
    assert "continue with: pivad train --resume" in capsys.readouterr().err
    assert load_checkpoint(parent / "v0" / "last.pt")["global_step"] == 3

    assert main(["train", "--resume", str(parent / "latest"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "π-VAD (val-selected)" in out and "UR-DMU (teacher, val-selected)" in out
    assert load_checkpoint(parent / "v0" / "last.pt")["global_step"] == 5
    assert (parent / "v0" / "metrics.json").is_file()


def test_train_errors_are_one_line(config_file, capsys):
    path, results = config_file
    assert main(["train", "-c", str(path), "--train.lr", "fast"]) == 2
    assert "config key 'train.lr': expected a number" in capsys.readouterr().err
    assert main(["train", "-c", str(path), "--train.model", "mil", "--no-progress"]) == 2
    assert "config key 'train.model': expected one of urdmu, pel4vad, rtfm, pivad, got 'mil'" in capsys.readouterr().err
    assert not (results / "mil").exists()  # refused before a run folder was made
    assert main(["train", "--resume", str(results / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(results), "-c", str(path)]) == 2
    assert "--resume continues a run with its own config.yaml" in capsys.readouterr().err
    missing = path.parent / "missing.yaml"
    assert main(["train", "-c", str(missing)]) == 2
    assert f"{missing}: cannot read config file" in capsys.readouterr().err
