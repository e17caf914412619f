"""PEL4VAD as π-VAD's backbone end to end on tiny sizes: train (teacher, steps 1 and 2), evaluate, export, info."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.engine.checkpoint import load_checkpoint, load_inference_model
from pivad.engine.trainer import train
from test_resume import tiny_config

PEL = {"model": {"backbone": "pel4vad"},
       "pel4vad": {"hidden_dim": 8, "out_dim": 8, "window": 3, "causal_steps": 3, "smooth": "fixed", "kappa": 2},
       "inductor": {"position": "both", "latent_dim": 8, "cmi_depth": 1, "cmi_heads": 2},
       "train": {"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2, "selection": "test"}}


@pytest.fixture(scope="module")
def pel_run(tmp_path_factory, tiny_dataset):
    run = tmp_path_factory.mktemp("pel_run")
    result = train(tiny_config(tiny_dataset, **PEL), run, progress=False)
    assert not result.interrupted and result.global_step == 5
    return run


def test_train_runs_teacher_and_both_steps_on_pel4vad(pel_run):
    teacher, best = load_checkpoint(pel_run / "teacher.pt"), load_checkpoint(pel_run / "best.pt")
    assert teacher["kind"] == "pel4vad" and best["kind"] == "pivad"
    assert {k.split(".")[1] for k in best["model"] if k.startswith("inductors.")} == {"embed", "head"}
    log = [json.loads(line) for line in (pel_run / "log.jsonl").read_text().splitlines()]
    phases = {r["phase"] for r in log}
    assert phases == {"teacher", "first", "second"}
    second = [r for r in log if r["phase"] == "second" and "loss" in r]
    assert second and all(k in second[0] for k in ("mil/mil_bce", "mil/prompt_kl", "align", "distill", "pmg"))


def test_evaluate_run_and_teacher_checkpoint(pel_run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(pel_run), "--no-progress", "--no-plots", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "π-VAD (test-selected)" in out and "PEL4VAD (teacher, test-selected)" in out
    assert main(["evaluate", "--ckpt", str(pel_run / "teacher.pt"), "--no-progress", "--no-plots",
                 "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["models"]["model"]["kind"] == "pel4vad"


@pytest.mark.parametrize("name", ["best.pt", "teacher.pt"])
def test_onnx_export_equals_torch(pel_run, tmp_path, name):
    pytest.importorskip("onnxruntime")
    from pivad.detect.pipeline import OnnxScorer
    from pivad.export import export_checkpoint

    out, check = export_checkpoint(pel_run / name, tmp_path / "model.onnx")
    assert check.worst < 1e-4
    model, _, _ = load_inference_model(pel_run / name)
    scorer = OnnxScorer(out)
    gen = torch.Generator().manual_seed(1)
    for T, crops in ((1, 1), (7, 2), (30, 1)):  # odd lengths: the fixed smoothing's last block is padded
        x = torch.randn(crops, T, 1024, generator=gen)
        with torch.no_grad():
            ref = model(x[None]).numpy()[0]
        assert np.abs(scorer(x.numpy()) - ref).max() < 1e-4, T


def test_info_counts_pel4vad(tiny_dataset, tmp_path, capsys):
    import yaml

    path = tmp_path / "pel.yaml"
    path.write_text(yaml.safe_dump(PEL))
    assert main(["info", "-c", str(path), "--snippets", "16"]) == 0
    out = capsys.readouterr().out
    assert "student PEL4VAD (without its PIs)" in out and "embed PI (D=512)" in out and "head PI (D=8)" in out


def test_bad_position_and_teacher_kind_are_one_line_errors(tiny_dataset, pel_run, tmp_path, capsys):
    from pivad.errors import CheckpointError, ConfigError

    with pytest.raises(ConfigError, match="early\\+nowhere"):  # the config check refuses it before any model
        tiny_config(tiny_dataset, **{**PEL, "inductor": {**PEL["inductor"], "position": "early+nowhere"}})
    urdmu_teacher = tiny_config(tiny_dataset, train={"teacher_steps": 1, "eval_every": 1, "model": "urdmu"})
    train(urdmu_teacher, tmp_path / "u", progress=False)
    cfg = tiny_config(tiny_dataset, **{**PEL, "train": {**PEL["train"], "teacher_ckpt": str(tmp_path / "u" / "best.pt")}})
    with pytest.raises(CheckpointError, match="must be a pel4vad checkpoint"):
        train(cfg, tmp_path / "p", progress=False)


def test_detect_scores_a_video_with_a_pel4vad_student(pel_run, tmp_path):
    from test_detect import CLIP, FAST

    assert main(["detect", str(CLIP), "--ckpt", str(pel_run / "best.pt"), "--out", str(tmp_path / "d"), *FAST]) == 0
    info = json.loads((tmp_path / "d" / "carphone_40.json").read_text())
    assert len(info["snippet_scores"]) == 3 and all(0.0 <= s <= 1.0 for s in info["snippet_scores"])


def test_resume_mid_step_two_reaches_the_same_weights(pel_run, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, **PEL)
    part = train(cfg, tmp_path / "part", stop_after=4, progress=False)  # inside π-VAD step 2
    assert part.interrupted and load_checkpoint(tmp_path / "part" / "last.pt")["phase"] == "second"
    assert train(cfg, tmp_path / "part", resume=True, progress=False).global_step == 5
    for name in ("last.pt", "best.pt", "teacher.pt"):
        full, resumed = load_checkpoint(pel_run / name)["model"], load_checkpoint(tmp_path / "part" / name)["model"]
        assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full), name


def test_bad_backbone_and_prompts_are_one_line_errors(tiny_dataset, tmp_path, capsys):
    assert main(["info", "--model.backbone", "c3d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pivad: error:") and "model.backbone" in err and "c3d" in err and err.count("\n") == 1
    missing = tmp_path / "nope-prompt.npy"
    assert main(["info", "--model.backbone", "pel4vad", "--inductor.cmi_heads", "4", "--pel4vad.prompts", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pivad: error:") and "pel4vad.prompts" in err and "nope-prompt.npy" in err
    assert err.count("\n") == 1
    import yaml

    from pivad.config import to_dict

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_config(tiny_dataset))))
    assert main(["train", "-c", str(path), "--model.backbone", "c3d", "--no-progress",
                 "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pivad: error:") and "model.backbone" in err and err.count("\n") == 1
