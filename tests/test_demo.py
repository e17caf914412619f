"""``pivad demo`` end to end on the tiny synthetic preset with a few steps."""

from __future__ import annotations

import json

import pytest

import yaml

from pivad.cli import main
from test_resume import TINY
from test_rtfm_cli import SMALL


def test_demo_tiny(tmp_path, capsys):
    cfg = {k: dict(v) for k, v in TINY.items() if k != "data"}
    cfg["train"].update(teacher_steps=2, warmup_steps=1, steps=2, eval_every=2)
    cfg["data"] = {"num_segments": 16, "batch_normal": 2, "batch_abnormal": 2, "val_fraction": 0.2}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path), "-c", str(tmp_path / "tiny.yaml"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    for row in ("UR-DMU (teacher, val-selected)", "π-VAD (val-selected)", "π-VAD (last)"):
        assert f"| {row} |" in out
    assert "plots:" in out and "wall time:" in out
    run = tmp_path / "results" / "pivad" / "demo" / "latest"
    report = json.loads((run / "metrics.json").read_text())
    assert report["dataset"] == "demo" and {"urdmu", "best", "last"} == set(report["models"])
    assert (tmp_path / "demo_data_tiny" / "meta.json").is_file()


def test_demo_default_config_exists():
    from pivad.commands.demo import REPO_CONFIG
    from pivad.config import load_config

    cfg = load_config(REPO_CONFIG)
    assert cfg.train.model == "pivad" and cfg.data.batch_normal >= 16 and cfg.data.batch_abnormal >= 16


def test_demo_family2_writes_its_own_data_folder(tmp_path, capsys):
    """``--family 2`` runs the demo on family 2's data, in a folder of its own (UR-DMU only here)."""
    cfg = {k: dict(v) for k, v in TINY.items() if k != "data"}
    cfg["train"].update(model="urdmu", teacher_steps=2, eval_every=2)
    cfg["data"] = {"num_segments": 16, "batch_normal": 2, "batch_abnormal": 2, "val_fraction": 0.2}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["demo", "--preset", "tiny", "--family", "2", "--out", str(tmp_path), "-c", str(tmp_path / "tiny.yaml"),
                 "--no-progress"]) == 0
    meta = json.loads((tmp_path / "demo_data_tiny_family2" / "meta.json").read_text())
    assert meta["family"] == 2 and not (tmp_path / "demo_data_tiny").exists()
    assert "| UR-DMU" in capsys.readouterr().out


@pytest.mark.parametrize("backbone, section, label", [
    ("pel4vad", {"hidden_dim": 8, "out_dim": 8}, "PEL4VAD"),
    ("rtfm", SMALL, "RTFM"),
])
def test_demo_tiny_on_another_backbone(tmp_path, capsys, backbone, section, label):
    """``pivad demo --model.backbone X``: X's teacher and π-VAD on X, both rows printed."""
    cfg = {"inductor": {"latent_dim": 8, "cmi_depth": 1, "cmi_heads": 2}, backbone: section,
           "train": {"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2, "threads": 1},
           "data": {"num_segments": 16, "batch_normal": 2, "batch_abnormal": 2, "val_fraction": 0.2}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path), "-c", str(tmp_path / "tiny.yaml"),
                 "--model.backbone", backbone, "--no-progress"]) == 0
    out = capsys.readouterr().out
    for row in (f"{label} (teacher, val-selected)", "π-VAD (val-selected)"):
        assert f"| {row} |" in out


@pytest.mark.parametrize("backbone", ["pel4vad", "rtfm"])
def test_demo_backbone_overlay_sets_demo_sizes_and_overrides_still_win(tmp_path, backbone, capsys):
    """No -c: --model.backbone X lays configs/demo_X.yaml over demo.yaml, then the user's overrides."""
    from pivad.commands.demo import REPO_CONFIG, backbone_overlay, demo_config
    from pivad.config import read_yaml
    from pivad.data.synth import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "d", seed=0, preset="tiny")
    overlay = read_yaml(REPO_CONFIG.with_name(f"demo_{backbone}.yaml"))
    cfg = demo_config(None, ["--model.backbone", backbone, "--train.steps", "7"], data, tmp_path)
    assert cfg.model.backbone == backbone and cfg.train.steps == 7
    assert cfg.train.teacher_steps == overlay["train"]["teacher_steps"]
    for key, value in overlay[backbone].items():
        assert getattr(getattr(cfg, backbone), key) == value
    assert backbone_overlay(None, ["--model.backbone", "urdmu"]) is None
    assert backbone_overlay(str(REPO_CONFIG), ["--model.backbone", backbone]) is None  # -c: the file as given
    plain = demo_config(str(REPO_CONFIG), ["--model.backbone", backbone], data, tmp_path)
    assert plain.train.teacher_steps == read_yaml(REPO_CONFIG)["train"]["teacher_steps"]


def test_study_fingerprint_follows_the_backbone_overlay(tmp_path, monkeypatch):
    """A study of another backbone on the demo config is keyed by the overlay's content too."""
    import shutil

    import pivad.commands.demo as demo
    from pivad.engine.study import StudySpec, fingerprint

    def fp():
        return fingerprint(StudySpec(tmp_path, None, ["--model.backbone", "pel4vad"], "demo", [0], [1], []))

    configs = tmp_path / "configs"
    shutil.copytree(demo.REPO_CONFIG.parent, configs)
    monkeypatch.setattr(demo, "REPO_CONFIG", configs / "demo.yaml")
    before = fp()
    overlay = configs / "demo_pel4vad.yaml"
    overlay.write_text(overlay.read_text().replace("steps: 100", "steps: 101"))
    assert fp() != before
